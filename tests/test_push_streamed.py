"""Streamed push: each file goes through `exec:` into one device command (chunks written with dd,
read back into sha256sum while the next chunk arrives, checked, renamed), hashed on the host by the
thread that reads it. Through both transports (adb-shell TCP and the real Debian adb server):
byte-identical results, one stream per file, a byte changed on the way or a local file that does
not match its manifest caught with nothing at the final path, a device without exec: served by
sync, a command that stops reading ends the stream cleanly."""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath

import pytest

import sdk_tools.deploy as dep
from gemma4_common.errors import UserError
from gemma4_common.fsutil import sha256_file
from sdk_tools.deploy import PART_SUFFIX, STAMP_NAME, HostHashes, deploy
from sdk_tools.devices.base import ServiceRefused
from sdk_tools.devices.tcp import TcpDevice

from support.deploy import corrupting_pieces, device_opener, make_bundle, spy_host_hashes
from support.emulator import device_file

DEV_DIR = PurePosixPath("/data/local/tmp/g4m-stream")
BDIR = DEV_DIR / "bundles" / "synthetic"

pytestmark = pytest.mark.usefixtures("isolated_device_env")


@pytest.fixture(autouse=True)
def _streamed_as_to_a_phone(isolated_device_env, monkeypatch):
    """The emulator says it is one (ro.boot.qemu=1) and gets the sync path; these tests are of the
    path a phone gets (test_an_emulator_gets_sync_and_a_phone_streams checks the choice)."""
    monkeypatch.setenv("GEMMA4_MOBILE_PUSH_SYNC", "0")


def _transport_module(transport: str):
    import sdk_tools.devices.server as server
    import sdk_tools.devices.tcp as tcp

    return server if transport == "server" else tcp


class Calls:
    """Counts what deploy asks of a device: shell round trips (but getprop), streams, sync pushes."""

    def __init__(self, dev):
        self.shells, self.streams, self.pushes, self.commands = [], [], [], []
        orig_shell, orig_stream, orig_push = dev.shell_result, dev.stream_in, dev.push

        def shell_result(cmd, *a, **kw):
            if cmd != "getprop":  # the device's identity, read once to plan (NPU model or CPU)
                self.shells.append(cmd)
            return orig_shell(cmd, *a, **kw)

        def stream_in(cmd, local, *a, **kw):
            self.streams.append(str(local))
            self.commands.append(cmd)
            return orig_stream(cmd, local, *a, **kw)

        def push(local, *a, **kw):
            self.pushes.append(str(local))
            return orig_push(local, *a, **kw)

        dev.shell_result, dev.stream_in, dev.push = shell_result, stream_in, push


def _no_parts(emu) -> list[str]:
    d = device_file(emu, BDIR)
    return [n for n in os.listdir(d) if n.endswith(PART_SUFFIX)] if d.is_dir() else []


@pytest.mark.parametrize("transport,writer", [("tcp", "dd"), ("server", "dd"), ("tcp", "head")])
def test_streamed_push_is_byte_identical_in_one_stream_per_file(transport, writer, request, emulator_factory,
                                                                tmp_path, runner_file, monkeypatch):
    """writer "head": what a device whose dd lacks iflag=count_bytes gets (`head -c N | dd`)."""
    emu = emulator_factory("galaxy-s24")
    open_dev = device_opener(transport, request, emu)
    if writer == "head":
        real_init = dep._Sender.__init__
        monkeypatch.setattr(dep._Sender, "__init__", lambda self, *a: real_init(self, *a[:3], False))
    # 1 MiB chunks here (64 MiB in use): several chunks and a short last one, hashed on the device
    # while the next is written; 9 MiB + 12345 also takes the TCP bulk connection.
    monkeypatch.setattr(dep, "CHUNK_MIB", 1)
    bundle = make_bundle(tmp_path, size=(9 << 20) + 12345, seed=11)
    model = bundle / "model.litertlm"
    host_reads = spy_host_hashes(monkeypatch)
    with open_dev() as dev:
        calls = Calls(dev)
        d1 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert {f.kind: f.action for f in d1.files} == {"runner": "pushed", "model": "pushed", "manifest": "pushed"}
        # One round trip for the device's state, then one stream per file: the manifest's own command
        # also writes the stamp; nothing is hashed on the device after the transfer.
        assert len(calls.shells) == 1 and len(calls.streams) == 3 and calls.pushes == []
        assert "sha256sum" not in calls.shells[0]
        assert all(("head -c" in c) == (writer == "head") for c in calls.commands)
        # The host never hashed the model (the device's digest proved it), and its cache knows it now.
        assert "model.litertlm" not in host_reads
        assert HostHashes().cached(model) == sha256_file(model)
    on_dev = device_file(emu, d1.model_path)
    assert on_dev.read_bytes() == model.read_bytes()
    assert int(on_dev.stat().st_mtime) == int(model.stat().st_mtime)  # as adb push keeps it
    runner_dev = device_file(emu, DEV_DIR / "litert_lm_main")
    assert runner_dev.read_bytes() == runner_file.read_bytes() and runner_dev.stat().st_mode & 0o777 == 0o755
    assert device_file(emu, d1.bundle_dir / "manifest.json").read_bytes() == (bundle / "manifest.json").read_bytes()
    stamp = json.loads(device_file(emu, d1.bundle_dir / STAMP_NAME).read_text())
    assert stamp["manifest"] == d1.manifest_hash and len(stamp["files"]) == 3
    st = on_dev.stat()
    assert stamp["files"][str(d1.model_path)] == {"size": st.st_size, "mtime": int(st.st_mtime),
                                                  "ctime": int(st.st_ctime), "inode": st.st_ino,
                                                  "sha256": sha256_file(model)}
    assert _no_parts(emu) == []
    # The stamp the device wrote proves the bundle: a re-push is one round trip, nothing sent.
    with open_dev() as dev:
        calls = Calls(dev)
        d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert d2.bytes_pushed == 0 and len(calls.shells) == 1 and calls.streams == []


@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_a_byte_changed_on_the_way_is_caught(transport, request, emulator_factory, tmp_path, runner_file,
                                             monkeypatch):
    """Changed after the host hashed it and under a valid ADB checksum: only the device's sha256
    can catch it; nothing reaches the final path, the temporary is gone, the next push repairs."""
    emu = emulator_factory("galaxy-s24")
    open_dev = device_opener(transport, request, emu)
    mod = _transport_module(transport)
    monkeypatch.setattr(dep, "CHUNK_MIB", 1)
    bundle = make_bundle(tmp_path, size=(3 << 20) + 7, seed=12)
    real = mod.file_pieces
    monkeypatch.setattr(mod, "file_pieces", corrupting_pieces(real, piece=1, offset=5, mask=0x40))
    with open_dev() as dev, pytest.raises(UserError) as ei:
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    msg = ei.value.one_line()
    assert "checksum mismatch" in msg and "model.litertlm" in msg and len(msg.splitlines()) == 1
    assert not device_file(emu, BDIR / "model.litertlm").exists()
    assert not device_file(emu, BDIR / "manifest.json").exists()
    assert _no_parts(emu) == []
    monkeypatch.setattr(mod, "file_pieces", real)
    with open_dev() as dev:
        d = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert {f.kind: f.action for f in d.files} == {"runner": "unchanged", "model": "pushed", "manifest": "pushed"}
    assert device_file(emu, d.model_path).read_bytes() == (bundle / "model.litertlm").read_bytes()


@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_local_file_not_matching_its_manifest_never_reaches_the_final_path(transport, request, emulator_factory,
                                                                           tmp_path, runner_file):
    emu = emulator_factory("galaxy-s24")
    open_dev = device_opener(transport, request, emu)
    bundle = make_bundle(tmp_path, size=(2 << 20) + 3, seed=13)
    model = bundle / "model.litertlm"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # same size: only the sha256 tells
    model.write_bytes(bytes(data))
    with open_dev() as dev:
        calls = Calls(dev)
        with pytest.raises(UserError, match="does not match its manifest") as ei:
            deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert len(ei.value.one_line().splitlines()) == 1
        assert str(model) in calls.streams  # hashed while it was sent, as an unknown file is
        assert not device_file(emu, BDIR / "model.litertlm").exists() and _no_parts(emu) == []
        # Now the host knows the file's hash: refused before a byte is sent.
        calls = Calls(dev)
        with pytest.raises(UserError, match="does not match its manifest"):
            deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert calls.streams == [] and calls.pushes == []
    assert not device_file(emu, BDIR / "model.litertlm").exists()
    assert not device_file(emu, BDIR / "manifest.json").exists()


@pytest.mark.parametrize("why", ["refused", "GEMMA4_MOBILE_PUSH_SYNC"])
def test_a_device_without_exec_gets_sync_and_sha256sum(why, emulator_factory, tmp_path, runner_file, monkeypatch):
    """An old adbd that refuses exec: (stood in for by refusing it on our side), or GEMMA4_MOBILE_PUSH_SYNC=1:
    sync SEND to the temporary name, sha256sum, rename. As on the streamed path, the host does not
    hash the model before sending it: the device's sha256sum against the manifest is the proof,
    after which the host-hash cache knows the file."""

    class NoExec(TcpDevice):
        def _exec_in(self, *a, **kw):
            raise ServiceRefused(f"{self.serial} refused the exec: service", "update it")

    if why == "GEMMA4_MOBILE_PUSH_SYNC":
        monkeypatch.setenv("GEMMA4_MOBILE_PUSH_SYNC", "1")
    emu = emulator_factory("galaxy-s24")
    bundle = make_bundle(tmp_path, size=(2 << 20) + 5, seed=14)
    host_reads = spy_host_hashes(monkeypatch)
    with (NoExec if why == "refused" else TcpDevice)(emu.serial) as dev:
        calls = Calls(dev)
        d = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert "model.litertlm" not in host_reads
        assert HostHashes().cached(bundle / "model.litertlm") == sha256_file(bundle / "model.litertlm")
        assert len(calls.pushes) == 3
        assert calls.streams == ([str(runner_file)] if why == "refused" else [])  # one try, then sync
        assert sum(c.startswith("h=$(sha256sum ") for c in calls.shells) == 3  # one command per file
        assert device_file(emu, d.model_path).read_bytes() == (bundle / "model.litertlm").read_bytes()
        d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert d2.bytes_pushed == 0
    assert _no_parts(emu) == []


@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_an_emulator_gets_sync_and_a_phone_streams(transport, request, emulator_factory, tmp_path, runner_file,
                                                    monkeypatch):
    """Unforced, the choice is the device's: an emulator (ro.boot.qemu=1, the host's CPU) gets its
    model (8 MiB or more) by sync SEND and then one command that hashes, checks, renames and stats
    it, its small files (runner, manifest, whose command also writes the stamp) one exec: stream
    each; the same profile saying it is a phone (ro.boot.qemu=0) gets one exec: stream per file.
    Both leave the same bytes, and a re-push of either sends and hashes nothing."""
    from on_device.emulator.profiles import load_profile

    monkeypatch.delenv("GEMMA4_MOBILE_PUSH_SYNC")
    phone = tmp_path / "phone.json"
    prof = load_profile("galaxy-s24").to_json()
    prof["props"]["ro.boot.qemu"] = "0"
    phone.write_text(json.dumps(prof))
    bundle = make_bundle(tmp_path, size=(9 << 20) + 7, seed=15)
    for profile, synced in (("galaxy-s24", True), (str(phone), False)):
        emu = emulator_factory(profile)
        with device_opener(transport, request, emu)() as dev:
            assert dev.props["ro.boot.qemu"] == ("1" if synced else "0")
            calls = Calls(dev)
            d = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
            assert device_file(emu, d.model_path).read_bytes() == (bundle / "model.litertlm").read_bytes()
            model, small = str(bundle / "model.litertlm"), [str(runner_file), str(bundle / "manifest.json")]
            if synced:
                assert calls.pushes == [model] and sorted(calls.streams) == sorted(small)
                assert STAMP_NAME in calls.commands[-1]  # the manifest's stream writes the stamp
                # The device's state, then the model's command (the first stream marked the bundle
                # incomplete before anything was written).
                assert len(calls.shells) == 2 and calls.shells[1].startswith("h=$(sha256sum ")
            else:
                assert len(calls.streams) == 3 and calls.pushes == [] and len(calls.shells) == 1
            stamp = json.loads(device_file(emu, BDIR / STAMP_NAME).read_text())
            assert set(stamp["files"]) == {str(d.model_path), str(d.runner_path), str(BDIR / "manifest.json")}
            calls.shells.clear()
            d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
            assert d2.bytes_pushed == 0 and len(calls.shells) == 1
            assert len(calls.pushes) == (1 if synced else 0) and len(calls.streams) == (2 if synced else 3)
        assert _no_parts(emu) == []


@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_a_command_that_stops_reading_ends_the_stream(transport, request, emulator_factory, tmp_path):
    """The device command ends before the file is through (as one whose write failed does): the
    host stops sending when the device closes the stream (how soon is the device's timing, not
    asserted) and gets the command's output, on either transport; the device stays usable."""
    emu = emulator_factory("galaxy-s24")
    open_dev = device_opener(transport, request, emu)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(24 << 20))
    with open_dev() as dev:
        out = dev.stream_in("head -c 1000 > /dev/null; echo stopped early", src)
        assert out.decode().strip() == "stopped early"
        assert dev.shell("echo alive")[1].strip() == "alive"
        out = dev.stream_in("head -c 4096 | wc -c", src)  # exactly what it reads, then it answers
        assert out.decode().strip() == "4096"
