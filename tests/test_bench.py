"""Benchmarks on the reference emulator through ADB: the summary and results JSON, runner failures
(unparseable output, low-memory kill, not executable), a fleet of three with one stopped midway,
and end to end on a converted tiny bundle with the emulator's real runner."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from converters.bundle import manifest_hash
from gemma4_common.errors import UserError
from gemma4_common.shell import join
from on_device.runner_contract import RunnerInvocation
from gemma4_common.stats import percentile
from sdk_tools.bench import BenchSettings, bench, run_runner, summarize
from sdk_tools.deploy import deploy
from sdk_tools.devices.tcp import TcpDevice

from support.cli import cli
from support.deploy import DEV_DIR, fake_runner, make_bundle

pytestmark = pytest.mark.usefixtures("isolated_device_env")


def test_percentile_and_summary():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10.0], 90) == 10.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
    s = summarize([3.0, 1.0, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "p90": pytest.approx(2.8), "n": 3}
    with pytest.raises(UserError, match="--runs"):
        BenchSettings(runs=0).validate()


def test_bench_summary_and_results(emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("galaxy-s24", runner=fake_runner(decode=100.0, prefill=400.0))
    bundle = make_bundle(tmp_path)
    with TcpDevice(emu.serial) as dev:
        res = bench(dev, bundle, BenchSettings(prefill=32, decode=16, runs=3, warmup=1), runner=runner_file)
    assert len(res["warmup_runs"]) == 1 and len(res["runs"]) == 3
    decodes = [r["decode_tps"] for r in res["runs"]]
    assert decodes == [102.0, 103.0, 104.0]  # call n -> decode 100 + n; call 1 was the warmup
    assert res["summary"]["decode_tps"]["median"] == 103.0
    assert res["summary"]["decode_tps"]["p90"] == pytest.approx(103.8)
    assert res["summary"]["prefill_tps"]["min"] == 402.0
    assert res["bundle"]["manifest_hash"] == manifest_hash(bundle)
    assert res["device"]["model"] == "SM-S921U" and res["device"]["soc_model"] == "SM8650"
    assert res["settings"]["prefill"] == 32 and res["backend"] == "cpu"
    assert "--benchmark_prefill_tokens=32" in res["command"]
    # The thread count and the runner's exact command are recorded.
    assert res["threads"] is None and res["threads_source"] == "runner default"
    assert res["runner_command"] == res["command"] and "litert_lm_main" in res["runner_command"]
    json.dumps(res)  # serialisable as is
    with TcpDevice(emu.serial) as dev:
        res = bench(dev, bundle, BenchSettings(prefill=32, decode=16, runs=1, warmup=0, threads=2),
                    runner=runner_file)
    assert res["threads"] == 2 and res["threads_source"] == "--threads"
    assert "--num_cpu_threads=2" in res["runner_command"]


def _deployed(emu, tmp_path, runner_file):
    dev = TcpDevice(emu.serial)
    return dev, deploy(dev, make_bundle(tmp_path), runner=runner_file, device_dir=DEV_DIR)


def test_runner_failures(emulator_factory, tmp_path, runner_file):
    def garbage(argv, ctx):
        ctx.stdout(b"loading...\nsomething unexpected happened\nbye\n")
        return 0

    def lmk(argv, ctx):
        ctx.stderr(b"Killed\n")
        return 137

    inv = lambda d: RunnerInvocation(model_path=d.model_path, benchmark=True, prefill_tokens=8, decode_tokens=4)  # noqa: E731
    emu = emulator_factory("galaxy-s24", runner=garbage)
    dev, d = _deployed(emu, tmp_path, runner_file)
    with dev, pytest.raises(UserError) as ei:
        run_runner(dev, d, inv(d))
    assert "something unexpected happened | bye" in ei.value.one_line()

    emu2 = emulator_factory("galaxy-s24", runner=lmk)
    dev, d = _deployed(emu2, tmp_path, runner_file)
    with dev, pytest.raises(UserError, match="low-memory killer"):
        run_runner(dev, d, inv(d))

    emu3 = emulator_factory("galaxy-s24", runner=fake_runner())
    dev, d = _deployed(emu3, tmp_path, runner_file)
    with dev:
        assert run_runner(dev, d, inv(d)).decode_tps == 101.0
        dev.check_shell(join(["chmod", "644", str(d.runner_path)]), "chmod")
        with pytest.raises(UserError, match="missing or not executable"):
            run_runner(dev, d, inv(d))
        dev.check_shell(join(["rm", str(d.runner_path)]), "rm")
        with pytest.raises(UserError, match="missing or not executable"):
            run_runner(dev, d, inv(d))


def test_bench_npu_on_device_without_npu_model(emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("galaxy-s24", runner=fake_runner())
    with TcpDevice(emu.serial) as dev, pytest.raises(UserError, match="--backend npu is not available"):
        bench(dev, make_bundle(tmp_path), BenchSettings(backend="npu", runs=1, warmup=0), runner=runner_file)


def test_fleet_one_device_stops_midway(emulator_factory, tmp_path, runner_file):
    # All three must be inside their first run at once: proof that the fleet runs in parallel.
    barrier = threading.Barrier(3, timeout=20)
    emus = []

    def first_together(n):
        if n == 1:
            barrier.wait()

    def victim_call(n):
        first_together(n)
        if n == 2:  # stop this emulator in the middle of its second run
            threading.Timer(0.1, emus[1].stop).start()

    emus.append(emulator_factory("galaxy-s24", runner=fake_runner(delay=0.3, on_call=first_together)))
    emus.append(emulator_factory("pixel-8-pro", runner=fake_runner(delay=0.3, on_call=victim_call)))
    emus.append(emulator_factory("dimensity-9300", runner=fake_runner(delay=0.3, on_call=first_together)))
    bundle = make_bundle(tmp_path)
    out = tmp_path / "results"
    captured = cli("bench", bundle, "--device", ",".join(e.serial for e in emus), "--runs", "3", "--warmup", "0",
                   "--prefill", "8", "--decode", "4", "--runner", runner_file, "--out", out, "--json")
    assert captured.code == 2
    doc = json.loads(captured.out)
    assert set(doc["results"]) == {emus[0].serial, emus[2].serial}
    assert set(doc["failures"]) == {emus[1].serial}
    assert "offline" in doc["failures"][emus[1].serial]
    assert emus[1].serial in captured.err and len(captured.err.strip().splitlines()[-1:]) == 1
    files = sorted(out.glob("*.json"))
    assert len(files) == 2
    for f in files:
        data = json.loads(f.read_text())
        assert len(data["runs"]) == 3 and data["summary"]["decode_tps"]["n"] == 3


def test_bench_end_to_end_tiny_bundle(emulator, e2b_int8_bundle, tmp_path):
    """The emulator's real runner (LiteRT-LM on the host CPU) on a converted tiny Gemma 4 bundle."""
    runner = tmp_path / "litert_lm_main"
    assert cli("emulator", "runner", "-o", runner).code == 0
    out = tmp_path / "results"
    captured = cli("bench", e2b_int8_bundle, "--device", emulator.serial, "--prefill", "16", "--decode", "8",
                   "--runs", "2", "--warmup", "0", "--runner", runner, "--out", out, "--json")
    assert captured.code == 0, captured.err
    doc = json.loads(captured.out)
    summary = doc["results"][emulator.serial]
    data = json.loads(Path(summary["file"]).read_text())
    assert len(data["runs"]) == 2
    for r in data["runs"]:
        assert r["decode_tps"] > 0 and r["prefill_tps"] > 0 and r["ttft_s"] > 0 and r["peak_mem_mb"] > 0
    assert data["bundle"]["manifest_hash"] == manifest_hash(e2b_int8_bundle)
    assert data["summary"]["decode_tps"]["min"] <= data["summary"]["decode_tps"]["median"] <= \
        data["summary"]["decode_tps"]["max"]
    # Unparseable/unsupported: gpu on the emulator fails like a phone without a GPU delegate.
    res = cli("bench", e2b_int8_bundle, "--device", emulator.serial, "--backend", "gpu", "--runs", "1",
              "--warmup", "0", "--prefill", "8", "--decode", "4", "--runner", runner, "--out", out)
    err = res.err.strip().splitlines()
    assert res.code == 2 and err[-1].startswith("error: the runner failed") and "GPU" in err[-1]


def test_npu_deploy_and_bench_on_device_without_npu(emulator_factory, tmp_path, runner_file):
    """An NPU bundle for the device's SoC: model, config and dispatch libraries are pushed, the runner
    gets --backend=npu and the dispatch dir, and the emulator (no NPU) fails as such a phone does."""
    from converters.bundle import write_manifest
    from converters.npu.catalog import get_soc

    soc = get_soc("qualcomm", "SM8650")
    bundle = make_bundle(tmp_path)
    npu_dir = bundle / "npu" / "qualcomm_SM8650"
    npu_dir.mkdir(parents=True)
    (npu_dir / "model.litertlm").write_bytes(b"npu model" * 1000)
    (npu_dir / "config.json").write_text("{}")
    write_manifest(bundle, {"name": "synthetic", "variant": "e2b", "recipe": {"name": "int8"},
                            "npu": {"targets": [{"vendor": "qualcomm", "soc": "SM8650", "status": "compiled",
                                                 "model": "npu/qualcomm_SM8650/model.litertlm",
                                                 "config": "npu/qualcomm_SM8650/config.json"}]}})
    libs = tmp_path / "libs"
    libs.mkdir()
    for name in soc.dispatch_libs:
        (libs / name).write_bytes(b"\x7fELF" + name.encode())
    emu = emulator_factory("galaxy-s24")  # the real emulator runner
    with TcpDevice(emu.serial) as dev:
        d = deploy(dev, bundle, runner=runner_file, dispatch_lib_dir=libs, backend="npu", device_dir=DEV_DIR)
        assert d.backend == "npu" and d.model_path.name == "model.litertlm" and "npu" in str(d.model_path)
        assert {f.kind for f in d.files} == {"runner", "model", "config", "dispatch_lib", "manifest"}
        rc, out, _ = dev.shell(join(["ls", str(d.dispatch_dir)]))
        assert set(out.split()) == set(soc.dispatch_libs)
        with pytest.raises(UserError) as ei:
            bench(dev, bundle, BenchSettings(backend="npu", runs=1, warmup=0, prefill=8, decode=4),
                  runner=runner_file, dispatch_lib_dir=libs)
    msg = ei.value.one_line()
    assert "backend npu" in msg and "no NPU device" in msg and "dispatch libraries" in msg
