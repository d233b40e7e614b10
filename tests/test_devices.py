"""The Device interface over ADB against the reference emulator: adb-shell TCP and the real adb
server's socket protocol; discovery across several profiles; unknown serials; dropped devices."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from gemma4_common.errors import UserError
from on_device.emulator.profiles import load_profile
from sdk_tools.devices import list_devices, open_device
from sdk_tools.devices.base import (DeviceOffline, parse_df_available, parse_getprop, parse_meminfo,
                                    parse_v2_stream)
from sdk_tools.devices.server import AdbServer, ServerDevice
from sdk_tools.devices.tcp import TcpDevice

from support.cli import cli

pytestmark = pytest.mark.usefixtures("isolated_device_env")


@pytest.fixture
def adb_server_env(adb, monkeypatch) -> AdbServer:
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", adb.env["ANDROID_ADB_SERVER_PORT"])
    return AdbServer()


def test_parsers():
    assert parse_getprop("[ro.a]: [x]\n[ro.b]: [two words]\n[ro.c]: []\n") == {
        "ro.a": "x", "ro.b": "two words", "ro.c": ""}
    assert parse_meminfo("MemTotal:  1024 kB\nMemAvailable:   512 kB\n") == {"MemTotal": 1 << 20,
                                                                             "MemAvailable": 512 << 10}
    df = "Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/block/dm-48 1000 400 600 40% /data\n"
    assert parse_df_available(df) == 600 * 1024
    v2 = (struct.pack("<BI", 1, 3) + b"out" + struct.pack("<BI", 2, 3) + b"err" + struct.pack("<BI", 3, 1) + b"\x07")
    r = parse_v2_stream(v2)
    assert (r.rc, r.stdout, r.stderr) == (7, b"out", b"err")
    with pytest.raises(ConnectionError):
        parse_v2_stream(struct.pack("<BI", 1, 3) + b"out")  # no exit packet: the stream was cut


def _exercise(dev, emu, tmp_path: Path) -> None:
    assert dev.shell("echo hello; echo oops >&2; exit 5") == (5, "hello\n", "oops\n")
    assert dev.props["ro.product.model"] == emu.config.profile.props["ro.product.model"]
    info = dev.info()
    assert info.ram_bytes == emu.config.profile.ram_bytes
    assert info.abi == "arm64-v8a"
    assert dev.free_bytes("/data/local/tmp") > 0
    src = tmp_path / "blob.bin"
    src.write_bytes(os.urandom(300_000))
    seen = []
    dev.push(src, "/data/local/tmp/d/blob.bin", progress=seen.append)
    assert sum(seen) == 300_000
    st = dev.stat("/data/local/tmp/d/blob.bin")
    assert st.is_file and st.size == 300_000
    assert not dev.stat("/data/local/tmp/none").exists
    back = tmp_path / "back.bin"
    dev.pull("/data/local/tmp/d/blob.bin", back)
    assert back.read_bytes() == src.read_bytes()
    import hashlib

    assert dev.sha256(["/data/local/tmp/d/blob.bin", "/data/local/tmp/none"]) == {
        "/data/local/tmp/d/blob.bin": hashlib.sha256(src.read_bytes()).hexdigest(), "/data/local/tmp/none": None}


def test_tcp_device(emulator_factory, tmp_path):
    emu = emulator_factory("pixel-8-pro")
    with TcpDevice(emu.serial) as dev:
        _exercise(dev, emu, tmp_path)


def test_server_device(adb, adb_server_env, emulator_factory, tmp_path):
    emu = emulator_factory("galaxy-s25")
    adb.connect(emu.serial)
    try:
        dev = ServerDevice(emu.serial, adb_server_env)
        assert "shell_v2" in dev.features
        _exercise(dev, emu, tmp_path)
    finally:
        adb.run("disconnect", emu.serial)


def test_tcp_auth_creates_key(emulator_factory, tmp_path, monkeypatch):
    home = tmp_path / "fresh-android-home"
    monkeypatch.setenv("ANDROID_USER_HOME", str(home))
    emu = emulator_factory("galaxy-s24", auth=True, accept_new_keys=True)
    with TcpDevice(emu.serial) as dev:
        assert dev.shell("echo ok")[1] == "ok\n"
    assert (home / "adbkey").is_file() and (home / "adbkey.pub").is_file()


def test_list_devices_several_profiles(adb, adb_server_env, emulator_factory):
    profiles = ["galaxy-s24", "dimensity-9400", "pixel-8-pro"]
    emus = [emulator_factory(p) for p in profiles]
    adb.connect(emus[0].serial)
    adb.connect(emus[1].serial)
    try:
        infos = {i.serial: i for i in list_devices([emus[2].serial])}
        for emu, name in zip(emus, profiles):
            prof = load_profile(name)
            i = infos[emu.serial]
            assert i.state == "device", i
            assert i.model == prof.props["ro.product.model"]
            assert i.soc_model == prof.props["ro.soc.model"]
            assert i.android == prof.props["ro.build.version.release"]
            assert i.ram_bytes == prof.ram_bytes
            assert i.abi == "arm64-v8a"
        assert infos[emus[0].serial].transport == "adb-server"
        assert infos[emus[2].serial].transport == "tcp"
        assert infos[emus[0].serial].soc_vendor == "qualcomm"
        assert infos[emus[1].serial].soc_vendor == "mediatek"

        res = cli("devices", "--connect", emus[2].serial, "--json")
        assert res.code == 0
        listed = {d["serial"]: d for d in res.json()}
        assert {e.serial for e in emus} <= set(listed)
        # --connect remembers the TCP serial: listed next time without it.
        assert emus[2].serial in {i.serial for i in list_devices()}
        res = cli("devices")
        assert res.code == 0
        text = res.out
        assert "SM8650" in text and "Pixel 8 Pro" in text
    finally:
        adb.run("disconnect", emus[0].serial)
        adb.run("disconnect", emus[1].serial)


def test_unknown_serial(emulator_factory, tmp_path):
    emu = emulator_factory("galaxy-s24")
    with open_device(emu.serial):  # reachable over TCP: remembered
        pass
    with pytest.raises(UserError) as ei:
        open_device("R5CX00NOPE")
    msg = ei.value.one_line()
    assert "R5CX00NOPE" in msg and emu.serial in msg and "SM-S921U" in msg
    from on_device.runner_contract import emulator_runner_bytes

    runner = tmp_path / "runner"
    runner.write_bytes(emulator_runner_bytes())
    res = cli("push", tmp_path, "--device", "127.0.0.1:1", "--runner", runner)
    assert res.code == 2
    err = res.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot reach 127.0.0.1:1"), err
    assert emu.serial in err  # what is reachable


def test_device_offline_mid_command(emulator_factory):
    emu = emulator_factory("galaxy-s24")
    dev = TcpDevice(emu.serial)
    assert dev.shell("true")[0] == 0
    emu.stop()
    with pytest.raises(DeviceOffline) as ei:
        dev.shell("echo hi")
    assert emu.serial in ei.value.one_line()
    dev.close()
