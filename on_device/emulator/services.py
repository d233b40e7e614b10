"""What the device services share: the names `shell:` (v1), `shell,v2,...:` (shell protocol v2) and
`exec:` (run by userland_services.py over the real userland), shell protocol v2 framing, and
`sync:` (file transfer, AOSP SYNC.TXT) over fs.py. Each service runs in its own thread over a
blocking Stream."""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat as statmod
import struct
from typing import Callable

from .fs import FsError

log = logging.getLogger(__name__)

# ---- shell protocol v2 ---------------------------------------------------------------------------
ID_STDIN, ID_STDOUT, ID_STDERR, ID_EXIT, ID_CLOSE_STDIN, ID_WINDOW_SIZE = 0, 1, 2, 3, 4, 5
_V2_HEADER = struct.Struct("<BI")


def v2_packet(kind: int, data: bytes) -> bytes:
    return _V2_HEADER.pack(kind, len(data)) + data


def shell_exec_sync_service(name: str, run_shell: Callable) -> Callable | None:
    """`shell[,v2,pty,raw,TERM=..]:CMD`, `exec:CMD` and `sync:` over a shell implementation
    `run_shell(stream, device, command, v2=, pty=, env=)`; None for any other name."""
    if name.startswith("shell"):
        head, sep, command = name.partition(":")
        if not sep or (head != "shell" and not head.startswith("shell,")):
            return None
        args = head.split(",")[1:]
        v2 = "v2" in args
        pty = "pty" in args or (not command and "raw" not in args)
        env = {"TERM": a[5:] for a in args if a.startswith("TERM=")}
        return lambda stream, device: run_shell(stream, device, command, v2=v2, pty=pty, env=env)
    if name.startswith("exec:"):
        command = name[5:]
        return lambda stream, device: run_shell(stream, device, command, v2=False, pty=False, env={})
    if name in ("sync:", "sync"):
        return sync_service
    return None


def shell_input(stream, v2: bool):
    """(kind, body) packets from the host side of a shell stream until it ends: shell_v2 packets
    as framed, v1's raw bytes as ID_STDIN."""
    buf = bytearray()
    while True:
        data = stream.read()
        if not data:
            return
        if not v2:
            yield ID_STDIN, bytes(data)
            continue
        buf += data
        while len(buf) >= _V2_HEADER.size:
            kind, n = _V2_HEADER.unpack_from(buf)
            if len(buf) < _V2_HEADER.size + n:
                break
            body = bytes(buf[_V2_HEADER.size:_V2_HEADER.size + n])
            del buf[:_V2_HEADER.size + n]
            yield kind, body


# ---- sync ----------------------------------------------------------------------------------------
def _id(s: bytes) -> int:
    return struct.unpack("<I", s)[0]


STAT, STA2, LST2 = _id(b"STAT"), _id(b"STA2"), _id(b"LST2")
LIST, LIS2, DENT, DNT2 = _id(b"LIST"), _id(b"LIS2"), _id(b"DENT"), _id(b"DNT2")
SEND, RECV, DATA, DONE = _id(b"SEND"), _id(b"RECV"), _id(b"DATA"), _id(b"DONE")
OKAY, FAIL, QUIT = _id(b"OKAY"), _id(b"FAIL"), _id(b"QUIT")

SYNC_DATA_MAX = 64 * 1024
SYNC_PATH_MAX = 1024
_REQ = struct.Struct("<II")
_STAT_V1 = struct.Struct("<IIII")
_STAT_V2 = struct.Struct("<IIQQIIIIQqqq")
_DENT_V1 = struct.Struct("<IIIII")
_DENT_V2 = struct.Struct("<IIQQIIIIQqqqI")


class SyncEOF(Exception):
    pass


class SyncReader:
    """Byte-exact reads over stream payloads (sync requests may span or share packets)."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = bytearray()
        self.pos = 0

    def read(self, n: int) -> bytes | memoryview:
        """Exactly n bytes (a view valid until the next read)."""
        while len(self.buf) - self.pos < n:
            data = self.stream.read()
            if not data:
                raise SyncEOF()
            if self.pos == len(self.buf):
                # The connection hands over a fresh bytearray per packet: take it without a copy.
                self.buf, self.pos = (data if isinstance(data, bytearray) else bytearray(data)), 0
            else:
                if self.pos:
                    del self.buf[:self.pos]
                    self.pos = 0
                self.buf += data
        out = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return out


class SyncWriter:
    """Batches small sync replies into packets up to the stream's max payload."""

    def __init__(self, stream):
        self.stream = stream
        self.buf = bytearray()

    def add(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= self.stream.max_payload:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            self.stream.write(bytes(self.buf))
            self.buf.clear()


def _ownership(fs, dev) -> tuple[int, int]:
    return (2000, 2000) if fs.mount_mode(dev) == "rw" else (0, 0)


def _stat_v2(fs, path: str, follow: bool) -> tuple[int, os.stat_result | None, tuple[int, int]]:
    try:
        st = fs.stat(path) if follow else fs.lstat(path)
        dev, _ = fs.canonical(path, "/", follow=follow)
        return 0, st, _ownership(fs, dev)
    except OSError as e:
        return e.errno or errno.EIO, None, (0, 0)


def _fail(w: SyncWriter, message: str) -> None:
    data = message.encode("utf-8", "replace")
    w.add(_REQ.pack(FAIL, len(data)) + data)
    w.flush()


def sync_service(stream, device) -> None:
    fs = device.fs
    r = SyncReader(stream)
    w = SyncWriter(stream)
    try:
        while True:
            try:
                ident, length = _REQ.unpack(r.read(8))
            except SyncEOF:
                return
            if ident == QUIT:
                return
            if ident not in (STAT, STA2, LST2, LIST, LIS2, SEND, RECV):
                _fail(w, f"unknown command {struct.pack('<I', ident)!r}")
                return
            if length > SYNC_PATH_MAX:
                _fail(w, "path too long")
                return
            path = bytes(r.read(length)).decode("utf-8", "surrogateescape")
            if ident == STAT:
                try:
                    st = fs.lstat(path)
                    w.add(_STAT_V1.pack(STAT, st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
                except OSError:
                    w.add(_STAT_V1.pack(STAT, 0, 0, 0))
                w.flush()
            elif ident in (STA2, LST2):
                code, st, (uid, gid) = _stat_v2(fs, path, follow=ident == STA2)
                if st is None:
                    w.add(_STAT_V2.pack(ident, code, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
                else:
                    w.add(_STAT_V2.pack(ident, 0, 0xFD30, st.st_ino, st.st_mode, st.st_nlink, uid, gid,
                                        st.st_size, int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))
                w.flush()
            elif ident in (LIST, LIS2):
                _list(fs, path, w, v2=ident == LIS2)
            elif ident == RECV:
                if not _recv(fs, path, w):
                    return
            elif ident == SEND:
                if not _send(fs, path, r, w):
                    return
    except SyncEOF:
        return


def _list(fs, path: str, w: SyncWriter, v2: bool) -> None:
    try:
        dev, rows = fs.list_stats(path)
    except OSError:
        dev, rows = None, []
    for name, st in rows:
        raw = name.encode("utf-8", "surrogateescape")
        if v2:
            uid, gid = _ownership(fs, dev)
            w.add(_DENT_V2.pack(DNT2, 0, 0xFD30, st.st_ino, st.st_mode, st.st_nlink, uid, gid, st.st_size,
                                int(st.st_atime), int(st.st_mtime), int(st.st_ctime), len(raw)) + raw)
        else:
            w.add(_DENT_V1.pack(DENT, st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime), len(raw)) + raw)
    if v2:
        w.add(_DENT_V2.pack(DONE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    else:
        w.add(_DENT_V1.pack(DONE, 0, 0, 0, 0))
    w.flush()


def _recv(fs, path: str, w: SyncWriter) -> bool:
    try:
        f = fs.open_read(path)
    except OSError as e:
        _fail(w, f"open failed: {e.strerror}")
        return False
    with f:
        while True:
            try:
                chunk = f.read(SYNC_DATA_MAX)
            except OSError as e:
                _fail(w, f"read failed: {e.strerror}")
                return False
            if not chunk:
                break
            w.add(_REQ.pack(DATA, len(chunk)) + chunk)
    w.add(_REQ.pack(DONE, 0))
    w.flush()
    return True


def _send(fs, spec: str, r: SyncReader, w: SyncWriter) -> bool:
    path, comma, mode_text = spec.rpartition(",")
    try:
        mode = int(mode_text) if comma else None
    except ValueError:
        mode = None
    if mode is None:
        _fail(w, "bad SEND request: no mode")
        return False
    is_link = statmod.S_ISLNK(mode)
    upload = None
    failure: str | None = None
    link_target = bytearray()
    if not is_link:
        try:
            upload = fs.new_file(path)
        except FsError as e:
            verb = ("secure_mkdirs failed" if e.errno in (errno.EACCES, errno.EROFS, errno.ENOTDIR)
                    else "couldn't create file")
            failure = f"{verb}: {e.strerror}"
    try:
        while True:
            ident, length = _REQ.unpack(r.read(8))
            if ident == DATA:
                if length > SYNC_DATA_MAX:
                    failure = failure or "data chunk too large"
                    _fail(w, failure)
                    return False
                data = r.read(length)
                if is_link:
                    link_target += bytes(data)
                elif upload is not None and failure is None:
                    try:
                        upload.write(data)
                    except FsError as e:
                        failure = f"write failed: {e.strerror}"
                        log.warning("push to %s failed: %s", path, failure)
                        upload.abort()
                data.release()  # the reader may resize its buffer on the next read
            elif ident == DONE:
                if failure is None:
                    try:
                        if is_link:
                            parent = str(posixpath.dirname(fs.absolute(path)))
                            if not fs.is_dir(parent):
                                fs.mkdir(parent, parents=True)
                            # adb sends the target NUL-terminated.
                            target = bytes(link_target).split(b"\0", 1)[0]
                            fs.replace_with_symlink(target.decode("utf-8", "surrogateescape"), path)
                        else:
                            assert upload is not None
                            upload.commit(mode, length)
                            log.info("pushed %s (%d bytes)", path, upload.size)
                    except OSError as e:
                        failure = f"couldn't create file: {e.strerror}"
                if failure is not None:
                    _fail(w, failure)
                    return False
                w.add(_REQ.pack(OKAY, 0))
                w.flush()
                return True
            else:
                _fail(w, "invalid data message")
                return False
    finally:
        if upload is not None:
            upload.abort()  # no-op after a commit; removes the temp file otherwise
