"""Devices reached directly over TCP (`adb tcpip` phones, the reference emulator) with adb-shell.

RSA keys are the adb client's: `$ANDROID_USER_HOME/adbkey` or `~/.android/adbkey` (created if
missing, like adb does), so a phone that trusts this computer's adb trusts this tool too.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import struct
from pathlib import Path

from adb_shell import adb_device as _adb_device_mod
from adb_shell import adb_message as _adb_message
from adb_shell import constants as _adb_constants
from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice
from adb_shell.transport.base_transport import BaseTransport

from gemma4_common.errors import UserError
from sdk_tools.devices.base import (Device, DeviceCommandError, DeviceStat, ProgressFn, ServiceRefused, ShellResult,
                                    file_pieces, parse_v2_stream, sync_send_batches)


def _fast_checksum(data) -> int:
    """ADB packet checksum (byte sum) with numpy: adb-shell's pure-Python sum() costs ~15 ns/byte,
    which capped pushes at ~70 MB/s; the value is identical. Rows of 4 KiB summed in uint32 first
    (no overflow: 4096 * 255 < 2**32) run about twice as fast as one uint64 reduction."""
    if isinstance(data, str):
        data = data.encode("latin-1", "replace")
    n = len(data)
    if n < 4096:
        return sum(data) & 0xFFFFFFFF
    import numpy as np  # here: a command that moves no large payload never pays its import

    a = np.frombuffer(data, dtype=np.uint8)
    body = n - n % 4096
    total = int(a[:body].reshape(-1, 4096).sum(axis=1, dtype=np.uint32).sum(dtype=np.uint64))
    if body < n:
        total += int(a[body:].sum(dtype=np.uint64))
    return total & 0xFFFFFFFF


def patch_adb_shell_checksum(fn) -> None:
    """Make adb-shell sum packets with `fn`. Its private detail, fenced here (tests/test_compat.py
    fails when it changes): adb-shell 0.4 calls the module globals `adb_message.checksum` (for what
    it sends) and `adb_device.checksum` (its own import of it, for what it receives) at call time."""
    _adb_message.checksum = fn
    _adb_device_mod.checksum = fn


patch_adb_shell_checksum(_fast_checksum)

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
    from cryptography.hazmat.primitives import serialization

    class Signer(CryptographySigner):
        """adb-shell's signer without OpenSSL's RSA key check at load (70-90 ms, every command):
        the key is this computer's own adbkey, which adb itself loads unchecked too."""

        def __init__(self, key_path: str):
            with open(key_path + ".pub", "rb") as f:
                self.public_key = f.read()
            with open(key_path, "rb") as f:
                self.rsa_key = serialization.load_pem_private_key(f.read(), None,
                                                                  unsafe_skip_rsa_key_validation=True)

    path = path or adb_key_path()
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        keygen(str(path))
        os.chmod(path, 0o600)
    elif not Path(str(path) + ".pub").is_file():
        write_public_keyfile(str(path), str(path) + ".pub")
    return Signer(str(path))


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
        self._sock = socket.create_connection((self._host, self._port),
                                              timeout=transport_timeout_s or CONNECT_TIMEOUT_S)
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


def adb_shell_raw_service(adb: AdbDevice, service: bytes, command: bytes, *, read_timeout_s: float,
                          timeout_s: float | None) -> bytes:
    """The raw output of `service:command` on the device (service e.g. b"shell,v2,raw").

    adb-shell's private detail, fenced here (tests/test_compat.py fails when it changes): its public
    shell() only opens `shell:`; adb-shell 0.4's `AdbDevice._service`, which shell() wraps, takes
    any service name."""
    return adb._service(service, command, transport_timeout_s=None, read_timeout_s=read_timeout_s,
                        timeout_s=timeout_s, decode=False)


def negotiated_max_payload(adb: AdbDevice) -> int:
    """The max payload the device advertised in its CNXN: the largest WRTE we may send it.

    adb-shell's private detail, fenced here (tests/test_push_speed_paths.py fails when it changes):
    adb-shell 0.4 keeps it as `AdbDevice._maxdata` after connect() and exposes no public accessor.
    """
    value = getattr(adb, "_maxdata", None)
    if not isinstance(value, int) or value < 256:
        raise RuntimeError(f"adb-shell {getattr(_adb_device_mod, '__version__', '?')} keeps no max payload in "
                           "AdbDevice._maxdata: update sdk_tools/devices/tcp.py:negotiated_max_payload")
    return value


_PACKET = struct.Struct("<6I")
_W = _adb_constants.ID_TO_WIRE
A_OPEN, A_OKAY, A_WRTE, A_CLSE = (_W[_adb_constants.OPEN], _W[_adb_constants.OKAY], _W[_adb_constants.WRTE],
                                  _W[_adb_constants.CLSE])
# Our own stream ids for the raw sync stream, far from adb-shell's counter (which starts at 1).
_RAW_IDS = itertools.count(0x40000000)
A_CNXN, A_AUTH = _W[_adb_constants.CNXN], _W[_adb_constants.AUTH]
A_VERSION_SKIP_CHECKSUM = 0x01000001  # AOSP adb: both sides may send 0 checksums once negotiated
AUTH_TOKEN, AUTH_SIGNATURE = 1, 2
RAW_MAX_PAYLOAD = 1024 * 1024
# Files at least this large get a connection of their own at protocol 0x01000001 (no payload
# checksums on either side: adb-shell speaks 0x01000000, which makes the device sum every byte);
# smaller ones are not worth its handshake.
BULK_MIN_BYTES = 8 << 20


def open_bulk_connection(host: str, port: int, signer, timeout_s: float = CONNECT_TIMEOUT_S
                         ) -> tuple[socket.socket, int, int] | None:
    """A second ADB connection to the device, negotiated at 0x01000001, for one bulk transfer:
    (socket, version, max payload), or None where the device does not accept it as it accepted
    the first (then the push goes over the first connection)."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        except OSError:
            pass
        raw = _RawSync(sock, check_in=True)
        raw.packet(A_CNXN, A_VERSION_SKIP_CHECKSUM, RAW_MAX_PAYLOAD, b"host::g4m-bulk\0", force_check=True)
        signed = False
        while True:
            cmd, arg0, arg1, data = raw.any_packet()
            if cmd == A_CNXN:
                sock.settimeout(None)
                return sock, min(arg0, A_VERSION_SKIP_CHECKSUM), min(arg1, RAW_MAX_PAYLOAD)
            if cmd == A_AUTH and arg0 == AUTH_TOKEN and not signed:
                raw.packet(A_AUTH, AUTH_SIGNATURE, 0, signer.Sign(data), force_check=True)
                signed = True
                continue
            break  # refused (it asks for the public key) or something unexpected
    except (OSError, ConnectionError, socket.timeout):
        pass
    sock.close()
    return None


class _RawSync:
    """One sync stream spoken directly on the connection's socket: WRTEs as large as the device
    allows (adb-shell sends 64 KiB and costs Python per packet), one outstanding at a time as the
    protocol requires, with the file read and checksummed ahead by a reader thread."""

    def __init__(self, sock: socket.socket, check_in: bool = True, check_out: bool = True):
        self.sock = sock
        self.local = next(_RAW_IDS)
        self.remote = 0
        self.inbox = bytearray()
        self.check_in, self.check_out = check_in, check_out

    def any_packet(self) -> tuple[int, int, int, bytes]:
        cmd, arg0, arg1, n, check, magic = _PACKET.unpack(self._exact(_PACKET.size))
        if magic != cmd ^ 0xFFFFFFFF:
            raise ConnectionError("bad ADB packet header from the device")
        return cmd, arg0, arg1, (self._exact(n) if n else b"")

    def packet(self, cmd: int, arg0: int, arg1: int, payload=b"", check: int | None = None,
               force_check: bool = False) -> None:
        if check is None:
            check = _fast_checksum(payload) if len(payload) and (self.check_out or force_check) else 0
        self.sock.sendall(_PACKET.pack(cmd, arg0, arg1, len(payload), check, cmd ^ 0xFFFFFFFF))
        if len(payload):
            self.sock.sendall(payload)

    def _exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if not k:
                raise ConnectionResetError("the device closed the connection")
            got += k
        return bytes(buf)

    def read(self) -> int:
        """The next packet of our stream (others' are dropped): its command; WRTE data goes to inbox."""
        while True:
            cmd, arg0, arg1, n, check, magic = _PACKET.unpack(self._exact(_PACKET.size))
            if magic != cmd ^ 0xFFFFFFFF:
                raise ConnectionError("bad ADB packet header from the device")
            data = self._exact(n) if n else b""
            if arg1 != self.local:
                continue
            if cmd == A_WRTE:
                if self.check_in and check and _fast_checksum(data) != check:
                    raise ConnectionError("bad checksum from the device")
                self.inbox += data
                self.packet(A_OKAY, self.local, self.remote)
            return cmd

    def open(self, service: bytes) -> bool:
        self.packet(A_OPEN, self.local, 0, service + b"\0")
        while True:
            cmd_arg = self._read_open()
            if cmd_arg is not None:
                return cmd_arg

    def _read_open(self) -> bool | None:
        cmd, arg0, arg1, n, _check, magic = _PACKET.unpack(self._exact(_PACKET.size))
        if n:
            self._exact(n)
        if arg1 != self.local:
            return None
        if cmd == A_OKAY:
            self.remote = arg0
            return True
        if cmd == A_CLSE:
            return False
        return None

    def sync_reply(self) -> tuple[bytes, bytes]:
        """The 8-byte sync status (and a FAIL's message)."""
        while len(self.inbox) < 8 or (self.inbox[:4] == b"FAIL"
                                      and len(self.inbox) < 8 + struct.unpack_from("<I", self.inbox, 4)[0]):
            if self.read() == A_CLSE:
                raise ConnectionError("the device closed the sync stream")
        ident = bytes(self.inbox[:4])
        n = struct.unpack_from("<I", self.inbox, 4)[0] if ident == b"FAIL" else 0
        return ident, bytes(self.inbox[8:8 + n])

    def close(self) -> None:
        self.packet(A_CLSE, self.local, self.remote)
        while self.read() != A_CLSE:
            pass


_CONN_ERRORS = (adb_exc.TcpTimeoutException, adb_exc.AdbTimeoutError, adb_exc.InvalidResponseError,
                adb_exc.InvalidCommandError, adb_exc.InvalidChecksumError, adb_exc.AdbConnectionError)


class TcpDevice(Device):
    """A device over a direct ADB/TCP connection (adb-shell)."""

    transport = "tcp"

    def __init__(self, serial: str, *, connect_timeout_s: float = CONNECT_TIMEOUT_S,
                 auth_timeout_s: float = AUTH_TIMEOUT_S, key_path: Path | None = None):
        super().__init__(serial)
        host, port = split_serial(serial)
        self._host, self._port = host, port
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
        self._signer = signer
        self._bulk_refused = False
        self._bulk_sock: socket.socket | None = None

    def close(self) -> None:
        try:
            self._adb.close()
        except Exception:
            pass

    def drop_connection(self) -> None:
        """Shut the socket down (as a pulled cable would); later calls raise DeviceOffline."""
        self._transport.shutdown()
        bulk = self._bulk_sock
        if bulk is not None:
            try:
                bulk.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- primitives --------------------------------------------------------------------------
    def _shell(self, command: str, timeout_s: float | None) -> ShellResult:
        try:
            raw = adb_shell_raw_service(self._adb, b"shell,v2,raw", command.encode("utf-8"),
                                        read_timeout_s=timeout_s or LONG_READ_S, timeout_s=timeout_s)
        except _CONN_ERRORS as e:
            raise ConnectionError(_reason(e)) from None
        return parse_v2_stream(raw)

    def _on_connection(self, size: int, run) -> object:
        """run(sock, max_payload, skip_checksums, on_unclean) on a connection of its own at
        0x01000001 for a transfer of BULK_MIN_BYTES or more (where the device accepts one), else on
        the first connection."""
        if self._transport._sock is None:
            raise ConnectionResetError("connection closed")
        bulk = None
        if not self._bulk_refused and size >= BULK_MIN_BYTES:
            bulk = open_bulk_connection(self._host, self._port, self._signer)
            self._bulk_refused = bulk is None
        if bulk is None:
            return run(self._transport._sock, negotiated_max_payload(self._adb), False, self._transport.shutdown)
        sock, version, max_payload = bulk
        self._bulk_sock = sock
        try:
            with sock:
                return run(sock, max_payload, version >= A_VERSION_SKIP_CHECKSUM, lambda: None)
        finally:
            self._bulk_sock = None

    def _push(self, local: Path, device_path: str, mode: int, progress: ProgressFn | None,
              mtime: int | None = None) -> None:
        self._on_connection(local.stat().st_size, lambda sock, max_payload, skip, on_unclean: self._push_on(
            sock, max_payload, skip, local, device_path, mode, progress, mtime, on_unclean))

    def _exec_in(self, command: str, local: Path, progress: ProgressFn | None) -> bytes:
        return self._on_connection(local.stat().st_size, lambda sock, max_payload, skip, on_unclean: self._exec_on(
            sock, max_payload, skip, command, local, progress, on_unclean))

    def _exec_on(self, sock: socket.socket, max_payload: int, skip_checksums: bool, command: str, local: Path,
                 progress: ProgressFn | None, on_unclean) -> bytes:
        """`exec:command` fed the file in WRTEs of the device's max payload, one in flight; its output
        until the device closes the stream (early, too: a command that stopped reading)."""
        raw = _RawSync(sock, check_in=not skip_checksums, check_out=not skip_checksums)
        clean = False
        pieces = None
        try:
            if not raw.open(b"exec:" + command.encode("utf-8")):
                clean = True
                raise ServiceRefused(f"{self.serial} refused the exec: service", "update the device's Android version")
            closed = False
            pieces = file_pieces(local, max_payload, None if skip_checksums else _fast_checksum)
            for piece, nbytes, check in pieces:
                raw.packet(A_WRTE, raw.local, raw.remote, piece, check)
                while True:  # its OKAY; the command's output may come first
                    cmd = raw.read()
                    if cmd == A_OKAY:
                        break
                    if cmd == A_CLSE:
                        closed = True
                        break
                if closed:
                    break
                if progress:
                    progress(nbytes)
            pieces.close()
            while not closed:
                closed = raw.read() == A_CLSE
            raw.packet(A_CLSE, raw.local, raw.remote)  # answer its CLSE
            clean = True
            return bytes(raw.inbox)
        finally:
            if pieces is not None:
                pieces.close()
            if not clean:
                on_unclean()

    def _push_on(self, sock: socket.socket, max_payload: int, skip_checksums: bool, local: Path, device_path: str,
                 mode: int, progress: ProgressFn | None, mtime: int | None, on_unclean) -> None:
        raw = _RawSync(sock, check_in=not skip_checksums, check_out=not skip_checksums)
        clean = False
        try:
            if not raw.open(b"sync:"):
                raise DeviceCommandError(f"{self.serial} refused the sync service", "check the device and run again")
            failed = None
            mtime = mtime if mtime is not None else self._push_mtime
            for piece, nbytes, check in sync_send_batches(local, device_path, mode, mtime, max_payload,
                                                          None if skip_checksums else _fast_checksum):
                raw.packet(A_WRTE, raw.local, raw.remote, piece, check)
                while True:  # one WRTE in flight: wait for its OKAY (a FAIL may come first)
                    cmd = raw.read()
                    if cmd == A_OKAY:
                        break
                    if cmd == A_CLSE:
                        raise ConnectionError("the device closed the sync stream")
                    if raw.inbox[:4] == b"FAIL":
                        failed = True
                        break
                if failed:
                    break
                if progress and nbytes:
                    progress(nbytes)
            ident, msg = raw.sync_reply()
            raw.close()
            clean = True
            if ident == b"FAIL":
                raise DeviceCommandError(f"{self.serial} refused the push to {device_path} "
                                         f"({msg.decode('utf-8', 'replace')})",
                                         "check free storage and permissions of the directory")
            if ident != b"OKAY":
                raise ConnectionError(f"unexpected sync reply {ident!r}")
        finally:
            if not clean:
                # The stream is in an unknown state (cut, interrupted): the connection is not reused.
                on_unclean()

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
