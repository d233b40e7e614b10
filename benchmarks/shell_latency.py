"""`adb shell true` latency of the reference emulator (Android's mksh + toybox in bubblewrap) with
Debian's adb: 100 sequential calls, next to the same adb client's own round trip to its server that
never reaches the device (`adb -s SERIAL get-serialno`), same run, as a ratio: what the device side
adds on top of what any `adb` call costs.

    python benchmarks/shell_latency.py [--calls 100] [--profile galaxy-s24]

Goal (issue 14): median `adb shell true` <= 25 ms.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import adb_server, clean_env, free_port, require_adb, scratch_dir  # noqa: E402


def _median_ms(adb, serial: str, calls: int, *args: str) -> tuple[float, float]:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        r = adb("-s", serial, *args)
        times.append((time.perf_counter() - t) * 1000)
        if r.returncode != 0:
            raise SystemExit(f"error: adb {' '.join(args)} failed: {r.stdout.decode()}{r.stderr.decode()}")
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

    with scratch_dir("g4m-shell-latency-") as work:
        (work / "adbhome").mkdir()
        env = clean_env(HOME=str(work / "adbhome"), ANDROID_ADB_SERVER_PORT=str(free_port()))
        rec = manager.start(profile=a.profile)
        try:
            with adb_server(adb_bin, env, rec.serial) as adb:
                _median_ms(adb, rec.serial, 5, "shell", "true")  # warm-up
                m_s, p_s = _median_ms(adb, rec.serial, a.calls, "shell", "true")
                m_c, p_c = _median_ms(adb, rec.serial, a.calls, "get-serialno")
        finally:
            manager.stop(rec.id)
    print(f"adb shell true, {a.calls} sequential calls (Debian adb)")
    print(f"emulator (mksh+toybox, bwrap):        median {m_s:6.1f} ms  p90 {p_s:6.1f} ms   (goal: median <= 25 ms)")
    print(f"adb get-serialno (client+server only): median {m_c:6.1f} ms  p90 {p_c:6.1f} ms")
    print(f"ratio shell / client-only:             {m_s / m_c:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
