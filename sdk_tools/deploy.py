"""Deploy a bundle to a device: decide what it needs (the NPU model for its SoC or the CPU model,
the runner, dispatch libraries), check free storage, send each file to a temporary name with its
sha256 checked on the device, and rename it into place. The final path never holds a partial file,
and the bundle's manifest.json is written on the device last, as the mark of a complete deployment.

Hashing overlaps the transfer, on both ends. Each file goes through the device's `exec:` service
(both transports: adb-shell's own stream over TCP, `host:transport:SERIAL` + `exec:` through the
adb server) into one command of the phone's own tools (mksh, toybox dd, sha256sum, stat, mv):
chunk by chunk of 64 MiB, `dd iflag=count_bytes count=N` takes exactly the chunk's bytes from the
stream into TMP at its offset, and a reader reads each finished chunk back from TMP into one
sha256sum of the whole file while the next chunk arrives; then, in the same command, the digest
is compared with the manifest's, the size checked, TMP chmod-ed, renamed into place and stat-ed,
and the verdict comes back on the same stream. One stream per file, no hashing pass after the
transfer but the last chunk's. Why this shape (measured on the reference emulator, whose device
shares two cores with the host; CPU seconds per GiB on the device): `head -c SIZE | tee TMP |
sha256sum` is the obvious one-pass form but toybox's head and tee move 4 KiB per call, and their
small writes to the file cost 5-6 s/GiB against 2.2-2.5 s/GiB for 1 MiB dd writes plus the
read-back; a read-back also hashes what the file holds, not only what went into it. Shell
protocol v2 with close-stdin would end the input without a byte count, but frames every packet
(more work on the way); `exec:` with a size the command reads itself is what `pm install -S SIZE`
does. Hashing a file still growing under sync SEND needs to know how much of it adbd has written:
nothing tells the host, and adbd versions differ on writing in place. Where the device's dd lacks
count_bytes (old toybox), `head -c N | dd` writes each chunk instead. The host does not hash what
it streams: the device's digest of the bytes it received, compared with the manifest's, is the
proof, and after it the host-hash cache records the manifest's digest for the host file (if its
stat did not change while it was read). A host hash pass would cost the client 1.3 CPU s/GiB
(hashlib here) for nothing the device's check does not already show; the host hashes a file only
when the device's digest is wrong, to say whose bytes were (the same on the sync path).

What the verification proves: the bytes read back from TMP after every write succeeded (pipefail,
and TMP has the manifest's size) hash to the manifest's sha256; only then is TMP renamed into
place. A local file that does not match its manifest therefore never reaches the final path (its
digest is wrong on the device too; the host's own digest, taken then, says which of the two it
was: a bad bundle, or bytes changed on the way). What it does not prove: that the storage itself
holds those bytes (the read-back is served from the page cache; bit rot or a failing flash shows at the next
full re-hash, `rehash=True`), nor anything on a device whose own tools lie.

Devices without `exec:`, and an emulator's (ro.boot.qemu=1) files of 8 MiB or more, get the sync
path instead: sync SEND to the temporary name, then one device command that hashes it with
sha256sum and ends as a streamed file does (verdict, rename, stat, stamp). An emulator's CPU is the
host's: the overlap that keeps a phone's link busy costs it more than it hides (`stream_limit` has
the figures); its small files are still streamed, one round trip each. $GEMMA4_MOBILE_PUSH_SYNC=1
or 0 chooses one path for every file of any device.

Re-pushes cost what checking costs: after a verified hash the host writes a verification stamp
next to the bundle on the device (per file: path, size, mtime, ctime, inode and sha256; and the
manifest's sha256), in the same command that moves the manifest into place. A file whose stat
still matches its stamp entry is not re-hashed, on the device or on the host; any difference (a
rewrite changes mtime, ctime and usually the inode; a replaced file changes the inode) sends it
back to sha256sum on the device, and a wrong hash to a fresh push. What a stamp proves: nothing
changed the file through the filesystem since its bytes were hashed on the device. What it cannot
prove: that storage still reads back those bytes (bit rot, a write under the filesystem), or that
someone with the power to reset ctime (root changing the clock) did not forge it; full re-hashing
is `deploy(..., rehash=True)` (`push --rehash`).

Resume is per file: a cut transfer leaves at most a temporary `*.g4m-part` (the device command
removes it when its stream ends early or it is hung up; the next run removes older ones), files
already verified and in place are not sent again, the cut file is sent again whole. Host-side
sha256s are cached by (path, size, mtime_ns, ctime_ns, inode), so an unchanged bundle is not
re-read on the host either."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import time
from pathlib import Path, PurePosixPath
from typing import Any

from converters.bundle import MANIFEST, read_manifest
from gemma4_common.config import env_bool, env_name, state_dir
from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json, sha256_file
from gemma4_common.progress import Progress
from gemma4_common.shell import join, quote
from on_device.runner_contract import DEFAULT_DEVICE_DIR, RUNNER_NAME
from sdk_tools.devices.base import Device, DeviceCommandError, DeviceOffline, ServiceRefused, parse_df_available
from sdk_tools.deploy_plan import DeployPlan, cpu_plan, plan_for_device, require_backend

PART_SUFFIX = ".g4m-part"
STALE_PART_S = 6 * 3600  # a temporary file older than this is a cut transfer's, never a running push's
STORAGE_MARGIN = 16 << 20  # room for the temporary name, directory entries, logs
STAMP_NAME = ".g4m-verified.json"
STAMP_VERSION = 1
# size | mtime | ctime | inode | mode: toybox stat and coreutils stat agree on these.
STAT_FORMAT = "%s|%Y|%Z|%i|%a|%n"
_MARK = "__g4m_section__"
_DD_OK = "__g4m_dd_count_bytes__"
HOST_HASH_CACHE = "host-sha256.json"
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv"}

RUNNER_HELP = (
    "build LiteRT-LM's litert_lm_main for android_arm64 (in a LiteRT-LM checkout: "
    "`bazel build --config=android_arm64 //runtime/engine:litert_lm_main`) and pass it with --runner FILE, "
    f"set ${env_name('RUNNER')}, or put {{\"runner\": \"/path/to/litert_lm_main\"}} in the config file; "
    "for the reference emulator, `gemma4-mobile emulator runner -o FILE` writes its runner"
)


# ---- the runner file -------------------------------------------------------------------------
def check_runner_file(path: Path, source: str = "--runner") -> None:
    if not path.exists():
        raise UserError(f"runner {path} (from {source}) does not exist", RUNNER_HELP)
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UserError(f"runner {path} (from {source}) is not a readable file", RUNNER_HELP)
    with open(path, "rb") as f:
        head = f.read(20)
    if not head:
        raise UserError(f"runner {path} is empty", RUNNER_HELP)
    if head.startswith(b"\x7fELF") and len(head) >= 20:
        little = head[5] == 1
        machine = int.from_bytes(head[18:20], "little" if little else "big")
        if machine != 183:
            arch = _ELF_MACHINES.get(machine, f"machine {machine}")
            raise UserError(f"runner {path} is built for {arch}, not android_arm64", RUNNER_HELP)


# ---- deployment ---------------------------------------------------------------------------------
@dataclasses.dataclass
class FileAction:
    kind: str  # runner | model | config | dispatch_lib | manifest
    source: str  # host path
    device_path: str
    size: int
    sha256: str
    action: str  # pushed | unchanged
    seconds: float = 0.0


@dataclasses.dataclass
class Deployment:
    """Where a deployed bundle lives on a device: what bench, verify and the agent reuse."""

    serial: str
    device_dir: PurePosixPath
    bundle_dir: PurePosixPath  # on the device
    runner_path: PurePosixPath
    model_path: PurePosixPath
    backend: str  # npu when the NPU model was deployed, else cpu
    dispatch_dir: PurePosixPath | None
    env: dict[str, str]
    runner_flags: list[str]
    bundle_name: str
    recipe: str | None
    variant: str | None
    manifest_hash: str
    notice: str | None
    files: list[FileAction]
    seconds: float
    has_runner: bool = True  # False: `push` without a runner (the bundle alone, for an app)

    @property
    def bytes_pushed(self) -> int:
        return sum(f.size for f in self.files if f.action == "pushed")

    @property
    def push_seconds(self) -> float:
        return sum(f.seconds for f in self.files if f.action == "pushed")

    def env_prefix(self) -> str:
        return " ".join(f"{k}={quote(v)}" for k, v in self.env.items())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("device_dir", "bundle_dir", "runner_path", "model_path", "dispatch_dir"):
            d[k] = None if d[k] is None else str(d[k])
        d["bytes_pushed"] = self.bytes_pushed
        d["push_seconds"] = self.push_seconds
        return d


@dataclasses.dataclass
class _Item:
    kind: str
    local: Path
    device_path: PurePosixPath
    size: int
    sha256: str
    mode: int
    host_checked: bool = True  # the host file is known to hash to sha256; else proven by the device's hash


def bundle_id(manifest: dict[str, Any], bundle_dir: Path) -> str:
    name = str(manifest.get("name") or bundle_dir.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "bundle"


def plan_deployment(device: Device, bundle_dir: Path, manifest: dict[str, Any], *, backend: str | None,
                    dispatch_lib_dir: Path | None, device_dir: PurePosixPath) -> DeployPlan:
    """What to push to this device: its NPU model where the bundle has one, the CPU model when the
    backend asked for is cpu/gpu (or the device has no NPU target of the bundle)."""
    device_bundle_dir = device_dir / "bundles" / bundle_id(manifest, bundle_dir)
    if backend is not None and backend.lower() in ("cpu", "gpu"):
        return cpu_plan(manifest, device_bundle_dir, None)
    plan = plan_for_device(manifest, device.props, dispatch_lib_dir, device_bundle_dir)
    if backend is not None:
        require_backend(plan, backend)
    return plan


class HostHashes:
    """sha256 of host files, cached by (size, mtime_ns, ctime_ns, inode) in the state directory:
    a file whose stat is unchanged is not read again (what git's index does for its work tree)."""

    def __init__(self) -> None:
        self.path = state_dir() / HOST_HASH_CACHE
        data = read_json(self.path, missing={}, broken={})  # a cache only: a broken one is rebuilt
        self.entries: dict[str, list] = data if isinstance(data, dict) else {}
        self.dirty = False

    @staticmethod
    def _key(st: os.stat_result) -> list:
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]

    def cached(self, path: Path) -> str | None:
        """The sha256 of `path` if the cache knows it at its present stat, else None (nothing read)."""
        real = str(path.resolve())
        hit = self.entries.get(real)
        if isinstance(hit, list) and len(hit) == 5 and hit[:4] == self._key(os.stat(real)):
            return str(hit[4])
        return None

    def remember(self, path: Path, st: os.stat_result, digest: str) -> None:
        """Record `digest`, computed from the bytes of `path` read while it had stat `st`, unless
        the file changed since (it was being written while we read it)."""
        real = str(path.resolve())
        if self._key(os.stat(real)) == self._key(st):
            self.entries[real] = [*self._key(st), digest]
            self.dirty = True

    def sha256(self, path: Path) -> str:
        hit = self.cached(path)
        if hit is not None:
            return hit
        st = os.stat(path)
        digest = sha256_file(path)
        self.remember(path, st, digest)
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        from sdk_tools.devices.discovery import write_state_text

        try:
            live = {k: v for k, v in self.entries.items() if os.path.exists(k)}
            write_state_text(self.path, json.dumps(live) + "\n")
        except OSError:
            pass  # a cache only


def _items(bundle_dir: Path, manifest: dict[str, Any], plan: DeployPlan, runner: Path | None,
           device_dir: PurePosixPath, hashes: HostHashes) -> list[_Item]:
    items = []
    if runner is not None:
        items.append(_Item("runner", runner, device_dir / RUNNER_NAME, runner.stat().st_size, hashes.sha256(runner),
                           0o755))
    for p in plan.pushes:
        if p.kind == "dispatch_lib":
            local = Path(p.source)
            items.append(_Item(p.kind, local, p.device_path, local.stat().st_size, hashes.sha256(local), 0o755))
            continue
        local = bundle_dir / str(p.source)
        if not local.is_file():
            raise UserError(f"bundle file {p.source} is missing from {bundle_dir}",
                            "re-run `gemma4-mobile convert` or copy the bundle again")
        size = local.stat().st_size
        if p.sha256 is None or (p.size is not None and size != p.size):
            raise UserError(f"bundle file {p.source} does not match the manifest (size {size}, expected {p.size})",
                            "re-run `gemma4-mobile convert` or copy the bundle again")
        # Known to the cache: checked now. Otherwise not hashed on the host at all: the device accepts
        # it only with the manifest's sha256 (and only a wrong digest there makes the host hash it).
        known = hashes.cached(local)
        if known is not None and known != p.sha256:
            raise UserError(f"bundle file {p.source} does not match its manifest (sha256)",
                            "re-run `gemma4-mobile convert` or copy the bundle again")
        items.append(_Item(p.kind, local, p.device_path, size, p.sha256, 0o644, host_checked=known is not None))
    return items


def _size_matches(device_size: int, size: int) -> bool:
    # sync STAT v1 reports sizes modulo 2**32; the sha256 decides in any case.
    return device_size == size or device_size == (size & 0xFFFFFFFF)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


@dataclasses.dataclass
class _DeviceState:
    stamp: dict[str, Any]
    stats: dict[str, tuple[int, int, int, int, int]]  # path -> size, mtime, ctime, inode, mode
    listings: dict[str, list[str]]
    free: int | None = None  # bytes available under the device directory
    dd_count_bytes: bool = False  # the device's dd takes iflag=count_bytes (toybox, busybox)


def _parse_stat_lines(text: str) -> dict[str, tuple[int, int, int, int, int]]:
    out = {}
    for line in text.splitlines():
        parts = line.split("|", 5)
        if len(parts) == 6 and all(x.isdigit() for x in parts[:4]) and re.fullmatch(r"[0-7]+", parts[4]):
            out[parts[5]] = (int(parts[0]), int(parts[1]), int(parts[2]), int(parts[3]), int(parts[4], 8))
    return out


def _device_state(device: Device, dirs: list[str], paths: list[str], stamp_path: PurePosixPath,
                  device_dir: PurePosixPath) -> _DeviceState:
    """One shell round trip: create the directories, read the stamp, stat every final path, free
    storage, list the directories (for temporaries of cut transfers)."""
    parts = [join(["mkdir", "-p", *dirs]) + " || exit 3", join(["cat", str(stamp_path)]) + " 2>/dev/null",
             join(["echo", _MARK]), join(["stat", "-c", STAT_FORMAT, *paths]) + " 2>/dev/null",
             join(["echo", _MARK]), join(["df", "-k", str(device_dir)]) + " 2>/dev/null",
             join(["echo", _MARK]), "dd if=/dev/null of=/dev/null iflag=count_bytes count=0 2>/dev/null && echo "
             + _DD_OK]
    for d in dirs:
        parts += [join(["echo", _MARK]), join(["ls", "-a", d]) + " 2>/dev/null"]
    r = device.shell_result("; ".join(parts) + "; exit 0")
    if r.rc != 0:
        detail = (r.err or r.out).strip().splitlines()
        raise DeviceCommandError(
            f"creating {dirs[0]} failed on {device.serial} ({detail[-1] if detail else 'exit ' + str(r.rc)})",
            "check the device path and permissions (the shell user may write under /data/local/tmp)")
    sections = r.out.split(_MARK + "\n")
    stamp: dict[str, Any] = {}
    try:
        loaded = json.loads(sections[0]) if sections[0].strip() else {}
        if isinstance(loaded, dict) and loaded.get("version") == STAMP_VERSION:
            stamp = loaded
    except ValueError:
        pass  # a damaged stamp proves nothing: everything is hashed again
    stats = _parse_stat_lines(sections[1]) if len(sections) > 1 else {}
    free = parse_df_available(sections[2]) if len(sections) > 2 else None
    dd_ok = len(sections) > 3 and _DD_OK in sections[3].split()
    listings = {d: (sections[4 + i].split() if len(sections) > 4 + i else []) for i, d in enumerate(dirs)}
    return _DeviceState(stamp, stats, listings, free, dd_ok)


def _stamp_entry(st: tuple[int, int, int, int, int], sha: str) -> dict[str, Any]:
    return {"size": st[0], "mtime": st[1], "ctime": st[2], "inode": st[3], "sha256": sha}


def _stamp_proves(state: _DeviceState, manifest_sha: str, item: _Item) -> bool:
    if state.stamp.get("manifest") != manifest_sha:
        return False
    st = state.stats.get(str(item.device_path))
    entry = (state.stamp.get("files") or {}).get(str(item.device_path))
    return bool(st and isinstance(entry, dict) and entry == _stamp_entry(st, item.sha256) and st[0] == item.size)


def _write_stamp(device: Device, stamp_path: PurePosixPath, manifest_sha: str,
                 entries: dict[str, dict[str, Any]]) -> None:
    """Written only with entries whose bytes were hashed on the device (now or under a valid stamp)."""
    text = json.dumps({"version": STAMP_VERSION, "manifest": manifest_sha, "files": entries}, sort_keys=True)
    tmp = _part_name(stamp_path)
    r = device.shell_result(join(["printf", "%s\n", text]) + " > " + quote(str(tmp)) + " && "
                            + join(["mv", "-f", str(tmp), str(stamp_path)]))
    if r.rc != 0:  # without a stamp the next push hashes again: slower, never wrong
        device.remove(tmp)


def deploy(device: Device, bundle_dir: Path | str, *, runner: Path | str | None = None,
           dispatch_lib_dir: Path | str | None = None, backend: str | None = None,
           device_dir: PurePosixPath | str = DEFAULT_DEVICE_DIR, progress: Progress | None = None,
           rehash: bool = False) -> Deployment:
    """Push what `device` needs to run `bundle_dir`, verified; return where it is on the device.

    `backend` None deploys the NPU model where the bundle has one for the device's SoC (else the
    CPU model, with `notice` saying why); "npu" requires it; "cpu"/"gpu" deploy the CPU model.
    `runner`: the host file to push as the device runner (the CLI resolves it: `cli.options.resolve_runner`);
    None pushes the bundle alone (an app loads the model itself). `rehash`: ignore the verification stamp and hash
    every file on the device.
    """
    t_start = time.perf_counter()
    progress = progress or Progress()
    bundle_dir = Path(bundle_dir)
    device_dir = PurePosixPath(device_dir)
    manifest = read_manifest(bundle_dir)
    if not manifest.get("main_model"):
        raise UserError("the bundle's manifest.json has no main_model", "re-run `gemma4-mobile convert`")
    runner_path = Path(runner) if runner is not None else None
    if runner_path is not None:
        check_runner_file(runner_path)
    plan = plan_deployment(device, bundle_dir, manifest, backend=backend,
                           dispatch_lib_dir=Path(dispatch_lib_dir) if dispatch_lib_dir else None,
                           device_dir=device_dir)
    if plan.notice:
        progress.note(plan.notice)
    hashes = HostHashes()
    items = _items(bundle_dir, manifest, plan, runner_path, device_dir, hashes)
    device_bundle_dir = device_dir / "bundles" / bundle_id(manifest, bundle_dir)
    manifest_local = bundle_dir / MANIFEST
    manifest_item = _Item("manifest", manifest_local, device_bundle_dir / MANIFEST, manifest_local.stat().st_size,
                          sha256_file(manifest_local), 0o644)
    try:
        return _deploy_items(device, items, manifest_item, manifest, plan, bundle_dir, device_dir,
                             device_bundle_dir, runner_path, hashes, progress, rehash, t_start)
    finally:
        hashes.save()


def _deploy_items(device: Device, items: list[_Item], manifest_item: _Item, manifest: dict[str, Any], plan: DeployPlan,
                  bundle_dir: Path, device_dir: PurePosixPath, device_bundle_dir: PurePosixPath,
                  runner_path: Path | None, hashes: HostHashes, progress: Progress, rehash: bool,
                  t_start: float) -> Deployment:
    manifest_local = manifest_item.local
    stamp_path = device_bundle_dir / STAMP_NAME
    every = [*items, manifest_item]

    dirs = sorted({str(i.device_path.parent) for i in every})
    state = _device_state(device, dirs, [str(i.device_path) for i in every], stamp_path, device_dir)
    _remove_stale_parts(device, state.listings)

    # What is already there and right: proven by the stamp, else by sha256 on the device.
    sha = manifest_item.sha256
    proven = set() if rehash else {str(i.device_path) for i in every if _stamp_proves(state, sha, i)}
    candidates = [i for i in every if str(i.device_path) not in proven
                  and (st := state.stats.get(str(i.device_path))) and _size_matches(st[0], i.size)]
    hashed = device.sha256([i.device_path for i in candidates]) if candidates else {}
    unchanged = proven | {str(i.device_path) for i in candidates if hashed.get(str(i.device_path)) == i.sha256}
    entries: dict[str, dict[str, Any]] = {}
    for i in every:
        st = state.stats.get(str(i.device_path))
        if str(i.device_path) in unchanged and st:
            entries[str(i.device_path)] = _stamp_entry(st, i.sha256)
    # Right bytes, wrong mode (a runner that lost its exec bit): restore the mode, no push needed.
    for i in every:
        st = state.stats.get(str(i.device_path))
        if str(i.device_path) in unchanged and st and i.mode & 0o111 and st[4] != i.mode:
            device.check_shell(join(["chmod", f"{i.mode:o}", str(i.device_path)]),
                               f"restoring the mode of {i.device_path}")
            entries.pop(str(i.device_path), None)  # chmod changed its ctime: hashed again next time
            progress.note(f"{device.serial}: {i.device_path} had mode {st[4]:o}; restored {i.mode:o}")
    todo = [i for i in items if str(i.device_path) not in unchanged]
    manifest_ok = str(manifest_item.device_path) in unchanged and not todo

    actions: list[FileAction] = [FileAction(i.kind, str(i.local), str(i.device_path), i.size, i.sha256, "unchanged")
                                 for i in items if str(i.device_path) in unchanged]
    sender = _Sender(device, progress, hashes, state.dd_count_bytes)
    if todo:
        need = sum(i.size for i in todo)
        free = state.free
        if free is not None and need + STORAGE_MARGIN > free:
            raise UserError(
                f"not enough storage on {device.serial}: {_human(need)} to push to {device_dir}, "
                f"{_human(free)} free",
                "free space on the device (e.g. remove old bundles under "
                f"{device_dir / 'bundles'}) or use a smaller recipe (int4)")
        # The bundle is about to change: it must not look complete until the manifest is back
        # (done by the first file's own command, before it writes anything).
        sender.first = join(["rm", "-f", str(manifest_item.device_path), str(stamp_path)])
        for item in todo:
            action, st = sender.push(item)
            actions.append(action)
            if st:
                entries[str(item.device_path)] = _stamp_entry(st, item.sha256)
    stamped = False
    if not manifest_ok:
        action, st = sender.push(manifest_item, stamp=(stamp_path, sha, entries))
        actions.append(action)
        if st:
            entries[str(manifest_item.device_path)] = _stamp_entry(st, manifest_item.sha256)
        stamped = sender.stamped
    else:
        actions.append(FileAction("manifest", str(manifest_local), str(manifest_item.device_path),
                                  manifest_item.size, manifest_item.sha256, "unchanged"))
    if not stamped and (len(proven) != len(every) or state.stamp.get("files") != entries):
        _write_stamp(device, stamp_path, sha, entries)

    return Deployment(
        serial=device.serial,
        device_dir=device_dir,
        bundle_dir=device_bundle_dir,
        runner_path=device_dir / RUNNER_NAME,
        has_runner=runner_path is not None,
        model_path=plan.device_model_path,
        backend=plan.backend,
        dispatch_dir=plan.dispatch_dir,
        env=dict(plan.env),
        runner_flags=list(plan.runner_flags),
        bundle_name=str(manifest.get("name") or bundle_dir.name),
        recipe=(manifest.get("recipe") or {}).get("name") if isinstance(manifest.get("recipe"), dict)
        else manifest.get("recipe"),
        variant=manifest.get("variant"),
        manifest_hash=manifest_item.sha256,
        notice=plan.notice,
        files=actions,
        seconds=time.perf_counter() - t_start,
    )


def _part_name(final: PurePosixPath) -> PurePosixPath:
    """A temporary name of our own: concurrent pushes of one file to one device never share one."""
    return final.with_name(f"{final.name}.{int(time.time())}-{secrets.token_hex(4)}{PART_SUFFIX}")


_PART_RE = re.compile(r"^(?P<name>.+?)(?:\.(?P<ts>\d{9,12})-[0-9a-f]{8})?" + re.escape(PART_SUFFIX) + "$")


def _remove_stale_parts(device: Device, listings: dict[str, list[str]]) -> None:
    """Temporary files of cut transfers (ours, older than STALE_PART_S, or the fixed names of older
    versions); a younger one may belong to a push running now from another process."""
    cutoff = time.time() - STALE_PART_S
    stale = [f"{d.rstrip('/')}/{n}" for d, names in listings.items() for n in names
             if (m := _PART_RE.match(n)) and (m.group("ts") is None or int(m.group("ts")) < cutoff)]
    if stale:
        device.remove(*stale)


_VERDICT = "__g4m_sent__"
_STAMPED = "__g4m_stamped__"
MAX_COMMAND = 3500  # stay under the 4 KiB an old adbd takes in one OPEN


# Android's emulators say so in ro.boot.qemu (Android 12+) or ro.kernel.qemu (older); so does ours.
_EMULATOR_PROPS = ("ro.boot.qemu", "ro.kernel.qemu")


# Below this size a file is streamed to an emulator too: one round trip instead of a SEND and a
# command, and streaming a few MiB costs its CPU next to nothing.
STREAM_SMALL_BYTES = 8 << 20


def stream_limit(device: Device) -> float:
    """Files smaller than this go to `device` streamed through exec: (written and hashed on the
    device in one pass), larger ones by sync SEND followed by sha256sum. A phone's CPU is its own
    and its link (USB, Wi-Fi) is the bound: streaming keeps the link busy while the device hashes,
    so every file is streamed. An emulator's CPU is the host's, so the overlap is paid for by the
    transfer itself: streaming costs the device 2.7-4.1 CPU s/GiB (pipes, dd's writes and
    read-back) against 1.0 for sha256sum after a sync SEND, and on the reference emulator sync
    measured 0.78x of `adb push` against streaming's 0.51x over TCP, 0.62x against 0.56x through the
    adb server (benchmarks/push.py, 1 GiB, 2 cores, medians of 3); only its small files are
    streamed. $GEMMA4_MOBILE_PUSH_SYNC decides instead: 1 sync for every file, 0 streamed."""
    forced = env_bool("PUSH_SYNC")
    if forced is not None:
        return 0 if forced else float("inf")
    return STREAM_SMALL_BYTES if any(device.props.get(k) == "1" for k in _EMULATOR_PROPS) else float("inf")


class _Sender:
    """Sends files one by one, each streamed through `exec:` into one device command that writes,
    hashes, checks and renames it (see the module docstring); from `stream_limit` up (an emulator's
    large files) and on a device without `exec:`, sync SEND followed by one command that hashes,
    checks and renames the temporary file."""

    def __init__(self, device: Device, progress: Progress, hashes: HostHashes, dd_count_bytes: bool):
        self.device, self.progress, self.hashes = device, progress, hashes
        self.dd_count_bytes = dd_count_bytes
        self.first: str | None = None  # runs on the device before the first file is written
        self.stream_below = stream_limit(device)
        self.stamped = False  # the last push also wrote the verification stamp

    def push(self, item: _Item, stamp: tuple[PurePosixPath, str, dict[str, dict[str, Any]]] | None = None
             ) -> tuple[FileAction, tuple[int, int, int, int, int] | None]:
        self.stamped = False
        if item.size < self.stream_below:
            try:
                return self._streamed(item, stamp)
            except ServiceRefused:
                self.stream_below = 0
        if self.first:
            self.device.shell_result(self.first)
            self.first = None
        return self._synced(item, stamp)

    def _host_proven(self, item: _Item, st0: os.stat_result) -> None:
        """The device found the manifest's sha256 in what was read from the host file: the host-hash
        cache may keep it for that file (if its stat did not change while it was read)."""
        self.hashes.remember(item.local, st0, item.sha256)
        item.host_checked = True

    def _streamed(self, item: _Item, stamp) -> tuple[FileAction, tuple[int, int, int, int, int] | None]:
        device, final = self.device, item.device_path
        tmp = _part_name(final)
        after = _stamp_command(*stamp, final, item.sha256) if stamp else ""
        script = _stream_script(item, tmp, self.first, after, self.dd_count_bytes)
        if len(script) > MAX_COMMAND and after:
            script = _stream_script(item, tmp, self.first, "", self.dd_count_bytes)
        st0 = os.stat(item.local)
        t0 = time.perf_counter()
        try:
            with self.progress.step(f"{device.serial}: {final.name}", total=item.size):
                out = device.stream_in(script, item.local, progress=self.progress.advance)
        except ServiceRefused:
            raise
        except BaseException:
            try:
                device.remove(tmp)
            except Exception:
                pass  # the device is gone; its command removes it when hung up, the next deploy otherwise
            raise
        self.first = None
        return self._settled(item, tmp, out.decode("utf-8", "replace"), st0, t0)

    def _synced(self, item: _Item, stamp) -> tuple[FileAction, tuple[int, int, int, int, int] | None]:
        """sync SEND to the temporary name, then one device command: sha256sum of it against the
        manifest, size, mode, rename into place, stat (and the stamp after the manifest): as
        streamed, the device's digest of what it received is the proof, and no host pass precedes it."""
        device, final = self.device, item.device_path
        tmp = _part_name(final)
        st0 = os.stat(item.local)
        t0 = time.perf_counter()
        try:
            with self.progress.step(f"{device.serial}: {final.name}", total=item.size):
                device.push(item.local, tmp, mode=item.mode, progress=self.progress.advance)
            after = _stamp_command(*stamp, final, item.sha256) if stamp else ""
            script = _settle_script(item, tmp, after)
            if len(script) > MAX_COMMAND and after:
                script = _settle_script(item, tmp, "")
            r = device.shell_result(script, timeout_s=None)
        except BaseException:
            try:
                device.remove(tmp)
            except Exception:
                pass  # the device is gone; the next deploy removes it
            raise
        return self._settled(item, tmp, r.out + r.err, st0, t0)

    def _settled(self, item: _Item, tmp: PurePosixPath, text: str, st0: os.stat_result, t0: float
                 ) -> tuple[FileAction, tuple[int, int, int, int, int] | None]:
        """What the device command said of one file: in place (action, final stat), or the error."""
        device, final = self.device, item.device_path
        st = _parse_stat_lines(text).get(str(final))
        if st is not None and _size_matches(st[0], item.size):
            # In place only with the manifest's sha256 of what the device received.
            self._host_proven(item, st0)
            self.stamped = _STAMPED in text.splitlines()
            return (FileAction(item.kind, str(item.local), str(final), item.size, item.sha256, "pushed",
                               time.perf_counter() - t0), st)
        m = re.search(rf"^{_VERDICT} (\S+) (\S*) (\S*)$", text, re.M)
        said = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(_VERDICT)]
        detail = said[-1][:200] if said else ""
        if m is None:  # the stream ended before the command could answer: the link went away
            try:
                device.remove(tmp)
            except Exception:
                pass
            raise DeviceOffline(device.serial, f"the transfer of {final.name}",
                                "the stream ended without the device's answer" + (f": {detail}" if detail else ""))
        rc, got, size = m.groups()
        if rc == "0" and size == str(item.size) and got != item.sha256:
            _raise_mismatch(device, item, got or None, self.hashes)
        if rc != "0" or size != str(item.size):
            raise DeviceCommandError(
                f"writing {tmp} on {device.serial} failed ({detail or 'exit ' + rc}; {size or 0} of {item.size} bytes "
                "written)", "check free storage and permissions of the directory")
        raise DeviceCommandError(f"cannot move {tmp} into place on {device.serial}"
                                 + (f" ({detail})" if detail else ""),
                                 "check permissions of the directory")


CHUNK_MIB = 64  # the device hashes chunk k while chunk k+1 arrives; the last one's hash follows the transfer


def _stream_script(item: _Item, tmp: PurePosixPath, first: str | None, after: str, dd_count_bytes: bool) -> str:
    """The device command one file is streamed into (exec: runs it with `sh -c`). Chunk by chunk of
    CHUNK_MIB, a writer takes exactly the chunk's bytes from stdin into TMP at the chunk's offset
    (`dd iflag=count_bytes count=N`, which never reads past N and writes 1 MiB blocks; `head -c N |
    dd` where the device's dd lacks count_bytes) and then names the chunk to a reader, which reads
    it back from TMP into one sha256sum of the whole file while the next chunk is written. Then,
    only if every step succeeded, the digest is the manifest's and TMP has the right size: mode,
    mtime (the host file's, as adb push keeps it), rename into place, stat. Its verdict line says
    what happened either way; TMP is removed when it fails or the stream is hung up. Only chunk
    numbers go through mksh's 32-bit arithmetic; byte counts are literals, compared as strings."""
    t = quote(str(tmp))
    mtime = int(item.local.stat().st_mtime)
    chunk = CHUNK_MIB << 20
    full, rest = divmod(item.size, chunk)
    seek = f"seek=$((i*{CHUNK_MIB})) conv=notrunc"

    def write(n: int) -> str:
        if dd_count_bytes:
            w = f"dd of={t} iflag=count_bytes count={n} ibs=65536 obs=1048576 {seek}"
        else:
            w = f"head -c {n} | dd of={t} bs=1048576 {seek}"
        return f"{w} 2>/dev/null || exit 1; echo $i"

    writer = (f"i=0; while [ $i -lt {full} ]; do {write(chunk)}; i=$((i+1)); done"
              + (f"; {write(rest)}" if rest else ""))
    reader = (f"while read i; do dd if={t} bs=1048576 skip=$((i*{CHUNK_MIB})) count={CHUNK_MIB} 2>/dev/null "
              "|| exit 1; done")
    parts = ["set -o pipefail", "trap " + quote(f"rm -f {t}; exit 129") + " HUP INT TERM PIPE"]
    if first:
        parts.append(first)
    parts += [
        f": > {t} || exit 1",
        f"h=$({{ {writer}; }} | {reader} | sha256sum); r=$?; h=${{h%% *}}",
        *_verdict_and_move(item, tmp, after, f"{{ touch -m -d @{mtime} {t} 2>/dev/null; :; }}"),
    ]
    return "; ".join(parts)


def _settle_script(item: _Item, tmp: PurePosixPath, after: str) -> str:
    """The device command after a sync SEND to TMP: its sha256sum, then as at the end of a streamed
    file (the verdict line; only with the manifest's digest and size: mode, rename, stat, `after`).
    The mtime came with the SEND's DONE."""
    t = quote(str(tmp))
    return "; ".join([f"h=$(sha256sum {t}); r=$?; h=${{h%% *}}", *_verdict_and_move(item, tmp, after, ":")])


def _verdict_and_move(item: _Item, tmp: PurePosixPath, after: str, before_move: str) -> list[str]:
    """The end of a file's device command, once `h` holds TMP's digest and `r` the hashing's exit
    status: say both and TMP's size on the verdict line; if they are the manifest's, `before_move`,
    chmod, rename into place, stat and `after`; else remove TMP. Sizes are compared as strings."""
    t = quote(str(tmp))
    move = " && ".join([join(["chmod", f"{item.mode:o}", str(tmp)]),
                        join(["mv", "-f", str(tmp), str(item.device_path)]),
                        join(["stat", "-c", STAT_FORMAT, str(item.device_path)])])
    return [
        f"s=$(stat -c %s {t} 2>/dev/null)",
        f'echo "{_VERDICT} $r $h $s"',
        f'if [ "$r" = 0 ] && [ "$h" = {item.sha256} ] && [ "$s" = {item.size} ] && '
        f"{before_move} && {move}; then {after or ':'}; exit 0; fi",
        f"rm -f {t}; exit 1",
    ]


def _stamp_command(stamp_path: PurePosixPath, manifest_sha: str, entries: dict[str, dict[str, Any]],
                   final: PurePosixPath, sha: str) -> str:
    """Writes the verification stamp on the device right after `final` (the manifest) was verified
    and moved into place: the host's entries for the other files plus `final`'s own, filled in by
    the device's stat."""
    head = '{"version": %d, "manifest": %s, "files": {' % (STAMP_VERSION, json.dumps(manifest_sha))
    head += "".join(f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}, "
                    for k, v in sorted(entries.items()) if k != str(final))
    head += json.dumps(str(final)) + ": "
    fmt = '{"ctime": %Z, "inode": %i, "mtime": %Y, "sha256": "' + sha + '", "size": %s}'
    tmp = _part_name(stamp_path)
    return ("{ " + join(["printf", "%s", head]) + " && " + join(["stat", "-c", fmt, str(final)]) + " && "
            + join(["printf", "}}\\n"]) + "; } > " + quote(str(tmp)) + " && "
            + join(["mv", "-f", str(tmp), str(stamp_path)]) + " && echo " + _STAMPED)


def _raise_mismatch(device: Device, item: _Item, got: str | None, hashes: HostHashes) -> None:
    """The device's digest is not the manifest's: say whose bytes were wrong, the host file's (a bad
    bundle) or the transfer's. Only on this path does the host read the file for a hash of its own."""
    if not item.host_checked and hashes.sha256(item.local) != item.sha256:
        raise UserError(f"bundle file {item.local} does not match its manifest (sha256)",
                        "re-run `gemma4-mobile convert` or copy the bundle again")
    raise UserError(
        f"checksum mismatch on {device.serial}: {item.device_path.name} has sha256 "
        f"{(got or 'unreadable')[:16]}... after the push, expected {item.sha256[:16]}...",
        "the transfer was corrupted or the device storage is failing; run the push again")
