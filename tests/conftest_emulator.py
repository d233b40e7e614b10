"""Emulator fixtures, imported by tests/conftest.py.

- `emulator`: one in-process reference emulator (galaxy-s24) for the test session; `.serial`,
  `.port`, `.fs.root`, `.device.props`. Every emulator runs Android's userland (mksh + toybox) in
  bubblewrap; where that cannot run, the fixtures fail with the one-line error naming the fix.
- `emulator_factory(**kw)`: a fresh emulator per call (profile=, auth=, authorized_keys=,
  accept_new_keys=, storage_bytes=, runner=), stopped at the end of the test.
- `adb`: Debian's real adb on a private server port with its own HOME; `adb.run(*args)`,
  `adb.connect(serial)`, `adb.env`; its server is killed at the end of the session.
- `adb_serial`: the session emulator, connected through the real adb server.
- `adb_shell_device`: an adb-shell AdbDeviceTcp connected to the session emulator.
- `managed_emulator(**kw)`: a factory starting emulators as background processes through the
  manager (as `gemma4-mobile emulator start` does; kw as `manager.start`), with GEMMA4_MOBILE_HOME
  in a temp dir; returns an EmulatorRecord (.serial, .port, .pid, .root) and stops them at the end.
- `runner_file`: the emulator's runner binary in tmp_path, to pass as `--runner` / `runner=`.
- `isolated_adb_key`: ANDROID_USER_HOME in a session temp dir (the adb key stays out of ~/.android);
  `isolated_device_env`: that, plus GEMMA4_MOBILE_HOME in tmp_path and no G4M_DEVICES. Test modules
  that talk to devices use one with `pytestmark = pytest.mark.usefixtures(...)`.
- `RawAdb(port)`: a bare ADB host for protocol-level tests.

Use from tests/conftest.py with `pytest_plugins = ["conftest_emulator"]` (tests/ is on sys.path) or
`from conftest_emulator import *`. The in-process emulators call `on_device.runner.run_runner` when
the shell executes a runner file; pass `runner=` to `emulator_factory` to use another callable.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from on_device.emulator import EmulatorConfig, EmulatorServer, load_profile
from on_device.emulator.server import free_port

ADB = shutil.which("adb")


@pytest.fixture
def runner_file(tmp_path) -> Path:
    """The emulator's runner file (what `litert_lm_main` is on a phone), executable, in tmp_path."""
    from on_device.runner_contract import RUNNER_NAME, emulator_runner_bytes

    p = tmp_path / RUNNER_NAME
    p.write_bytes(emulator_runner_bytes())
    p.chmod(0o755)
    return p


@pytest.fixture(scope="session")
def adb_user_home(tmp_path_factory) -> Path:
    """One ANDROID_USER_HOME for the session, so the adb key is made once and never in ~/.android."""
    return tmp_path_factory.mktemp("android-user-home")


@pytest.fixture
def isolated_adb_key(adb_user_home, monkeypatch):
    """Keep the adb key (created on first use) out of the user's ~/.android."""
    monkeypatch.setenv("ANDROID_USER_HOME", str(adb_user_home))


@pytest.fixture
def isolated_device_env(isolated_adb_key, tmp_path, monkeypatch):
    """The adb key as above, a fresh GEMMA4_MOBILE_HOME, and no remembered serials from the user."""
    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "g4m-home"))
    monkeypatch.delenv("G4M_DEVICES", raising=False)


def make_emulator(root: Path, profile: str = "galaxy-s24", **kw) -> EmulatorServer:
    runner = kw.pop("runner", None)
    cfg = EmulatorConfig(profile=load_profile(profile), root=Path(root), **kw)
    server = EmulatorServer(cfg, runner=runner)
    server.start()
    return server


@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    server = make_emulator(tmp_path_factory.mktemp("emulator-root"))
    yield server
    server.stop()


@pytest.fixture
def emulator_factory(tmp_path):
    servers: list[EmulatorServer] = []

    def make(profile: str = "galaxy-s24", root: Path | None = None, **kw) -> EmulatorServer:
        server = make_emulator(root or (tmp_path / f"root{len(servers)}"), profile, **kw)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@dataclass
class AdbClient:
    """The real adb binary with a private server (port, HOME) so tests never touch the user's."""

    env: dict[str, str]
    home: Path

    def run(self, *args: str, timeout: float = 60, input: bytes | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run([ADB, *args], env=self.env, capture_output=True, timeout=timeout,
                              input=input, stdin=None if input is not None else subprocess.DEVNULL,
                              check=check)

    def connect(self, serial: str, attempts: int = 3) -> str:
        """`adb connect` exits 0 even when it fails, so its output is what counts."""
        out = ""
        for _ in range(attempts):
            r = self.run("connect", serial, timeout=30)
            out = (r.stdout + r.stderr).decode(errors="replace")
            if f"connected to {serial}" in out:
                if self.wait_state(serial, "device"):
                    return out
            time.sleep(0.3)
        raise AssertionError(f"adb connect {serial} failed: {out}")

    def state(self, serial: str) -> str:
        r = self.run("devices", timeout=20)
        for line in r.stdout.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == serial:
                return parts[1]
        return "absent"

    def wait_state(self, serial: str, want: str, timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(serial) == want:
                return True
            time.sleep(0.1)
        return False

    @property
    def pubkey(self) -> Path:
        return self.home / ".android" / "adbkey.pub"


@pytest.fixture(scope="session")
def adb(tmp_path_factory):
    if ADB is None:
        pytest.skip("Debian's adb is not installed (apt-get install adb)")
    home = tmp_path_factory.mktemp("adb-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
    env.update(HOME=str(home), ANDROID_ADB_SERVER_PORT=str(free_port()), ADB_MDNS="0")
    client = AdbClient(env=env, home=home)
    client.run("start-server", timeout=60, check=True)
    yield client
    client.run("kill-server", timeout=30)


@pytest.fixture(scope="session")
def adb_serial(adb, emulator):
    adb.connect(emulator.serial)
    return emulator.serial


@pytest.fixture
def adb_shell_device(emulator):
    from adb_shell.adb_device import AdbDeviceTcp

    dev = AdbDeviceTcp("127.0.0.1", emulator.port, default_transport_timeout_s=10)
    dev.connect(rsa_keys=None, auth_timeout_s=5)
    yield dev
    dev.close()


@pytest.fixture
def managed_emulator(tmp_path, monkeypatch):
    from on_device.emulator import manager

    monkeypatch.setenv("GEMMA4_MOBILE_HOME", str(tmp_path / "g4m-home"))
    recs = []

    def start(**kw):
        rec = manager.start(**kw)
        recs.append(rec)
        return rec

    yield start
    for r in recs:
        try:
            manager.stop(r.id)
        except Exception:
            pass


class RawAdb:
    """A bare ADB host for protocol tests: sends exactly the packets it is told to."""

    def __init__(self, port: int, timeout: float = 10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self) -> None:
        self.sock.close()

    def send(self, cmd: bytes, arg0: int, arg1: int, payload: bytes = b"", check: int | None = None,
             magic: int | None = None, length: int | None = None) -> None:
        from on_device.emulator import protocol as P

        c = int.from_bytes(cmd, "little")
        hdr = P.HEADER.pack(c, arg0, arg1, len(payload) if length is None else length,
                            P.checksum(payload) if check is None else check,
                            (c ^ 0xFFFFFFFF) if magic is None else magic)
        self.sock.sendall(hdr + payload)

    def _exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return bytes(buf)

    def recv(self) -> tuple[bytes, int, int, bytes]:
        import struct

        cmd, a0, a1, n, check, magic = struct.unpack("<6I", self._exact(24))
        payload = self._exact(n)
        return cmd.to_bytes(4, "little"), a0, a1, payload

    def handshake(self, version: int = 0x01000001, maxdata: int = 1 << 20) -> bytes:
        self.send(b"CNXN", version, maxdata, b"host::features=shell_v2\0")
        cmd, a0, a1, payload = self.recv()
        assert cmd == b"CNXN", cmd
        self.max_payload = a1
        return payload

    def open(self, local_id: int, service: str) -> int | None:
        """The device's id for the new stream, or None when it refused (CLSE)."""
        self.send(b"OPEN", local_id, 0, service.encode() + b"\0")
        cmd, a0, a1, _ = self.recv()
        assert a1 == local_id
        return a0 if cmd == b"OKAY" else None

    def read_stream(self, local_id: int, remote_id: int) -> bytes:
        """Everything the device writes on a stream until it closes it (acking each WRTE)."""
        out = bytearray()
        while True:
            cmd, a0, a1, payload = self.recv()
            if cmd == b"WRTE":
                out += payload
                self.send(b"OKAY", local_id, remote_id)
            elif cmd == b"CLSE":
                self.send(b"CLSE", local_id, remote_id)
                return bytes(out)
