"""The lean conversion path (converters.lean) on real-shape Gemma 4 checkpoints scaled down.

The checkpoint keeps E2B's published structure (head dims 256/512, 8/1 heads, per-layer embeddings
256 wide, KV sharing, double-wide MLP) with the widths and vocabulary divided by 24 and 2 layers,
written by the realsize benchmark's own writer (random bf16 weights)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO
from support.cli import assert_error_after_progress, assert_one_line_error, cli, cli_popen
from support.files import leftovers

SCALE = 1 / 24
TEXTS = [("The capital of France is", " Paris."), ("Copy: abc def", " abc def"), ("hello", " world, how are you")]


@pytest.fixture(scope="module")
def realshape(tmp_path_factory) -> Path:
    # the benchmark's own checkpoint writer, loaded from its file (benchmarks/ is not a package)
    spec = importlib.util.spec_from_file_location("realsize_convert", REPO / "benchmarks" / "realsize_convert.py")
    rc = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))  # dataclasses look it up there
    spec.loader.exec_module(rc)
    out = tmp_path_factory.mktemp("realshape") / "e2b-2L"
    rc.write_checkpoint(rc.text_config("e2b", 2, SCALE), out)
    return out


@pytest.fixture(scope="module")
def both_bundles(realshape, tmp_path_factory) -> dict[str, Path]:
    """The same checkpoint converted to float bundles by the default and the lean path."""
    root = tmp_path_factory.mktemp("both")
    out = {}
    for conv in ("default", "lean"):
        res = cli("convert", realshape, "-o", root / conv, "-r", "fp32", "--prefill", "32", "--cache-length", "256",
                  "--converter", conv, "--json")
        assert res.code == 0, res.err
        out[conv] = root / conv
    return out


def _scores(bundle: Path) -> list[list[float]]:
    from on_device.engine import HostEngine

    with HostEngine(bundle / "model.litertlm") as eng:
        return [eng.score(p, t) for p, t in TEXTS]


@pytest.mark.slow
def test_lean_bundle_matches_default_path(both_bundles):
    """Same weights, same float recipe: the lean bundle's log-probs equal the default path's."""
    lean, default = (json.loads((both_bundles[c] / "manifest.json").read_text()) for c in ("lean", "default"))
    assert lean["export"]["converter"] == "lean" and default["export"]["converter"] == "default"
    kinds = {s["model_type"] for s in lean["sections"]}
    assert {"tf_lite_prefill_decode", "tf_lite_embedder", "tf_lite_per_layer_embedder"} <= kinds
    assert {"export decoder", "embedder fp32", "per_layer_embedder fp32"} <= set(lean["export"]["lean_stages"])
    a, b = _scores(both_bundles["lean"]), _scores(both_bundles["default"])
    assert [len(x) for x in a] == [len(x) for x in b]
    delta = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    assert delta < 2e-3, (delta, a, b)


@pytest.mark.slow
def test_lean_bundle_size_matches_planner(both_bundles, realshape):
    from converters import planner

    p = planner.plan(str(realshape), "fp32", 256, prefill=32, converter="lean")
    real = (both_bundles["lean"] / "model.litertlm").stat().st_size
    assert abs(real / p.bundle_bytes - 1) < 0.03, (real, p.bundle_bytes, p.bundle_sections)


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["dynamic_wi4b32_afp32", "dynamic_wi8_afp32"])
def test_table_chunks_equal_whole_table(realshape, tmp_path, recipe):
    """Quantizing the per-layer embedding table chunk by chunk gives the bytes of quantizing it whole."""
    from converters import lean
    from converters.export import ExportOptions

    kw = dict(ExportOptions(prefill_lengths=[32], cache_length=256).kwargs(), experimental_lightweight_conversion=True)
    outs = []
    for chunk in (1 << 30, 1000):  # one chunk (the whole table: what ai-edge-quantizer alone makes), and 11
        work = tmp_path / str(chunk)
        work.mkdir()
        res = lean.stage_table({"checkpoint": str(realshape), "work": str(work), "section": lean.PER_LAYER_EMBEDDER,
                                "recipe": recipe, "export_kwargs": kw, "chunk_rows": chunk})
        outs.append(Path(res["path"]).read_bytes())
    assert res["chunks"] == 11
    assert outs[0] == outs[1]


def test_convert_picks_the_path_plan_names(realshape, monkeypatch):
    from converters import pipeline, planner

    e2b = planner.plan("e2b", "dynamic_wi4b32_afp32", 4096)
    assert e2b.converter == "lean" and e2b.conversion_host_bytes_lean < 16 * 2**30 < e2b.conversion_host_bytes
    info = pipeline.inspect_checkpoint(realshape)
    req = pipeline.ConvertRequest(checkpoint=realshape, out_dir=Path("/nonexistent"))
    for ram, want in ((64 * 2**30, "default"), (planner.conversion_memory_bytes(info.num_parameters), "lean")):
        monkeypatch.setattr(planner, "host_ram_bytes", lambda ram=ram: ram)
        assert pipeline.choose_converter(req, info) == want
        assert planner.plan(str(realshape), "fp32", 256).converter == want
    req.vision = True  # the lean path exports text only: never chosen, and refused when forced
    assert pipeline.choose_converter(req, info) == "default"


def test_not_enough_ram_for_the_lean_path(realshape, tmp_path, monkeypatch):
    from converters import planner

    monkeypatch.setattr(planner, "host_ram_bytes", lambda: 256 << 20)
    res = cli("convert", realshape, "-o", tmp_path / "out", "--converter", "lean", "-r", "fp32")
    assert_one_line_error(res, "with the lean converter", "GiB of RAM", "--ignore-memory-check")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_not_enough_disk_for_scratch(realshape, tmp_path, monkeypatch):
    import shutil as shutil_mod

    from converters import pipeline, planner

    need = planner.scratch_disk_bytes(planner.load_shape(str(realshape)), ["fp32"], converter="lean")
    real = shutil_mod.disk_usage
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: real(p)._replace(free=need - 1))
    res = cli("convert", realshape, "-o", tmp_path / "out", "--converter", "lean", "-r", "fp32")
    assert_one_line_error(res, f"~{need / 1e9:.1f} GB of free disk", "free disk space")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def _stage_pids(root_pid: int) -> list[int]:
    """Descendants of root_pid running a lean stage (python -m converters.lean ...)."""
    out, stack = [], [root_pid]
    while stack:
        p = stack.pop()
        try:
            kids = [int(k) for t in os.listdir(f"/proc/{p}/task")
                    for k in Path(f"/proc/{p}/task/{t}/children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            try:
                if b"converters.lean" in Path(f"/proc/{k}/cmdline").read_bytes():
                    out.append(k)
            except OSError:
                pass
            stack.append(k)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["stage", "parent"])
def test_killed_conversion_leaves_nothing(realshape, tmp_path, victim):
    """SIGKILL of a stage process: one-line error, exit 2. SIGTERM of the CLI: the stages die with it.
    Either way no bundle, no scratch, and a rerun starts clean."""
    out = tmp_path / "out"
    proc = cli_popen("convert", realshape, "-o", out, "-r", "fp32", "--converter", "lean")
    deadline = time.time() + 240
    stages: list[int] = []
    while time.time() < deadline and not stages and proc.poll() is None:
        stages = _stage_pids(proc.pid)
        time.sleep(0.2)
    assert stages, "no lean stage process started"
    time.sleep(1)
    if victim == "stage":
        os.kill(stages[0], signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if victim == "stage":
        assert_error_after_progress(subprocess.CompletedProcess([], proc.returncode, "", err), "killed by signal 9")
    else:
        assert proc.returncode == 130, err
    time.sleep(0.5)
    for pid in stages:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_litert_torch_private_details():
    """What converters.lean relies on in litert-torch 0.10.0; an upgrade that changes it fails here."""
    import transformers
    from litert_torch.generative.export_hf.core import exportable_module, weights_loader
    from litert_torch.generative.export_hf.model_ext import exportables
    from litert_torch.generative.export_hf.model_ext.gemma4 import exportable_module as g4

    from converters.presets import get_preset

    tc = {k: v for k, v in get_preset("e2b")["text_config"].items() if k != "model_type"}
    cfg = transformers.Gemma4Config(text_config=tc, vision_config=None, audio_config=None)
    ecfg = exportable_module.ExportableModuleConfig(model="x", externalize_embedder=True, prefill_lengths=[32],
                                                    cache_length=256)
    assert exportables.get_prefill_decode_exportables(cfg, ecfg) == (
        g4.LiteRTExportableModuleForDecoderOnlyLMPrefillExternalEmbedder,
        g4.LiteRTExportableModuleForDecoderOnlyLMGenerateExternalEmbedder)
    assert exportables.get_additional_exportables(cfg) == {
        "per_layer_embedder": g4.LiteRTExportableModuleForPerLayerEmbedder}
    assert set(g4.LiteRTExportableModuleForPerLayerEmbedder.get_sample_inputs(cfg.text_config, ecfg)) == {
        "decode_per_layer_embedder", "prefill_per_layer_embedder_32"}
    # converters.lean adds Gemma 4's final logit soft-capping, which this decode module skips
    import inspect

    assert "softcap" not in inspect.getsource(g4.LiteRTExportableModuleForDecoderOnlyLMGenerateExternalEmbedder.forward)
    assert callable(weights_loader.init_params_on_meta)
    assert hasattr(transformers.Gemma4TextModel, "get_per_layer_inputs")
