"""`adb shell true` latency of the reference emulator with Debian's adb: 100 sequential calls
against the emulator running Android's real userland (mksh + toybox in bubblewrap), next to the
same calls against the built-in interpreter, same run, as a ratio.

    python benchmarks/shell_latency.py [--calls 100] [--profile galaxy-s24]

Goal (issue 14): median <= 25 ms with the real userland."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import adb_server, clean_env, free_port, require_adb, scratch_dir  # noqa: E402


def _median_ms(adb, serial: str, calls: int) -> tuple[float, float]:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        r = adb("-s", serial, "shell", "true")
        times.append((time.perf_counter() - t) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"error: adb shell true failed: {r.stdout.decode()}{r.stderr.decode()}")
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--profile", default="galaxy-s24")
    a = ap.parse_args()
    adb_bin = require_adb()
    if adb_bin is None:
        return 2
    from on_device.emulator import manager

    results = {}
    with scratch_dir("g4m-shell-latency-") as work:
        (work / "adbhome").mkdir()
        env = clean_env(HOME=str(work / "adbhome"), ANDROID_ADB_SERVER_PORT=str(free_port()))
        for userland in ("android", "interpreter"):
            rec = manager.start(profile=a.profile, userland=userland)
            try:
                with adb_server(adb_bin, env, rec.serial) as adb:
                    _median_ms(adb, rec.serial, 5)  # warm-up
                    results[userland] = _median_ms(adb, rec.serial, a.calls)
            finally:
                manager.stop(rec.id)
    (m_a, p_a), (m_i, p_i) = results["android"], results["interpreter"]
    print(f"adb shell true, {a.calls} sequential calls (Debian adb)")
    print(f"android userland (mksh+toybox, bwrap):  median {m_a:6.1f} ms  p90 {p_a:6.1f} ms")
    print(f"built-in interpreter:                   median {m_i:6.1f} ms  p90 {p_i:6.1f} ms")
    print(f"ratio android / interpreter:            {m_a / m_i:6.2f}x   (goal: android median <= 25 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
