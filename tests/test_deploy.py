"""Deploy over ADB to the reference emulator: push + verify + skip-unchanged, cut-and-resume,
storage, runner and checksum errors, backend checks; through adb-shell and the real adb server."""

from __future__ import annotations

import os

import pytest

from converters.bundle import write_manifest
from gemma4_common.errors import UserError
from gemma4_common.fsutil import sha256_file
from on_device.runner_contract import RUNNER_NAME, emulator_runner_bytes
from sdk_tools.deploy import PART_SUFFIX, deploy
from sdk_tools.devices.tcp import TcpDevice

from support.cli import cli
from support.deploy import (DEV_DIR, corrupting_batches, corrupting_pieces, device_opener, make_bundle,
                            names_after_part_cleanup)
from support.emulator import device_file
from support.procs import device_processes

pytestmark = pytest.mark.usefixtures("isolated_adb_key")


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


def test_push_through_adb_server(adb, request, emulator_factory, tmp_path, runner_file):
    emu = emulator_factory("dimensity-9400")
    open_dev = device_opener("server", request, emu)
    bundle = make_bundle(tmp_path, size=2 << 20)
    dev = open_dev()
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
    open_dev = device_opener(transport, request, emu)
    adb = request.getfixturevalue("adb") if transport == "server" else None

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


@pytest.mark.parametrize("path", ["streamed", "sync"])
def test_checksum_mismatch_on_device(path, device, emulator, tmp_path, runner_file, monkeypatch):
    """A byte changed on the way (after the host read it, under a valid ADB checksum): only the
    sha256 on the device can catch it, on either path (streamed, as to a phone; sync, as to an
    emulator)."""
    import sdk_tools.devices.tcp as tcp

    bundle = make_bundle(tmp_path, size=1 << 20)
    if path == "streamed":
        monkeypatch.setenv("GEMMA4_MOBILE_PUSH_SYNC", "0")
        monkeypatch.setattr(tcp, "file_pieces", corrupting_pieces(tcp.file_pieces, piece=0, offset=100, mask=0x01))
    else:
        monkeypatch.setenv("GEMMA4_MOBILE_PUSH_SYNC", "1")
        monkeypatch.setattr(tcp, "sync_send_batches",
                            corrupting_batches(tcp.sync_send_batches, piece=0, offset=1000, mask=0x01))
    with pytest.raises(UserError, match="checksum mismatch") as ei:
        deploy(device, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert len(ei.value.one_line().splitlines()) == 1
    d = device_file(emulator, DEV_DIR / "bundles" / "synthetic")
    assert not (d / "model.litertlm").exists() and not (d / "manifest.json").exists()
    assert not [n for n in os.listdir(d) if n.endswith(PART_SUFFIX)]


def test_backend_npu_without_npu_model(device, tmp_path, runner_file):
    bundle = make_bundle(tmp_path)
    with pytest.raises(UserError, match="--backend npu is not available"):
        deploy(device, bundle, runner=runner_file, backend="npu", device_dir=DEV_DIR)


def test_push_cli(emulator_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "home"))
    emu = emulator_factory("dimensity-9300")
    bundle = make_bundle(tmp_path)
    runner = tmp_path / "bin" / "runner"
    assert cli("emulator", "runner", "-o", runner).code == 0
    assert runner.read_bytes() == emulator_runner_bytes() and os.access(runner, os.X_OK)
    res = cli("push", bundle, "--device", emu.serial, "--runner", runner, "--json")
    assert res.code == 0
    out = res.json()
    dep = out["deployments"][emu.serial]
    assert dep["bytes_pushed"] > 0 and not out["failures"]
    # No runner anywhere: push deploys the bundle alone (an app loads the model itself) ...
    monkeypatch.delenv("GEMMA4_MOBILE_RUNNER", raising=False)
    monkeypatch.setenv("GEMMA4_MOBILE_CONFIG", str(tmp_path / "none.json"))
    bundle2 = make_bundle(tmp_path, name="alone", seed=3)
    res = cli("push", bundle2, "--device", emu.serial, "--device-dir", "/data/local/tmp/alone", "--json")
    assert res.code == 0
    dep = res.json()["deployments"][emu.serial]
    assert dep["has_runner"] is False and {f["kind"] for f in dep["files"]} == {"model", "manifest"}
    assert not emu.fs.host_path_unchecked(f"/data/local/tmp/alone/{RUNNER_NAME}").exists()
    # ... while bench, which runs it, names the missing runner in one line, exit 2.
    res = cli("bench", bundle2, "--device", emu.serial)
    assert res.code == 2
    err = res.err.strip()
    assert err.startswith("error: no device runner") and len(err.splitlines()) == 1
