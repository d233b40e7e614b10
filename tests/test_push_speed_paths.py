"""The fast push paths: raw sync WRTEs over adb-shell TCP and batched sync through the real adb
server (byte-identical), the verification stamp (a re-push hashes nothing; a same-size one-byte
rewrite is re-verified and repaired), the host hash cache, cut-and-resume of a 64 MiB file, and the
adb-shell private detail the TCP path depends on."""

from __future__ import annotations

import json
import os
from pathlib import PurePosixPath

import pytest

from gemma4_common.fsutil import sha256_file
from sdk_tools.deploy import PART_SUFFIX, STAMP_NAME, deploy
from sdk_tools.devices.base import Device, DeviceOffline
from sdk_tools.devices.tcp import TcpDevice, _fast_checksum, negotiated_max_payload

from support.cli import cli
from support.deploy import device_opener, make_bundle, names_after_part_cleanup, spy_host_hashes
from support.emulator import device_file
from support.procs import device_processes

DEV_DIR = PurePosixPath("/data/local/tmp/g4m-fast")

pytestmark = pytest.mark.usefixtures("isolated_device_env")


class Counting:
    """Wraps a Device: which final paths were hashed (the check; temporaries are the pushes' own
    verification) and what was sent (device paths of sync pushes, host paths of streamed ones)."""

    def __init__(self, dev: Device):
        self.dev, self.hashed, self.pushed = dev, [], []
        orig_sha, orig_push, orig_stream = dev.sha256, dev.push, dev.stream_in

        def sha256(paths):
            self.hashed += [str(p) for p in paths if not str(p).endswith(PART_SUFFIX)]
            return orig_sha(paths)

        def push(local, device_path, *a, **kw):
            self.pushed.append(str(device_path))
            return orig_push(local, device_path, *a, **kw)

        def stream_in(command, local, *a, **kw):
            self.pushed.append(str(local))
            return orig_stream(command, local, *a, **kw)

        dev.sha256, dev.push, dev.stream_in = sha256, push, stream_in


@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_push_repush_stamp_and_one_byte_rewrite(transport, request, emulator_factory, tmp_path, runner_file):
    """Both transports, against Android's real mksh + toybox behind the shell: the stamp's
    commands (stat -c, printf > file, mv, sha256sum) are the phone's own."""
    emu = emulator_factory("galaxy-s24")
    open_dev = device_opener(transport, request, emu)
    # Odd size: the last DATA chunk is short and a WRTE ends mid-request.
    bundle = make_bundle(tmp_path, size=(5 << 20) + 12345, seed=5)
    model = bundle / "model.litertlm"
    with open_dev() as dev:
        d1 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert {f.action for f in d1.files} == {"pushed"}
        on_dev = device_file(emu, d1.model_path)
        assert on_dev.read_bytes() == model.read_bytes()
        assert device_file(emu, DEV_DIR / "litert_lm_main").read_bytes() == runner_file.read_bytes()
        stamp = json.loads(device_file(emu, d1.bundle_dir / STAMP_NAME).read_text())
        assert stamp["manifest"] == d1.manifest_hash and len(stamp["files"]) == 3
        # The device file carries the host file's mtime (as adb push does): a later rewrite differs.
        assert int(on_dev.stat().st_mtime) == int(model.stat().st_mtime)

        # Re-push of the unchanged bundle: nothing sent, nothing hashed (the stamp proves it).
        c = Counting(dev)
        d2 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert d2.bytes_pushed == 0 and c.hashed == [] and c.pushed == []

        # One byte rewritten on the device, same size, new mtime: re-verified and repaired.
        bad = tmp_path / "bad.bin"
        data = bytearray(model.read_bytes())
        data[1000] ^= 0xFF
        bad.write_bytes(bytes(data))
        dev.push(bad, d1.model_path, mtime=int(model.stat().st_mtime) + 7)
        assert device_file(emu, d1.model_path).stat().st_size == model.stat().st_size
        c = Counting(dev)
        d3 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert c.hashed == [str(d1.model_path)]  # only the file whose stat moved is hashed
        assert [f.kind for f in d3.files if f.action == "pushed"] == ["model", "manifest"]
        assert device_file(emu, d1.model_path).read_bytes() == model.read_bytes()

        # The same rewrite with the old mtime restored: the inode/ctime still give it away.
        dev.push(bad, d1.model_path, mtime=int(model.stat().st_mtime))
        c = Counting(dev)
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert str(d1.model_path) in c.hashed
        assert device_file(emu, d1.model_path).read_bytes() == model.read_bytes()

        # A forged/damaged stamp proves nothing: everything is hashed, nothing sent.
        dev.check_shell(f"echo garbage > {d1.bundle_dir / STAMP_NAME}", "damaging the stamp")
        c = Counting(dev)
        d5 = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert d5.bytes_pushed == 0 and len(c.hashed) == 3
        # --rehash ignores a good stamp.
        c = Counting(dev)
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR, rehash=True)
        assert len(c.hashed) == 3 and c.pushed == []


def test_host_hashes_are_cached_by_stat(device, tmp_path, runner_file, monkeypatch):
    """A file the host does not know is sent without a host hash (the device's digest proves it) and
    the manifest's digest is then cached by its stat; a file the device already proves is not read
    on the host at all."""
    import sdk_tools.devices.tcp as tcp
    from converters.bundle import write_manifest
    from sdk_tools.deploy import HostHashes

    bundle = make_bundle(tmp_path, size=1 << 20, seed=9)
    model = bundle / "model.litertlm"
    reads = spy_host_hashes(monkeypatch)
    streamed: list[str] = []  # what is sent, either path (sync to the emulator; streamed is forced below)
    real_pieces, real_batches = tcp.file_pieces, tcp.sync_send_batches
    monkeypatch.setattr(tcp, "file_pieces", lambda local, *a, **kw: (streamed.append(local.name),
                                                                     real_pieces(local, *a, **kw))[1])
    monkeypatch.setattr(tcp, "sync_send_batches", lambda local, *a, **kw: (streamed.append(local.name),
                                                                           real_batches(local, *a, **kw))[1])
    dev = device
    deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert "model.litertlm" in streamed and "model.litertlm" not in reads
    assert HostHashes().cached(model) == sha256_file(model)
    reads.clear(), streamed.clear()
    deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert "model.litertlm" not in reads + streamed  # unchanged stat: not read again
    model.write_bytes(model.read_bytes())  # same bytes, new mtime/ctime: the cache no longer vouches
    # File times come from the kernel's coarse clock: a rewrite within the same tick can keep them
    # (git's "racy" case; flaked once in a full run). Move mtime on so the change is always visible.
    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert HostHashes().cached(model) is None
    deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert "model.litertlm" not in reads + streamed  # the device's stamp proves its copy
    model.write_bytes(bytes(range(256)) * 4096)  # new bytes: sent, proven on the device, cached
    write_manifest(bundle, {"name": "synthetic", "variant": "e2b", "recipe": {"name": "x"}})
    deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
    assert "model.litertlm" in streamed and "model.litertlm" not in reads
    assert HostHashes().cached(model) == sha256_file(model)


@pytest.mark.slow
@pytest.mark.parametrize("path", ["sync", "streamed"])
@pytest.mark.parametrize("transport", ["tcp", "server"])
def test_cut_64mib_push_resumes_per_file(transport, path, request, emulator_factory, tmp_path, runner_file,
                                         monkeypatch):
    """A cut in the middle of a 64 MiB file: nothing partial at the final path; the next run keeps
    the files already verified (runner) and sends the cut file again whole (resume is per file).
    On both paths: sync, as to an emulator, and streamed, as to a phone."""
    from gemma4_common.progress import Progress

    monkeypatch.setenv("GEMMA4_MOBILE_PUSH_SYNC", "1" if path == "sync" else "0")
    emu = emulator_factory("galaxy-s25")
    open_dev = device_opener(transport, request, emu)
    bundle = make_bundle(tmp_path, size=64 << 20, seed=2)

    class Cutter(Progress):
        def __init__(self, dev):
            super().__init__()
            self.dev, self.done = dev, 0

        def advance(self, amount):
            self.done += amount
            if self.done > 24 << 20:
                if isinstance(self.dev, TcpDevice):
                    self.dev.drop_connection()
                else:
                    raise ConnectionResetError("cable pulled")

    dev = open_dev()
    with pytest.raises((DeviceOffline, ConnectionError)):
        deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR, progress=Cutter(dev))
    dev.close()
    bdir = DEV_DIR / "bundles" / "synthetic"
    assert not device_file(emu, bdir / "model.litertlm").exists()
    assert not device_file(emu, bdir / "manifest.json").exists()
    with open_dev() as dev:
        c = Counting(dev)
        d = deploy(dev, bundle, runner=runner_file, device_dir=DEV_DIR)
        assert {f.kind: f.action for f in d.files} == {"runner": "unchanged", "model": "pushed",
                                                        "manifest": "pushed"}
        assert not any(p.endswith("litert_lm_main") for p in c.pushed)
    assert sha256_file(device_file(emu, d.model_path)) == sha256_file(bundle / "model.litertlm")
    leftovers = [n for n in names_after_part_cleanup(device_file(emu, bdir)) if n.endswith(PART_SUFFIX)]
    if leftovers:
        with open_dev() as dev:
            pytest.fail(f"{leftovers} left after the cut session; device processes:\n{device_processes(dev)}")


def test_raw_sync_uses_the_devices_max_payload(device, emulator, tmp_path):
    """The adb-shell private detail the TCP push depends on (fails loudly on an adb-shell upgrade),
    and WRTEs as large as the device allows."""
    dev = device
    assert negotiated_max_payload(dev._adb) == 1024 * 1024
    src = tmp_path / "x.bin"
    src.write_bytes(bytes(range(256)) * 9000)
    calls = []
    dev.push(src, "/data/local/tmp/x.bin", progress=calls.append)
    assert device_file(emulator, "/data/local/tmp/x.bin").read_bytes() == src.read_bytes()
    assert sum(calls) == src.stat().st_size and len(calls) <= 3  # 2.3 MB in ~960 KiB WRTEs, not 64 KiB ones
    # Shell still works on the same connection after the raw stream.
    assert dev.shell("echo ok")[1].strip() == "ok"
    # A refused push is a one-line error and leaves the connection usable.
    with pytest.raises(Exception, match="refused the push"):
        dev.push(src, "/system/x.bin")
    assert dev.shell("echo still")[1].strip() == "still"


def test_fast_checksum_matches_the_byte_sum():
    import os

    for n in (0, 1, 4095, 4096, 4097, 1 << 20, (1 << 20) + 13):
        b = os.urandom(n)
        assert _fast_checksum(b) == sum(b) & 0xFFFFFFFF
        assert _fast_checksum(memoryview(b)) == sum(b) & 0xFFFFFFFF


def test_large_tcp_push_uses_a_checksum_free_bulk_connection(device, emulator, tmp_path, monkeypatch):
    """Files of BULK_MIN_BYTES and more go over a second connection negotiated at 0x01000001 (no
    byte sums on either side); where the device will not take it, the first connection carries it."""
    import sdk_tools.devices.tcp as tcp

    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(251)) * ((tcp.BULK_MIN_BYTES // 251) + 1000))
    opened = []
    real = tcp.open_bulk_connection

    def spy(*a, **kw):
        got = real(*a, **kw)
        opened.append(None if got is None else got[1])
        return got

    monkeypatch.setattr(tcp, "open_bulk_connection", spy)
    dev = device
    dev.push(src, "/data/local/tmp/big.bin")
    assert opened == [0x01000001]
    assert device_file(emulator, "/data/local/tmp/big.bin").read_bytes() == src.read_bytes()
    monkeypatch.setattr(tcp, "open_bulk_connection", lambda *a, **kw: opened.append("refused"))
    dev._bulk_refused = False
    dev.push(src, "/data/local/tmp/big2.bin")  # falls back to the first connection
    assert opened[-1] == "refused" and dev._bulk_refused
    assert device_file(emulator, "/data/local/tmp/big2.bin").read_bytes() == src.read_bytes()
    assert dev.shell("echo ok")[1].strip() == "ok"


def test_emulator_link_rate_holds_both_directions_and_all_connections(emulator_factory, tmp_path):
    """`emulator start --link-mb-s`: a push and a pull each take at least their bytes' time on the
    link (a lower bound only: a loaded machine makes them slower, never faster), bytes intact, and
    two connections share one link (a phone has one cable)."""
    import threading
    import time

    from on_device.emulator.server import Link

    link = Link(10e6)
    t0 = time.monotonic()
    for _ in range(20):
        link.carry(100_000)  # 2 MB at 10 MB/s
    assert time.monotonic() - t0 >= 0.2 - Link.BURST_S

    emu = emulator_factory("galaxy-s24", link_mb_s=20)
    src = tmp_path / "four.bin"
    src.write_bytes(os.urandom(4 << 20))
    with TcpDevice(emu.serial) as dev:
        t0 = time.monotonic()
        dev.push(src, "/data/local/tmp/four.bin")
        assert time.monotonic() - t0 >= (4 << 20) / 20e6 - Link.BURST_S
        t0 = time.monotonic()
        dev.pull("/data/local/tmp/four.bin", tmp_path / "back.bin")
        assert time.monotonic() - t0 >= (4 << 20) / 20e6 - Link.BURST_S
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()

    def push(i: int) -> None:
        with TcpDevice(emu.serial) as dev:
            dev.push(src, f"/data/local/tmp/par{i}.bin")

    threads = [threading.Thread(target=push, args=(i,)) for i in range(2)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert time.monotonic() - t0 >= 2 * (4 << 20) / 20e6 - Link.BURST_S
    assert device_file(emu, "/data/local/tmp/par1.bin").read_bytes() == src.read_bytes()


def test_emulator_link_rate_must_be_positive(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "home"))
    r = cli("emulator", "start", "--link-mb-s", "0")
    assert r.code == 2 and "--link-mb-s must be at least 1" in r.err and "Traceback" not in r.err
