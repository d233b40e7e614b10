"""Reference emulators and the clients tests talk to them with: in-process emulators
(`make_emulator`), Debian's adb on a private server (`AdbClient`), adb-shell's client
(`adb_shell_client`), a bare ADB host for protocol tests (`RawAdb`), and the host path of a
device file (`device_file`)."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from on_device.emulator import EmulatorConfig, EmulatorServer, load_profile

ADB = shutil.which("adb")


def make_emulator(root: Path, profile: str = "galaxy-s24", **kw) -> EmulatorServer:
    """A started emulator rooted at `root` (kw as EmulatorConfig's, plus runner=); the caller stops it."""
    runner = kw.pop("runner", None)
    cfg = EmulatorConfig(profile=load_profile(profile), root=Path(root), **kw)
    server = EmulatorServer(cfg, runner=runner)
    server.start()
    return server


def device_file(server: EmulatorServer, path: PurePosixPath | str) -> Path:
    """Where a device path of this emulator lies on the host."""
    return server.fs.host_path_unchecked(str(path))


def adb_shell_client(port: int, *, keys=None, auth_timeout_s: float = 5, timeout_s: float = 30,
                     nodelay: bool = True):
    """adb-shell's client connected to the emulator on `port`. nodelay: over sdk_tools' TCP_NODELAY
    transport (adb-shell's stock one waits ~40 ms per round trip on Nagle + delayed ACK, which would
    make a race of a few hundred rounds take minutes); False: adb-shell's own AdbDeviceTcp."""
    from adb_shell.adb_device import AdbDevice, AdbDeviceTcp

    if nodelay:
        from sdk_tools.devices.tcp import _Transport

        dev = AdbDevice(_Transport("127.0.0.1", port), default_transport_timeout_s=timeout_s)
    else:
        dev = AdbDeviceTcp("127.0.0.1", port, default_transport_timeout_s=timeout_s)
    dev.connect(rsa_keys=keys, auth_timeout_s=auth_timeout_s)
    return dev


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
