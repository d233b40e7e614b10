"""Push throughput to the reference emulator: `gemma4-mobile push` (adb-shell TCP and through the adb
server) next to Debian's `adb push` of the same bundle, and a re-push of the unchanged bundle as a
fraction of a full push; all measured in the same run.

    python benchmarks/push.py [--bundle DIR | --size-mib 256] [--profile galaxy-s24]

Each figure is the wall time of the whole command (process start, hashing, transfer, sha256 on the
device, rename), MB = 10^6 bytes of bundle pushed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 5554 <= port <= 5585:
            return port


def _synthetic_bundle(root: Path, size_mib: int) -> Path:
    from converters.bundle import write_manifest

    d = root / "bundle"
    d.mkdir()
    with open(d / "model.litertlm", "wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    write_manifest(d, {"name": "push-bench", "variant": "synthetic", "recipe": {"name": "none"}})
    return d


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a bundle directory (default: a synthetic one of --size-mib)")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--profile", default="galaxy-s24")
    a = ap.parse_args()
    adb_bin = shutil.which("adb")
    if adb_bin is None:
        print("error: Debian's adb is not installed (apt-get install adb)", file=sys.stderr)
        return 2
    exe = Path(sys.executable).parent / "gemma4-mobile"
    g4m = [str(exe)] if exe.exists() else [sys.executable, "-m", "sdk_tools.cli.app"]

    work = Path(tempfile.mkdtemp(prefix="g4m-push-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_", "G4M_"))}
    env.update(HOME=str(work / "home"), GEMMA4_MOBILE_HOME=str(work / "g4m"), ANDROID_ADB_SERVER_PORT=str(_free_port()),
               ADB_MDNS="0", G4M_CONFIG=str(work / "none.json"))
    (work / "home").mkdir()
    os.environ.update(GEMMA4_MOBILE_HOME=env["GEMMA4_MOBILE_HOME"])
    from on_device.emulator import manager
    from on_device.runner_contract import emulator_runner_bytes

    rec = None
    try:
        bundle = a.bundle or _synthetic_bundle(work, a.size_mib)
        from converters.bundle import read_manifest

        manifest = read_manifest(bundle)
        model = bundle / manifest["main_model"]
        runner = work / "litert_lm_main"
        runner.write_bytes(emulator_runner_bytes())
        runner.chmod(0o755)
        payload = model.stat().st_size + runner.stat().st_size
        rec = manager.start(profile=a.profile)
        print(f"emulator {rec.serial} ({a.profile}); bundle {bundle} ({payload / 1e6:.1f} MB with the runner)")

        def run(cmd: list[str]) -> tuple[float, subprocess.CompletedProcess]:
            t0 = time.perf_counter()
            r = subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=1800, cwd=ROOT)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                raise SystemExit(f"error: {' '.join(cmd[:4])}... failed: {r.stderr.decode()[-2000:]}")
            return dt, r

        run([adb_bin, "start-server"])
        out = run([adb_bin, "connect", rec.serial])[1].stdout.decode()
        if f"connected to {rec.serial}" not in out:
            raise SystemExit(f"error: adb connect failed: {out}")

        def g4m_push(device_dir: str, serial: str) -> tuple[float, dict]:
            dt, r = run([*g4m, "push", str(bundle), "--device", serial, "--runner", str(runner),
                         "--device-dir", device_dir, "--json"])
            return dt, json.loads(r.stdout)["deployments"][serial]

        # adb push of the same files (model + runner) into a fresh directory.
        run([adb_bin, "-s", rec.serial, "shell", "mkdir", "-p", "/data/local/tmp/adbpush"])
        t0 = time.perf_counter()
        run([adb_bin, "-s", rec.serial, "push", str(model), str(runner), "/data/local/tmp/adbpush/"])
        t_adb = time.perf_counter() - t0

        # gemma4-mobile over adb-shell TCP: the adb server lists the serial, so hide the server (a port
        # nobody listens on) to make discovery use the direct TCP path.
        env_tcp = dict(env, ANDROID_ADB_SERVER_PORT=str(_free_port()))
        t0 = time.perf_counter()
        r = subprocess.run([*g4m, "push", str(bundle), "--device", rec.serial, "--runner", str(runner),
                            "--device-dir", "/data/local/tmp/g4m_tcp", "--json"], env=env_tcp, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=1800, cwd=ROOT)
        t_tcp = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"error: gemma4-mobile push (tcp) failed: {r.stderr.decode()[-2000:]}")
        dep_tcp = json.loads(r.stdout)["deployments"][rec.serial]
        assert dep_tcp["bytes_pushed"] == payload + (bundle / "manifest.json").stat().st_size, dep_tcp["bytes_pushed"]

        # gemma4-mobile through the adb server.
        t_srv, dep_srv = g4m_push("/data/local/tmp/g4m_srv", rec.serial)

        # Re-push of the unchanged bundle (TCP): hashes on the device, nothing sent.
        t0 = time.perf_counter()
        r = subprocess.run([*g4m, "push", str(bundle), "--device", rec.serial, "--runner", str(runner),
                            "--device-dir", "/data/local/tmp/g4m_tcp", "--json"], env=env_tcp, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=1800, cwd=ROOT)
        t_re = time.perf_counter() - t0
        dep_re = json.loads(r.stdout)["deployments"][rec.serial]
        assert dep_re["bytes_pushed"] == 0

        mb = payload / 1e6
        print(f"adb push (Debian adb, same files):        {mb / t_adb:8.1f} MB/s  ({t_adb:.2f} s)")
        print(f"gemma4-mobile push, adb-shell TCP:        {mb / t_tcp:8.1f} MB/s  ({t_tcp:.2f} s, "
              f"transfer+verify {dep_tcp['push_seconds']:.2f} s)   ratio vs adb push {t_adb / t_tcp:.2f}x")
        print(f"gemma4-mobile push, through adb server:   {mb / t_srv:8.1f} MB/s  ({t_srv:.2f} s, "
              f"transfer+verify {dep_srv['push_seconds']:.2f} s)   ratio vs adb push {t_adb / t_srv:.2f}x")
        print(f"re-push unchanged bundle (TCP):           {t_re:8.2f} s = {t_re / t_tcp:.3f} of a full push")
        run([adb_bin, "kill-server"])
        return 0
    finally:
        if rec is not None:
            manager.stop(rec.id)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
