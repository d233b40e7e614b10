"""Deploy a bundle to a device: decide what it needs (the NPU model for its SoC or the CPU model,
the runner, dispatch libraries), check free storage, push each file to a temporary name, verify
its sha256 on the device and rename it into place. Unchanged files are skipped by hash; a cut
transfer leaves at most a temporary file that the next run replaces; the final path never holds a
partial file, and the bundle's manifest.json is written on the device last, as the mark of a
complete deployment."""

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
from gemma4_common.errors import UserError
from gemma4_common.fsutil import sha256_file
from gemma4_common.progress import Progress
from gemma4_common.shell import join, quote
from on_device.runner_contract import DEFAULT_DEVICE_DIR, RUNNER_NAME
from sdk_tools.devices.base import Device, DeviceCommandError
from sdk_tools.npu_deploy import NpuPlan, PushItem, plan_npu, require_backend

RUNNER_ENV = "G4M_RUNNER"
CONFIG_ENV = "G4M_CONFIG"
PART_SUFFIX = ".g4m-part"
STALE_PART_S = 6 * 3600  # a temporary file older than this is a cut transfer's, never a running push's
STORAGE_MARGIN = 16 << 20  # room for the temporary name, directory entries, logs
_ELF_MACHINES = {3: "x86", 40: "arm", 62: "x86-64", 183: "aarch64", 243: "riscv"}

RUNNER_HELP = (
    "build LiteRT-LM's litert_lm_main for android_arm64 (in a LiteRT-LM checkout: "
    "`bazel build --config=android_arm64 //runtime/engine:litert_lm_main`) and pass it with --runner FILE, "
    f"set ${RUNNER_ENV}, or put {{\"runner\": \"/path/to/litert_lm_main\"}} in the config file; "
    "for the reference emulator, `gemma4-mobile emulator runner -o FILE` writes its runner"
)


# ---- runner location ----------------------------------------------------------------------------
def config_path() -> Path:
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gemma4-mobile" / "config.json"


def _config_runner() -> tuple[str | None, Path]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, path
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the config file {path} ({e})", "fix it or remove it") from None
    runner = data.get("runner") if isinstance(data, dict) else None
    return (str(runner) if runner else None), path


def find_runner(option: Path | str | None = None) -> Path:
    """The host file to push as the device runner: --runner, then $G4M_RUNNER, then the config file."""
    if option:
        source, path = "--runner", Path(option)
    elif os.environ.get(RUNNER_ENV):
        source, path = f"${RUNNER_ENV}", Path(os.environ[RUNNER_ENV])
    else:
        text, cfg = _config_runner()
        if not text:
            raise UserError(f"no device runner ({RUNNER_NAME}) given", RUNNER_HELP)
        source, path = f"config {cfg}", Path(text).expanduser()
    check_runner_file(path, source)
    return path


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

    @property
    def mb_per_s(self) -> float | None:
        return self.size / 1e6 / self.seconds if self.action == "pushed" and self.seconds > 0 else None


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


def bundle_id(manifest: dict[str, Any], bundle_dir: Path) -> str:
    name = str(manifest.get("name") or bundle_dir.name)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "bundle"


def _cpu_plan(manifest: dict[str, Any], device_bundle_dir: PurePosixPath, notice: str | None) -> NpuPlan:
    main = manifest["main_model"]
    meta = (manifest.get("files") or {}).get(main) or {}
    dev = device_bundle_dir / main
    return NpuPlan(soc=None, backend="cpu", model=main, device_model_path=dev, config=None,
                   pushes=[PushItem("model", main, dev, meta.get("sha256"), meta.get("size"))],
                   dispatch_dir=None, runner_flags=[], env={}, notice=notice)


def plan_deployment(device: Device, bundle_dir: Path, manifest: dict[str, Any], *, backend: str | None,
                    dispatch_lib_dir: Path | None, device_dir: PurePosixPath) -> NpuPlan:
    """The NPU plan for this device, or the CPU model when the backend asked for is cpu/gpu."""
    device_bundle_dir = device_dir / "bundles" / bundle_id(manifest, bundle_dir)
    if backend is not None and backend.lower() in ("cpu", "gpu"):
        return _cpu_plan(manifest, device_bundle_dir, None)
    plan = plan_npu(manifest, device.props, dispatch_lib_dir, device_bundle_dir)
    if backend is not None:
        require_backend(plan, backend)
    return plan


def _items(bundle_dir: Path, manifest: dict[str, Any], plan: NpuPlan, runner: Path,
           device_dir: PurePosixPath) -> list[_Item]:
    items = [_Item("runner", runner, device_dir / RUNNER_NAME, runner.stat().st_size, sha256_file(runner), 0o755)]
    for p in plan.pushes:
        if p.kind == "dispatch_lib":
            local = Path(p.source)
            items.append(_Item(p.kind, local, p.device_path, local.stat().st_size, sha256_file(local), 0o755))
            continue
        local = bundle_dir / str(p.source)
        if not local.is_file():
            raise UserError(f"bundle file {p.source} is missing from {bundle_dir}",
                            "re-run `gemma4-mobile convert` or copy the bundle again")
        size = local.stat().st_size
        if p.sha256 is None or (p.size is not None and size != p.size):
            raise UserError(f"bundle file {p.source} does not match the manifest (size {size}, expected {p.size})",
                            "re-run `gemma4-mobile convert` or copy the bundle again")
        # Before a byte goes to the device: what is sent is what the manifest vouches for.
        if sha256_file(local) != p.sha256:
            raise UserError(f"bundle file {p.source} does not match its manifest (sha256)",
                            "re-run `gemma4-mobile convert` or copy the bundle again")
        items.append(_Item(p.kind, local, p.device_path, size, p.sha256, 0o644))
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


def deploy(device: Device, bundle_dir: Path | str, *, runner: Path | str | None = None,
           dispatch_lib_dir: Path | str | None = None, backend: str | None = None,
           device_dir: PurePosixPath | str = DEFAULT_DEVICE_DIR, progress: Progress | None = None) -> Deployment:
    """Push what `device` needs to run `bundle_dir`, verified; return where it is on the device.

    `backend` None deploys the NPU model where the bundle has one for the device's SoC (else the
    CPU model, with `notice` saying why); "npu" requires it; "cpu"/"gpu" deploy the CPU model.
    """
    t_start = time.perf_counter()
    progress = progress or Progress()
    bundle_dir = Path(bundle_dir)
    device_dir = PurePosixPath(device_dir)
    manifest = read_manifest(bundle_dir)
    if not manifest.get("main_model"):
        raise UserError("the bundle's manifest.json has no main_model", "re-run `gemma4-mobile convert`")
    runner_path = find_runner(runner)
    plan = plan_deployment(device, bundle_dir, manifest, backend=backend,
                           dispatch_lib_dir=Path(dispatch_lib_dir) if dispatch_lib_dir else None,
                           device_dir=device_dir)
    if plan.notice:
        progress.note(plan.notice)
    items = _items(bundle_dir, manifest, plan, runner_path, device_dir)
    device_bundle_dir = device_dir / "bundles" / bundle_id(manifest, bundle_dir)
    manifest_local = bundle_dir / MANIFEST
    manifest_item = _Item("manifest", manifest_local, device_bundle_dir / MANIFEST, manifest_local.stat().st_size,
                          sha256_file(manifest_local), 0o644)

    dirs = sorted({str(i.device_path.parent) for i in [*items, manifest_item]})
    device.check_shell(join(["mkdir", "-p", *dirs]), f"creating {device_dir}")

    # What is already there and right (size, then sha256 on the device).
    _remove_stale_parts(device, dirs)
    stats = {str(i.device_path): device.stat(i.device_path) for i in [*items, manifest_item]}
    candidates = [i for i in [*items, manifest_item]
                  if (st := stats[str(i.device_path)]).is_file and _size_matches(st.size, i.size)]
    hashes = device.sha256([i.device_path for i in candidates]) if candidates else {}
    unchanged = {str(i.device_path) for i in candidates if hashes.get(str(i.device_path)) == i.sha256}
    # Right bytes, wrong mode (a runner that lost its exec bit): restore the mode, no push needed.
    for i in candidates:
        st = stats[str(i.device_path)]
        if str(i.device_path) in unchanged and i.mode & 0o111 and (st.mode & 0o777) != i.mode:
            device.check_shell(join(["chmod", f"{i.mode:o}", str(i.device_path)]),
                               f"restoring the mode of {i.device_path}")
            progress.note(f"{device.serial}: {i.device_path} had mode {st.mode & 0o777:o}; restored {i.mode:o}")
    todo = [i for i in items if str(i.device_path) not in unchanged]
    manifest_ok = str(manifest_item.device_path) in unchanged and not todo

    actions: list[FileAction] = [FileAction(i.kind, str(i.local), str(i.device_path), i.size, i.sha256, "unchanged")
                                 for i in items if str(i.device_path) in unchanged]
    if todo:
        need = sum(i.size for i in todo)
        free = device.free_bytes(device_dir)
        if free is not None and need + STORAGE_MARGIN > free:
            raise UserError(
                f"not enough storage on {device.serial}: {_human(need)} to push to {device_dir}, "
                f"{_human(free)} free",
                "free space on the device (e.g. remove old bundles under "
                f"{device_dir / 'bundles'}) or use a smaller recipe (int4)")
        # The bundle is about to change: it must not look complete until the manifest is back.
        device.remove(manifest_item.device_path)
        for item in todo:
            actions.append(_push_verified(device, item, progress))
    if not manifest_ok:
        actions.append(_push_verified(device, manifest_item, progress))
    else:
        actions.append(FileAction("manifest", str(manifest_local), str(manifest_item.device_path),
                                  manifest_item.size, manifest_item.sha256, "unchanged"))

    return Deployment(
        serial=device.serial,
        device_dir=device_dir,
        bundle_dir=device_bundle_dir,
        runner_path=device_dir / RUNNER_NAME,
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


def _remove_stale_parts(device: Device, dirs: list[str]) -> None:
    """Temporary files of cut transfers (ours, older than STALE_PART_S, or the fixed names of older
    versions); a younger one may belong to a push running now from another process."""
    cutoff = time.time() - STALE_PART_S
    for d in dirs:
        r = device.shell_result(join(["ls", "-a", d]))
        if r.rc != 0:
            continue
        stale = [f"{d.rstrip('/')}/{n}" for n in r.out.split()
                 if (m := _PART_RE.match(n)) and (m.group("ts") is None or int(m.group("ts")) < cutoff)]
        if stale:
            device.remove(*stale)


def _push_verified(device: Device, item: _Item, progress: Progress) -> FileAction:
    final = item.device_path
    tmp = _part_name(final)
    t0 = time.perf_counter()
    try:
        with progress.step(f"{device.serial}: {final.name}", total=item.size):
            device.push(item.local, tmp, mode=item.mode, progress=progress.advance)
        got = device.sha256([tmp]).get(str(tmp))
        if got != item.sha256:
            _raise_mismatch(device, item, got)
        r = device.shell_result(join(["mv", "-f", str(tmp), str(final)]) + " && " + join(["chmod", f"{item.mode:o}", str(final)]))
        if r.rc != 0:
            raise DeviceCommandError(f"cannot move {tmp} into place on {device.serial} ({(r.err or r.out).strip()})",
                                     "check permissions of the directory")
    except BaseException:
        try:
            device.remove(tmp)
        except Exception:
            pass  # the device is gone; the next deploy removes it
        raise
    return FileAction(item.kind, str(item.local), str(final), item.size, item.sha256, "pushed",
                      time.perf_counter() - t0)


def _raise_mismatch(device: Device, item: _Item, got: str | None) -> None:
    if item.kind in ("model", "config", "manifest") and sha256_file(item.local) != item.sha256:
        raise UserError(f"bundle file {item.local} does not match its manifest (sha256)",
                        "re-run `gemma4-mobile convert` or copy the bundle again")
    raise UserError(
        f"checksum mismatch on {device.serial}: {item.device_path.name} has sha256 "
        f"{(got or 'unreadable')[:16]}... after the push, expected {item.sha256[:16]}...",
        "the transfer was corrupted or the device storage is failing; run the push again")
