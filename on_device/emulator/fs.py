"""The emulator's sandboxed filesystem: device paths (PurePosixPath) mapped into one host directory.

Paths are resolved component by component like a chroot: `..` stops at the root, and symlinks,
absolute or relative, are followed inside the sandbox, so no device path can reach outside it.
Every host access is race-free against a concurrent client swapping a component for a symlink:
the walk holds a directory fd per component (opened O_NOFOLLOW from the root's fd), reads device
symlinks itself with readlinkat, and the final component is opened, made or changed relative to
its parent's fd with O_NOFOLLOW / AT_SYMLINK_NOFOLLOW. No host path string is ever opened.

How device symlinks are stored, and what that guarantees:
- On the writable partitions (/data, and /sdcard = /data/media/0) a link holds the device's own
  target, byte for byte (`ln -s` in the device shell, whose kernel makes it, and a pushed S_IFLNK
  alike), so the device kernel follows it and readlink/ls -l show what a phone shows. No host
  process can follow such a link out of the root because no host process can reach it: /data is
  an ext4 image mounted in the device's mount namespace only (sandbox.Storage mounts it for the
  start and unmounts it from the host's namespace once the device holds it); the emulator itself
  then walks the device's own view (`enter_device_view`: the root fd is the device init's
  /proc/PID/root). The one way left in is /proc/<device init>/root, which needs root (ptrace
  rights over the device), who can read the host's files anyway.
- Anywhere else (the read-only rest of the root, visible on the host) only the emulator makes
  links (layout, e.g. /sdcard), stored as LINK_PREFIX + the device target, e.g.
  `/dev/null/.g4m-device-link//storage/emulated/0`: no host process can resolve that at all
  (`/dev/null` is not a directory, so the walk stops with ENOTDIR before any `..`); fs.py strips
  the prefix, and the sandbox gets such links as fresh ones in its own root (sandbox.py).
- Links stored the old way are rewritten at start (`migrate_links`): on the partitions the
  LINK_PREFIX form (issue 11's, which the device kernel cannot follow) becomes the device target;
  elsewhere a raw target becomes the LINK_PREFIX form.
A SandboxFS not behind a device (no `raw_link_dirs`: tests) stores every link the LINK_PREFIX way.

The /data partition has a quota from the device profile.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from gemma4_common.errors import UserError

log = logging.getLogger(__name__)

MAX_SYMLINKS = 40
# Writes re-measure real usage after this many bytes (or sooner when close to full).
_RECHECK_BYTES = 8 << 20
# How often an operation re-walks when a concurrent client swapped its final component meanwhile.
_RACE_RETRIES = 8

LINK_PREFIX = "/dev/null/.g4m-device-link/"
# Temporary names of sync uploads: `.NAME.<16 hex>.syncpart` next to the target.
_PART_SUFFIX = ".syncpart"
_PART_RE = re.compile(r"^\..+\.[0-9a-f]{16}\.syncpart$")
# Any temporary of ours (uploads, cp, layout files, link swaps): what the start-up sweep removes.
_ANY_TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{16}\.(syncpart|cppart|tmp|lnk)$")
ROOT_MARKER = ".g4m-emulator-root"

_O_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def check_root(path: Path, shown: Path | str | None = None) -> None:
    """An emulator may use a directory that is missing, empty, or an emulator root already (its
    marker file, or the layout of a root made before markers existed): never someone's files."""
    path, shown = Path(path), shown if shown is not None else path
    if not path.exists():
        return
    if not path.is_dir():
        raise UserError(f"--root {shown} is not a directory", "pass a directory for the device filesystem")
    if (path / ROOT_MARKER).is_file():
        return
    try:
        entries = [p.name for p in path.iterdir()]
    except OSError as e:
        raise UserError(f"cannot read --root {shown} ({e.strerror})", "pass a directory you can write") from None
    legacy = (path / "system" / "build.prop").is_file() and (path / "data").is_dir()
    if entries and not legacy:
        raise UserError(f"--root {shown} is not empty and is not an emulator root (no {ROOT_MARKER}); "
                        "the emulator would write into it",
                        "pass an empty or new directory, or a root an emulator made before")


class FsError(OSError):
    """An OSError carrying the device path (never the host path)."""

    def __init__(self, code: int, device_path: str | PurePosixPath):
        super().__init__(code, os.strerror(code), str(device_path))
        self.device_path = str(device_path)


class _Raced(Exception):
    """The final component changed into a symlink between the walk and its use: walk again."""


def encode_link(target: str) -> str:
    return LINK_PREFIX + target


def decode_link(raw: str) -> str:
    return raw[len(LINK_PREFIX):] if raw.startswith(LINK_PREFIX) else raw


def _split(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


@dataclass
class Loc:
    """A walked device path: its canonical device path, an fd of its parent directory (inside
    the root, owned by this object) and its last component ("." for the root itself)."""

    dev: PurePosixPath
    dirfd: int
    name: str

    def close(self) -> None:
        if self.dirfd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.dirfd)
            self.dirfd = -1

    def __enter__(self) -> "Loc":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def lstat(self) -> os.stat_result:
        return os.stat(self.name, dir_fd=self.dirfd, follow_symlinks=False)

    def lexists(self) -> bool:
        try:
            self.lstat()
            return True
        except FileNotFoundError:
            return False


class SandboxFS:
    def __init__(self, root: Path, mounts: dict[str, str], storage_bytes: int):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_fd = os.open(self.root, _O_DIR)
        self.mounts = {str(PurePosixPath(p)): m for p, m in mounts.items()}
        self.storage_bytes = int(storage_bytes)
        self._partitions = self._data_partition_roots()
        self._uploads: set[tuple[int, int, str]] = set()  # (st_dev, st_ino of dir, temp name) in flight
        self._uploads_lock = threading.Lock()
        # Where device links are kept as the device target (see the module docstring): device
        # directories that live in the device's own mount namespace only (sandbox.Storage).
        self.raw_link_dirs: tuple[str, ...] = ()
        self.view = self.root  # host name of the root fd (the device init's /proc/PID/root once entered)

    def enter_device_view(self, root_path: str) -> None:
        """Walk the device's own view from now on (root_path: /proc/<device init>/root, where /data
        is mounted and the host's namespace has it no more). Called once, before serving."""
        fd = os.open(root_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)  # follows the magic link
        old, self._root_fd = self._root_fd, fd
        self.view = Path(root_path)
        with contextlib.suppress(OSError):
            os.close(old)

    def _raw_links_at(self, dev: PurePosixPath | str) -> bool:
        dev = str(dev)
        return any(dev.startswith(d.rstrip("/") + "/") for d in self.raw_link_dirs)

    def _stored_link(self, target: str, dev: PurePosixPath | str) -> str:
        """How a device link at `dev` to `target` is stored (module docstring)."""
        return target if self._raw_links_at(dev) else encode_link(target)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._root_fd)

    # ---- layout -------------------------------------------------------------------------------
    def _data_partition_roots(self) -> list[str]:
        roots = ["/data"]
        for p, m in sorted(self.mounts.items()):
            if m == "rw" and not any(p == r or p.startswith(r.rstrip("/") + "/") for r in roots):
                roots.append(p)
        return roots

    def ensure_layout(self, extra_dirs: tuple[str, ...] = ()) -> None:
        """Create every mount point (and a few dirs a phone always has)."""
        for p in list(self.mounts) + list(extra_dirs):
            fd = self._root_fd
            opened: list[int] = []
            try:
                for comp in _split(p):
                    if comp == "..":
                        continue
                    try:
                        os.mkdir(comp, 0o771, dir_fd=fd)
                    except FileExistsError:
                        pass
                    try:
                        fd = os.open(comp, _O_DIR, dir_fd=fd)
                    except NotADirectoryError:
                        break  # a device symlink (e.g. /sdcard) or a file: leave it
                    opened.append(fd)
            finally:
                for o in opened:
                    os.close(o)

    def host_path_unchecked(self, device_path: str) -> Path:
        """Host path of an absolute device path without following symlinks, in the device's view
        once entered (logs and tests only: never open it, use the fs methods)."""
        parts = [p for p in PurePosixPath(device_path).parts[1:] if p not in ("..", ".")]
        return self.view.joinpath(*parts)

    def write_layout_file(self, path: str, data: bytes, mode: int = 0o444) -> None:
        """Write a file the emulator owns (e.g. /proc/meminfo), ignoring mount modes, atomically."""
        with self._walk(path, "/", follow=False) as loc:
            self._atomic_write_at(loc.dirfd, loc.name, data, mode)

    def layout_symlink(self, target: str, path: str) -> None:
        """Make `path` a device symlink to `target` unless something non-empty is there (layout)."""
        with self._walk(path, "/", follow=False) as loc:
            try:
                st = loc.lstat()
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                try:
                    os.rmdir(loc.name, dir_fd=loc.dirfd)  # an empty directory made by ensure_layout
                except OSError:
                    return
                st = None
            if st is None:
                os.symlink(encode_link(target), loc.name, dir_fd=loc.dirfd)

    def write_marker(self) -> None:
        """Mark the root as an emulator root (start refuses a non-empty directory without it)."""
        self._atomic_write_at(self._root_fd, ROOT_MARKER, b"gemma4-mobile reference emulator root\n", 0o644)

    @staticmethod
    def _atomic_write_at(dirfd: int, name: str, data: bytes, mode: int) -> None:
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dirfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                os.fchmod(f.fileno(), mode)
            os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dirfd)
            raise

    def migrate_links(self) -> int:
        """Rewrite links stored another way (older versions, or the device shell's own outside the
        raw-link dirs) into the form their place keeps (module docstring); the number rewritten."""
        n = 0
        for dirpath, dirnames, filenames, dfd in os.fwalk(".", dir_fd=self._root_fd, follow_symlinks=False):
            base = "/" + dirpath[2:] if dirpath != "." else ""
            for name in dirnames + filenames:
                with contextlib.suppress(OSError):
                    raw = os.readlink(name, dir_fd=dfd)
                    stored = self._stored_link(decode_link(raw), f"{base}/{name}")
                    if stored != raw:
                        tmp = f".{name}.{secrets.token_hex(8)}.lnk"
                        os.symlink(stored, tmp, dir_fd=dfd)
                        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                        n += 1
        return n

    def clean_partials(self) -> int:
        """Remove temporary upload files left by an emulator killed mid-push (call at start)."""
        n = 0
        for _dirpath, _dirnames, filenames, dfd in os.fwalk(".", dir_fd=self._root_fd, follow_symlinks=False):
            for name in filenames:
                if _ANY_TEMP_RE.match(name):
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dfd)
                        n += 1
        return n

    # ---- path resolution ------------------------------------------------------------------------
    @staticmethod
    def absolute(path: str | PurePosixPath, cwd: str | PurePosixPath = "/") -> str:
        path = str(path)
        if not path.startswith("/"):
            path = str(cwd).rstrip("/") + "/" + path
        return path

    def _walk(self, path: str | PurePosixPath, cwd: str | PurePosixPath = "/", follow: bool = True,
              lexical_tail: bool = False) -> Loc:
        """Resolve `path` in-sandbox holding directory fds: a Loc for its last component.
        With `lexical_tail`, a missing directory does not fail: the rest is applied lexically and
        the Loc has no fd (canonical names only)."""
        shown = str(path)
        path = self.absolute(path, cwd)
        if "\0" in path:
            raise FsError(errno.EINVAL, shown)
        todo = _split(path)
        todo.reverse()  # a stack: next component at the end
        stack: list[tuple[str, int]] = []
        links = 0

        def top() -> int:
            return stack[-1][1] if stack else self._root_fd

        def close_all() -> None:
            while stack:
                os.close(stack.pop()[1])

        try:
            final: str | None = None
            while todo:
                comp = todo.pop()
                if comp == "..":
                    if stack:
                        os.close(stack.pop()[1])
                    continue
                last = not todo
                if last and not follow:
                    final = comp
                    break
                try:
                    target = decode_link(os.readlink(comp, dir_fd=top()))
                except FileNotFoundError:
                    if last:
                        final = comp
                        break
                    if lexical_tail:
                        return self._lexical(stack, [comp, *reversed(todo)])
                    raise FsError(errno.ENOENT, shown) from None
                except OSError as e:
                    if e.errno != errno.EINVAL:  # EINVAL: not a symlink
                        raise FsError(e.errno or errno.EIO, shown) from None
                    target = None
                if target is not None:
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise FsError(errno.ELOOP, shown)
                    if target.startswith("/"):
                        close_all()
                    todo.extend(reversed(_split(target)))
                    continue
                if last:
                    final = comp
                    break
                try:
                    fd = os.open(comp, _O_DIR, dir_fd=top())
                except FileNotFoundError:
                    raise FsError(errno.ENOENT, shown) from None
                except NotADirectoryError:
                    try:
                        os.readlink(comp, dir_fd=top())
                    except OSError:
                        raise FsError(errno.ENOTDIR, shown) from None
                    todo.append(comp)  # it became a symlink meanwhile: resolve it
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise FsError(errno.ELOOP, shown) from None
                    continue
                except OSError as e:
                    raise FsError(e.errno or errno.EIO, shown) from None
                stack.append((comp, fd))
            if final is None:  # the path names a directory we hold (or the root)
                if stack:
                    final, fd = stack.pop()
                    os.close(fd)
                else:
                    return Loc(PurePosixPath("/"), os.dup(self._root_fd), ".")
            names = [n for n, _ in stack] + [final]
            dirfd = os.dup(top())
            return Loc(PurePosixPath("/" + "/".join(names)), dirfd, final)
        finally:
            close_all()

    @staticmethod
    def _lexical(stack: list[tuple[str, int]], rest: list[str]) -> Loc:
        names = [n for n, _ in stack]
        for comp in rest:
            if comp == "..":
                if names:
                    names.pop()
            else:
                names.append(comp)
        return Loc(PurePosixPath("/" + "/".join(names)), -1, names[-1] if names else ".")

    def _retrying(self, path, cwd, follow, fn):
        """fn(loc) with a fresh walk whenever it reports a race on the final component."""
        for _ in range(_RACE_RETRIES):
            with self._walk(path, cwd, follow) as loc:
                try:
                    return fn(loc)
                except _Raced:
                    continue
        raise FsError(errno.ELOOP, path)

    def canonical(self, path: str | PurePosixPath, cwd: str | PurePosixPath = "/",
                  follow: bool = True) -> tuple[PurePosixPath, Path]:
        """(canonical device path, host path) with every symlink on the way resolved in-sandbox.
        The host path is for mount checks, logs and tests: never open it (use the fs methods)."""
        with self._walk(path, cwd, follow, lexical_tail=True) as loc:
            return loc.dev, self.view.joinpath(*loc.dev.parts[1:])

    def resolve(self, path: str | PurePosixPath, cwd: str | PurePosixPath = "/", follow: bool = True) -> Path:
        return self.canonical(path, cwd, follow)[1]

    # ---- permissions ----------------------------------------------------------------------------
    def mount_mode(self, dev: PurePosixPath | str) -> str:
        dev = str(dev)
        best, mode = "", "ro"
        for p, m in self.mounts.items():
            if (dev == p or dev.startswith(p.rstrip("/") + "/") or p == "/") and len(p) > len(best):
                best, mode = p, m
        return mode

    def check_writable(self, dev: PurePosixPath | str, shown: str | None = None) -> None:
        if self.mount_mode(dev) != "rw":
            code = errno.EROFS if str(dev).startswith(("/system", "/vendor", "/product")) else errno.EACCES
            raise FsError(code, shown or str(dev))

    def check_listable(self, dev: PurePosixPath | str, shown: str | None = None) -> None:
        if self.mount_mode(dev) == "x":
            raise FsError(errno.EACCES, shown or str(dev))

    # ---- space ----------------------------------------------------------------------------------
    def usage(self) -> int:
        total = 0
        for part in self._partitions:
            try:
                with self._walk(part, "/", follow=False) as loc:
                    if stat.S_ISDIR(loc.lstat().st_mode):
                        total += _tree_size_at(loc.dirfd, loc.name)
            except OSError:
                continue
        return total

    def free(self) -> int:
        return max(0, self.storage_bytes - self.usage())

    def in_quota(self, dev: PurePosixPath | str) -> bool:
        dev = str(dev)
        return any(dev == p or dev.startswith(p.rstrip("/") + "/") for p in self._partitions)

    # ---- operations -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def oserrors(self, shown: str) -> Iterator[None]:
        """Turn host OSErrors into FsErrors naming the device path."""
        try:
            yield
        except (FsError, _Raced):
            raise
        except OSError as e:
            raise FsError(e.errno or errno.EIO, shown) from None
        except ValueError:  # e.g. an embedded NUL in a name
            raise FsError(errno.EINVAL, shown) from None

    def lstat(self, path: str, cwd: str = "/") -> os.stat_result:
        with self._walk(path, cwd, follow=False) as loc, self.oserrors(path):
            return loc.lstat()

    def _stat_followed(self, loc: Loc, shown: str) -> os.stat_result:
        with self.oserrors(shown):
            st = loc.lstat()
        if stat.S_ISLNK(st.st_mode):
            raise _Raced()
        return st

    def stat(self, path: str, cwd: str = "/") -> os.stat_result:
        return self._retrying(path, cwd, True, lambda loc: self._stat_followed(loc, path))

    def is_dir(self, path: str, cwd: str = "/") -> bool:
        try:
            return stat.S_ISDIR(self.stat(path, cwd).st_mode)
        except OSError:
            return False

    def _open_dir(self, loc: Loc, shown: str) -> int:
        try:
            return os.open(loc.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=loc.dirfd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(loc):
                raise _Raced() from None
            raise FsError(e.errno or errno.EIO, shown) from None

    def listdir(self, path: str, cwd: str = "/") -> list[str]:
        def op(loc: Loc) -> list[str]:
            self.check_listable(loc.dev, path)
            fd = self._open_dir(loc, path)
            try:
                with self.oserrors(path):
                    return sorted(os.listdir(fd))
            finally:
                os.close(fd)

        return self._retrying(path, cwd, True, op)

    def list_stats(self, path: str, cwd: str = "/") -> tuple[PurePosixPath, list[tuple[str, os.stat_result]]]:
        """(canonical dir, [(name, lstat)]) of a directory with "." and ".." first (sync LIST)."""
        def op(loc: Loc):
            self.check_listable(loc.dev, path)
            fd = self._open_dir(loc, path)
            try:
                with self.oserrors(path):
                    rows = [(".", os.fstat(fd)), ("..", os.fstat(loc.dirfd) if loc.name != "." else os.fstat(fd))]
                    for name in sorted(os.listdir(fd)):
                        with contextlib.suppress(OSError):
                            rows.append((name, os.stat(name, dir_fd=fd, follow_symlinks=False)))
                    return loc.dev, rows
            finally:
                os.close(fd)

        return self._retrying(path, cwd, True, op)

    def open_fd(self, path: str, cwd: str = "/") -> int:
        """A read-only fd of a regular file (never a directory), race-free: the runner's model."""
        def op(loc: Loc) -> int:
            try:
                fd = os.open(loc.name, _O_READ, dir_fd=loc.dirfd)
            except OSError as e:
                if e.errno == errno.ELOOP:
                    raise _Raced() from None
                raise FsError(e.errno or errno.EIO, path) from None
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise FsError(errno.EISDIR, path)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                raise FsError(errno.EACCES, path)
            os.set_blocking(fd, True)
            return fd

        return self._retrying(path, cwd, True, op)

    def open_read(self, path: str, cwd: str = "/") -> BinaryIO:
        return os.fdopen(self.open_fd(path, cwd), "rb")

    def mkdir(self, path: str, cwd: str = "/", parents: bool = False, mode: int = 0o771) -> None:
        if parents:
            dev = PurePosixPath(self.canonical_parent_chain(path, cwd))
            for a in [*reversed(dev.parents), dev]:
                try:
                    st = self.stat(str(a))
                    if stat.S_ISDIR(st.st_mode):
                        continue
                    raise FsError(errno.ENOTDIR if a != dev else errno.EEXIST, path)
                except FsError as e:
                    if e.errno != errno.ENOENT:
                        raise
                try:
                    self.mkdir(str(a), "/", parents=False, mode=mode)
                except FsError as e:
                    # Another client (concurrent push) made it between our check and mkdir: fine for -p.
                    if e.errno != errno.EEXIST or not self.is_dir(str(a)):
                        raise
            return

        def op(loc: Loc) -> None:
            if loc.lexists():
                raise FsError(errno.EEXIST, path)
            self.check_writable(loc.dev.parent, path)
            with self.oserrors(path):
                os.mkdir(loc.name, mode, dir_fd=loc.dirfd)
                # As on the phone, regardless of the host's umask.
                os.chmod(loc.name, mode, dir_fd=loc.dirfd, follow_symlinks=False)

        self._retrying(path, cwd, True, op)

    def canonical_parent_chain(self, path: str, cwd: str = "/") -> str:
        """The device path `mkdir -p` creates: existing parents resolved in-sandbox, the rest as given."""
        full = PurePosixPath(self.absolute(path, cwd))
        missing: list[str] = []
        cur = full
        while True:
            try:
                dev, _ = self.canonical(str(cur))
                return str(dev.joinpath(*reversed(missing)))
            except FsError as e:
                if e.errno != errno.ENOENT or cur == cur.parent:
                    raise FsError(e.errno, path) from None
                missing.append(cur.name)
                cur = cur.parent

    def replace_with_symlink(self, target: str, path: str) -> None:
        """Make `path` a symlink to `target`, replacing a file or link there (sync SEND of a link)."""
        if "\0" in target:
            raise FsError(errno.EINVAL, path)
        with self._walk(path, "/", follow=False) as loc, self.oserrors(path):
            self.check_writable(loc.dev.parent, path)
            tmp = f".{loc.name}.{secrets.token_hex(8)}.lnk"
            os.symlink(self._stored_link(target, loc.dev), tmp, dir_fd=loc.dirfd)
            try:
                os.rename(tmp, loc.name, src_dir_fd=loc.dirfd, dst_dir_fd=loc.dirfd)
            except OSError:
                os.unlink(tmp, dir_fd=loc.dirfd)
                raise

    def readlink(self, path: str, cwd: str = "/") -> str:
        with self._walk(path, cwd, follow=False) as loc, self.oserrors(path):
            return decode_link(os.readlink(loc.name, dir_fd=loc.dirfd))

    def new_file(self, path: str, cwd: str = "/") -> "AtomicUpload":
        """A file that appears at `path` only when committed (sync SEND)."""
        return AtomicUpload(self, path, cwd)


class AtomicUpload:
    """Writes to a temporary name next to the target; `commit()` renames it into place, `abort()`
    (or any failure) removes it, so a failed or interrupted push never leaves a partial file.
    The directory is held by fd for the whole upload; stale temporaries of a killed emulator are
    removed by `SandboxFS.clean_partials` at start and by the next upload to the same path."""

    def __init__(self, fs: SandboxFS, path: str, cwd: str = "/"):
        self.fs, self.path = fs, path
        self.done = False
        self.f = None
        try:
            loc = fs._walk(path, cwd, follow=True)
        except FsError as e:
            if e.errno != errno.ENOENT:
                raise
            parent = str(PurePosixPath(fs.absolute(path, cwd)).parent)
            fs.check_writable(PurePosixPath(fs.canonical_parent_chain(parent)), path)
            fs.mkdir(parent, parents=True)
            loc = fs._walk(path, cwd, follow=True)
        self.loc = loc
        try:
            try:
                st = loc.lstat()
            except FileNotFoundError:
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                raise FsError(errno.EISDIR, path)
            if loc.name == ".":
                raise FsError(errno.EISDIR, path)
            fs.check_writable(loc.dev.parent, path)
            self.dev = loc.dev
            self.counted = fs.in_quota(loc.dev)
            # An overwritten file's space comes back when the new one replaces it.
            self._reclaim = st.st_size if st is not None and stat.S_ISREG(st.st_mode) else 0
            self._old_ino = st.st_ino if self._reclaim else 0
            with fs.oserrors(path):
                self._remove_stale(loc)
                self.tmp = f".{loc.name}.{secrets.token_hex(8)}{_PART_SUFFIX}"
                dst = os.fstat(loc.dirfd)
                self._key = (dst.st_dev, dst.st_ino, self.tmp)
                with fs._uploads_lock:  # claimed before it exists: a concurrent sweep never takes it
                    fs._uploads.add(self._key)
                fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o600, dir_fd=loc.dirfd)
                self.f = os.fdopen(fd, "wb", buffering=0)
        except BaseException:
            self.abort()
            raise
        self._budget = self._measure()
        self._since = 0
        self.size = 0

    def _remove_stale(self, loc: Loc) -> None:
        """Temporaries for this target that no upload of this process owns: a killed emulator's."""
        prefix = f".{loc.name}."
        st = os.fstat(loc.dirfd)
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=loc.dirfd)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        with self.fs._uploads_lock:
            live = {k[2] for k in self.fs._uploads if k[:2] == (st.st_dev, st.st_ino)}
        for n in names:
            if n.startswith(prefix) and _PART_RE.match(n) and n not in live:
                with contextlib.suppress(OSError):
                    os.unlink(n, dir_fd=loc.dirfd)

    def _measure(self) -> int:
        return (self.fs.free() + self._reclaim) if self.counted else 1 << 62

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self.counted and (n > self._budget or self._since >= min(_RECHECK_BYTES, self.fs.storage_bytes // 16 + 1)):
            self._budget, self._since = self._measure(), 0
            if n > self._budget:
                raise FsError(errno.ENOSPC, self.path)
        with self.fs.oserrors(self.path):
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self.f.fileno(), view):]
                except OSError as e:
                    if e.errno != errno.ENOSPC or not self._drop_old():
                        raise
        self.size += n
        self._budget -= n
        self._since += n

    def _drop_old(self) -> bool:
        """The partition is full and this upload replaces a file: drop the old copy now. A phone's
        adbd writes over the old file in place, reusing its blocks (and losing its content if the
        push fails), so a push that fits once the old copy is gone must not fail here either."""
        ino, self._old_ino = self._old_ino, 0
        if not ino:
            return False
        try:
            st = os.stat(self.loc.name, dir_fd=self.loc.dirfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != ino:
                return False
            os.unlink(self.loc.name, dir_fd=self.loc.dirfd)  # never follows: unlink removes the name
        except OSError:
            return False
        log.info("push to %s: partition full, the old copy is replaced in place", self.path)
        return True

    def commit(self, mode: int, mtime: int | None = None) -> None:
        with self.fs.oserrors(self.path):
            os.fchmod(self.f.fileno(), mode & 0o777)
            if mtime:
                os.utime(self.f.fileno(), (mtime, mtime))
            self.f.close()
            os.rename(self.tmp, self.loc.name, src_dir_fd=self.loc.dirfd, dst_dir_fd=self.loc.dirfd)
        self.done = True
        self._forget()

    def _forget(self) -> None:
        with self.fs._uploads_lock:
            self.fs._uploads.discard(getattr(self, "_key", None))
        self.loc.close()

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.f is not None:
            with contextlib.suppress(Exception):
                self.f.close()
        if getattr(self, "tmp", None) and self.loc.dirfd >= 0:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp, dir_fd=self.loc.dirfd)
        self._forget()


def _is_link(loc: Loc) -> bool:
    try:
        return stat.S_ISLNK(loc.lstat().st_mode)
    except OSError:
        return False


def _tree_size_fd(fd: int) -> int:
    """Bytes of every non-directory below the directory `fd` (fd-based: links are not followed)."""
    total = 0
    for _dirpath, _dirnames, filenames, dfd in os.fwalk(".", dir_fd=fd, follow_symlinks=False):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.stat(name, dir_fd=dfd, follow_symlinks=False).st_size
    return total


def _tree_size_at(dirfd: int, name: str) -> int:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
    except OSError:
        return 0
    try:
        return _tree_size_fd(fd)
    finally:
        os.close(fd)


