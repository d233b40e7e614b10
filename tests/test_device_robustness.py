"""Device-side robustness (issue 11): the right diagnosis for a refused key, concurrent pushes,
a runner that lost its exec bit, native log noise on a damaged model, temporaries left by a killed
emulator, and --root on someone else's directory. Real ADB clients on loopback throughout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path, PurePosixPath

import pytest

from gemma4_common.errors import UserError
from gemma4_common.fsutil import sha256_file
from on_device.runner_contract import RUNNER_NAME
from sdk_tools.deploy import PART_SUFFIX, deploy
from sdk_tools.devices.tcp import TcpDevice

from support.cli import assert_one_line_error, cli, cli_subprocess
from support.deploy import make_bundle
from support.emulator import adb_shell_client, device_file

pytestmark = pytest.mark.usefixtures("isolated_device_env")
DEV_DIR = PurePosixPath("/data/local/tmp/g4m-robust")


def test_refused_key_is_named_at_once(emulator_factory, tmp_path, runner_file):
    keys = tmp_path / "authorized"
    keys.write_text("")  # nobody is authorized
    emu = emulator_factory(auth=True, authorized_keys=keys)
    t0 = time.monotonic()
    with pytest.raises(UserError) as ei:
        TcpDevice(emu.serial)
    waited = time.monotonic() - t0
    msg = ei.value.one_line()
    assert "refused this computer's adb key" in msg and "cannot reach" not in msg
    assert "USB" not in msg and "authorized-keys" in msg and "prompt" in msg
    # Not the device's handshake timeout that ended it (the old diagnosis came after ~24 s).
    assert waited < emu.config.handshake_timeout_s / 2
    bundle = make_bundle(tmp_path, size=64 << 10)
    r = cli("push", bundle, "--device", emu.serial, "--runner", runner_file)
    assert "refused this computer's adb key" in assert_one_line_error(r)
    # Doing what the message says authorizes it.
    pub = Path(os.environ["ANDROID_USER_HOME"]) / "adbkey.pub"
    keys.write_text(pub.read_text())
    with TcpDevice(emu.serial) as dev:
        assert dev.shell("echo ok")[1] == "ok\n"


def test_three_concurrent_pushes_to_one_device(emulator_factory, tmp_path, runner_file):
    emu = emulator_factory()
    bundles = [make_bundle(tmp_path / f"b{i}", name=f"bundle{i}", size=3 << 20, seed=i) for i in range(3)]
    results: list = [None] * 3

    def push(i: int) -> None:
        try:
            with TcpDevice(emu.serial) as dev:
                results[i] = deploy(dev, bundles[i], runner=runner_file, device_dir=DEV_DIR)
        except BaseException as e:  # noqa: BLE001 - asserted below
            results[i] = e

    threads = [threading.Thread(target=push, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(not isinstance(r, BaseException) for r in results), results
    for i, dep in enumerate(results):
        assert sha256_file(device_file(emu, dep.model_path)) == sha256_file(bundles[i] / "model.litertlm")
    runner = device_file(emu, DEV_DIR / RUNNER_NAME)
    assert sha256_file(runner) == sha256_file(runner_file) and os.access(runner, os.X_OK)
    leftovers = [n for _, _, files in os.walk(device_file(emu, DEV_DIR)) for n in files
                 if n.endswith(PART_SUFFIX) or n.endswith(".syncpart")]
    assert leftovers == []


def test_push_restores_a_lost_exec_bit(device, tmp_path, runner_file):
    dev = device
    bundle = make_bundle(tmp_path, size=64 << 10)
    deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    dev.check_shell(f"chmod 644 {DEV_DIR / RUNNER_NAME}", "dropping the exec bit")
    d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert d2.bytes_pushed == 0  # the bytes were right: only the mode is repaired
    assert dev.shell(f"stat -c %a {DEV_DIR / RUNNER_NAME}")[1].strip() == "755"
    rc, out, err = dev.shell(f"{DEV_DIR / RUNNER_NAME} --model_path=/nope; echo rc=$?")
    assert "Permission denied" not in out + err


def _damaged_bundle(src: Path, dst: Path) -> Path:
    """A copy of a real bundle whose .litertlm header is overwritten, with a manifest that matches
    (so verification passes and LiteRT-LM itself meets the damage)."""
    from converters.bundle import write_manifest

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.xnnpack_cache"))
    data = bytearray((dst / "model.litertlm").read_bytes())
    data[8:200] = b"\xff" * 192
    (dst / "model.litertlm").write_bytes(bytes(data))
    m = json.loads((dst / "manifest.json").read_text())
    write_manifest(dst, {k: v for k, v in m.items() if k not in ("format", "created", "main_model", "files")})
    return dst


def test_damaged_model_prints_only_our_error_line(e2b_int8_bundle, tmp_path, emulator_factory, runner_file):
    bundle = _damaged_bundle(e2b_int8_bundle, tmp_path / "damaged")
    # gemma4-mobile run, as a process: native code writes to fd 2, which only a subprocess shows.
    p = cli_subprocess("run", bundle, "--prompt", "hi", "--max-tokens", "4", timeout=300)
    line = assert_one_line_error(p)
    # The engine's own reason, taken from its captured log (on_device.engine.native_reason: fails
    # loudly here if LiteRT-LM changes its "Failed to create engine: " line).
    assert "LiteRT-LM could not load" in line and "expected version" in line, line
    # With GEMMA4_MOBILE_VERBOSE the native log is shown too.
    p = cli_subprocess("run", bundle, "--prompt", "hi", "--max-tokens", "4", timeout=300,
                       env={**os.environ, "GEMMA4_MOBILE_VERBOSE": "1"})
    assert p.returncode == 2 and "engine.cc" in p.stderr and len(p.stderr.strip().splitlines()) > 1
    # The emulator's runner: one contract error line, no engine log lines.
    emu = emulator_factory()
    with TcpDevice(emu.serial) as dev:
        dep = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        r = dev.shell_result(f"{dep.runner_path} --backend=cpu --model_path={dep.model_path} --input_prompt=hi")
    assert r.rc != 0
    lines = [ln for ln in r.err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("litert_lm_main: ERROR:"), r.err


def test_stale_upload_of_a_killed_emulator_is_removed_on_restart(managed_emulator, tmp_path):
    """kill -9 the emulator in the middle of a push: the hidden temporary it was writing must not
    survive the next start on that root (it would count against storage forever)."""
    root = tmp_path / "devroot"
    rec = managed_emulator(root=root)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(16 << 20))
    dev = adb_shell_client(rec.port)
    sent = {"n": 0, "killed": False}

    def progress(_path, n, _total):
        sent["n"] += n  # adb-shell passes each chunk's length
        if sent["n"] > (4 << 20) and not sent["killed"]:
            sent["killed"] = True
            os.kill(rec.pid, signal.SIGKILL)

    with pytest.raises(Exception):
        dev.push(str(src), "/data/local/tmp/big.bin", progress_callback=progress)
    dev.close()
    assert sent["killed"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(f"/proc/{rec.pid}") and \
            "zombie" not in _proc_state(rec.pid):
        time.sleep(0.05)
    parts = [n for n in _image_listing(root, "/local/tmp") if n.endswith(".syncpart")]
    assert parts and parts[0].startswith(".big.bin."), parts  # the leftover of the issue
    rec = managed_emulator(root=root)
    dev = adb_shell_client(rec.port)
    try:
        assert dev.shell("ls -a /data/local/tmp").split() == [".", ".."]
    finally:
        dev.close()


def _image_listing(root, path: str) -> list[str]:
    """Names in a directory of a stopped emulator's /data image (debugfs reads it unmounted)."""
    import subprocess

    image = root.with_name(root.name + ".data.img")
    deadline = time.monotonic() + 10  # the dead device's namespace lets go of the image (unmount, flush)
    while subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True).stdout.strip():
        assert time.monotonic() < deadline, "the image stays mounted after the emulator died"
        time.sleep(0.05)
    r = subprocess.run(["debugfs", "-R", f"ls -p {path}", str(image)], capture_output=True, text=True, check=True)
    # /ino/mode/uid/gid/name/size/
    return [line.split("/")[5] for line in r.stdout.splitlines() if line.count("/") >= 7]


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:", 1)[1].split("\n", 1)[0]
    except (OSError, IndexError):
        return "zombie"


def test_stale_upload_is_removed_by_the_next_push_to_that_path(emulator_factory, tmp_path):
    emu = emulator_factory()
    tmpdir = emu.fs.host_path_unchecked("/data/local/tmp")
    stale = tmpdir / ".model.bin.0123456789abcdef.syncpart"
    stale.write_bytes(b"x" * 100_000)
    other = tmpdir / ".other.bin.0123456789abcdef.syncpart"
    other.write_bytes(b"y")
    src = tmp_path / "model.bin"
    src.write_bytes(b"model")
    with TcpDevice(emu.serial) as dev:
        dev.push(src, "/data/local/tmp/model.bin")
    assert not stale.exists() and (tmpdir / "model.bin").read_bytes() == b"model"
    assert other.exists()  # another file's: left for the start-up sweep


def test_root_that_is_not_an_emulator_root_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "home"))
    mine = tmp_path / "my-documents"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    before = sorted(p.name for p in mine.iterdir())
    r = cli("emulator", "start", "--root", mine, "--json")
    if r.code == 0:  # the old behaviour: do not leave it running
        cli("emulator", "stop", json.loads(r.out)["serial"])
    assert "not an emulator root" in assert_one_line_error(r)
    assert sorted(p.name for p in mine.iterdir()) == before and (mine / "notes.txt").read_text() == "mine"
    from on_device.emulator import EmulatorConfig, EmulatorServer, load_profile

    with pytest.raises(UserError, match="not an emulator root"):
        EmulatorServer(EmulatorConfig(profile=load_profile("galaxy-s24"), root=mine))
    # An emulator root (marked by the first start) is reused; an empty directory is fine too.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    for _ in range(2):
        r = cli("emulator", "start", "--root", fresh, "--json")
        assert r.code == 0, r.err
        assert cli("emulator", "stop", json.loads(r.out)["serial"]).code == 0
    assert (fresh / ".g4m-emulator-root").is_file() and (fresh / "data").is_dir()
