"""The one Device interface the host tooling uses: serial, properties, RAM/storage, shell with exit
code and stderr, push/pull/stat with progress. Transports (adb-shell over TCP, the adb server)
implement a handful of primitives; everything else is built here on top of them."""

from __future__ import annotations

import abc
import dataclasses
import queue
import re
import struct
import threading
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from gemma4_common.errors import UserError
from gemma4_common.shell import join

# progress(bytes_done_since_last_call)
ProgressFn = Callable[[int], None]

# Shell protocol v2 packet ids (AOSP adb shell_protocol.h): 1 byte id + 4 byte LE length + data.
V2_STDOUT, V2_STDERR, V2_EXIT = 1, 2, 3
_V2_HEADER = struct.Struct("<BI")

SYNC_DATA_MAX = 64 * 1024  # SYNC.TXT: DATA chunks are at most 64 KiB
_SYNC_HDR = struct.Struct("<4sI")
# How many sync DATA chunks one batch (one ADB WRTE, one socket write) carries at most, and how
# many batches the reader thread keeps ready ahead of the sender.
SYNC_BATCH_CHUNKS = 16
SYNC_READ_AHEAD = 4


def _read_ahead(name: str, produce: Callable[[Callable[[Any], bool]], None]):
    """Yield what `produce(put)` puts, made by a thread ahead of the caller (at most SYNC_READ_AHEAD
    items ready); `put` returns False once the caller stopped. An exception in the thread is raised
    in the caller."""
    q: queue.Queue = queue.Queue(SYNC_READ_AHEAD)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            produce(put)
            put(None)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join()


def file_pieces(local: Path, piece: int, checksum: Callable[[memoryview], int] | None = None):
    """The bytes of `local` as (piece, its length, ADB checksum or 0), pieces of at most `piece`
    bytes, read by a thread ahead of the caller, which only sends (numpy computes the checksums
    without the GIL)."""

    def produce(put) -> None:
        with open(local, "rb", buffering=0) as f:
            while True:
                buf = bytearray(piece)
                view = memoryview(buf)
                n = 0
                while n < piece:  # fill whole pieces: a short read is not the end of every file
                    k = f.readinto(view[n:])
                    if not k:
                        break
                    n += k
                if not n:
                    return
                data = view[:n]
                if not put((data, n, checksum(data) if checksum else 0)) or n < piece:
                    return

    return _read_ahead(f"read {local.name}", produce)


def sync_send_batches(local: Path, device_path: str, mode: int, mtime: int, max_batch: int,
                      checksum: Callable[[memoryview], int] | None = None):
    """The byte stream of one sync SEND (SEND request, DATA chunks of 64 KiB, DONE carrying `mtime`),
    as pieces of at most `max_batch` bytes: yields (piece, file bytes in it, ADB checksum or 0).

    A reader thread reads the file into whole-request batches (and computes the checksums, which
    numpy does without the GIL) ahead of the caller, which only sends: the disk read overlaps the
    network write. Pieces may cut a request in two: sync is a byte stream over the ADB stream.
    """
    spec = f"{device_path},{0o100000 | mode}".encode("utf-8")
    head = _SYNC_HDR.pack(b"SEND", len(spec)) + spec
    per = max(1, min(SYNC_BATCH_CHUNKS, (max_batch - 16 - len(head)) // (SYNC_DATA_MAX + 8)))

    def produce(put) -> None:
        with open(local, "rb", buffering=0) as f:
            first, eof = True, False
            while not eof:
                buf = bytearray((len(head) if first else 0) + per * (SYNC_DATA_MAX + 8) + 8)
                view = memoryview(buf)
                pos = 0
                if first:
                    view[:len(head)] = head
                    pos, first = len(head), False
                sizes = []
                for _ in range(per):
                    n = f.readinto(view[pos + 8:pos + 8 + SYNC_DATA_MAX])
                    if not n:
                        eof = True
                        break
                    _SYNC_HDR.pack_into(buf, pos, b"DATA", n)
                    pos += 8 + n
                    sizes.append(n)
                    if n < SYNC_DATA_MAX:  # a short read is the end of a regular file
                        eof = True
                        break
                if eof:
                    _SYNC_HDR.pack_into(buf, pos, b"DONE", mtime & 0xFFFFFFFF)
                    pos += 8
                nbytes = sum(sizes)
                for off in range(0, pos, max_batch):
                    piece = view[off:min(pos, off + max_batch)]
                    share = nbytes if off + max_batch >= pos else 0  # progress once per batch
                    if not put((piece, share, checksum(piece) if checksum else 0)):
                        return

    return _read_ahead(f"sync-read {local.name}", produce)


# Properties a device listing reports, and the names of the vendor SoC props (Android 12+).
_SOC_VENDOR_NAMES = {"QTI": "qualcomm", "QUALCOMM": "qualcomm", "MEDIATEK": "mediatek", "MTK": "mediatek",
                     "GOOGLE": "google", "SAMSUNG": "samsung"}


class DeviceOffline(UserError):
    """The connection to a device went away in the middle of an operation."""

    def __init__(self, serial: str, during: str, detail: str = ""):
        self.serial = serial
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"device {serial} went offline during {during}{why}",
            "check the cable / network (`gemma4-mobile devices`) and run the command again; "
            "nothing partial is left in place of the final files",
        )


class DeviceCommandError(UserError):
    """A device-side command failed where the host needs it to succeed."""


class ServiceRefused(DeviceCommandError):
    """The device does not offer a service (an old adbd without `exec:`): callers may fall back."""


@dataclasses.dataclass(frozen=True)
class ShellResult:
    rc: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def as_tuple(self) -> tuple[int, str, str]:
        return self.rc, self.out, self.err


@dataclasses.dataclass(frozen=True)
class DeviceStat:
    mode: int
    size: int
    mtime: int

    @property
    def exists(self) -> bool:
        return self.mode != 0

    @property
    def is_dir(self) -> bool:
        return (self.mode & 0o170000) == 0o040000

    @property
    def is_file(self) -> bool:
        return (self.mode & 0o170000) == 0o100000


@dataclasses.dataclass
class DeviceInfo:
    """What `gemma4-mobile devices` lists and results files record about a device."""

    serial: str
    transport: str
    state: str
    model: str = ""
    manufacturer: str = ""
    device: str = ""
    soc_vendor: str = ""
    soc_model: str = ""
    board_platform: str = ""
    android: str = ""
    sdk: str = ""
    abi: str = ""
    ram_bytes: int | None = None
    ram_available_bytes: int | None = None
    storage_free_bytes: int | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_v2_stream(data: bytes) -> ShellResult:
    """Split a shell-protocol-v2 byte stream into stdout, stderr and the exit code."""
    out, err = bytearray(), bytearray()
    rc: int | None = None
    pos = 0
    n = len(data)
    while pos + _V2_HEADER.size <= n:
        kind, length = _V2_HEADER.unpack_from(data, pos)
        pos += _V2_HEADER.size
        body = data[pos:pos + length]
        pos += length
        if kind == V2_STDOUT:
            out += body
        elif kind == V2_STDERR:
            err += body
        elif kind == V2_EXIT and body:
            rc = body[0]
    if rc is None:
        # The stream ended without an exit packet: the connection went away mid-command.
        raise ConnectionError("shell stream ended without an exit status")
    return ShellResult(rc, bytes(out), bytes(err))


def parse_getprop(text: str) -> dict[str, str]:
    """`getprop` output (`[key]: [value]` lines) -> dict; multi-line values are joined."""
    props: dict[str, str] = {}
    for m in re.finditer(r"^\[([^\]]+)\]: \[(.*?)\]\s*$", text, re.M | re.S):
        props[m.group(1)] = m.group(2)
    return props


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo -> {field: bytes}."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"^(\w+):\s+(\d+)(?:\s+kB)?", line)
        if m:
            out[m.group(1)] = int(m.group(2)) * (1024 if "kB" in line else 1)
    return out


def parse_df_available(text: str) -> int | None:
    """Available bytes from `df -k PATH` (the last row: fs, 1K-blocks, used, available, use%, mount)."""
    rows = [line.split() for line in text.strip().splitlines()[1:] if line.strip()]
    if not rows:
        return None
    row = rows[-1]
    # A long filesystem name may sit on a row of its own; the numbers are then the last row's first.
    nums = [f for f in row if f.isdigit()]
    if len(nums) < 3:
        return None
    return int(nums[2]) * 1024


class Device(abc.ABC):
    """A device reachable over ADB. Transport classes implement the `_`-prefixed primitives.

    Thread safety: one Device is used by one thread at a time (a lock serialises operations);
    fleets open one Device per serial.
    """

    transport = "adb"

    def __init__(self, serial: str):
        self.serial = serial
        self._props: dict[str, str] | None = None
        self._lock = threading.RLock()
        self._push_mtime = 0

    # ---- primitives --------------------------------------------------------------------------
    @abc.abstractmethod
    def _shell(self, command: str, timeout_s: float | None) -> ShellResult: ...

    @abc.abstractmethod
    def _push(self, local: Path, device_path: str, mode: int, progress: ProgressFn | None,
              mtime: int | None = None) -> None: ...

    def _exec_in(self, command: str, local: Path, progress: ProgressFn | None) -> bytes:
        raise ServiceRefused(f"{self.serial}: this transport cannot stream into a device command",
                             "use a TCP or adb-server device")

    @abc.abstractmethod
    def _pull(self, device_path: str, local: Path, progress: ProgressFn | None) -> None: ...

    @abc.abstractmethod
    def _stat(self, device_path: str) -> DeviceStat: ...

    def close(self) -> None:
        pass

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- public API --------------------------------------------------------------------------
    def shell_result(self, command: str, timeout_s: float | None = None) -> ShellResult:
        """Run a device shell command line (build it with gemma4_common.shell.join/quote)."""
        with self._lock:
            try:
                return self._shell(command, timeout_s)
            except (ConnectionError, OSError, EOFError) as e:
                raise DeviceOffline(self.serial, f"`{_short(command)}`", _why(e)) from None

    def shell(self, command: str, timeout_s: float | None = None) -> tuple[int, str, str]:
        """(exit code, stdout, stderr) of a device shell command line."""
        return self.shell_result(command, timeout_s).as_tuple()

    def check_shell(self, command: str, what: str, timeout_s: float | None = None) -> str:
        """stdout of a command that must succeed; DeviceCommandError with its stderr otherwise."""
        r = self.shell_result(command, timeout_s)
        if r.rc != 0:
            detail = (r.err or r.out).strip().splitlines()
            raise DeviceCommandError(
                f"{what} failed on {self.serial} (exit {r.rc}: {detail[-1] if detail else 'no output'})",
                "check the device path and permissions (the shell user may write under /data/local/tmp)",
            )
        return r.out

    def push(self, local: Path | str, device_path: PurePosixPath | str, mode: int = 0o644,
             progress: ProgressFn | None = None, mtime: int | None = None) -> None:
        """Send a host file to the device path (sync SEND). `progress(n)` gets bytes sent since last
        call; `mtime` (default: the host file's, as adb push does) is what the device file gets."""
        with self._lock:
            try:
                # Passed beside the call: subclasses (tests' wrappers) override _push(local, path, mode, progress).
                self._push_mtime = int(Path(local).stat().st_mtime) if mtime is None else int(mtime)
                self._push(Path(local), str(device_path), mode, progress)
            except (ConnectionError, OSError, EOFError) as e:
                if isinstance(e, FileNotFoundError) and not Path(local).exists():
                    raise
                raise DeviceOffline(self.serial, f"push of {Path(local).name}", _why(e)) from None

    def stream_in(self, command: str, local: Path | str, progress: ProgressFn | None = None) -> bytes:
        """Run `command` (a device shell command line) through the `exec:` service with the bytes of
        `local` as its stdin, and return everything it wrote (stdout and stderr, as adbd merges them
        for exec:). The host cannot end an ADB stream's input without ending the stream, so the
        command must read exactly the file's size itself (`dd iflag=count_bytes count=SIZE`,
        `head -c SIZE`; `pm install -S SIZE` streams the same way). `progress(n)` gets bytes sent.
        The host stops sending once the device closes the stream (a command that ended early).
        ServiceRefused where the device has no `exec:`."""
        local = Path(local)
        with self._lock:
            try:
                return self._exec_in(command, local, progress)
            except (ConnectionError, OSError, EOFError) as e:
                if isinstance(e, FileNotFoundError) and not local.exists():
                    raise
                raise DeviceOffline(self.serial, f"the transfer of {local.name}", _why(e)) from None

    def pull(self, device_path: PurePosixPath | str, local: Path | str, progress: ProgressFn | None = None) -> None:
        with self._lock:
            try:
                self._pull(str(device_path), Path(local), progress)
            except (ConnectionError, OSError, EOFError) as e:
                raise DeviceOffline(self.serial, f"pull of {device_path}", _why(e)) from None

    def stat(self, device_path: PurePosixPath | str) -> DeviceStat:
        """mode/size/mtime (sync STAT); mode 0 when the path does not exist."""
        with self._lock:
            try:
                return self._stat(str(device_path))
            except (ConnectionError, OSError, EOFError) as e:
                raise DeviceOffline(self.serial, f"stat of {device_path}", _why(e)) from None

    @property
    def props(self) -> dict[str, str]:
        if self._props is None:
            self._props = parse_getprop(self.check_shell("getprop", "getprop"))
        return self._props

    def meminfo(self) -> dict[str, int]:
        return parse_meminfo(self.check_shell("cat /proc/meminfo", "reading /proc/meminfo"))

    def free_bytes(self, device_path: PurePosixPath | str) -> int | None:
        """Bytes available to the shell user on the filesystem holding `device_path` (which must exist)."""
        r = self.shell_result(join(["df", "-k", str(device_path)]))
        return parse_df_available(r.out) if r.rc == 0 else None

    def sha256(self, device_paths: list[PurePosixPath | str]) -> dict[str, str | None]:
        """sha256 of device files via `sha256sum`; None for files that are missing/unreadable."""
        if not device_paths:
            return {}
        r = self.shell_result(join(["sha256sum", *[str(p) for p in device_paths]]), timeout_s=None)
        got: dict[str, str | None] = {str(p): None for p in device_paths}
        for line in r.out.splitlines():
            digest, _, name = line.strip().partition("  ")
            if name in got and re.fullmatch(r"[0-9a-f]{64}", digest):
                got[name] = digest
        return got

    def info(self) -> DeviceInfo:
        p = self.props
        mem = {}
        try:
            mem = self.meminfo()
        except UserError:
            pass
        vendor_raw = p.get("ro.soc.manufacturer", "") or p.get("ro.hardware", "")
        vendor = _SOC_VENDOR_NAMES.get(vendor_raw.upper(), vendor_raw.lower())
        return DeviceInfo(
            serial=self.serial,
            transport=self.transport,
            state="device",
            model=p.get("ro.product.model", ""),
            manufacturer=p.get("ro.product.manufacturer", ""),
            device=p.get("ro.product.device", ""),
            soc_vendor=vendor,
            soc_model=p.get("ro.soc.model", "") or p.get("ro.hardware.chipname", ""),
            board_platform=p.get("ro.board.platform", ""),
            android=p.get("ro.build.version.release", ""),
            sdk=p.get("ro.build.version.sdk", ""),
            abi=p.get("ro.product.cpu.abi", ""),
            ram_bytes=mem.get("MemTotal"),
            ram_available_bytes=mem.get("MemAvailable"),
        )

    def remove(self, *device_paths: PurePosixPath | str) -> None:
        if device_paths:
            self.shell_result(join(["rm", "-f", *[str(p) for p in device_paths]]))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.serial}>"


def _short(cmd: str, n: int = 60) -> str:
    return cmd if len(cmd) <= n else cmd[: n - 3] + "..."


def _why(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return " ".join(text.split())[:160]


__all__ = ["Device", "DeviceInfo", "DeviceOffline", "DeviceCommandError", "DeviceStat", "ServiceRefused",
           "ShellResult", "ProgressFn", "file_pieces", "parse_v2_stream", "parse_getprop", "parse_meminfo",
           "parse_df_available"]
