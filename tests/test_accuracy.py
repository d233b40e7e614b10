"""Accuracy verification on the trained tiny models: the float bundle passes tight gates, a bundle
exported from perturbed weights fails them, int8 and int4 land between (int4 worse); on-device
verification through the reference emulator agrees with itself and catches a device that runs
another model; evaluation files and the metrics/gates without a model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gemma4_common.errors import GateFailure, UserError
from gemma4_common.gemma4_format import cut_at_stop
from sdk_tools.accuracy import gates as gates_lib
from sdk_tools.accuracy import metrics
from sdk_tools.accuracy.evalset import default_items_from_corpus, load_eval

from support.cli import cli

N_ITEMS = 14  # the first N of the shipped set: two of each kind
SETTINGS_TOKENS = 24


# ---- without a model ----------------------------------------------------------------------------
def test_default_eval_set_is_shipped_and_current():
    items = load_eval()
    assert items == default_items_from_corpus()  # regenerate: python -m sdk_tools.accuracy.evalset
    assert len(items) >= 80
    kinds = {i.kind for i in items}
    assert {i.kind for i in load_eval(limit=len(kinds))} == kinds  # interleaved: --limit N covers every kind


def test_malformed_eval_file_names_the_line(tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"prompt": "a", "target": "b"}\n\n{"prompt": "c", "target": }\n')
    with pytest.raises(UserError, match=r"line 3 is not valid JSON"):
        load_eval(bad)
    res = cli("verify", tmp_path, "--checkpoint", tmp_path, "--eval", bad)
    err = res.err.strip().splitlines()
    assert res.code == 2 and len(err) == 1 and "eval.jsonl line 3 is not valid JSON" in err[0]

    cases = {'["prompt", "target"]\n': "line 1 is a JSON list", '{"prompt": "x"}\n': 'line 1: "target" is missing',
             '{"prompt": 1, "target": "y"}\n': 'line 1: "prompt" is a int', "\n\n": "has no items",
             '{"prompt": "x", "target": ""}\n': '"target" is empty'}
    for text, msg in cases.items():
        bad.write_text(text)
        with pytest.raises(UserError, match=msg):
            load_eval(bad)
    with pytest.raises(UserError, match="does not exist"):
        load_eval(tmp_path / "missing.jsonl")
    good = tmp_path / "good.jsonl"
    good.write_text('{"prompt": "p", "target": "t", "kind": "k"}\n{"prompt": "", "target": "u"}\n')
    assert [(i.prompt, i.target, i.kind) for i in load_eval(good)] == [("p", "t", "k"), ("", "u", "")]


def test_metrics_and_gates_without_a_model():
    assert metrics.perplexity([math.log(0.5)] * 4) == pytest.approx(2.0)
    assert metrics.percentile([1, 2, 3, 4], 50) == 2.5
    assert metrics.first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert metrics.first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert metrics.first_divergence([1, 2], [1, 2, 3]) == 2
    assert cut_at_stop("Paris.<turn|>\n", ["<turn|>", "<eos>"]) == ("Paris.", "<turn|>")
    assert cut_at_stop("Paris.<turn|>\n", keep=True) == ("Paris.<turn|>", "<turn|>")
    assert cut_at_stop("Paris.") == ("Paris.", None)
    a = metrics.agreement(["ab", "cd"], ["ab", "ce"], tokenize=list)
    assert a.rate == 0.5 and a.per_prompt[1]["first_divergence"] == 1
    import torch

    p = torch.log_softmax(torch.tensor([[1.0, 2.0, 3.0]]), -1)
    assert metrics.kl_divergence(p, p) == [pytest.approx(0.0)]
    assert metrics.kl_divergence(p, torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0]]), -1))[0] > 0.5

    assert gates_lib.recipe_class("fp32") == "float"
    assert gates_lib.recipe_class("dynamic_wi8_afp32") == "int8"
    assert gates_lib.recipe_class("dynamic_wi4b32_afp32") == "int4"
    assert gates_lib.recipe_class("dynamic_wi8_emb4_afp32") == "int4"
    f, i8, i4 = (gates_lib.DEFAULT_GATES[k] for k in ("float", "int8", "int4"))
    assert f.max_ppl_ratio < i8.max_ppl_ratio < i4.max_ppl_ratio
    assert f.max_mean_logprob_delta < i8.max_mean_logprob_delta < i4.max_mean_logprob_delta
    assert f.min_greedy_agreement > i8.min_greedy_agreement > i4.min_greedy_agreement
    cls, g = gates_lib.gates_for("fp32", {"max_ppl_ratio": 1.5, "min_greedy_agreement": None})
    assert cls == "float" and g.max_ppl_ratio == 1.5 and g.min_greedy_agreement == f.min_greedy_agreement
    with pytest.raises(UserError, match="between 0 and 1"):
        gates_lib.gates_for("fp32", {"min_greedy_agreement": 90})
    res = gates_lib.check_host({"tokenizer_mismatches": 0, "ppl_ratio": 1.3, "scored_tokens": 10,
                                "mean_logprob_delta": 0.001, "p99_logprob_delta": 0.01, "greedy_agreement": 1.0}, f)
    assert [r.metric for r in res if not r.passed] == ["ppl_ratio"]
    assert "| float |" in gates_lib.table_markdown()


# ---- on the trained e2b-tiny --------------------------------------------------------------------
@pytest.fixture(scope="module")
def items():
    return load_eval(limit=N_ITEMS)


@pytest.fixture(scope="module")
def settings():
    from sdk_tools.accuracy.verify import VerifySettings

    return VerifySettings(max_new_tokens=SETTINGS_TOKENS)


@pytest.fixture(scope="module")
def e2b_reference(tiny_e2b, items, settings):
    """PyTorch's side once for every bundle compared below."""
    from sdk_tools.accuracy.verify import load_reference, reference_run

    return reference_run(load_reference(tiny_e2b), items, settings)


@pytest.fixture(scope="module")
def damaged_bundle(tiny_e2b, tmp_path_factory) -> Path:
    """fp32 bundle of a copy of e2b-tiny whose weights got Gaussian noise (seeded, so the copy's
    content hash and with it the cached conversion are stable across sessions)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from sdk_tools.tinymodels.build import cached_bundles

    ckpt = tmp_path_factory.mktemp("damaged") / "e2b-tiny-damaged"
    shutil.copytree(tiny_e2b, ckpt)
    tensors = load_file(str(ckpt / "model.safetensors"))
    gen = torch.Generator().manual_seed(1234)
    for name, t in sorted(tensors.items()):
        if t.is_floating_point() and t.dim() >= 2:
            t.add_(torch.randn(t.shape, generator=gen) * 0.1 * float(t.float().std()))
    save_file(tensors, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    return cached_bundles(ckpt, ["fp32"])["fp32"]


@pytest.fixture(scope="module")
def host_reports(e2b_bundles, tiny_e2b, items, settings, e2b_reference):
    from sdk_tools.accuracy.verify import verify_host

    return {r: verify_host(b, tiny_e2b, items, settings=settings, reference=e2b_reference)
            for r, b in e2b_bundles.items()}


def _failed(report):
    return [c["metric"] for c in report["gate_results"] if not c["passed"]]


@pytest.mark.slow
def test_float_bundle_passes_tight_gates(host_reports):
    rep = host_reports["fp32"]
    s = rep["summary"]
    assert rep["recipe_class"] == "float" and rep["source_match"] is True
    assert rep["passed"], _failed(rep)
    assert s["tokenizer_mismatches"] == 0 and s["scored_tokens"] > 100
    assert s["mean_logprob_delta"] < 0.01 and abs(s["ppl_ratio"] - 1) < 0.02
    assert s["greedy_agreement"] >= 0.95
    assert s["kl_mean"] is None and any("KL" in n for n in s["notes"])
    json.dumps(rep)


@pytest.mark.slow
def test_damaged_bundle_fails_tight_gates(damaged_bundle, tiny_e2b, items, settings, e2b_reference, host_reports):
    from sdk_tools.accuracy.verify import raise_on_failure, verify_host

    rep = verify_host(damaged_bundle, tiny_e2b, items, settings=settings, reference=e2b_reference)
    assert rep["source_match"] is False
    assert not rep["passed"] and "mean_logprob_delta" in _failed(rep)
    with pytest.raises(GateFailure, match="mean_logprob_delta"):
        raise_on_failure(rep)
    # int8 and int4 land between the float export and the damaged one, int4 the worse of the two
    by_class = {r["recipe_class"]: r for r in host_reports.values()}
    assert set(by_class) == {"float", "int8", "int4"}
    d = {c: r["summary"]["mean_logprob_delta"] for c, r in by_class.items()}
    d["damaged"] = rep["summary"]["mean_logprob_delta"]
    assert d["float"] < d["int8"] < d["int4"] < d["damaged"], d
    assert by_class["int8"]["passed"], _failed(by_class["int8"])
    assert by_class["int4"]["passed"], _failed(by_class["int4"])


@pytest.mark.slow
def test_cli_verify_exit_status_and_report(damaged_bundle, e2b_fp32_bundle, tiny_e2b, tmp_path):
    out = tmp_path / "report.json"
    cap = cli("verify", e2b_fp32_bundle, "--checkpoint", tiny_e2b, "--limit", "3", "--max-new-tokens", "16",
              "--json", "-o", out)
    assert cap.code == 0, cap.err
    assert json.loads(cap.out)["passed"] is True and json.loads(out.read_text())["summary"]["items"] == 3
    cap = cli("verify", damaged_bundle, "--checkpoint", tiny_e2b, "--limit", "3", "--max-new-tokens", "16")
    assert cap.code == 1
    assert "gate failed:" in cap.err and "mean_logprob_delta" in cap.err.strip().splitlines()[-1]
    assert "FAIL mean_logprob_delta" in cap.out
    # a loose enough override lets it through
    cap = cli("verify", damaged_bundle, "--checkpoint", tiny_e2b, "--limit", "3", "--max-new-tokens", "16",
              "--max-ppl-ratio", "100", "--max-mean-logprob-delta", "100", "--max-p99-logprob-delta", "100",
              "--min-greedy-agreement", "0")
    assert cap.code == 0, cap.err


# ---- on a device against the reference emulator -------------------------------------------------
@pytest.fixture
def adb_keys_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ANDROID_USER_HOME", str(tmp_path / "android-home"))


DEVICE_ITEMS = 6


@pytest.mark.slow
def test_device_verify_agrees_with_reference_emulator(emulator_factory, e2b_int8_bundle, tiny_e2b, runner_file,
                                                      settings, e2b_reference, adb_keys_home):
    from sdk_tools.accuracy.verify import verify_device
    from sdk_tools.devices.tcp import TcpDevice

    phone, ref_emu = emulator_factory("galaxy-s24"), emulator_factory("pixel-8-pro")
    items = e2b_reference.items[:DEVICE_ITEMS]
    rep = verify_device(e2b_int8_bundle, tiny_e2b, items, phone.serial, reference_serial=ref_emu.serial,
                        runner=runner_file, settings=settings, open_device=TcpDevice)
    s = rep["summary"]
    assert rep["passed"], rep["gate_results"]
    assert s["device_agreement"] == 1.0 and s["prompts"] == DEVICE_ITEMS and s["first_divergences"] == []
    assert rep["reference"]["kind"] == "device" and rep["device"]["serial"] == phone.serial
    assert all(p["match"] and p["first_divergence"] is None for p in rep["per_prompt"])
    assert s["device_greedy_agreement"] is not None


@pytest.mark.slow
def test_device_verify_detects_a_device_running_another_model(emulator_factory, e2b_bundles, damaged_bundle, tiny_e2b,
                                                              runner_file, settings, e2b_reference, adb_keys_home):
    """The device's runner loads another model (exported from perturbed weights) whenever it is
    asked for the int8 one. (The int4 model would not do: on the trained tiny model its greedy
    continuations equal int8's, and the runner contract gives text only.)"""
    from on_device.runner import run_runner
    from sdk_tools.accuracy.verify import raise_on_failure, verify_device
    from sdk_tools.deploy import deploy
    from sdk_tools.devices.tcp import TcpDevice

    swap: dict[str, str] = {}

    def swapping_runner(argv, ctx):
        argv = [f"--model_path={swap.get(a.split('=', 1)[1], a.split('=', 1)[1])}" if a.startswith("--model_path=")
                else a for a in argv]
        return run_runner(argv, ctx)

    phone = emulator_factory("galaxy-s24", runner=swapping_runner)
    with TcpDevice(phone.serial) as dev:
        other = deploy(dev, damaged_bundle, runner=runner_file)
        int8 = deploy(dev, e2b_bundles["dynamic_wi8_afp32"], runner=runner_file)
    swap[str(int8.model_path)] = str(other.model_path)
    # Copying and sums are where the two models' greedy texts part (the first items of other kinds
    # agree); these 8 include two that differ.
    items = [it for it in load_eval() if it.kind in ("copy", "arithmetic")][:8]
    # reference: the host engine the emulator runs (no --reference-device)
    rep = verify_device(e2b_bundles["dynamic_wi8_afp32"], tiny_e2b, items, phone.serial, runner=runner_file,
                        settings=settings, reference=e2b_reference, open_device=TcpDevice)
    s = rep["summary"]
    assert rep["reference"]["kind"].startswith("host LiteRT-LM")
    assert s["device_agreement"] < 1.0 and not rep["passed"], rep["per_prompt"]
    bad = [p for p in rep["per_prompt"] if not p["match"]]
    assert bad and all(isinstance(p["first_divergence"], int) for p in bad)
    with pytest.raises(GateFailure, match="device_agreement"):
        raise_on_failure(rep)
