"""Push throughput to the reference emulator: Debian's `adb push` next to adb-shell's push, same run.

    python benchmarks/adb_push.py [--size-mib 256] [--repeat 1]

Starts an emulator as a background process (as `gemma4-mobile emulator start` does) and a private
adb server, pushes one random file with each client, checks the sha256 on the device, and prints
MB/s for both and their ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (adb_server, background_emulator, clean_env, free_port,  # noqa: E402
                                require_adb, scratch_dir)
from gemma4_common.fsutil import sha256_file  # noqa: E402


def _best_seconds(repeat: int, push, check) -> float:
    """The shortest wall time of `repeat` calls of push(), each followed by an untimed check()."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        push()
        best = min(best, time.perf_counter() - t0)
        check()
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1, help="pushes per client; the best is reported")
    ap.add_argument("--profile", default="galaxy-s24")
    a = ap.parse_args()
    adb_bin = require_adb()
    if adb_bin is None:
        return 2

    with scratch_dir("g4m-push-bench-") as work:
        os.environ["GEMMA4_MOBILE_HOME"] = str(work / "home")
        env = clean_env(HOME=str(work / "adbhome"), ANDROID_ADB_SERVER_PORT=str(free_port()))
        (work / "adbhome").mkdir()
        src = work / "payload.bin"
        with open(src, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(1 << 20))
        size = src.stat().st_size
        digest = sha256_file(src)
        with background_emulator(a.profile) as rec, adb_server(adb_bin, env, rec.serial) as adb:
            print(f"emulator {rec.serial} ({a.profile}), file {a.size_mib} MiB")

            def check(path: str) -> None:
                r = adb("-s", rec.serial, "shell", "sha256sum", path)
                got = r.stdout.decode().split()[0] if r.stdout else ""
                if got != digest:
                    raise SystemExit(f"error: {path} on the device has sha256 {got!r}, expected {digest}")

            def adb_push() -> None:
                r = adb("-s", rec.serial, "push", str(src), "/data/local/tmp/bench_adb.bin")
                if r.returncode != 0:
                    raise SystemExit(f"error: adb push failed: {r.stdout.decode()}{r.stderr.decode()}")

            best_adb = _best_seconds(a.repeat, adb_push, lambda: check("/data/local/tmp/bench_adb.bin"))
            adb("-s", rec.serial, "shell", "rm", "/data/local/tmp/bench_adb.bin")

            from adb_shell.adb_device import AdbDeviceTcp

            dev = AdbDeviceTcp("127.0.0.1", rec.port, default_transport_timeout_s=60)
            dev.connect(rsa_keys=None, auth_timeout_s=10)
            best_py = _best_seconds(
                a.repeat, lambda: dev.push(str(src), "/data/local/tmp/bench_adbshell.bin", read_timeout_s=900),
                lambda: check("/data/local/tmp/bench_adbshell.bin"))
            dev.close()

            mb = size / 1e6
            r_adb, r_py = mb / best_adb, mb / best_py
            version = re.search(r"Version (\S+)",
                                subprocess.run([adb_bin, "version"], capture_output=True).stdout.decode())
            print(f"adb push ({version.group(1) if version else 'adb'}):  {r_adb:8.1f} MB/s  ({best_adb:.2f} s)")
            print(f"adb-shell push:                {r_py:8.1f} MB/s  ({best_py:.2f} s)")
            print(f"ratio adb / adb-shell:         {r_adb / r_py:8.2f}x")
        return 0


if __name__ == "__main__":
    sys.exit(main())
