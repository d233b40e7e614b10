"""Long context: one bundle with several cache and prefill lengths, and sliding-window ring buffers;
each loads on the host's LiteRT-LM engine and generates; the planner accounts for the ring buffer."""

from __future__ import annotations

import json

import pytest

from helpers import assert_one_line_error, cli

ANSWER = "The capital of France is Paris."
# Longer than the tiny models' 64-token sliding window, so the sliding layers wrap.
LONG_PROMPT = " ".join(["The weather today is mild and calm."] * 12) + " What is the capital of France?"


@pytest.fixture(scope="session")
def multi_cache_bundle(tiny_e2b, tmp_path_factory):
    out = tmp_path_factory.mktemp("longctx") / "multi"
    res = cli("convert", tiny_e2b, "-o", out, "-r", "int8", "--cache-length", "256,2k",
              "--prefill", "32", "--prefill", "128", "--json")
    assert res.code == 0, res.err
    return out


@pytest.fixture(scope="session")
def ring_bundle(tiny_e2b, tmp_path_factory):
    out = tmp_path_factory.mktemp("longctx") / "ring"
    res = cli("convert", tiny_e2b, "-o", out, "-r", "int8", "--cache-length", "2048",
              "--sliding-window-ring-buffer", "192", "--json")
    assert res.code == 0, res.err
    return out


def _sig_names(model_path):
    """Signature names of the prefill/decode TFLite model inside a .litertlm."""
    from ai_edge_litert.interpreter import Interpreter

    from converters.bundle import litertlm_sections

    sec = next(s for s in litertlm_sections(model_path)["sections"] if s["model_type"] == "tf_lite_prefill_decode")
    with open(model_path, "rb") as f:
        f.seek(sec["begin"])
        blob = f.read(sec["size"])
    return set(Interpreter(model_content=blob).get_signature_list())


def test_multi_cache_manifest_and_signatures(multi_cache_bundle):
    m = json.loads((multi_cache_bundle / "manifest.json").read_text())
    assert m["export"]["cache_lengths"] == [256, 2048]
    assert m["export"]["cache_length"] == 2048
    assert m["export"]["prefill_lengths"] == [32, 128]
    sigs = _sig_names(multi_cache_bundle / "model.litertlm")
    for c in (256, 2048):
        assert {f"prefill_32_cache_{c}", f"prefill_128_cache_{c}", f"decode_cache_{c}"} <= sigs, sigs


@pytest.mark.parametrize("context", [256, 2048])
def test_multi_cache_generates_at_each_context(multi_cache_bundle, context):
    res = cli("run", multi_cache_bundle, "--prompt", "What is the capital of France?", "--context", str(context),
              "--json")
    assert res.code == 0, res.err
    assert res.json()["response"] == ANSWER


def test_multi_cache_long_prompt(multi_cache_bundle):
    res = cli("run", multi_cache_bundle, "--prompt", LONG_PROMPT, "--json", "--max-tokens", "16")
    assert res.code == 0, res.err
    d = res.json()
    assert d["prefill_tokens"] > 64 and d["decode_tokens"] > 0


def test_context_outside_cache_refused(multi_cache_bundle):
    assert_one_line_error(cli("run", multi_cache_bundle, "--prompt", "hi", "--context", "4096"), "outside")


def test_ring_buffer_bundle_generates(ring_bundle, multi_cache_bundle):
    m = json.loads((ring_bundle / "manifest.json").read_text())
    assert m["export"]["sliding_window_ring_buffer_size"] == 192
    res = cli("run", ring_bundle, "--prompt", "What is the capital of France?", "--json")
    assert res.code == 0, res.err
    assert res.json()["response"] == ANSWER
    # Past the sliding window the ring buffer must attend to the same tokens as the full cache.
    ring = cli("run", ring_bundle, "--prompt", LONG_PROMPT, "--json", "--max-tokens", "16")
    full = cli("run", multi_cache_bundle, "--prompt", LONG_PROMPT, "--json", "--max-tokens", "16")
    assert ring.code == 0 and full.code == 0, (ring.err, full.err)
    assert ring.json()["response"] == full.json()["response"]


def test_ring_buffer_too_small_refused(tiny_e2b, tmp_path):
    res = cli("convert", tiny_e2b, "-o", tmp_path / "o", "--sliding-window-ring-buffer", "64")
    assert_one_line_error(res, "ring-buffer size 64", "sliding window 64")
    assert not (tmp_path / "o").exists()


def test_planner_accounts_for_ring_buffer(tiny_e2b):
    from converters.planner import kv_cache_bytes, load_shape

    s = load_shape(str(tiny_e2b))
    sl_full, fu = kv_cache_bytes(s, 2048)
    sl_ring, fu2 = kv_cache_bytes(s, 2048, ring_buffer=192)
    assert fu == fu2
    # 4 sliding layers own KV (head dim 16, 1 KV head): 2048 vs 192 positions
    assert sl_full == 4 * 2 * 16 * 2048 * 4 and sl_ring == 4 * 2 * 16 * 192 * 4
