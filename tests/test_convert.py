"""`convert`, `inspect` and `run` on real trained tiny Gemma 4 checkpoints, and every bad input."""

from __future__ import annotations

import json
import resource
import signal
import time

import pytest

from support.cli import assert_error_after_progress, assert_one_line_error, cli, cli_popen, cli_subprocess
from support.files import copy_checkpoint, leftovers


# ---------------------------------------------------------------- bad input: one line, exit 2

def test_missing_checkpoint_dir(tmp_path):
    res = cli("convert", tmp_path / "nope", "-o", tmp_path / "out")
    assert_one_line_error(res, "does not exist")
    assert not (tmp_path / "out").exists()


def test_other_model_type(tiny_e2b, tmp_path):
    ck = copy_checkpoint(tiny_e2b, tmp_path / "ck")
    cfg = json.loads((ck / "config.json").read_text())
    cfg["model_type"] = "llama"
    (ck / "config.json").write_text(json.dumps(cfg))
    res = cli("convert", ck, "-o", tmp_path / "out")
    assert_one_line_error(res, "'llama'", "not Gemma 4")
    assert not (tmp_path / "out").exists()


def test_config_without_tokenizer(tiny_e2b, tmp_path):
    ck = copy_checkpoint(tiny_e2b, tmp_path / "ck")
    (ck / "tokenizer.json").unlink()
    res = cli("convert", ck, "-o", tmp_path / "out")
    assert_one_line_error(res, "no tokenizer")
    assert not (tmp_path / "out").exists()


def test_truncated_safetensors(tiny_e2b, tmp_path):
    ck = copy_checkpoint(tiny_e2b, tmp_path / "ck")
    st = ck / "model.safetensors"
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    res = cli("convert", ck, "-o", tmp_path / "out")
    assert_one_line_error(res, "truncated")
    st.write_bytes(b"\xff" * 64)
    res = cli("convert", ck, "-o", tmp_path / "out")
    assert_one_line_error(res, "corrupt")
    assert not (tmp_path / "out").exists()


def test_unknown_recipe(tiny_e2b, tmp_path):
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--recipe", "int3_magic")
    assert_one_line_error(res, "unknown recipe", "--recipe list")
    assert not (tmp_path / "out").exists()


def test_prefill_longer_than_cache(tiny_e2b, tmp_path):
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--prefill", "512", "--cache-length", "256")
    assert_one_line_error(res, "prefill length 512", "cache length 256")
    assert not (tmp_path / "out").exists()


def test_use_v2_without_tensorflow_support(tiny_e2b, tmp_path, monkeypatch):
    """Converter V2 needs TensorFlow's convert_mlir_bytecode; without it convert stops before exporting."""
    from litert_torch._convert import converter_v2

    monkeypatch.setattr(converter_v2, "is_supported", lambda: False)
    for flags in (["--use-v2"], ["--delete-in-memory-params"]):
        res = cli("convert", tiny_e2b, "-o", tmp_path / "out", *flags)
        assert_one_line_error(res, "convert_mlir_bytecode", "without --use-v2")
    assert not (tmp_path / "out").exists()


def test_host_too_small_for_the_conversion(tiny_e2b, tmp_path, monkeypatch):
    """A checkpoint whose estimated conversion peak (planner.conversion_memory_bytes, fitted by the
    realsize benchmark) exceeds the host's RAM is refused before exporting; the flag overrides it."""
    from converters import pipeline, planner

    need = planner.conversion_memory_bytes(pipeline.inspect_checkpoint(tiny_e2b).num_parameters)
    monkeypatch.setattr(planner, "host_ram_bytes", lambda: need - 1)
    # (auto would take the lean path here, which fits: tests/test_realsize.py)
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", "--converter", "default")
    assert_one_line_error(res, f"needs ~{need / 2**30:.1f} GiB of RAM", "--ignore-memory-check")
    assert not (tmp_path / "out").exists()
    # a real E2B needs more than this 24 GiB machine class has
    e2b = planner.plan("e2b", "dynamic_wi4b32_afp32", 4096)
    assert e2b.conversion_host_bytes > 40 * 2**30
    req = pipeline.ConvertRequest(checkpoint=tiny_e2b, out_dir=tmp_path / "out", ignore_memory_check=True)
    pipeline._validate(req)  # the override passes validation
    monkeypatch.setattr(planner, "host_ram_bytes", lambda: need)
    req.ignore_memory_check = False
    pipeline._validate(req)  # and so does a host with just enough RAM


def test_existing_non_bundle_output_refused(tiny_e2b, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    res = cli("convert", tiny_e2b, "-o", out)
    assert_one_line_error(res, "not a bundle", "--force")
    assert (out / "notes.txt").read_text() == "mine"


def test_recipe_list():
    res = cli("convert", "--recipe", "list", "--json")
    assert res.code == 0
    names = {r["name"] for r in res.json()}
    assert {"fp32", "dynamic_wi8_afp32", "dynamic_wi4b32_afp32", "gemma4_mixed48"} <= names


def _limit_file_size(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_disk_write_failure_leaves_nothing(tiny_e2b, tmp_path):
    """A real write failure (the process may not write files over 64 KiB) mid-export."""
    out = tmp_path / "out"
    res = cli_subprocess("convert", tiny_e2b, "-o", out, preexec_fn=_limit_file_size(64 * 1024))
    assert_error_after_progress(res)  # the steps it got through, then the one-line error
    assert "write" in res.stderr.lower() or "disk" in res.stderr.lower()
    assert not out.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_convert_leaves_no_bundle(tiny_e2b, tmp_path, sig):
    out = tmp_path / "out"
    # a shell's background jobs inherit SIGINT ignored; the user's Ctrl-C reaches a foreground one
    proc = cli_popen("convert", tiny_e2b, "-o", out, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    # wait until the export has started writing its work dir, then interrupt
    while time.time() < deadline and not leftovers(tmp_path):
        time.sleep(0.2)
    time.sleep(2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert not out.exists()
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- bundles

def test_manifest_and_inspect(e2b_bundles, tiny_e2b):
    from converters.checkpoint import checkpoint_hash

    sizes = {}
    for recipe, b in e2b_bundles.items():
        m = json.loads((b / "manifest.json").read_text())
        assert m["recipe"]["name"] == recipe
        assert m["variant"] == "custom"
        assert m["source"]["sha256"] == checkpoint_hash(tiny_e2b)
        assert m["export"]["prefill_lengths"] == [128] and m["export"]["cache_length"] == 1024
        assert set(m["tool_versions"]) >= {"litert-torch", "ai-edge-quantizer", "transformers"}
        assert m["files"]["model.litertlm"]["size"] == (b / "model.litertlm").stat().st_size
        sizes[recipe] = m["files"]["model.litertlm"]["size"]
        res = cli("inspect", b, "--json")
        assert res.code == 0, res.err
        data = res.json()
        assert data["ok"] is True
        kinds = {s["data_type"] for s in data["litertlm"]["sections"]}
        assert {"LlmMetadataProto", "TFLiteModel"} <= kinds
        assert any(s["model_type"] == "tf_lite_prefill_decode" for s in data["litertlm"]["sections"])
    # int8 weights; norms, tokenizer and graph stay as they are, a larger share in a tiny model
    assert sizes["dynamic_wi8_afp32"] < sizes["fp32"] * 0.6
    assert sizes["dynamic_wi4c_afp32"] < sizes["dynamic_wi8_afp32"]


def test_inspect_detects_tampering(e2b_int8_bundle, tmp_path):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(e2b_int8_bundle, b)
    with open(b / "model.litertlm", "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    res = cli("inspect", b)
    assert res.code == 1
    assert "mismatch" in res.out


@pytest.mark.slow
def test_reconvert_into_existing_bundle_replaces_it(tiny_e2b, e2b_int8_bundle, tmp_path):
    """An existing bundle may be overwritten without --force; the result is a complete bundle."""
    import shutil

    out = tmp_path / "b"
    shutil.copytree(e2b_int8_bundle, out)
    (out / "stale.bin").write_bytes(b"x")
    res = cli("convert", tiny_e2b, "-o", out, "--recipe", "dynamic_wi8_afp32", "--json")
    assert res.code == 0, res.err
    assert not (out / "stale.bin").exists()
    assert cli("inspect", out).code == 0
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------- host run

def test_run_prints_figures(e2b_int8_bundle):
    res = cli("run", e2b_int8_bundle, "--prompt", "What is the capital of France?", "--json")
    assert res.code == 0, res.err
    d = res.json()
    assert d["response"] == "The capital of France is Paris."
    assert d["prefill_tps"] > 0 and d["decode_tps"] > 0 and d["ttft_s"] > 0


def test_run_bad_bundle(tmp_path):
    res = cli("run", tmp_path, "--prompt", "hi")
    assert_one_line_error(res, "not a bundle")
