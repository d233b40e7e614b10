"""Android's real userland for the emulator's shell sessions: mksh as /system/bin/sh and toybox
(completed from busybox where Debian's toybox lacks a command Android has) in a bubblewrap sandbox
rooted at the device filesystem, as uid/gid 2000 (`shell`), with one device PID, mount, IPC, UTS
and network namespace per emulator that every session joins (a server started by one `adb shell`
is reachable from another and from `adb forward`; nothing on the host is reachable from inside).

Layout inside the sandbox: `/` is a read-only tmpfs; each top-level entry of the device root is
bind-mounted read-only, the profile's writable partitions (/data, rw mounts) read-write; the bind
sources are directory fds from the race-free walk of fs.py (`/proc/self/fd/N`), so a link planted
on the host side can never redirect a mount. /data is an ext4 image of the profile's size, kept in
the device's mount namespace only once it is up (`Storage`). /system/bin is the userland (a shared
cache dir: Debian's mksh, toybox and busybox, and our static helpers: hashes over libcrypto, the
device-service client, init),
/proc is a real procfs with the profile's meminfo/cpuinfo/version bound over it, /dev is bwrap's
minimal devtmpfs plus /dev/__properties__ (the property store, read-only) and /dev/socket/g4m
(the emulator's device service: runner contract and setprop, reached by a small static client).
Processes are bounded by a pids cgroup (and a memory cgroup) per emulator where cgroups exist.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import hashlib
import inspect
import json
import logging
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from gemma4_common.errors import UserError

from .context import RunnerContext

log = logging.getLogger(__name__)

SHELL_UID = SHELL_GID = 2000
USERLAND_DIR = Path(__file__).resolve().parent / "userland"
CLIENT_SOURCE = USERLAND_DIR / "g4m_client.c"
INIT_SOURCE = USERLAND_DIR / "g4m_init.c"
HASH_SOURCE = USERLAND_DIR / "g4m_hashsum.c"
# Android's toybox hashes with BoringSSL (hardware SHA); Debian's toybox has its own slow C code,
# so these come from our static program over OpenSSL's libcrypto (g4m_hashsum.c says more).
HASH_COMMANDS = ("md5sum", "sha1sum", "sha224sum", "sha256sum", "sha384sum", "sha512sum")
# Android's toybox command set (Android 14, plus its one-true-awk). What Debian's toybox build
# lacks comes from busybox; what neither has is simply absent, as on a phone without it.
ANDROID_COMMANDS = (
    "acpi base64 basename blkdiscard blkid blockdev cal cat chattr chgrp chmod chown chroot chrt cksum "
    "clear cmp comm cp cpio cut date dd devmem df diff dirname dmesg dos2unix du echo egrep env expand "
    "expr fallocate false fgrep file find flock fmt free freeramdisk fsfreeze fsync getconf getopt grep "
    "groups gunzip gzip head hostname hwclock i2cdetect i2cdump i2cget i2cset iconv id ifconfig inotifyd "
    "insmod install ionice iorenice iotop kill killall ln logname losetup ls lsattr lsmod lsof lspci "
    "lsusb makedevs md5sum microcom mkdir mkfifo mknod mkswap mktemp modinfo more mount mountpoint mv "
    "nbd-client nc netcat netstat nice nl nohup nproc nsenter od partprobe paste patch pgrep pidof ping "
    "ping6 pivot_root pkill pmap printenv printf prlimit ps pwd pwdx readelf readlink realpath renice "
    "rev rfkill rm rmdir rmmod rtcwake sed seq setfattr setsid sha1sum sha224sum sha256sum sha384sum "
    "sha512sum sleep sort split stat strings stty swapoff swapon sync sysctl tac tail tar taskset tee "
    "test time timeout top touch tr traceroute true truncate tty tunctl ulimit umount uniq unix2dos "
    "unlink unshare uptime usleep uudecode uuencode uuidgen vconfig vi vmstat watch wc which whoami "
    "xargs xxd yes zcat awk [").split()
# Our own executables (scripts and the client) win over toybox/busybox for these names.
OWN_COMMANDS = ("getprop", "setprop", "uname", "dd", "df", "nproc", "g4m-emulator-runner", *HASH_COMMANDS)
PIDS_MAX = 512  # per session; the device as a whole gets DEVICE_PIDS_MAX
DEVICE_PIDS_MAX = 4096
DEVICE_PATH = ("/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:/system_ext/bin:"
               "/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin")

_FIX = ("install bubblewrap, mksh, toybox, busybox-static, gcc and libssl-dev (bash scripts/setup.sh) on Linux "
        "with user namespaces enabled (sysctl user.max_user_namespaces > 0)")


# ---- availability ----------------------------------------------------------------------------------
@dataclass
class Tools:
    bwrap: str
    mksh: str
    toybox: str
    busybox: str
    nsenter: str
    setsid: str
    host_sh: str
    libs: tuple[str, ...]
    env: str = "/usr/bin/env"


def _which(name: str, package: str) -> str:
    p = shutil.which(name, path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if not p:
        raise UserError(f"the emulator's Android userland needs `{name}` (Debian package {package}), "
                        "which is not installed", _FIX)
    return p


def _needed_libs(binaries: list[str]) -> tuple[str, ...]:
    """The shared objects (and ELF interpreter) the dynamically linked binaries load, by ldd."""
    libs: set[str] = set()
    for b in binaries:
        r = subprocess.run(["ldd", b], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            for tok in parts:
                if tok.startswith("/") and os.path.exists(tok):
                    libs.add(tok)
    return tuple(sorted(libs))


_TOOLS: Tools | None = None
_TOOLS_LOCK = threading.Lock()


def check_available() -> Tools:
    """The host tools, checked once per process: each present, and bwrap able to make the sandbox.
    Raises UserError (one line, with the fix) where it cannot: never a silent fall-back."""
    global _TOOLS
    with _TOOLS_LOCK:
        if _TOOLS is not None:
            return _TOOLS
        if os.uname().sysname != "Linux":
            raise UserError(f"the emulator's Android userland runs on Linux only (this is {os.uname().sysname})", _FIX)
        tools = Tools(bwrap=_which("bwrap", "bubblewrap"), mksh=_which("mksh", "mksh"),
                      toybox=_which("toybox", "toybox"), busybox=_which("busybox", "busybox-static"),
                      nsenter=_which("nsenter", "util-linux"), setsid=_which("setsid", "util-linux"),
                      host_sh=_which("sh", "dash"), libs=(), env=_which("env", "coreutils"))
        for tool, package in (("mount", "mount"), ("losetup", "mount"), ("mkfs.ext4", "e2fsprogs"), ("cc", "gcc")):
            _which(tool, package)
        if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
            raise UserError("the emulator's Android userland needs root and loop devices (its /data is an ext4 "
                            "image of the profile's size, so a full phone fails writes with ENOSPC)",
                            "run it as root on a Linux host with /dev/loop-control")
        tools.libs = _needed_libs([os.path.realpath(tools.mksh), os.path.realpath(tools.toybox)])
        r = subprocess.run([tools.bwrap, "--unshare-user", "--uid", str(SHELL_UID), "--gid", str(SHELL_GID),
                            "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/", "--proc", "/proc",
                            "true"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise UserError(f"bubblewrap cannot create the device sandbox here ({why})", _FIX)
        _TOOLS = tools
        return tools


# ---- the userland directory (/system/bin) ----------------------------------------------------------
def _applets(binary: str, args: list[str]) -> set[str]:
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    return set(r.stdout.split())


def _scripts(profile) -> dict[str, str]:
    release = profile.kernel_release.replace("'", "")
    getprop = r"""#!/system/bin/sh
# getprop over the emulator's property store (one file, read-only here; setprop goes through the
# emulator's property service, which keeps ro.* read-only).
f=/dev/__properties__/properties
if [ $# -eq 0 ]; then
  while IFS= read -r line; do echo "[${line%%=*}]: [${line#*=}]"; done < $f
  exit 0
fi
while IFS= read -r line; do
  case $line in "$1="*) echo "${line#*=}"; exit 0;; esac
done < $f
echo "${2-}"
"""
    uname = r"""#!/system/bin/sh
# uname as the profile's phone reports it (the host kernel underneath is not an aarch64 one).
s=Linux n=$(/system/bin/toybox hostname) r='%s' v='#1 SMP PREEMPT' m=aarch64 o=Toybox
[ $# -eq 0 ] && set -- -s
want=
for a; do
  case $a in -?*) ;; *) echo "uname: Unknown argument '$a'" >&2; exit 1;; esac
  a=${a#-}
  while [ -n "$a" ]; do
    c=${a%%"${a#?}"}; a=${a#?}
    case $c in a) f="s n r v m o";; s|n|r|v|m|o|p) f=$c;; *) echo "uname: Unknown option '$c'" >&2; exit 1;; esac
    want="$want $f"
  done
done
out=
for x in s n r v m p o; do
  case " $want " in *" $x "*) eval "y=\$$x"; [ $x = p ] && y=$m; out="${out:+$out }$y";; esac
done
echo "$out"
""" % release
    dd = r"""#!/system/bin/sh
# dd is busybox's (Debian's toybox has none), taking Android's lower-case size suffixes (bs=1m).
i=0
for a; do
  case $a in ?*=*[0-9][mgt]) typeset -u s=${a#${a%?}}; a=${a%?}$s;; esac
  [ $i -eq 0 ] && set --
  i=1
  set -- "$@" "$a"
done
exec /system/bin/busybox dd "$@"
"""
    nproc = r"""#!/system/bin/sh
# The profile's CPUs (/proc/cpuinfo is the profile's; the host's affinity mask is not the phone's).
n=0
while IFS= read -r line; do case $line in processor*) n=$((n+1));; esac; done < /proc/cpuinfo
echo $n
"""
    return {"getprop": getprop, "uname": uname, "dd": dd, "nproc": nproc}


def _elf_vaddr(data: bytes, offset: int) -> int | None:
    """The virtual address of a file offset of a 64-bit little-endian ELF (its PT_LOAD segments)."""
    if data[:6] != b"\x7fELF\x02\x01":
        return None
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        ptype, _flags, off, vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", data, phoff + i * phentsize)
        if ptype == 1 and off <= offset < off + filesz:
            return vaddr + offset - off
    return None


def _android_mksh(src: str, dest: Path) -> bool:
    """Copy mksh, without the "E: " / "W: " that Debian's build (MirBSD CVS after R59c) writes before
    every error and warning: Android 14's mksh is R59c, which has none, so a phone says
    `/system/bin/sh: x: inaccessible or not found`. The prefix is written as
    shf_write("E: ", 3, shl_out) (`mov $3,%esi; lea STR(%rip),%rdi`); its length becomes 0. Where
    the code is not found exactly once per prefix the copy is left as it is. True when patched."""
    data = bytearray(Path(src).read_bytes())
    patches = []
    for prefix in (b"E: ", b"W: "):
        at = data.find(b"\0" + prefix + b"\0")
        target = _elf_vaddr(data, at + 1) if at >= 0 else None
        sites = []
        start = data.find(b"\xbe\x03\x00\x00\x00\x48\x8d\x3d")
        while target is not None and start >= 0:
            insn_end = _elf_vaddr(data, start + 12)
            if insn_end is not None and insn_end + struct.unpack_from("<i", data, start + 8)[0] == target:
                sites.append(start + 1)
            start = data.find(b"\xbe\x03\x00\x00\x00\x48\x8d\x3d", start + 1)
        if len(sites) != 1:
            patches = []
            break
        patches += sites
    for at in patches:
        data[at] = 0
    dest.write_bytes(bytes(data))
    return bool(patches)


def _compile_client(dest: Path, source: Path = CLIENT_SOURCE, libs: tuple[str, ...] = ()) -> None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise UserError("building the emulator's device helper needs a C compiler (cc), which is not installed",
                        "install gcc and libc6-dev (bash scripts/setup.sh)")
    r = subprocess.run([cc, "-static", "-O2", "-o", str(dest), str(source), *libs], capture_output=True, text=True)
    if r.returncode != 0:
        # The linker's warnings about dlopen/getaddrinfo in a static libcrypto are harmless; the
        # last error line is what says why.
        errors = [x for x in r.stderr.strip().splitlines() if "warning" not in x] or r.stderr.strip().splitlines()
        raise UserError(f"cannot build the emulator's device helper {source.name}: {' '.join(errors[-1:])}",
                        "install gcc, libc6-dev (static glibc) and libssl-dev (bash scripts/setup.sh)")


def userland_bin(tools: Tools, profile, cache: Path) -> tuple[Path, dict[str, str]]:
    """/system/bin for a profile, built once into `cache` (content-addressed) and shared read-only:
    sh (mksh), toybox and its applets, busybox for what toybox lacks, getprop/setprop/uname and the
    runner's interpreter. Returns the directory and {command: provider}."""
    scripts = _scripts(profile)
    h = hashlib.sha256()
    for p in (tools.mksh, tools.toybox, tools.busybox, str(CLIENT_SOURCE), str(INIT_SOURCE), str(HASH_SOURCE)):
        st = os.stat(p)
        h.update(f"{os.path.realpath(p)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(json.dumps(scripts, sort_keys=True).encode())
    h.update(" ".join(ANDROID_COMMANDS).encode())
    h.update(inspect.getsource(_android_mksh).encode())
    out = cache / h.hexdigest()[:16]
    providers_file = out / ".providers.json"
    if providers_file.is_file():
        return out, json.loads(providers_file.read_text())
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=cache))
    try:
        patched = _android_mksh(os.path.realpath(tools.mksh), tmp / "sh")
        shutil.copy2(os.path.realpath(tools.toybox), tmp / "toybox")
        shutil.copy2(os.path.realpath(tools.busybox), tmp / "busybox")
        _compile_client(tmp / "g4m-client")
        _compile_client(tmp / "init", INIT_SOURCE)
        _compile_client(tmp / "g4m-hashsum", HASH_SOURCE, ("-lcrypto",))
        toy = _applets(tools.toybox, []) - {"toybox"}
        busy = _applets(tools.busybox, ["--list"])
        providers: dict[str, str] = {"sh": "mksh" + (" (Debian's, messages without E:/W: as Android's R59c)"
                                                     if patched else " (Debian's)")}
        for name in ANDROID_COMMANDS:
            if name in OWN_COMMANDS or name == "sh":
                continue
            if name in toy:
                os.symlink("toybox", tmp / name)
                providers[name] = "toybox"
            elif name in busy:
                os.symlink("busybox", tmp / name)
                providers[name] = "busybox"
        for name, text in scripts.items():
            (tmp / name).write_text(text)
            (tmp / name).chmod(0o755)
            providers[name] = "emulator script"
        for name in ("setprop", "df", "g4m-emulator-runner"):
            os.symlink("g4m-client", tmp / name)
            providers[name] = "emulator service"
        for name in HASH_COMMANDS:
            os.symlink("g4m-hashsum", tmp / name)
            providers[name] = "OpenSSL libcrypto (Android's toybox: BoringSSL)"
        os.symlink("sh", tmp / "mksh")
        (tmp / ".providers.json").write_text(json.dumps(providers, indent=1, sort_keys=True))
        for p in tmp.iterdir():
            if not p.is_symlink() and p.suffix != ".json":
                p.chmod(0o755)
        tmp.chmod(0o755)
        try:
            os.rename(tmp, out)
        except OSError:  # another process built it meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, json.loads(providers_file.read_text())


# ---- namespaces ------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class _NetnsWorker:
    """A thread that lives in the device network namespace and makes sockets there (a socket keeps
    the namespace it was made in; the rest of the emulator stays in the host's)."""

    def __init__(self, netns_path: str):
        self._fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        self._lock = threading.Lock()
        self._req = threading.Condition(self._lock)
        self._todo: list[tuple[Callable[[], object], list]] = []
        self._closed = False
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="device-netns", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error

    def _loop(self) -> None:
        try:
            _setns(self._fd, CLONE_NEWNET)
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        while True:
            with self._req:
                while not self._todo and not self._closed:
                    self._req.wait()
                if self._closed:
                    return
                fn, box = self._todo.pop(0)
            try:
                box.append(("ok", fn()))
            except BaseException as e:  # handed back to the caller
                box.append(("err", e))
            with self._req:
                self._req.notify_all()

    def call(self, fn: Callable[[], object]):
        box: list = []
        with self._req:
            if self._closed:
                raise OSError(errno.ENETDOWN, "the device network is down")
            self._todo.append((fn, box))
            self._req.notify_all()
            while not box:
                self._req.wait()
        kind, value = box[0]
        if kind == "err":
            raise value
        return value

    def close(self) -> None:
        with self._req:
            self._closed = True
            self._req.notify_all()
        with contextlib.suppress(OSError):
            os.close(self._fd)


# ---- cgroups ---------------------------------------------------------------------------------------
def _make_cgroups(name: str, memory_bytes: int) -> list[Path]:
    """A pids (and memory) cgroup v1/v2 group for the device's processes, where we may make one."""
    made: list[Path] = []
    for ctl, files in (("pids", {"pids.max": str(DEVICE_PIDS_MAX)}),
                       ("memory", {"memory.limit_in_bytes": str(memory_bytes)})):
        base = Path("/sys/fs/cgroup") / ctl
        if not base.is_dir():
            continue
        d = base / name
        try:
            d.mkdir(exist_ok=True)
            for f, v in files.items():
                (d / f).write_text(v)
            made.append(d)
        except OSError as e:
            log.warning("no %s cgroup for the device (%s): its processes are not bounded by %s", ctl, e, ctl)
            with contextlib.suppress(OSError):
                d.rmdir()
    return made


def _pid_alive(pid: int) -> bool:
    """Running (a zombie, killed but not yet reaped by its parent, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _sweep_stale() -> None:
    """State dirs, cgroups and mounts of emulators that died without closing (g4m-device-<pid>-...)."""
    _sweep_stale_mounts()
    places = [Path(tempfile.gettempdir())] + [Path("/sys/fs/cgroup") / c for c in ("pids", "memory")]
    for base in places:
        try:
            entries = list(base.glob("g4m-device-*-*"))
        except OSError:
            continue
        for d in entries:
            if d.name.endswith(".txt"):
                continue
            try:
                pid = int(d.name.split("-")[2])
            except (IndexError, ValueError):
                continue
            if pid == os.getpid() or _pid_alive(pid):
                continue
            if base.parent.name == "cgroup":
                _remove_cgroups([d])
            else:
                shutil.rmtree(d, ignore_errors=True)


def _remove_cgroups(groups: list[Path]) -> None:
    for d in groups:
        _remove_cgroups(sorted(p for p in d.iterdir() if p.is_dir()) if d.is_dir() else [])
        procs = d / "cgroup.procs"
        for _ in range(50):
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            threading.Event().wait(0.02)
        with contextlib.suppress(OSError):
            d.rmdir()


# ---- storage: /data as a filesystem of the profile's size -------------------------------------------
class Storage:
    """The device's /data as an ext4 image of the profile's storage size, loop-mounted over the
    root's data/ (and its media/0 bound over storage/emulated/0, as /sdcard is /data/media/0 on a
    phone), so every write, a push's or a shell's (`yes > f`), fails with ENOSPC when it does not
    fit, from the kernel itself. Why an image: a quota that the kernel enforces for any writer
    inside the sandbox (toybox, a user's binary) without an interposer on every write; sparse, so
    it costs only what is written (mkfs ~60 ms). The image lives next to the root
    (`ROOT.data.img`), outside the device filesystem, and is kept across restarts.

    The mounts are in the host's namespace only while the device starts (the emulator prepares
    the layout, the sandbox binds them); `hide()` then unmounts them there, so the device's files
    (and its symlinks, kept as the device made them: fs.py) are reachable from its own namespace
    only. An flock on the image keeps a second emulator off the same root meanwhile."""

    DIRS = ("/data", "/storage/emulated/0")  # device paths that live in the image

    def __init__(self, root: Path, storage_bytes: int):
        self.root = Path(root)
        self.image = self.root.with_name(self.root.name + ".data.img")
        self.mounted: list[Path] = []
        self._lock_fd = -1
        self.record = Path(tempfile.gettempdir()) / f"g4m-device-{os.getpid()}-mounts-{self.root.name}.txt"
        data = self.root / "data"
        media = self.root / "storage" / "emulated" / "0"
        for d in (data, media):
            d.mkdir(parents=True, exist_ok=True)
            if d.is_symlink():
                raise UserError(f"{d} is a symlink", "use an emulator root made by the emulator")
        try:
            self._mount(data, media, storage_bytes)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        import fcntl

        self._lock_fd = os.open(self.image, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"the device filesystem {self.root} is in use by another running emulator",
                            "stop that emulator first, or pass another --root") from None

    def _mount(self, data: Path, media: Path, storage_bytes: int) -> None:
        if os.path.ismount(data) or os.path.ismount(media):
            raise UserError(f"the device filesystem {self.root} is in use by another running emulator",
                            "stop that emulator first, or pass another --root")
        if not self.image.exists():
            self._make_image(data, storage_bytes)
            # What the root's data/ held is in the image now; left on the host it would be
            # host-visible (with its links) once the image is hidden.
            for p in list(data.iterdir()):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        self._lock()
        # A device that just died may still hold the image for a moment (its namespace going away):
        # never mount it twice.
        deadline = time.monotonic() + 10
        while self._loop_devices():
            if time.monotonic() > deadline:
                raise UserError(f"the device filesystem {self.image} is still mounted by a device that is gone",
                                f"wait, or detach its loop device (losetup -j {self.image})")
            time.sleep(0.05)
        self._run(["mount", "-o", "loop,nosuid,nodev", str(self.image), str(data)])
        self.mounted.append(data)
        # /data is system's and 0771 on a phone: the shell user may cross it, not list it. Host uid
        # 1000 is not mapped into the sandbox, so the shell user meets the "other" bits.
        os.chown(data, 1000, 1000)
        os.chmod(data, 0o771)
        self.record.write_text("\n".join(map(str, self.mounted)) + "\n")
        inner = data / "media" / "0"
        inner.mkdir(parents=True, exist_ok=True)
        if any(media.iterdir()) and not any(inner.iterdir()):
            self._run(["cp", "-a", f"{media}/.", str(inner)])  # first start on an older root
        self._run(["mount", "--bind", str(inner), str(media)])
        self.mounted.append(media)
        self.record.write_text("\n".join(map(str, self.mounted)) + "\n")

    def _make_image(self, data: Path, size: int) -> None:
        tmp = self.image.with_name(self.image.name + ".tmp")
        with open(tmp, "wb") as f:
            f.truncate(max(size, 256 << 10))
        # Small partitions (tests): 1 KiB blocks and few inodes, so nearly all of it holds data.
        small = ["-b", "1024", "-N", str(max(128, size // 16384))] if size < (256 << 20) else []
        # -d: what the root's data/ holds already goes into the image (a root from before).
        self._run(["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", *small,
                   "-E", "lazy_itable_init=1,nodiscard", "-d", str(data), str(tmp)])
        os.replace(tmp, self.image)

    @staticmethod
    def _run(argv: list[str]) -> None:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode != 0:
            why = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
            raise UserError(f"cannot set up the device's /data ({argv[0]}: {why})",
                            "run the emulator as root on Linux with loop devices (the device's /data is an "
                            "image of the profile's size)")

    def _loop_devices(self) -> list[str]:
        r = subprocess.run(["losetup", "-j", str(self.image)], capture_output=True, text=True)
        return [line.split(":", 1)[0] for line in r.stdout.splitlines() if line.strip()]

    def hide(self) -> None:
        """Unmount from the host's namespace (the device's keeps its own mounts of the image)."""
        for m in reversed(self.mounted):
            r = subprocess.run(["umount", "-l", str(m)], capture_output=True, text=True)
            if r.returncode != 0:
                raise UserError(f"cannot hide the device's /data from the host ({r.stderr.strip()})",
                                "run the emulator as root on Linux")
        self.mounted.clear()
        with contextlib.suppress(OSError):
            self.record.unlink()

    def close(self) -> None:
        for m in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        self.mounted.clear()
        with contextlib.suppress(OSError):
            self.record.unlink()
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = -1


def _sweep_stale_mounts() -> None:
    for rec in Path(tempfile.gettempdir()).glob("g4m-device-*-mounts-*.txt"):
        try:
            pid = int(rec.name.split("-")[2])
        except (IndexError, ValueError):
            continue
        if pid == os.getpid() or _pid_alive(pid):
            continue
        for m in reversed(rec.read_text().split()):
            subprocess.run(["umount", "-l", m], capture_output=True)
        with contextlib.suppress(OSError):
            rec.unlink()


# ---- the device --------------------------------------------------------------------------------------
def _fenced_dir_fd(fs, device_path: str) -> int:
    """An O_PATH fd of a device directory, walked race-free by fs.py (its private `_walk`: fenced
    here, checked by tests/test_emulator_userland.py::test_fs_walk_contract)."""
    with fs._walk(device_path, "/", follow=False) as loc:
        return os.open(loc.name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=loc.dirfd)


def _device_env(props: dict[str, str], extra: dict[str, str] | None = None) -> dict[str, str]:
    # bionic is UTF-8 only; glibc's C.UTF-8 (built in) is the nearest: names print as UTF-8.
    env = {"PATH": DEVICE_PATH, "HOME": "/", "LANG": "C.UTF-8", "SHELL": "/system/bin/sh", "USER": "shell",
           "LOGNAME": "shell", "HOSTNAME": props.get("ro.product.device", "localhost"), "TMPDIR": "/data/local/tmp",
           "ANDROID_DATA": "/data", "ANDROID_ROOT": "/system", "ANDROID_STORAGE": "/storage",
           "EXTERNAL_STORAGE": "/sdcard", "ASEC_MOUNTPOINT": "/mnt/asec", "BOOTCLASSPATH": ""}
    env.pop("BOOTCLASSPATH")
    if extra:
        env.update(extra)
    return env


def _write_atomic(path: Path, data: bytes, mode: int = 0o444) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class DeviceUserland:
    """One emulator's device: its namespaces (held by a device init), property store and device
    service; `spawn` starts a shell session in it."""

    def __init__(self, fs, profile, props: dict[str, str], run_runner, cache_dir: Path,
                 identity_files: dict[str, bytes]):
        self.tools = check_available()
        self.fs, self.profile, self.props, self.run_runner = fs, profile, props, run_runner
        self.engine_cache_dir: Path | None = None  # set by the server: the runner's weight cache
        self.bin_dir, self.providers = userland_bin(self.tools, profile, cache_dir)
        _sweep_stale()
        self.state = Path(tempfile.mkdtemp(prefix=f"g4m-device-{os.getpid()}-"))
        self._props_lock = threading.Lock()
        self.init: subprocess.Popen | None = None
        self.init_pid = 0
        self.netns: _NetnsWorker | None = None
        self.cgroups: list[Path] = []
        self._broker: socket.socket | None = None
        self._closed = False
        self._sessions: set[subprocess.Popen] = set()
        self._sessions_lock = threading.Lock()
        self._session_seq = 0
        self._lingering: set[Path] = set()
        self._identity = identity_files
        self._owner = os.getpid()
        # What init has started on a phone the shell user can see; and, as Android's own emulator
        # does, ro.boot.qemu=1: this device's CPU is the host's (a profile may set 0 to act as a phone).
        for k, v in (("init.svc.adbd", "running"), ("sys.boot_completed", "1"), ("ro.product.cpu.abi", "arm64-v8a"),
                     ("ro.boot.qemu", "1")):
            self.props.setdefault(k, v)
        self._start()

    # ---- lifecycle ----------------------------------------------------------------------------
    def _start(self) -> None:
        st = self.state
        for d in ("props", "socket", "etc", "proc"):
            (st / d).mkdir(mode=0o755)
        st.chmod(0o755)
        self.write_props()
        (st / "etc" / "passwd").write_text("root:x:0:0:root:/:/system/bin/sh\nsystem:x:1000:1000::/:/system/bin/sh\n"
                                           "shell:x:2000:2000::/:/system/bin/sh\nnobody:x:9999:9999::/:/system/bin/sh\n")
        (st / "etc" / "group").write_text("root:x:0:\nsystem:x:1000:\nshell:x:2000:\nnobody:x:9999:\n")
        (st / "etc" / "hosts").write_text("127.0.0.1 localhost\n::1 ip6-localhost\n")
        for name, data in self._identity.items():
            _write_atomic(st / "proc" / name, data)
        self._broker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._broker.bind(str(st / "socket" / "g4m"))
        os.chmod(st / "socket" / "g4m", 0o666)
        self._broker.listen(64)
        threading.Thread(target=self._broker_loop, name="device-service", daemon=True).start()
        atexit.register(self.close)  # an emulator never stopped still leaves nothing behind
        self.cgroups = _make_cgroups(st.name,
                                     max(256 << 20, min(self.profile.ram_budget_bytes, 4 << 30)))
        started = threading.Event()
        failure: list[BaseException] = []
        # The device init is spawned by a thread that lives as long as the device: bwrap's
        # --die-with-parent fires when the spawning *thread* ends.
        self._init_thread = threading.Thread(target=self._init_loop, args=(started, failure),
                                             name="device-init", daemon=True)
        self._init_thread.start()
        started.wait(30)
        if failure or not self.init_pid:
            self.close()
            raise UserError(f"the device sandbox did not start: {failure[0] if failure else 'timed out'}", _FIX)
        self.netns = _NetnsWorker(f"/proc/{self.init_pid}/ns/net")

    def _bwrap_argv(self, fds: list[int]) -> list[str]:
        t = self.tools
        a = [t.bwrap, "--unshare-user", "--uid", str(SHELL_UID), "--gid", str(SHELL_GID), "--unshare-pid",
             "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
             "--hostname", self.props.get("ro.product.device", "localhost").replace(" ", "_") or "localhost",
             "--die-with-parent", "--chdir", "/"]
        fs = self.fs
        writable = set(fs._partitions)
        top = sorted(os.listdir(fs.root))
        for name in top:
            if name.startswith("."):
                continue
            dev = f"/{name}"
            try:
                st = fs.lstat(dev)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                a += ["--symlink", fs.readlink(dev), dev]
            elif stat.S_ISDIR(st.st_mode) and name not in ("proc", "dev"):
                fd = _fenced_dir_fd(fs, dev)
                fds.append(fd)
                a += ["--bind" if dev in writable else "--ro-bind", f"/proc/self/fd/{fd}", dev]
        for part in sorted(writable):
            if part.count("/") > 1:  # a nested rw mount (e.g. /storage/emulated/0)
                try:
                    fd = _fenced_dir_fd(fs, part)
                except OSError:
                    continue
                fds.append(fd)
                a += ["--bind", f"/proc/self/fd/{fd}", part]
        a += ["--ro-bind", str(self.bin_dir), "/system/bin"]
        for lib in t.libs:
            a += ["--ro-bind", lib, lib]
        if os.path.isdir("/usr/lib/locale/C.utf8"):  # glibc's C.UTF-8 (bionic is UTF-8 only)
            a += ["--ro-bind", "/usr/lib/locale/C.utf8", "/usr/lib/locale/C.utf8"]
        real_lib = {os.path.realpath(lib) for lib in t.libs} - set(t.libs)
        for lib in sorted(real_lib):
            a += ["--ro-bind", lib, lib]
        a += ["--ro-bind", str(self.state / "etc"), "/etc" if "etc" not in top else "/system/etc"]
        if "etc" not in top:
            a += ["--symlink", "/etc", "/system/etc"] if "system" not in top else []
        a += ["--proc", "/proc"]
        for name in sorted(self._identity):
            a += ["--ro-bind", str(self.state / "proc" / name), f"/proc/{name}"]
        a += ["--dev", "/dev", "--ro-bind", str(self.state / "props"), "/dev/__properties__",
              "--bind", str(self.state / "socket"), "/dev/socket", "--remount-ro", "/"]
        return a

    def _init_loop(self, started: threading.Event, failure: list) -> None:
        fds: list[int] = []
        try:
            r, w = os.pipe()
            # Our init as pid 1 (--as-pid-1): a device process can neither kill it nor leave zombies.
            argv = self._bwrap_argv(fds) + ["--as-pid-1", "--info-fd", str(w), "/system/bin/init"]
            argv = self._cgroup_wrap(argv)
            self.init = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE, pass_fds=[w, *fds], start_new_session=True)
            os.close(w)
            for fd in fds:
                os.close(fd)
            with os.fdopen(r, "rb") as f:
                info = f.read()
            try:
                self.init_pid = int(json.loads(info.split(b"}", 1)[0] + b"}")["child-pid"])
            except (ValueError, KeyError):
                err = self.init.stderr.read().decode(errors="replace").strip() if self.init.stderr else ""
                raise RuntimeError(err or "bwrap gave no child pid")
            # The pid comes before the sandbox is set up; init running means it is.
            deadline = time.monotonic() + 20
            comm = Path(f"/proc/{self.init_pid}/comm")
            while comm.read_text().strip() != "init":
                if self.init.poll() is not None or time.monotonic() > deadline:
                    err = self.init.stderr.read().decode(errors="replace").strip() if self.init.stderr else ""
                    raise RuntimeError(err or "the device init did not come up")
                time.sleep(0.002)
        except BaseException as e:
            failure.append(e)
            started.set()
            return
        started.set()
        self.init.wait()  # this thread must outlive the init (--die-with-parent)
        if not self._closed:  # nothing inside can kill it: a host-side kill, or the kernel (OOM)
            log.error("device init exited (status %s): %s", self.init.returncode,
                      self.init.stderr.read().decode(errors="replace")[-500:] if self.init.stderr else "")

    def _session_cgroups(self) -> list[Path]:
        """A pids group per session inside the device's, so one session's fork bomb leaves the others
        room to fork; old empty ones are removed as new ones are made."""
        out = []
        for d in self.cgroups:
            if d.parent.name != "pids":
                out.append(d)
                continue
            with self._sessions_lock:
                self._session_seq += 1
                n = self._session_seq
            sub = d / f"s{n}"
            try:
                sub.mkdir()
                (sub / "pids.max").write_text(str(PIDS_MAX))
                out.append(sub)
            except OSError:
                out.append(d)
        return out

    def release_session_cgroup(self, sub: Path | None) -> None:
        """Remove a finished session's group; one that still has processes (a daemon it started)
        is retried when later sessions end."""
        with self._sessions_lock:
            if sub is not None:
                self._lingering.add(sub)
            todo = list(self._lingering)
        for g in todo:
            try:
                g.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                continue  # EBUSY: it still has processes
            with self._sessions_lock:
                self._lingering.discard(g)

    def _cgroup_wrap(self, argv: list, groups: list[Path] | None = None) -> list:
        if not self.cgroups:
            return argv
        groups = groups or self.cgroups
        # Join the groups before exec, so nothing forks outside them.
        join = "; ".join(f"echo $$ > {str(d / 'cgroup.procs')!r}" for d in groups)
        return [self.tools.host_sh, "-c", f"{join}; exec \"$@\"", "g4m-session", *argv]

    def close(self) -> None:
        # A forked copy of the emulator's process (whose atexit runs this too) never takes the
        # device down: only the process that started it does.
        if self._closed or os.getpid() != self._owner:
            return
        self._closed = True
        with self._sessions_lock:
            sessions = list(self._sessions)
        for p in sessions:
            with contextlib.suppress(OSError):
                os.killpg(p.pid, signal.SIGKILL)
        if self.init is not None and self.init.poll() is None:
            with contextlib.suppress(OSError):
                os.killpg(self.init.pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                self.init.wait(5)
        _remove_cgroups(self.cgroups)
        if self.netns is not None:
            self.netns.close()
        if self._broker is not None:
            with contextlib.suppress(OSError):
                self._broker.close()
        shutil.rmtree(self.state, ignore_errors=True)

    # ---- properties ---------------------------------------------------------------------------
    def write_props(self) -> None:
        with self._props_lock:
            text = "".join(f"{k}={v}\n" for k, v in sorted(self.props.items()) if "\n" not in k + v)
            _write_atomic(self.state / "props" / "properties", text.encode())

    def set_prop(self, name: str, value: str) -> str | None:
        """Android's property rules as the shell user meets them; an error message or None."""
        ok_name = name and len(name) < 256 and all(c.isalnum() or c in "._-@:" for c in name)
        if not ok_name or "\n" in value or len(value) >= 92 and not name.startswith("ro."):
            return f"Failed to set property '{name}' to '{value}'.\nSee dmesg for error reason."
        if name.startswith("ro.") and name in self.props:
            return f"Failed to set property '{name}' to '{value}'.\nSee dmesg for error reason."
        if not name.startswith(("debug.", "persist.", "log.", "ro.", "vendor.debug.", "service.", "ctl.", "sys.")):
            return f"Failed to set property '{name}' to '{value}'.\nSee dmesg for error reason."
        self.props[name] = value
        self.write_props()
        return None

    # ---- the device service (runner contract, setprop) ---------------------------------------
    def _broker_loop(self) -> None:
        assert self._broker is not None
        while not self._closed:
            try:
                conn, _ = self._broker.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_client, args=(conn,), name="device-service-client",
                             daemon=True).start()

    def _serve_client(self, conn: socket.socket) -> None:
        fds: list[int] = []
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
            buf = bytearray(data)
            while len(buf) < 4:
                more = conn.recv(65536)
                if not more:
                    return
                buf += more
            (n,) = struct.unpack_from("<I", buf)
            if n > 8 << 20:
                return
            while len(buf) < 4 + n:
                more = conn.recv(min(1 << 20, 4 + n - len(buf)))
                if not more:
                    return
                buf += more
            fields = bytes(buf[4:4 + n]).split(b"\0")[:-1]
            cwd = fields[0].decode("utf-8", "surrogateescape")
            argc = int(fields[1])
            argv = [x.decode("utf-8", "surrogateescape") for x in fields[2:2 + argc]]
            env = dict(x.decode("utf-8", "surrogateescape").partition("=")[::2] for x in fields[2 + argc:])
            if len(fds) != 3:
                return
            rc = self._dispatch(conn, argv, env, cwd, fds)
            with contextlib.suppress(OSError):  # the client (its session) went away meanwhile
                conn.sendall(struct.pack("<i", rc))
        except Exception:
            log.error("device service failed:\n%s", traceback.format_exc())
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            conn.close()

    def _dispatch(self, conn: socket.socket, argv: list[str], env: dict[str, str], cwd: str, fds: list[int]) -> int:
        def writer(fd: int) -> Callable[[bytes], None]:
            def w(b: bytes) -> None:
                view = memoryview(b)
                while view:
                    try:
                        k = os.write(fd, view)
                    except BrokenPipeError:
                        return
                    view = view[k:]
            return w

        out, err = writer(fds[1]), writer(fds[2])
        prog = PurePosixPath(argv[0]).name if argv else ""
        if prog == "df":
            return self._df(argv, cwd, out, err)
        if prog == "setprop":
            if len(argv) != 3:
                err(b"usage: setprop NAME VALUE\n\nSets an Android system property.\n")
                return 1
            msg = self.set_prop(argv[1], argv[2])
            if msg:
                err(msg.encode() + b"\n")
                return 1
            return 0
        # The kernel ran a runner file's `#!/system/bin/g4m-emulator-runner` line: argv[1] is the
        # file as invoked; the runner contract sees [file, flags...] as on a phone.
        runner_argv = argv[1:]
        cancelled = threading.Event()

        def watch() -> None:  # the client (and so the session) went away: stop the runner early
            with contextlib.suppress(OSError):
                conn.recv(1)
            cancelled.set()

        threading.Thread(target=watch, daemon=True, name="runner-watch").start()
        fs = self.fs
        ctx = RunnerContext(resolve=lambda p: fs.resolve(str(p), cwd), stdout=out, stderr=err,
                            profile=self.profile, env=env, cwd=cwd, cancelled=cancelled,
                            open_file=lambda p: fs.open_fd(str(p), cwd), listdir=lambda p: fs.listdir(str(p), cwd),
                            engine_cache_dir=self.engine_cache_dir)
        log.info("runner: %s", " ".join(runner_argv))
        try:
            return int(self.run_runner(list(runner_argv), ctx)) & 0xFF
        except Exception as e:  # a runner bug: report it like a crashed native binary would
            log.error("runner crashed:\n%s", traceback.format_exc())
            err(f"{runner_argv[0] if runner_argv else 'runner'}: runner crashed: {type(e).__name__}: {e}\n".encode())
            return 134

    def _df(self, argv: list[str], cwd: str, out, err) -> int:
        """df over the profile's partitions: /data (and rw mounts) with the profile's storage."""
        flags = set()
        paths = []
        for a in argv[1:]:
            if a.startswith("-") and len(a) > 1:
                flags |= set(a[1:])
            else:
                paths.append(a)
        bad = flags - set("hkPa")
        if bad:
            err(f"df: Unknown option '{sorted(bad)[0]}'\n".encode())
            return 1
        fs = self.fs
        total, used = fs.storage_bytes, fs.usage()
        data_row = ("/dev/block/dm-48", total, used, max(0, total - used), "/data")
        sys_row = ("/dev/block/dm-6", 6 << 30, 6 << 30, 0, "/")
        rows = []
        for p in paths:
            try:
                dev, _ = fs.canonical(p, cwd)
                fs.stat(p, cwd)
            except OSError as e:
                err(f"df: {p}: {e.strerror}\n".encode())
                return 1
            rows.append(data_row if fs.in_quota(dev) else sys_row)
        if not paths:
            rows = [sys_row, ("tmpfs", 1 << 32, 0, 1 << 32, "/dev"), data_row]

        def human(n: int) -> str:
            for unit in "KMGT":
                n /= 1024
                if n < 1024:
                    return f"{n:.1f}{unit}" if n < 10 else f"{n:.0f}{unit}"
            return f"{n:.0f}P"

        lines = ["Filesystem        Size  Used Avail Use% Mounted on" if "h" in flags
                 else "Filesystem       1K-blocks     Used Available Use% Mounted on"]
        for name, size, u, a, mnt in rows:
            pct = f"{(u * 100 + size - 1) // size if size else 0}%"
            if "h" in flags:
                lines.append(f"{name:<16} {human(size):>5} {human(u):>5} {human(a):>5} {pct:>4} {mnt}")
            else:
                lines.append(f"{name:<16} {size // 1024:>9} {u // 1024:>8} {a // 1024:>9} {pct:>4} {mnt}")
        out(("\n".join(lines) + "\n").encode())
        return 0

    # ---- sessions -----------------------------------------------------------------------------
    def spawn(self, command: str | None, *, pty: bool, env: dict[str, str] | None = None,
              merge_stderr: bool = False, winsize: tuple[int, int, int, int] | None = None) -> "Session":
        if self._closed or self.init is None or self.init.poll() is not None:
            # Said here, not as nsenter's "cannot open /proc/PID/ns/user" in the session's stderr.
            why = "stopped" if self._closed else f"its init exited ({self.init.returncode if self.init else '?'})"
            raise OSError(errno.ENODEV, f"the device is down: {why}")
        return Session(self, command, pty=pty, env=env or {}, merge_stderr=merge_stderr, winsize=winsize)

    def session_argv(self, command: str | None, pty: bool) -> tuple[list, Path | None]:
        t = self.tools
        # `env --default-signal` first: a device process starts with every signal at its default, as
        # adbd's children do, whatever the emulator inherited. Under `nohup` (or any parent that
        # ignores SIGHUP) the shell and its commands would otherwise ignore SIGHUP, mksh could not
        # trap it, and a session whose host went away would keep running with its temporary files.
        argv = [t.env, "--default-signal", t.nsenter, "-t", str(self.init_pid), "-U", "-m", "-p", "-n", "-u", "-i",
                "-S", str(SHELL_UID), "-G", str(SHELL_GID), "-r", "-w", "--", "/system/bin/sh"]
        if command is not None:
            argv += ["-c", command.encode("utf-8", "surrogateescape")]  # bytes: never the host's locale
        elif pty:
            argv += ["-i"]
        if pty:
            argv = [t.setsid, "-c", *argv]
        if not self.cgroups:
            return argv, None
        groups = self._session_cgroups()
        sub = next((g for g in groups if g.parent.parent.name == "pids"), None)
        return self._cgroup_wrap(argv, groups), sub

    def connect_tcp(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
        """A TCP connection made inside the device's network namespace (`tcp:PORT`)."""
        assert self.netns is not None

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(timeout)
                s.connect((host, port))
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return s
            except BaseException:
                s.close()
                raise

        return self.netns.call(make)

    def listen_tcp(self, port: int, host: str = "127.0.0.1") -> socket.socket:
        """A listening socket inside the device's network namespace (`adb reverse`)."""
        assert self.netns is not None

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                s.listen(16)
                return s
            except BaseException:
                s.close()
                raise

        return self.netns.call(make)


TIOCSPTLCK, TIOCGPTPEER = 0x40045431, 0x5441


def _device_pty(init_pid: int) -> tuple[int, int]:
    """A PTY pair of the device's own devpts (so `tty` inside names /dev/pts/N as it exists there)."""
    import fcntl

    master = os.open(f"/proc/{init_pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        raise
    return master, slave


@dataclass
class Session:
    """One shell process in the device: pipes (stdout, stderr separate unless merged) or a PTY."""

    device: DeviceUserland
    command: str | None
    pty: bool
    env: dict[str, str]
    merge_stderr: bool = False
    winsize: tuple[int, int, int, int] | None = None
    proc: subprocess.Popen = field(init=False)
    stdin_fd: int = field(init=False, default=-1)
    out_fd: int = field(init=False, default=-1)
    err_fd: int = field(init=False, default=-1)
    cgroup: Path | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        d = self.device
        env = _device_env(d.props, self.env)
        argv, self.cgroup = d.session_argv(self.command, self.pty)
        if self.pty:
            import fcntl
            import termios
            master, slave = _device_pty(d.init_pid)
            if self.winsize:
                fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", *self.winsize))
            try:
                self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                             close_fds=True)
            finally:
                os.close(slave)
            self.stdin_fd = self.out_fd = master
        else:
            r_in, w_in = os.pipe()
            r_out, w_out = os.pipe()
            r_err, w_err = (r_out, w_out) if self.merge_stderr else os.pipe()
            try:
                self.proc = subprocess.Popen(argv, stdin=r_in, stdout=w_out, stderr=w_err, env=env,
                                             close_fds=True, start_new_session=True)
            finally:
                for fd in {r_in, w_out, w_err}:
                    os.close(fd)
            self.stdin_fd, self.out_fd = w_in, r_out
            self.err_fd = -1 if self.merge_stderr else r_err
        with d._sessions_lock:
            d._sessions.add(self.proc)

    def write_stdin(self, data: bytes) -> None:
        view = memoryview(data)
        while view and self.stdin_fd >= 0:
            try:
                view = view[os.write(self.stdin_fd, view):]
            except OSError:
                return

    def close_stdin(self) -> None:
        if self.pty:
            self.write_stdin(b"\x04")  # EOF at the terminal, as a phone's pty gives it
            return
        if self.stdin_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.stdin_fd)
            self.stdin_fd = -1

    def resize(self, rows: int, cols: int, xpix: int = 0, ypix: int = 0) -> None:
        if self.pty and self.out_fd >= 0:
            import fcntl
            import termios
            with contextlib.suppress(OSError):
                fcntl.ioctl(self.out_fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, xpix, ypix))

    def hangup(self) -> None:
        """The host side went away: SIGHUP to the session's processes, as adbd does."""
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGHUP)

    def wait(self) -> int:
        rc = self.proc.wait()
        with self.device._sessions_lock:
            self.device._sessions.discard(self.proc)
        if self.cgroup is not None:
            self.device.release_session_cgroup(self.cgroup)
            self.cgroup = None
        return 128 - rc if rc < 0 else rc

    def close(self) -> None:
        for name in ("stdin_fd", "out_fd", "err_fd"):
            fd = getattr(self, name)
            if fd >= 0 and not (name == "stdin_fd" and self.pty):
                with contextlib.suppress(OSError):
                    os.close(fd)
            setattr(self, name, -1)
