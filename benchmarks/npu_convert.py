"""Wall time of `convert --npu` (to the SDK boundary: split-cache export, calibration, a16w8
quantization, compile-ready model) against the plain CPU conversion of the same checkpoint and
recipe, measured in the same run, each in its own process, alternating to even out machine load.

    .venv/bin/python benchmarks/npu_convert.py [--model e2b-tiny] [--repeats 1] [--cache-length 512]

Rows: plain CPU, + one Qualcomm SoC, + one MediaTek SoC, + both (each vendor's KV layout is its
own export). The goal compares each single-vendor row to the plain one (ratio < 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import clean_env, g4m_command, run_timed, scratch_dir  # noqa: E402

CASES = {
    "plain CPU (dynamic_wi8_afp32)": [],
    "+ --npu qualcomm:SM8750": ["--npu", "qualcomm:SM8750"],
    "+ --npu mediatek:MT6991": ["--npu", "mediatek:MT6991"],
    "+ both vendors": ["--npu", "qualcomm:SM8750,mediatek:MT6991"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="e2b-tiny")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cache-length", default="512")
    args = ap.parse_args()
    from sdk_tools.tinymodels.build import build_tiny

    ckpt = build_tiny(args.model)
    env = clean_env()
    times: dict[str, list[float]] = {k: [] for k in CASES}
    with scratch_dir(".g4m-npu-bench-") as tmp:
        for i in range(args.repeats):
            for j, (label, extra) in enumerate(CASES.items()):
                out = tmp / f"r{i}-{j}"
                cmd = [*g4m_command(), "convert", str(ckpt), "-o", str(out), "--recipe", "dynamic_wi8_afp32",
                       "--prefill", "32", "--cache-length", args.cache_length, "--json", *extra]
                times[label].append(run_timed(cmd, env, what=label)[0])
    base = statistics.median(times["plain CPU (dynamic_wi8_afp32)"])
    print(f"checkpoint {ckpt.name}, cache {args.cache_length}, {args.repeats} run(s) each, median wall time")
    for label, ts in times.items():
        t = statistics.median(ts)
        print(f"{label:<32} {t:7.1f} s   ratio to plain CPU {t / base:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
