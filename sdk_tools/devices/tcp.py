"""Devices reached directly over TCP (`adb tcpip` phones, the reference emulator) with adb-shell.

RSA keys are the adb client's: `$ANDROID_USER_HOME/adbkey` or `~/.android/adbkey` (created if
missing, like adb does), so a phone that trusts this computer's adb trusts this tool too.
"""

from __future__ import annotations

import os
import select
import socket
import stat as statmod
import time
from pathlib import Path

import numpy as np
from adb_shell import adb_device as _adb_device_mod
from adb_shell import adb_message as _adb_message
from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice
from adb_shell.transport.base_transport import BaseTransport

from gemma4_common.errors import UserError
from sdk_tools.devices.base import Device, DeviceCommandError, DeviceStat, ProgressFn, ShellResult, parse_v2_stream


def _fast_checksum(data) -> int:
    """ADB packet checksum (byte sum) with numpy: adb-shell's pure-Python sum() costs ~15 ns/byte,
    which capped pushes at ~70 MB/s; the value is identical."""
    if isinstance(data, str):
        data = data.encode("latin-1", "replace")
    if len(data) < 4096:
        return sum(data) & 0xFFFFFFFF
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


# adb-shell looks the function up by module global at call time (adb_message and adb_device).
_adb_message.checksum = _fast_checksum
_adb_device_mod.checksum = _fast_checksum

CONNECT_TIMEOUT_S = 10.0
# How long to wait, after the device refused our signature and got our public key, for it to accept
# the key: a device with --accept-new-keys (or an adbd that trusts it) answers at once; a phone
# shows its "Allow debugging?" prompt, which stays up while we say so and exit, as adb does.
AUTH_TIMEOUT_S = 3.0
# adb-shell waits at most read_timeout_s for the next packet; a runner may print nothing for long.
LONG_READ_S = 24 * 3600.0
SHORT_S = 60.0


def adb_key_path() -> Path:
    """Where adb keeps this computer's private key (AOSP adb: $ANDROID_USER_HOME, else ~/.android)."""
    user_home = os.environ.get("ANDROID_USER_HOME")
    if user_home:
        return Path(user_home) / "adbkey"
    home = os.environ.get("HOME") or str(Path.home())
    return Path(home) / ".android" / "adbkey"


def load_signer(path: Path | None = None):
    """An adb-shell signer for the adb key, generating the key pair first when it is missing."""
    from adb_shell.auth.keygen import keygen, write_public_keyfile
    from adb_shell.auth.sign_cryptography import CryptographySigner

    path = path or adb_key_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(path))
        os.chmod(path, 0o600)
    elif not Path(str(path) + ".pub").is_file():
        write_public_keyfile(str(path), str(path) + ".pub")
    return CryptographySigner(str(path))


def unauthorized_key_error(serial: str, key: Path) -> UserError:
    """The device does not trust this computer's key: what authorizes it, on any kind of device."""
    pub = f"{key}.pub"
    return UserError(
        f"{serial} refused this computer's adb key ({pub}): the key is not authorized on the device",
        "authorize it and run again: on a phone, accept the 'Allow debugging?' prompt it shows now; "
        f"on a device without a screen, add the key to the device's authorized keys (adbd's "
        f"/data/misc/adb/adb_keys; for the reference emulator: `cat {pub} >> FILE` with FILE its "
        "--authorized-keys file, by default adb_keys in the state_dir that `gemma4-mobile emulator list --json` "
        "shows, or start it with --accept-new-keys)")


def split_serial(serial: str) -> tuple[str, int]:
    host, sep, port = serial.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"{serial!r} is not a TCP serial", "use HOST:PORT, e.g. 192.168.1.20:5555")
    return host.strip("[]"), int(port)


def is_tcp_serial(serial: str) -> bool:
    host, sep, port = serial.rpartition(":")
    return bool(sep and host and port.isdigit())


class _Transport(BaseTransport):
    """adb-shell's TCP transport, but EOF raises (instead of spinning until a timeout) and writes
    are complete (the stock one ignores short sends)."""

    def __init__(self, host: str, port: int):
        self._host, self._port = host, port
        self._sock: socket.socket | None = None

    def connect(self, transport_timeout_s):
        self._sock = socket.create_connection((self._host, self._port), timeout=transport_timeout_s or CONNECT_TIMEOUT_S)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._sock.settimeout(None)

    def close(self):
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def bulk_read(self, numbytes, transport_timeout_s):
        if self._sock is None:
            raise ConnectionResetError("connection closed")
        if transport_timeout_s is not None:
            r, _, _ = select.select([self._sock], [], [], transport_timeout_s)
            if not r:
                raise adb_exc.TcpTimeoutException(f"reading from {self._host}:{self._port} timed out")
        data = self._sock.recv(numbytes)
        if not data:
            raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
        return data

    def bulk_write(self, data, transport_timeout_s):
        if self._sock is None:
            raise ConnectionResetError("connection closed")
        self._sock.sendall(data)
        return len(data)


_CONN_ERRORS = (adb_exc.TcpTimeoutException, adb_exc.AdbTimeoutError, adb_exc.InvalidResponseError,
                adb_exc.InvalidCommandError, adb_exc.InvalidChecksumError, adb_exc.AdbConnectionError)


class TcpDevice(Device):
    """A device over a direct ADB/TCP connection (adb-shell)."""

    transport = "tcp"

    def __init__(self, serial: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 auth_timeout_s: float = AUTH_TIMEOUT_S, key_path: Path | None = None):
        super().__init__(serial)
        host, port = split_serial(serial)
        self._transport = _Transport(host, port)
        self._adb = AdbDevice(self._transport, default_transport_timeout_s=None)
        key = key_path or adb_key_path()
        try:
            signer = load_signer(key)
        except (OSError, ValueError) as e:
            raise UserError(f"cannot read or create the adb key {key} ({e})",
                            "fix its permissions, or set ANDROID_USER_HOME to a writable directory") from None
        refused: list[bool] = []  # set when the device refused our signature and we offer the key
        try:
            ok = self._adb.connect(rsa_keys=[signer], transport_timeout_s=connect_timeout_s,
                                   auth_timeout_s=auth_timeout_s, read_timeout_s=connect_timeout_s,
                                   auth_callback=lambda _dev: refused.append(True))
        except adb_exc.DeviceAuthError:
            self._transport.close()
            raise unauthorized_key_error(serial, key) from None
        except (ConnectionError, OSError, *_CONN_ERRORS) as e:
            self._transport.close()
            if refused:
                raise unauthorized_key_error(serial, key) from None
            if isinstance(e, (ConnectionError, OSError)):
                raise UserError(f"cannot reach {serial} over TCP ({_reason(e)})",
                                "check that the device is on and listening (`adb tcpip 5555` on a phone)") from None
            raise UserError(f"{serial} did not complete the ADB handshake ({_reason(e)})",
                            "check that it is an ADB device (adbd) and run again") from None
        if not ok:
            self._transport.close()
            raise UserError(f"{serial} did not accept the ADB connection", "check the device and run again")

    def close(self) -> None:
        try:
            self._adb.close()
        except Exception:
            pass

    def drop_connection(self) -> None:
        """Shut the socket down (as a pulled cable would); later calls raise DeviceOffline."""
        self._transport.shutdown()

    # ---- primitives --------------------------------------------------------------------------
    def _shell(self, command: str, timeout_s: float | None) -> ShellResult:
        try:
            raw = self._adb._service(b"shell,v2,raw", command.encode("utf-8"), transport_timeout_s=None,
                                     read_timeout_s=timeout_s or LONG_READ_S, timeout_s=timeout_s, decode=False)
        except _CONN_ERRORS as e:
            raise ConnectionError(_reason(e)) from None
        return parse_v2_stream(raw)

    def _push(self, local: Path, device_path: str, mode: int, progress: ProgressFn | None) -> None:
        cb = (lambda _path, n, _total: progress(n)) if progress else None
        try:
            self._adb.push(str(local), device_path, st_mode=statmod.S_IFREG | mode, mtime=int(time.time()),
                           progress_callback=cb, transport_timeout_s=None, read_timeout_s=LONG_READ_S)
        except adb_exc.PushFailedError as e:
            raise DeviceCommandError(f"{self.serial} refused the push to {device_path} ({_reason(e)})",
                                     "check free storage and permissions of the directory") from None
        except _CONN_ERRORS as e:
            raise ConnectionError(_reason(e)) from None

    def _pull(self, device_path: str, local: Path, progress: ProgressFn | None) -> None:
        cb = (lambda _path, n, _total: progress(n)) if progress else None
        try:
            self._adb.pull(device_path, str(local), progress_callback=cb, transport_timeout_s=None,
                           read_timeout_s=LONG_READ_S)
        except adb_exc.AdbCommandFailureException as e:
            raise DeviceCommandError(f"cannot pull {device_path} from {self.serial} ({_reason(e)})",
                                     "check the path") from None
        except _CONN_ERRORS as e:
            raise ConnectionError(_reason(e)) from None

    def _stat(self, device_path: str) -> DeviceStat:
        try:
            mode, size, mtime = self._adb.stat(device_path, transport_timeout_s=None, read_timeout_s=SHORT_S)
        except _CONN_ERRORS as e:
            raise ConnectionError(_reason(e)) from None
        return DeviceStat(mode, size, mtime)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = " ".join(str(e).split())
    return text[:160] or type(e).__name__
