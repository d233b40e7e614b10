"""Overhead of benchmarking through the device path: decode (and prefill) tok/s reported by
`gemma4-mobile bench` through the reference emulator next to LiteRT-LM's own benchmark run
directly on the host (`on_device.engine.benchmark`, a fresh process per run as the device runner
gets), same bundle, same settings, same run.

    python benchmarks/bench_overhead.py [--bundle DIR] [--prefill 128 --decode 64 --runs 5 --warmup 1]

Without --bundle it uses the tiny e2b int8 bundle the tests build (cached under
~/.cache/gemma4-mobile). The two sides alternate so that load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--profile", default="galaxy-s24")
    a = ap.parse_args()

    if a.bundle is None:
        from sdk_tools.tinymodels.build import build_tiny, cached_bundles

        a.bundle = cached_bundles(build_tiny("e2b-tiny"), ["fp32", "dynamic_wi8_afp32", "dynamic_wi4b32_afp32"])[
            "dynamic_wi8_afp32"]
    from converters.bundle import read_manifest

    model = a.bundle / read_manifest(a.bundle)["main_model"]
    work = Path(tempfile.mkdtemp(prefix="g4m-bench-overhead-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_", "G4M_"))}
    env.update(GEMMA4_MOBILE_HOME=str(work / "g4m"), ANDROID_USER_HOME=str(work / "android"),
               ANDROID_ADB_SERVER_PORT="1")
    os.environ["GEMMA4_MOBILE_HOME"] = env["GEMMA4_MOBILE_HOME"]
    from on_device.emulator import manager
    from on_device.runner_contract import emulator_runner_bytes

    exe = Path(sys.executable).parent / "gemma4-mobile"
    g4m = [str(exe)] if exe.exists() else [sys.executable, "-m", "sdk_tools.cli.app"]
    rec = None
    try:
        runner = work / "litert_lm_main"
        runner.write_bytes(emulator_runner_bytes())
        rec = manager.start(profile=a.profile)
        print(f"emulator {rec.serial} ({a.profile}); bundle {a.bundle}; prefill {a.prefill}, decode {a.decode}, "
              f"{a.runs} runs after {a.warmup} warmup")

        def device_side(runs: int, warmup: int) -> list[dict]:
            out = work / "results"
            r = subprocess.run([*g4m, "bench", str(a.bundle), "--device", rec.serial, "--prefill", str(a.prefill),
                                "--decode", str(a.decode), "--runs", str(runs), "--warmup", str(warmup),
                                "--runner", str(runner), "--out", str(out), "--json"],
                               env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=1800, cwd=ROOT)
            if r.returncode != 0:
                raise SystemExit(f"error: gemma4-mobile bench failed: {r.stderr.decode()[-2000:]}")
            path = json.loads(r.stdout)["results"][rec.serial]["file"]
            return json.loads(Path(path).read_text())["runs"]

        def host_side() -> dict:
            # A fresh process per run, as the device runner gets, so that neither side inherits state
            # (thread pools of libraries this script imported) from the other.
            code = ("import json,sys; from on_device.engine import benchmark; "
                    "s = benchmark(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "
                    "max_num_tokens=int(sys.argv[2]) + int(sys.argv[3]) + 8); "
                    "print(json.dumps({'decode_tps': s.decode_tps, 'prefill_tps': s.prefill_tps, 'ttft_s': s.ttft_s}))")
            r = subprocess.run([sys.executable, "-c", code, str(model), str(a.prefill), str(a.decode)], env=env,
                               capture_output=True, stdin=subprocess.DEVNULL, timeout=1800, cwd=ROOT)
            if r.returncode != 0:
                raise SystemExit(f"error: host benchmark failed: {r.stderr.decode()[-2000:]}")
            return json.loads(r.stdout.decode().strip().splitlines()[-1])

        device_side(1, 0)  # deploy once; the measured calls find everything unchanged
        for _ in range(a.warmup):
            host_side()
        dev_runs, host_runs = [], []
        for _ in range(a.runs):  # alternate: one device run, one host run
            dev_runs += device_side(1, 0)
            host_runs.append(host_side())

        def med(runs: list[dict], k: str) -> float:
            return statistics.median(r[k] for r in runs)

        for key, name in (("decode_tps", "decode tok/s"), ("prefill_tps", "prefill tok/s")):
            d, h = med(dev_runs, key), med(host_runs, key)
            print(f"{name:<14} gemma4-mobile bench via emulator: {d:10.1f}   LiteRT-LM benchmark on host: {h:10.1f}"
                  f"   ratio {d / h:.3f}")
        d, h = med(dev_runs, "ttft_s"), med(host_runs, "ttft_s")
        print(f"{'TTFT s':<14} gemma4-mobile bench via emulator: {d:10.4f}   LiteRT-LM benchmark on host: {h:10.4f}"
              f"   ratio {d / h:.3f}")
        return 0
    finally:
        if rec is not None:
            manager.stop(rec.id)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
