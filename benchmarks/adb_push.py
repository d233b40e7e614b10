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
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gemma4_common.fsutil import sha256_file  # noqa: E402


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 5554 <= port <= 5585:
            return port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=1, help="pushes per client; the best is reported")
    ap.add_argument("--profile", default="galaxy-s24")
    a = ap.parse_args()
    adb_bin = shutil.which("adb")
    if adb_bin is None:
        print("error: Debian's adb is not installed (apt-get install adb)", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="g4m-push-bench-"))
    os.environ["GEMMA4_MOBILE_HOME"] = str(work / "home")
    from on_device.emulator import manager

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
    env.update(HOME=str(work / "adbhome"), ANDROID_ADB_SERVER_PORT=str(_free_port()))
    (work / "adbhome").mkdir()
    rec = None
    try:
        src = work / "payload.bin"
        with open(src, "wb") as f:
            for _ in range(a.size_mib):
                f.write(os.urandom(1 << 20))
        size = src.stat().st_size
        digest = sha256_file(src)
        rec = manager.start(profile=a.profile)
        print(f"emulator {rec.serial} ({a.profile}), file {a.size_mib} MiB")

        def adb(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([adb_bin, *args], env=env, capture_output=True, stdin=subprocess.DEVNULL,
                                  timeout=900)

        adb("start-server")
        out = adb("connect", rec.serial)
        if f"connected to {rec.serial}" not in out.stdout.decode():
            print(f"error: adb connect failed: {out.stdout.decode()}{out.stderr.decode()}", file=sys.stderr)
            return 1

        def check(path: str) -> None:
            r = adb("-s", rec.serial, "shell", "sha256sum", path)
            got = r.stdout.decode().split()[0] if r.stdout else ""
            if got != digest:
                raise SystemExit(f"error: {path} on the device has sha256 {got!r}, expected {digest}")

        best_adb = float("inf")
        for i in range(a.repeat):
            t0 = time.perf_counter()
            r = adb("-s", rec.serial, "push", str(src), "/data/local/tmp/bench_adb.bin")
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                print(f"error: adb push failed: {r.stdout.decode()}{r.stderr.decode()}", file=sys.stderr)
                return 1
            check("/data/local/tmp/bench_adb.bin")
            best_adb = min(best_adb, dt)
        adb("-s", rec.serial, "shell", "rm", "/data/local/tmp/bench_adb.bin")

        from adb_shell.adb_device import AdbDeviceTcp

        dev = AdbDeviceTcp("127.0.0.1", rec.port, default_transport_timeout_s=60)
        dev.connect(rsa_keys=None, auth_timeout_s=10)
        best_py = float("inf")
        for i in range(a.repeat):
            t0 = time.perf_counter()
            dev.push(str(src), "/data/local/tmp/bench_adbshell.bin", read_timeout_s=900)
            dt = time.perf_counter() - t0
            check("/data/local/tmp/bench_adbshell.bin")
            best_py = min(best_py, dt)
        dev.close()

        mb = size / 1e6
        r_adb, r_py = mb / best_adb, mb / best_py
        version = re.search(r"Version (\S+)", subprocess.run([adb_bin, "version"], capture_output=True).stdout.decode())
        print(f"adb push ({version.group(1) if version else 'adb'}):  {r_adb:8.1f} MB/s  ({best_adb:.2f} s)")
        print(f"adb-shell push:                {r_py:8.1f} MB/s  ({best_py:.2f} s)")
        print(f"ratio adb / adb-shell:         {r_adb / r_py:8.2f}x")
        adb("kill-server")
        return 0
    finally:
        if rec is not None:
            manager.stop(rec.id)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
