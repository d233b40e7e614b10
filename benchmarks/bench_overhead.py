"""Overhead of benchmarking through the device path: decode (and prefill) tok/s reported by
`gemma4-mobile bench` through the reference emulator next to LiteRT-LM's own CLI, `litert-lm
benchmark`, run directly on the host (what a user would compare with), and next to LiteRT-LM's
Python benchmark in a fresh process without a warm-up run (the shape of one device runner call);
same bundle, same prefill/decode, same thread setting, alternating runs in one script.

    python benchmarks/bench_overhead.py [--bundle DIR] [--prefill 32 --decode 128 --runs 5 --warmup 1]

Without --bundle it uses the tiny e2b int8 bundle the tests build (cached under
~/.cache/gemma4-mobile). The two sides alternate so that load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import background_emulator, clean_env, g4m_command, run_timed, scratch_dir  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--prefill", type=int, default=32)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads for every side (default: LiteRT-LM's)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--profile", default="galaxy-s24")
    a = ap.parse_args()

    if a.bundle is None:
        from sdk_tools.tinymodels.build import build_tiny, cached_bundles

        a.bundle = cached_bundles(build_tiny("e2b-tiny"), ["fp32", "dynamic_wi8_afp32", "dynamic_wi4c_afp32"])[
            "dynamic_wi8_afp32"]
    from converters.bundle import read_manifest

    model = a.bundle / read_manifest(a.bundle)["main_model"]
    g4m = g4m_command()
    with scratch_dir("g4m-bench-overhead-") as work:
        env = clean_env(("ANDROID_", "ADB_", "G4M_", "GEMMA4_MOBILE_"), GEMMA4_MOBILE_HOME=str(work / "g4m"),
                        ANDROID_USER_HOME=str(work / "android"), ANDROID_ADB_SERVER_PORT="1")
        os.environ["GEMMA4_MOBILE_HOME"] = env["GEMMA4_MOBILE_HOME"]
        from on_device.runner_contract import emulator_runner_bytes

        runner = work / "litert_lm_main"
        runner.write_bytes(emulator_runner_bytes())
        with background_emulator(a.profile) as rec:
            print(f"emulator {rec.serial} ({a.profile}); bundle {a.bundle}; prefill {a.prefill}, decode {a.decode}, "
                  f"{a.runs} runs after {a.warmup} warmup")

            def device_side(runs: int, warmup: int) -> list[dict]:
                out = work / "results"
                _, r = run_timed([*g4m, "bench", str(a.bundle), "--device", rec.serial, "--prefill", str(a.prefill),
                                  "--decode", str(a.decode), "--runs", str(runs), "--warmup", str(warmup),
                                  "--runner", str(runner), "--out", str(out), "--json",
                                  *(["--threads", str(a.threads)] if a.threads else [])], env,
                                 what="gemma4-mobile bench")
                path = json.loads(r.stdout)["results"][rec.serial]["file"]
                res = json.loads(Path(path).read_text())
                commands.add(f"{res['runner_command']}  (threads: {res['threads_source']})")
                return res["runs"]

            cli = Path(sys.executable).with_name("litert-lm")

            def cli_side() -> dict:
                # `litert-lm benchmark` as a user runs it: its own warm-up run, then the measured one.
                _, r = run_timed([str(cli), "benchmark", str(model), "-p", str(a.prefill), "-d", str(a.decode),
                                  *(["--cpu-thread-count", str(a.threads)] if a.threads else [])], env,
                                 what="litert-lm benchmark")
                text = r.stdout.decode() + r.stderr.decode()
                got = {}
                for key, label in (("prefill_tps", "Prefill speed"), ("decode_tps", "Decode speed"),
                                   ("ttft_s", "Time to first token")):
                    for line in text.splitlines():
                        if line.strip().startswith(label):
                            got[key] = float(line.split(":", 1)[1].split()[0])
                return got

            def host_side() -> dict:
                # A fresh process per run, as the device runner gets, so that neither side inherits state
                # (thread pools of libraries this script imported) from the other.
                code = ("import json,sys; from on_device.engine import benchmark; "
                        "s = benchmark(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), "
                        "max_num_tokens=int(sys.argv[2]) + int(sys.argv[3]) + 8, "
                        "threads=(int(sys.argv[4]) or None)); "
                        "print(json.dumps({'decode_tps': s.decode_tps, 'prefill_tps': s.prefill_tps, "
                        "'ttft_s': s.ttft_s}))")
                _, r = run_timed([sys.executable, "-c", code, str(model), str(a.prefill), str(a.decode),
                                  str(a.threads or 0)], env,
                                 what="host benchmark")
                return json.loads(r.stdout.decode().strip().splitlines()[-1])

            commands: set[str] = set()
            device_side(1, 0)  # deploy once; the measured calls find everything unchanged
            for _ in range(a.warmup):
                host_side()
                cli_side()
            dev_runs, host_runs, cli_runs = [], [], []
            for _ in range(a.runs):  # alternate: device, CLI, fresh-process API
                dev_runs += device_side(1, 0)
                cli_runs.append(cli_side())
                host_runs.append(host_side())

            print("runner command: " + "; ".join(sorted(commands)))
            for key, name, f in (("decode_tps", "decode tok/s", "9.1f"), ("prefill_tps", "prefill tok/s", "9.1f")):
                d = statistics.median(r[key] for r in dev_runs)
                c = statistics.median(r[key] for r in cli_runs if key in r)
                h = statistics.median(r[key] for r in host_runs)
                print(f"{name:<14} gemma4-mobile bench via emulator {d:{f}} | `litert-lm benchmark` on host {c:{f}}"
                      f" ratio {d / c:.3f} | fresh-process LiteRT-LM benchmark, no warm-up {h:{f}} ratio {d / h:.3f}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
