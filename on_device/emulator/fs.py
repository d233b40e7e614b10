"""The emulator's sandboxed filesystem: device paths (PurePosixPath) mapped into one host directory.

Paths are resolved component by component like a chroot: `..` stops at the root, and symlinks,
absolute or relative, are followed inside the sandbox, so no device path can reach outside it.
The /data partition has a quota from the device profile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Iterator

from gemma4_common.fsutil import atomic_path

MAX_SYMLINKS = 40
# Writes re-measure real usage after this many bytes (or sooner when close to full).
_RECHECK_BYTES = 8 << 20


class FsError(OSError):
    """An OSError carrying the device path (never the host path)."""

    def __init__(self, code: int, device_path: str | PurePosixPath):
        super().__init__(code, os.strerror(code), str(device_path))
        self.device_path = str(device_path)


class SandboxFS:
    def __init__(self, root: Path, mounts: dict[str, str], storage_bytes: int):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.mounts = {str(PurePosixPath(p)): m for p, m in mounts.items()}
        self.storage_bytes = int(storage_bytes)
        self._partitions = self._data_partition_roots()

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
            host = self.root.joinpath(*PurePosixPath(p).parts[1:])
            if not os.path.lexists(host):
                host.mkdir(parents=True, exist_ok=True)

    def host_path_unchecked(self, device_path: str) -> Path:
        """Host path of an absolute device path without following symlinks (layout setup only)."""
        parts = [p for p in PurePosixPath(device_path).parts[1:] if p not in ("..", ".")]
        return self.root.joinpath(*parts)

    # ---- path resolution ------------------------------------------------------------------------
    @staticmethod
    def absolute(path: str | PurePosixPath, cwd: str | PurePosixPath = "/") -> str:
        path = str(path)
        if not path.startswith("/"):
            path = str(cwd).rstrip("/") + "/" + path
        return path

    def canonical(self, path: str | PurePosixPath, cwd: str | PurePosixPath = "/",
                  follow: bool = True) -> tuple[PurePosixPath, Path]:
        """(canonical device path, host path) with every symlink on the way resolved in-sandbox."""
        path = self.absolute(path, cwd)
        if "\0" in path:
            raise FsError(errno.EINVAL, path)
        todo = [c for c in path.split("/") if c not in ("", ".")]
        todo.reverse()  # a stack: next component at the end
        stack: list[str] = []
        links = 0
        while todo:
            comp = todo.pop()
            if comp == "..":
                if stack:
                    stack.pop()
                continue
            host = self.root.joinpath(*stack, comp)
            if (todo or follow) and os.path.islink(host):
                links += 1
                if links > MAX_SYMLINKS:
                    raise FsError(errno.ELOOP, path)
                target = os.readlink(host)
                if target.startswith("/"):
                    stack = []
                todo.extend(reversed([c for c in target.split("/") if c not in ("", ".")]))
                continue
            if todo and os.path.lexists(host) and not os.path.isdir(host):
                raise FsError(errno.ENOTDIR, path)
            stack.append(comp)
        host = self.root.joinpath(*stack)
        # Defense in depth: the parent, with host symlinks followed, must still be inside the root.
        parent_real = os.path.realpath(host.parent if stack else host)
        if parent_real != str(self.root) and not parent_real.startswith(str(self.root) + os.sep):
            raise FsError(errno.EACCES, path)
        return PurePosixPath("/" + "/".join(stack)), host

    def resolve(self, path: str | PurePosixPath, cwd: str | PurePosixPath = "/", follow: bool = True) -> Path:
        return self.canonical(path, cwd, follow)[1]

    def device_path_of(self, host: Path) -> PurePosixPath:
        rel = Path(host).relative_to(self.root)
        return PurePosixPath("/", *rel.parts)

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
            host = self.host_path_unchecked(part)
            if host.is_dir() and not host.is_symlink():
                total += _tree_size(host)
        return total

    def free(self) -> int:
        return max(0, self.storage_bytes - self.usage())

    def check_space(self, nbytes: int, shown: str) -> None:
        if nbytes > self.free():
            raise FsError(errno.ENOSPC, shown)

    def in_quota(self, dev: PurePosixPath | str) -> bool:
        dev = str(dev)
        return any(dev == p or dev.startswith(p.rstrip("/") + "/") for p in self._partitions)

    # ---- operations -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def oserrors(self, shown: str) -> Iterator[None]:
        """Turn host OSErrors into FsErrors naming the device path."""
        try:
            yield
        except FsError:
            raise
        except OSError as e:
            raise FsError(e.errno or errno.EIO, shown) from None
        except ValueError:  # e.g. an embedded NUL in a name
            raise FsError(errno.EINVAL, shown) from None

    def lstat(self, path: str, cwd: str = "/") -> os.stat_result:
        _, host = self.canonical(path, cwd, follow=False)
        with self.oserrors(path):
            return os.lstat(host)

    def stat(self, path: str, cwd: str = "/") -> os.stat_result:
        _, host = self.canonical(path, cwd, follow=True)
        with self.oserrors(path):
            return os.stat(host)

    def exists(self, path: str, cwd: str = "/") -> bool:
        try:
            self.stat(path, cwd)
            return True
        except OSError:
            return False

    def listdir(self, path: str, cwd: str = "/") -> list[str]:
        dev, host = self.canonical(path, cwd)
        self.check_listable(dev, path)
        with self.oserrors(path):
            return sorted(os.listdir(host))

    def open_read(self, path: str, cwd: str = "/") -> BinaryIO:
        dev, host = self.canonical(path, cwd)
        with self.oserrors(path):
            if os.path.isdir(host):
                raise FsError(errno.EISDIR, path)
            return open(host, "rb")

    def read_bytes(self, path: str, cwd: str = "/") -> bytes:
        with self.open_read(path, cwd) as f:
            return f.read()

    def _writable_target(self, path: str, cwd: str) -> tuple[PurePosixPath, Path]:
        dev, host = self.canonical(path, cwd)
        self.check_writable(dev, path)
        return dev, host

    def mkdir(self, path: str, cwd: str = "/", parents: bool = False, mode: int = 0o771) -> None:
        dev, host = self.canonical(path, cwd)
        if parents:
            for a in [*reversed(dev.parents), dev]:
                h = self.resolve(str(a))
                if os.path.isdir(h):
                    continue
                if os.path.lexists(h):
                    raise FsError(errno.ENOTDIR if a != dev else errno.EEXIST, path)
                try:
                    self.mkdir(str(a), "/", parents=False, mode=mode)
                except FsError as e:
                    # Another client (concurrent push) made it between our check and mkdir: fine for -p.
                    if e.errno != errno.EEXIST or not os.path.isdir(h):
                        raise
            return
        if os.path.lexists(host):
            raise FsError(errno.EEXIST, path)
        if not os.path.isdir(host.parent):
            raise FsError(errno.ENOENT, path)
        self.check_writable(dev.parent, path)
        with self.oserrors(path):
            os.mkdir(host, mode)
            os.chmod(host, mode)  # as on the phone, regardless of the host's umask

    def remove(self, path: str, cwd: str = "/", recursive: bool = False) -> None:
        dev, host = self.canonical(path, cwd, follow=False)
        if not os.path.lexists(host):
            raise FsError(errno.ENOENT, path)
        self.check_writable(dev.parent, path)
        with self.oserrors(path):
            if os.path.isdir(host) and not os.path.islink(host):
                if not recursive:
                    raise FsError(errno.EISDIR, path)
                shutil.rmtree(host)
            else:
                os.unlink(host)

    def rmdir(self, path: str, cwd: str = "/") -> None:
        dev, host = self.canonical(path, cwd, follow=False)
        self.check_writable(dev.parent, path)
        with self.oserrors(path):
            os.rmdir(host)

    def rename(self, src: str, dst: str, cwd: str = "/") -> None:
        sdev, shost = self.canonical(src, cwd, follow=False)
        ddev, dhost = self.canonical(dst, cwd, follow=True)
        if not os.path.lexists(shost):
            raise FsError(errno.ENOENT, src)
        if os.path.isdir(dhost):
            ddev, dhost = ddev / sdev.name, dhost / sdev.name
        self.check_writable(sdev.parent, src)
        self.check_writable(ddev.parent, dst)
        if self.in_quota(ddev) and not self.in_quota(sdev):
            self.check_space(_tree_size(shost), dst)
        with self.oserrors(dst):
            os.replace(shost, dhost)

    def copy(self, src: str, dst: str, cwd: str = "/", recursive: bool = False) -> None:
        sdev, shost = self.canonical(src, cwd)
        ddev, dhost = self.canonical(dst, cwd)
        if not os.path.exists(shost):
            raise FsError(errno.ENOENT, src)
        if os.path.isdir(dhost):
            ddev, dhost = ddev / sdev.name, dhost / sdev.name
        self.check_writable(ddev.parent, dst)
        if os.path.isdir(shost):
            if not recursive:
                raise FsError(errno.EISDIR, src)
            if str(ddev).startswith(str(sdev).rstrip("/") + "/"):
                raise FsError(errno.EINVAL, dst)
            if self.in_quota(ddev):
                self.check_space(_tree_size(shost), dst)
            with self.oserrors(dst):
                shutil.copytree(shost, dhost, symlinks=True, dirs_exist_ok=True)
            return
        if os.path.isdir(dhost):
            raise FsError(errno.EISDIR, dst)
        if self.in_quota(ddev):
            self.check_space(os.path.getsize(shost), dst)
        with self.oserrors(dst), atomic_path(dhost) as tmp:
            shutil.copyfile(shost, tmp)
            os.chmod(tmp, stat.S_IMODE(os.stat(shost).st_mode))

    def chmod(self, path: str, mode: int, cwd: str = "/") -> None:
        dev, host = self.canonical(path, cwd)
        self.check_writable(dev, path)
        with self.oserrors(path):
            os.chmod(host, mode & 0o7777 & ~0o7000)

    def touch(self, path: str, cwd: str = "/") -> None:
        dev, host = self.canonical(path, cwd)
        with self.oserrors(path):
            if os.path.exists(host):
                self.check_writable(dev, path)
                os.utime(host)
            else:
                self.check_writable(dev.parent, path)
                if not os.path.isdir(host.parent):
                    raise FsError(errno.ENOENT, path)
                with open(host, "ab"):
                    pass

    def symlink(self, target: str, path: str, cwd: str = "/") -> None:
        dev, host = self.canonical(path, cwd, follow=False)
        self.check_writable(dev.parent, path)
        with self.oserrors(path):
            os.symlink(target, host)

    def readlink(self, path: str, cwd: str = "/") -> str:
        _, host = self.canonical(path, cwd, follow=False)
        with self.oserrors(path):
            return os.readlink(host)

    def open_write(self, path: str, cwd: str = "/", append: bool = False) -> "QuotaFile":
        """A file opened for writing in place (shell redirection), counted against the quota."""
        dev, host = self.canonical(path, cwd)
        if os.path.isdir(host):
            raise FsError(errno.EISDIR, path)
        self.check_writable(dev if os.path.exists(host) else dev.parent, path)
        if not os.path.isdir(host.parent):
            raise FsError(errno.ENOENT, path)
        with self.oserrors(path):
            f = open(host, "ab" if append else "wb")
        return QuotaFile(self, f, path, self.in_quota(dev))

    def new_file(self, path: str, cwd: str = "/") -> "AtomicUpload":
        """A file that appears at `path` only when committed (sync SEND)."""
        return AtomicUpload(self, path, cwd)


class QuotaFile:
    """A writable host file whose growth is checked against the device's free space."""

    def __init__(self, fs: SandboxFS, f: BinaryIO, shown: str, counted: bool):
        self.fs, self.f, self.shown, self.counted = fs, f, shown, counted
        self._budget = fs.free() if counted else 1 << 62

    def write(self, data: bytes) -> None:
        if self.counted and len(data) > self._budget:
            self._budget = self.fs.free()
            if len(data) > self._budget:
                raise FsError(errno.ENOSPC, self.shown)
        with self.fs.oserrors(self.shown):
            self.f.write(data)
        if self.counted:
            self._budget -= len(data)
            if self._budget <= 0 or len(data) >= _RECHECK_BYTES:
                self._budget = self.fs.free()

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


class AtomicUpload:
    """Writes to a temporary name next to the target; `commit()` renames it into place, `abort()`
    (or any failure) removes it, so a failed or interrupted push never leaves a partial file."""

    def __init__(self, fs: SandboxFS, path: str, cwd: str = "/"):
        self.fs, self.path = fs, path
        dev, host = fs.canonical(path, cwd)
        if os.path.isdir(host):
            raise FsError(errno.EISDIR, path)
        fs.check_writable(dev.parent, path)
        if not os.path.isdir(host.parent):
            fs.mkdir(str(dev.parent), parents=True)
        self.dev, self.host = dev, host
        self.counted = fs.in_quota(dev)
        # An overwritten file's space comes back when the new one replaces it.
        self._reclaim = os.path.getsize(host) if os.path.isfile(host) else 0
        self._cm = atomic_path(host)
        with fs.oserrors(path):
            self.tmp = self._cm.__enter__()
            self.f = open(self.tmp, "wb")
        self._budget = self._measure()
        self._since = 0
        self.size = 0
        self.done = False

    def _measure(self) -> int:
        return (self.fs.free() + self._reclaim) if self.counted else 1 << 62

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self.counted and (n > self._budget or self._since >= min(_RECHECK_BYTES, self.fs.storage_bytes // 16 + 1)):
            self._budget, self._since = self._measure(), 0
            if n > self._budget:
                raise FsError(errno.ENOSPC, self.path)
        with self.fs.oserrors(self.path):
            self.f.write(data)
        self.size += n
        self._budget -= n
        self._since += n

    def commit(self, mode: int, mtime: int | None = None) -> None:
        with self.fs.oserrors(self.path):
            self.f.close()
            os.chmod(self.tmp, mode & 0o777)
            if mtime:
                os.utime(self.tmp, (mtime, mtime))
            self._cm.__exit__(None, None, None)
        self.done = True

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(Exception):
            self.f.close()
        with contextlib.suppress(Exception):
            self._cm.__exit__(OSError, OSError("aborted"), None)


def _tree_size(host: Path) -> int:
    total = 0
    try:
        st = os.lstat(host)
    except OSError:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size
    stack = [str(host)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        else:
                            total += e.stat(follow_symlinks=False).st_size
                    except OSError:
                        pass
        except OSError:
            pass
    return total
