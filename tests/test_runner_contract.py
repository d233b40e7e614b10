"""The device-side runner contract: its command line and output lines, and the emulator's runner
executing it for real (LiteRT-LM on a converted tiny bundle) over ADB, including the failures a
phone shows: no NPU dispatch library, no GPU accelerator, low-memory kill, bad flags."""

from __future__ import annotations

import dataclasses
from pathlib import PurePosixPath

import pytest

from gemma4_common.shell import join
from on_device.emulator import EmulatorConfig, EmulatorServer, load_profile
from on_device.runner_contract import (EXIT_LMK_KILLED, RunnerInvocation, RunnerOutputError, RunnerResult,
                                       build_argv, format_result, parse_flags, parse_output)
from sdk_tools.deploy import deploy
from sdk_tools.devices.tcp import TcpDevice

DEV_DIR = PurePosixPath("/data/local/tmp/g4m-contract")


def test_flags_round_trip():
    inv = RunnerInvocation(model_path="/data/local/tmp/m.litertlm", backend="npu", benchmark=True,
                           prefill_tokens=256, decode_tokens=128, dispatch_lib_dir="/data/local/tmp/d",
                           num_threads=4, input_prompt="hi there", apply_prompt_template=False,
                           max_output_tokens=32, seed=3)
    argv = build_argv("/data/local/tmp/litert_lm_main", inv)
    assert argv[1:3] == ["--backend=npu", "--model_path=/data/local/tmp/m.litertlm"]
    assert "--benchmark_prefill_tokens=256" in argv and "--report_peak_memory_footprint" in argv
    assert parse_flags(argv[1:]) == inv
    with pytest.raises(ValueError, match="unknown flag --bogus"):
        parse_flags(["--model_path=x", "--bogus=1"])
    with pytest.raises(ValueError, match="backend"):
        parse_flags(["--model_path=x", "--backend=tpu"])


def test_output_round_trip_and_errors():
    r = RunnerResult(init_s=0.5, ttft_s=0.02, prefill_tps=1234.5, decode_tps=67.25, peak_mem_mb=321.0,
                     response="line one\nline two")
    assert parse_output(format_result(r), expect_benchmark=True, expect_response=True) == r
    # litert_lm_main reports milliseconds in some builds; both parse
    assert parse_output("Time to first token: 250 ms\n").ttft_s == pytest.approx(0.25)
    with pytest.raises(RunnerOutputError, match=r"last lines: loading model \| Segmentation fault"):
        parse_output("loading model\nSegmentation fault\n", expect_benchmark=True)


@pytest.fixture
def device_with_bundle(device, e2b_int8_bundle, tmp_path):
    from on_device.runner_contract import emulator_runner_bytes

    runner = tmp_path / "litert_lm_main"
    runner.write_bytes(emulator_runner_bytes())
    dep = deploy(device, e2b_int8_bundle, runner=runner, device_dir=DEV_DIR)
    return device, dep


def _run(dev, dep, inv: RunnerInvocation, env: str = ""):
    return dev.shell(env + join(build_argv(dep.runner_path, inv)))


def test_benchmark_over_adb_shell(device_with_bundle):
    dev, dep = device_with_bundle
    rc, out, err = _run(dev, dep, RunnerInvocation(model_path=dep.model_path, benchmark=True, prefill_tokens=64,
                                                   decode_tokens=16))
    assert rc == 0, err
    r = parse_output(out, expect_benchmark=True)
    assert r.prefill_tps > 0 and r.decode_tps > 0 and r.ttft_s > 0 and r.peak_mem_mb > 10


def test_generation_over_adb_shell_matches_host(device_with_bundle, e2b_int8_bundle):
    from gemma4_common.gemma4_format import STOP_SEQUENCES, Message, render_prompt
    from on_device.engine import HostEngine

    dev, dep = device_with_bundle
    prompt = render_prompt([Message("user", "What is the capital of France?")], add_bos=False)
    rc, out, err = _run(dev, dep, RunnerInvocation(model_path=dep.model_path, input_prompt=prompt,
                                                   apply_prompt_template=False, max_output_tokens=24))
    assert rc == 0, err
    device_text = parse_output(out, expect_response=True).response
    with HostEngine(e2b_int8_bundle / "model.litertlm", max_num_tokens=1024) as eng:
        host_text = eng.generate(prompt, 24, stop=STOP_SEQUENCES).text
    assert device_text == host_text
    assert device_text.startswith("The capital of France is")


def test_npu_and_gpu_fail_like_a_phone_without_them(device_with_bundle):
    dev, dep = device_with_bundle
    rc, out, err = _run(dev, dep, RunnerInvocation(model_path=dep.model_path, backend="npu", benchmark=True,
                                                   dispatch_lib_dir=DEV_DIR / "dispatch"))
    assert rc == 1 and "dispatch library" in err and "libLiteRtDispatch_" in err
    rc, out, err = _run(dev, dep, RunnerInvocation(model_path=dep.model_path, backend="gpu", benchmark=True))
    assert rc == 1 and "GPU" in err


def test_bad_flags_and_missing_model(device_with_bundle):
    dev, dep = device_with_bundle
    rc, _, err = dev.shell(join([str(dep.runner_path), "--model_path=/x", "--no_such_flag"]))
    assert rc == 2 and "unknown flag" in err
    rc, _, err = _run(dev, dep, RunnerInvocation(model_path=DEV_DIR / "missing.litertlm", benchmark=True))
    assert rc == 1 and "NOT_FOUND" in err


def test_low_memory_killer(e2b_int8_bundle, tmp_path):
    """A phone whose app RAM budget is below what the model needs kills the runner (SIGKILL, 137)."""
    from on_device.runner_contract import emulator_runner_bytes

    # above the model file (2 MB), below the process
    profile = dataclasses.replace(load_profile("galaxy-s24"), ram_budget_bytes=24 << 20)
    server = EmulatorServer(EmulatorConfig(profile=profile, root=tmp_path / "root"))
    server.start()
    try:
        runner = tmp_path / "litert_lm_main"
        runner.write_bytes(emulator_runner_bytes())
        with TcpDevice(server.serial) as dev:
            dep = deploy(dev, e2b_int8_bundle, runner=runner, device_dir=DEV_DIR)
            rc, out, err = _run(dev, dep, RunnerInvocation(model_path=dep.model_path, benchmark=True,
                                                           prefill_tokens=32, decode_tokens=8))
        assert rc == EXIT_LMK_KILLED
        assert "Killed" in err
    finally:
        server.stop()
