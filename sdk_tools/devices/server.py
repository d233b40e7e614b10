"""Devices reached through a running adb server (USB phones, and whatever `adb connect` added),
spoken to with the server's own socket protocol (AOSP SERVICES.TXT / SYNC.TXT), never by parsing
the `adb` command's human-oriented output.

Client requests are `%04x` length + text; replies `OKAY` or `FAIL` + `%04x` length + message.
`host:transport:SERIAL` turns the socket into a stream to that device, on which one device service
(`shell,v2,raw:CMD`, `sync:`) is then opened.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

from sdk_tools.devices.base import (Device, DeviceCommandError, DeviceStat, ProgressFn, ServiceRefused,
                                    ShellResult, file_pieces, parse_v2_stream, sync_send_batches)

DEFAULT_PORT = 5037
CONNECT_TIMEOUT_S = 5.0
# A push writes the sync stream in batches of this size into a socket buffer that holds several:
# the server always has the next packet's bytes ready when the device's OKAY arrives.
PUSH_BATCH = 1 << 20
SOCKET_BUFFER = 8 << 20
_RC_MARK = "__g4m_rc="


class AdbServerError(Exception):
    """The server answered FAIL; the message is the server's."""


@dataclass
class ServerDeviceEntry:
    serial: str
    state: str  # device, offline, unauthorized, no permissions, ...
    attrs: dict[str, str] = field(default_factory=dict)


def server_address() -> tuple[str, int]:
    """$ADB_SERVER_SOCKET (tcp:HOST:PORT) or 127.0.0.1:$ANDROID_ADB_SERVER_PORT (default 5037)."""
    spec = os.environ.get("ADB_SERVER_SOCKET", "")
    if spec.startswith("tcp:"):
        host, _, port = spec[4:].rpartition(":")
        if port.isdigit():
            return (host or "127.0.0.1"), int(port)
    port_text = os.environ.get("ANDROID_ADB_SERVER_PORT", "")
    port = int(port_text) if port_text.isdigit() else DEFAULT_PORT
    return os.environ.get("ANDROID_ADB_SERVER_ADDRESS", "127.0.0.1"), port


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("adb server closed the connection")
        buf += chunk
    return bytes(buf)


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class AdbServer:
    """A client of the adb server's socket protocol."""

    def __init__(self, host: str | None = None, port: int | None = None):
        h, p = server_address()
        self.host = host or h
        self.port = port or p

    def __repr__(self) -> str:
        return f"<AdbServer {self.host}:{self.port}>"

    def _socket(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return sock

    @staticmethod
    def request(sock: socket.socket, service: str) -> None:
        data = service.encode("utf-8")
        sock.sendall(b"%04x" % len(data) + data)
        status = _recv_exact(sock, 4)
        if status == b"OKAY":
            return
        if status == b"FAIL":
            n = int(_recv_exact(sock, 4), 16)
            raise AdbServerError(_recv_exact(sock, n).decode("utf-8", "replace"))
        raise ConnectionError(f"unexpected adb server reply {status!r}")

    def query(self, service: str) -> str:
        """A host service whose reply is one length-prefixed string (host:version, host:devices-l ...)."""
        with self._socket() as sock:
            self.request(sock, service)
            n = int(_recv_exact(sock, 4), 16)
            return _recv_exact(sock, n).decode("utf-8", "replace")

    def available(self) -> bool:
        try:
            self.query("host:version")
            return True
        except (OSError, AdbServerError, ValueError):
            return False

    def devices(self) -> list[ServerDeviceEntry]:
        text = self.query("host:devices-l")
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            serial = parts[0]
            # The state is everything up to the first key:value attribute ("no permissions (...)").
            state_words, attrs = [], {}
            for p in parts[1:]:
                k, sep, v = p.partition(":")
                if sep and k.isidentifier() and (attrs or state_words):
                    attrs[k] = v
                elif not attrs:
                    state_words.append(p)
            out.append(ServerDeviceEntry(serial, " ".join(state_words), attrs))
        return out

    def features(self, serial: str) -> set[str]:
        try:
            return {f for f in self.query(f"host-serial:{serial}:features").split(",") if f}
        except AdbServerError:
            return set()

    def open_service(self, serial: str, service: str) -> socket.socket:
        """A socket connected to `service` on the device `serial`."""
        sock = self._socket()
        try:
            try:
                self.request(sock, f"host:transport:{serial}")
            except AdbServerError as e:
                raise ConnectionError(str(e)) from None
            try:
                self.request(sock, service)
            except AdbServerError as e:
                raise DeviceCommandError(f"{serial} refused the service {service.split(':')[0]} ({e})",
                                         "update the device's Android version or use another transport") from None
            return sock
        except BaseException:
            sock.close()
            raise


def _sync_req(ident: bytes, payload: bytes) -> bytes:
    return ident + struct.pack("<I", len(payload)) + payload


class ServerDevice(Device):
    """A device through the adb server: shell protocol v2 where the device has it, sync for files."""

    transport = "adb-server"

    def __init__(self, serial: str, server: AdbServer | None = None):
        super().__init__(serial)
        self.server = server or AdbServer()
        self._features: set[str] | None = None

    @property
    def features(self) -> set[str]:
        if self._features is None:
            try:
                self._features = self.server.features(self.serial)
            except OSError:
                self._features = set()
        return self._features

    def _shell(self, command: str, timeout_s: float | None) -> ShellResult:
        v2 = "shell_v2" in self.features
        service = f"shell,v2,raw:{command}" if v2 else f"shell:{command} ; echo {_RC_MARK}$?"
        sock = self.server.open_service(self.serial, service)
        with sock:
            sock.settimeout(timeout_s)
            try:
                data = _recv_all(sock)
            except socket.timeout:
                raise ConnectionError(f"no answer within {timeout_s:.0f} s") from None
        if v2:
            return parse_v2_stream(data)
        # Legacy shell: stdout and stderr share one stream; the exit code is the marker we echoed.
        text = data.decode("utf-8", "replace")
        head, sep, tail = text.rpartition(_RC_MARK)
        if not sep:
            raise ConnectionError("shell stream ended without an exit status")
        return ShellResult(int(tail.strip() or 255), head.encode(), b"")

    def _sync(self) -> socket.socket:
        return self.server.open_service(self.serial, "sync:")

    def _push(self, local: Path, device_path: str, mode: int, progress: ProgressFn | None,
              mtime: int | None = None) -> None:
        with self._sync() as sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            except OSError:
                pass  # the system's default buffer still works, only slower
            for piece, nbytes, _check in sync_send_batches(local, device_path, mode,
                                                           mtime if mtime is not None else self._push_mtime,
                                                           PUSH_BATCH):
                sock.sendall(piece)
                if progress and nbytes:
                    progress(nbytes)
            ident, n = struct.unpack("<4sI", _recv_exact(sock, 8))
            if ident == b"FAIL":
                msg = _recv_exact(sock, n).decode("utf-8", "replace")
                raise DeviceCommandError(f"{self.serial} refused the push to {device_path} ({msg})",
                                         "check free storage and permissions of the directory")
            if ident != b"OKAY":
                raise ConnectionError(f"unexpected sync reply {ident!r}")
            sock.sendall(_sync_req(b"QUIT", b""))

    def _exec_in(self, command: str, local: Path, progress: ProgressFn | None) -> bytes:
        try:
            sock = self.server.open_service(self.serial, "exec:" + command)
        except DeviceCommandError as e:
            raise ServiceRefused(e.problem, e.fix) from None
        with sock:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            except OSError:
                pass
            out = bytearray()
            ended = False  # the device closed the stream: the command stopped reading
            broken: OSError | None = None
            pieces = file_pieces(local, PUSH_BATCH)
            try:
                for piece, nbytes, _check in pieces:
                    try:
                        sock.sendall(piece)
                    except OSError as e:  # the server dropped the stream (the command ended?)
                        broken = e
                        break
                    if progress and nbytes:
                        progress(nbytes)
                    # The command's output, and its end, as they come: the server keeps taking our
                    # bytes after the device closed the stream, so its EOF is what says so.
                    while select.select([sock], [], [], 0)[0]:
                        data = sock.recv(1 << 16)
                        if not data:
                            ended = True
                            break
                        out += data
                    if ended:
                        break
            finally:
                pieces.close()
            if ended:
                return bytes(out)
            try:
                return bytes(out + _recv_all(sock))
            except OSError:
                if broken is not None:
                    raise broken from None
                raise

    def _pull(self, device_path: str, local: Path, progress: ProgressFn | None) -> None:
        with open(local, "wb") as f, self._sync() as sock:
            sock.sendall(_sync_req(b"RECV", device_path.encode("utf-8")))
            while True:
                ident, n = struct.unpack("<4sI", _recv_exact(sock, 8))
                if ident == b"DATA":
                    f.write(_recv_exact(sock, n))
                    if progress:
                        progress(n)
                elif ident == b"DONE":
                    break
                elif ident == b"FAIL":
                    msg = _recv_exact(sock, n).decode("utf-8", "replace")
                    raise DeviceCommandError(f"cannot pull {device_path} from {self.serial} ({msg})", "check the path")
                else:
                    raise ConnectionError(f"unexpected sync reply {ident!r}")
            sock.sendall(_sync_req(b"QUIT", b""))

    def _stat(self, device_path: str) -> DeviceStat:
        if "stat_v2" in self.features:  # 64-bit sizes (STAT v1 truncates files over 4 GiB)
            with self._sync() as sock:
                sock.sendall(_sync_req(b"STA2", device_path.encode("utf-8")))
                ident, err, _dev, _ino, mode, _nl, _uid, _gid, size, _at, mtime, _ct = struct.unpack(
                    "<4sIQQIIIIQqqq", _recv_exact(sock, 72))
                if ident != b"STA2":
                    raise ConnectionError(f"unexpected sync reply {ident!r}")
                sock.sendall(_sync_req(b"QUIT", b""))
                return DeviceStat(0, 0, 0) if err else DeviceStat(mode, size, int(mtime))
        with self._sync() as sock:
            sock.sendall(_sync_req(b"STAT", device_path.encode("utf-8")))
            ident, mode, size, mtime = struct.unpack("<4sIII", _recv_exact(sock, 16))
            if ident != b"STAT":
                raise ConnectionError(f"unexpected sync reply {ident!r}")
            sock.sendall(_sync_req(b"QUIT", b""))
            return DeviceStat(mode, size, mtime)
