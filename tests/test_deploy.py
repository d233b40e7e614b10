"""Deploy over ADB to the reference emulator: push + verify + skip-unchanged, cut-and-resume,
storage, runner and checksum errors, backend checks; through adb-shell and the real adb server."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path, PurePosixPath

import pytest

from converters.bundle import write_manifest
from gemma4_common.errors import UserError
from gemma4_common.fsutil import sha256_file
from on_device.runner_contract import RUNNER_NAME, RunnerResult, emulator_runner_bytes, format_result, parse_flags
from sdk_tools.deploy import PART_SUFFIX, deploy, find_runner
from sdk_tools.devices.server import AdbServer, ServerDevice
from sdk_tools.devices.tcp import TcpDevice

DEV_DIR = PurePosixPath("/data/local/tmp/g4m-test")


# ---- helpers shared with test_bench / test_report ----------------------------------------------
def make_bundle(root: Path, name: str = "synthetic", size: int = 2 << 20, recipe: str = "dynamic_wi8_afp32",
                seed: int = 0) -> Path:
    """A bundle directory with a random model file and a real manifest (no conversion needed)."""
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    rnd = bytes((i * 131 + seed * 7 + 17) % 251 for i in range(4096))
    with open(d / "model.litertlm", "wb") as f:
        f.write((rnd * (size // len(rnd) + 1))[:size])
    write_manifest(d, {"name": name, "variant": "e2b", "recipe": {"name": recipe}})
    return d


def fake_runner(decode: float = 100.0, prefill: float = 400.0, delay: float = 0.0, on_call=None):
    """An emulator runner that follows the contract without a model: fixed figures, optional delay."""
    calls = {"n": 0}

    def run(argv, ctx) -> int:
        calls["n"] += 1
        inv = parse_flags(argv[1:])
        if not ctx.resolve(str(inv.model_path)).is_file():
            ctx.stderr(b"litert_lm_main: ERROR: NOT_FOUND: cannot open model file\n")
            return 1
        if on_call:
            on_call(calls["n"])
        if delay:
            time.sleep(delay)
        n = calls["n"]
        ctx.stdout(format_result(RunnerResult(init_s=0.5, ttft_s=0.1 * n, prefill_tps=prefill + n,
                                              decode_tps=decode + n, peak_mem_mb=300.0)).encode())
        return 0

    run.calls = calls
    return run


def device_file(server, path: PurePosixPath | str) -> Path:
    return server.fs.host_path_unchecked(str(path))


pytestmark = pytest.mark.usefixtures("isolated_adb_key")


# ---- tests --------------------------------------------------------------------------------------

def corrupting_pieces(real, *, piece: int, offset: int, mask: int):
    """A file_pieces that flips bits `mask` at `offset` of piece `piece` of the model after the host
    read it (and re-checksums it, so only the device's sha256 can catch it)."""
    def corrupting(local, size, checksum=None):
        for i, (data, n, _check) in enumerate(real(local, size, checksum)):
            if i == piece and local.name == "model.litertlm":
                data[offset] ^= mask
            yield data, n, (checksum(data) if checksum else 0)
    return corrupting


def names_after_part_cleanup(directory, timeout_s: float = 20) -> list[str]:
    """The names in a device directory once no temporary push file is left, or at the timeout: a cut
    session's device command removes its temporary file when its host goes away, and on a loaded
    machine that can land after the resumed push (seen in a full run)."""
    deadline = time.monotonic() + timeout_s
    while any(n.endswith(PART_SUFFIX) for n in os.listdir(directory)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return os.listdir(directory)


def device_processes(dev) -> str:
    """What runs on the device, with each shell and dd's signal state: why a cut session's command
    is still there, for a failure message (did its SIGHUP arrive, or is it ignored or blocked?)."""
    return dev.shell_result(
        "ps -A -o PID,PGID,STAT,ARGS; for p in $(pgrep -x sh; pgrep -x dd; pgrep -x busybox); do echo pid $p; "
        "grep -E '^(State|SigPnd|ShdPnd|SigBlk|SigIgn)' /proc/$p/status 2>/dev/null; done").out


def test_push_verify_skip_unchanged_tcp(emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("galaxy-s24")
    bundle = make_bundle(tmp_path, size=3 << 20)
    with TcpDevice(emu.serial) as dev:
        d1 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert d1.backend == "cpu" and d1.notice  # no NPU model in the bundle: CPU with a notice
        assert {f.action for f in d1.files} == {"pushed"}
        assert d1.runner_path == DEV_DIR / RUNNER_NAME
        assert d1.model_path == DEV_DIR / "bundles" / "synthetic" / "model.litertlm"
        assert sha256_file(device_file(emu, d1.model_path)) == sha256_file(bundle / "model.litertlm")
        assert os.access(device_file(emu, d1.runner_path), os.X_OK)
        assert device_file(emu, d1.bundle_dir / "manifest.json").is_file()
        rc, out, _ = dev.shell(f"ls {d1.bundle_dir}")
        assert PART_SUFFIX not in out
        d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert {f.action for f in d2.files} == {"unchanged"} and d2.bytes_pushed == 0
        # One changed file is pushed again, the rest skipped.
        (bundle / "model.litertlm").write_bytes(os.urandom(1 << 20))
        write_manifest(bundle, {"name": "synthetic", "variant": "e2b", "recipe": {"name": "x"}})
        d3 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        acts = {f.kind: f.action for f in d3.files}
        assert acts == {"runner": "unchanged", "model": "pushed", "manifest": "pushed"}
        assert sha256_file(device_file(emu, d3.model_path)) == sha256_file(bundle / "model.litertlm")


def test_push_through_adb_server(adb, emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("dimensity-9400")
    adb.connect(emu.serial)
    server = AdbServer(port=int(adb.env["ANDROID_ADB_SERVER_PORT"]))
    bundle = make_bundle(tmp_path, size=2 << 20)
    dev = ServerDevice(emu.serial, server)
    d1 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert {f.action for f in d1.files} == {"pushed"}
    assert sha256_file(device_file(emu, d1.model_path)) == sha256_file(bundle / "model.litertlm")
    d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert d2.bytes_pushed == 0
    adb.run("disconnect", emu.serial)


@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_cut_transfer_restarts_cleanly(transport, request, emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("galaxy-s25")
    bundle = make_bundle(tmp_path, size=24 << 20)
    if transport == "server":
        adb = request.getfixturevalue("adb")
        adb.connect(emu.serial)
        server = AdbServer(port=int(adb.env["ANDROID_ADB_SERVER_PORT"]))
        open_dev = lambda: ServerDevice(emu.serial, server)  # noqa: E731
    else:
        open_dev = lambda: TcpDevice(emu.serial)  # noqa: E731

    class Cutter:
        """Progress that cuts the connection once 40% of the model has gone."""

        def __init__(self):
            self.sent = 0
            self.cut = False

        def step(self, name, total=None):
            import contextlib

            self.total = total
            return contextlib.nullcontext(self)

        def advance(self, n):
            self.sent += n
            if not self.cut and self.total and self.total > (8 << 20) and self.sent > 0.4 * self.total:
                self.cut = True
                emu.drop_connections()
                if transport == "server":
                    adb.run("disconnect", emu.serial)

        def note(self, msg):
            pass

    dev = open_dev()
    cutter = Cutter()
    with pytest.raises(UserError) as ei:
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR, progress=cutter)
    assert cutter.cut
    assert "offline" in str(ei.value) or "refused" in str(ei.value)
    final = DEV_DIR / "bundles" / "synthetic" / "model.litertlm"
    assert not device_file(emu, final).exists()  # never a partial file at the final path
    assert not device_file(emu, final.parent / "manifest.json").exists()
    dev.close()
    if transport == "server":
        adb.connect(emu.serial)
    with open_dev() as dev2:
        d = deploy(dev2, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert sha256_file(device_file(emu, final)) == sha256_file(bundle / "model.litertlm")
        names = names_after_part_cleanup(device_file(emu, final.parent))
        assert not [n for n in names if n.endswith(PART_SUFFIX)], (names, device_processes(dev2))
        assert d.files[-1].kind == "manifest"
    if transport == "server":
        adb.run("disconnect", emu.serial)


def test_not_enough_storage(emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("pixel-8-pro", storage_bytes=8 << 20)
    bundle = make_bundle(tmp_path, size=12 << 20)
    with TcpDevice(emu.serial) as dev, pytest.raises(UserError, match="not enough storage"):
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert not device_file(emu, DEV_DIR / "bundles" / "synthetic" / "model.litertlm").exists()


def test_checksum_mismatch_on_device(emulator_factory, tmp_path, runner_file, monkeypatch):
    """A byte changed on the way (after the host hashed it, under a valid ADB checksum): only the
    sha256 on the device can catch it."""
    import sdk_tools.devices.tcp as tcp

    emu = emulator_factory("galaxy-s24")
    bundle = make_bundle(tmp_path, size=1 << 20)
    monkeypatch.setattr(tcp, "file_pieces", corrupting_pieces(tcp.file_pieces, piece=0, offset=100, mask=0x01))
    with TcpDevice(emu.serial) as dev, pytest.raises(UserError, match="checksum mismatch") as ei:
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert len(ei.value.one_line().splitlines()) == 1
    d = device_file(emu, DEV_DIR / "bundles" / "synthetic")
    assert not (d / "model.litertlm").exists() and not (d / "manifest.json").exists()
    assert not [n for n in os.listdir(d) if n.endswith(PART_SUFFIX)]


def test_runner_missing_or_wrong(tmp_path, monkeypatch):
    monkeypatch.delenv("G4M_RUNNER", raising=False)
    monkeypatch.setenv("G4M_CONFIG", str(tmp_path / "none.json"))
    with pytest.raises(UserError) as ei:
        find_runner(None)
    msg = ei.value.one_line()
    assert "android_arm64" in msg and "emulator runner -o" in msg
    with pytest.raises(UserError, match="does not exist"):
        find_runner(tmp_path / "nope")
    elf = tmp_path / "x86"
    elf.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 40)
    with pytest.raises(UserError, match="x86-64, not android_arm64"):
        find_runner(elf)
    # env var and config file
    good = tmp_path / "runner"
    good.write_bytes(emulator_runner_bytes())
    monkeypatch.setenv("G4M_RUNNER", str(good))
    assert find_runner(None) == good
    monkeypatch.delenv("G4M_RUNNER")
    (tmp_path / "cfg.json").write_text(json.dumps({"runner": str(good)}))
    monkeypatch.setenv("G4M_CONFIG", str(tmp_path / "cfg.json"))
    assert find_runner(None) == good


def test_backend_npu_without_npu_model(emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("galaxy-s24")
    bundle = make_bundle(tmp_path)
    with TcpDevice(emu.serial) as dev, pytest.raises(UserError, match="--backend npu is not available"):
        deploy(dev, bundle, runner=runner_file, backend="npu", device_dir=DEV_DIR)


def test_push_cli(emulator_factory, tmp_path, capsys, monkeypatch):
    from sdk_tools.cli.app import main

    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "home"))
    emu = emulator_factory("dimensity-9300")
    bundle = make_bundle(tmp_path)
    runner = tmp_path / "bin" / "runner"
    assert main(["emulator", "runner", "-o", str(runner)]) == 0
    assert runner.read_bytes() == emulator_runner_bytes() and os.access(runner, os.X_OK)
    capsys.readouterr()
    assert main(["push", str(bundle), "--device", emu.serial, "--runner", str(runner), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    dep = out["deployments"][emu.serial]
    assert dep["bytes_pushed"] > 0 and not out["failures"]
    # No runner anywhere: push deploys the bundle alone (an app loads the model itself) ...
    monkeypatch.delenv("G4M_RUNNER", raising=False)
    monkeypatch.setenv("G4M_CONFIG", str(tmp_path / "none.json"))
    bundle2 = make_bundle(tmp_path, name="alone", seed=3)
    assert main(["push", str(bundle2), "--device", emu.serial, "--device-dir", "/data/local/tmp/alone",
                 "--json"]) == 0
    dep = json.loads(capsys.readouterr().out)["deployments"][emu.serial]
    assert dep["has_runner"] is False and {f["kind"] for f in dep["files"]} == {"model", "manifest"}
    assert not emu.fs.host_path_unchecked(f"/data/local/tmp/alone/{RUNNER_NAME}").exists()
    # ... while bench, which runs it, names the missing runner in one line, exit 2.
    assert main(["bench", str(bundle2), "--device", emu.serial]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no device runner") and len(err.splitlines()) == 1
