"""Atomic file and directory writes, checks of the output paths a user names, sha256 of files, and
reading a JSON file with a one-line error: the only place these are done."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from gemma4_common.errors import UserError

CHUNK = 1 << 20


_RAISE = object()


def read_json(path: Path | str, fix: str = "fix the file or remove it", *, what: str | None = None,
              missing: Any = _RAISE, broken: Any = _RAISE, missing_fix: str = "check the path") -> Any:
    """A JSON file's content.

    A file that does not exist gives `missing` when that is given, else a UserError with
    `missing_fix`. One that cannot be read or is not JSON gives `broken` when that is given, else a
    UserError naming the file (`what`, e.g. "recipe file", then its path), the place and `fix`."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        if missing is not _RAISE:
            return missing
        raise UserError(f"{label} does not exist", missing_fix) from None
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        if broken is not _RAISE:
            return broken
        if isinstance(e, json.JSONDecodeError):
            raise UserError(f"{label} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})", fix) from None
        if isinstance(e, UnicodeDecodeError):
            raise UserError(f"{label} is not JSON text (a binary file? byte {e.start} is not UTF-8)", fix) from None
        if isinstance(e, OSError):
            raise UserError(f"cannot read {label} ({e.strerror or e})", "check the path and its permissions") from None
        raise


def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(directory: Path, flag: str, target: Path) -> None:
    """Create and remove a file in `directory`: the only test that also holds for root, read-only
    mounts and ACLs (os.access says yes to root everywhere)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".g4m-probe-", dir=directory)
    except OSError as e:
        raise output_error(e, target, flag) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def output_error(e: OSError, target: Path | str, flag: str) -> UserError:
    """A write to an output path failed: one line with what to change."""
    fix = f"pass a {flag} path in a directory you can write"
    if e.errno in (errno.EACCES, errno.EPERM):
        return UserError(f"cannot write {target}: permission denied", fix)
    if e.errno == errno.EROFS:
        return UserError(f"cannot write {target}: the file system is read-only", fix)
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return UserError(f"cannot write {target}: the disk is full", f"free space or {fix}")
    if e.errno == errno.ENOTDIR:
        return UserError(f"cannot write {target}: a part of the path is a file, not a directory",
                         f"pass another {flag} path")
    if e.errno == errno.EISDIR:
        return UserError(f"cannot write {target}: it is a directory", f"pass a file name to {flag}")
    return UserError(f"cannot write {target} ({e.strerror or e})", f"check {flag} and the disk")


def check_output_file(path: Path | str, flag: str) -> Path:
    """Refuse, before any work, an output file path that cannot be written: an existing directory,
    a path below a file, or a directory the user cannot write (missing parents are fine: they are made)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag} {path} is a directory", f"pass a file path (a new name in it) to {flag}")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a directory", f"pass another {flag} path")
    _probe_writable(base, flag, path)
    return path


def check_output_dir(path: Path | str, flag: str) -> Path:
    """Refuse, before any work, an output directory that cannot be written: an existing file, a path
    below a file, or a directory the user cannot write (a missing one is fine: it is made)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a directory", f"pass a directory to {flag}")
    base = _nearest_existing(path)
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a directory", f"pass another {flag} path")
    _probe_writable(base, flag, path)
    return path


def write_output_text(path: Path | str, text: str, flag: str) -> Path:
    """atomic_write_text for a file the user named with `flag`: a failure is one UserError line."""
    path = check_output_file(path, flag)
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise output_error(e, path, flag) from None
    return path


def sha256_file(path: Path | str, chunk: int = CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str = "", *, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to `final`; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix + ".part", dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
        if durable:
            _fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(final: Path | str, data: bytes, *, durable: bool = True) -> None:
    """`final` holds the old bytes or the new ones, never half of them. `durable=False` skips the
    fsync, for convenience files whose loss to a crash costs only a recomputation (an fsync waits
    for all of the disk's dirty data: 0.2 s each, measured during a push)."""
    with atomic_path(final, durable=durable) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())


def atomic_write_text(final: Path | str, text: str, *, durable: bool = True) -> None:
    atomic_write_bytes(final, text.encode("utf-8"), durable=durable)


@contextlib.contextmanager
def atomic_dir(final: Path | str, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to `final`; it becomes `final` only if the block succeeds.

    With `replace`, an existing `final` is swapped out after the new one is complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            if not replace:
                raise FileExistsError(final)
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
