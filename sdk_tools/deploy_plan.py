"""What a deployment of a bundle to a given device pushes: for a device with an NPU target of the
bundle, the per-SoC model, its config, the dispatch libraries, and the runner's flags and
environment; else the CPU model (with a notice saying why)."""

from __future__ import annotations

import dataclasses
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from converters.npu.catalog import SocInfo, describe_device_soc, lookup_soc
from gemma4_common.errors import UserError
from gemma4_common.shell import quote

DISPATCH_SUBDIR = "dispatch"

# Standard DSP search paths kept after ours so that the phone's own libraries still resolve.
_ADSP_SYSTEM_PATHS = ("/vendor/lib/rfsa/adsp", "/vendor/dsp/cdsp", "/system/lib/rfsa/adsp", "/dsp")


@dataclasses.dataclass(frozen=True)
class PushItem:
    kind: str  # "model" | "config" | "dispatch_lib"
    source: Path | str  # bundle-relative path (model, config) or host path (dispatch_lib)
    device_path: PurePosixPath
    sha256: str | None = None
    size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "source": str(self.source),
            "device_path": str(self.device_path),
            "sha256": self.sha256,
            "size": self.size,
        }


@dataclasses.dataclass
class DeployPlan:
    soc: SocInfo | None  # the device's SoC when it is in the catalog
    backend: str  # "npu" when the bundle has a compiled model for this SoC, else "cpu"
    model: str  # bundle-relative path of the model to push
    device_model_path: PurePosixPath
    config: str | None  # bundle-relative path of the NPU config to push (NPU only)
    pushes: list[PushItem]  # everything to push, model first
    dispatch_dir: PurePosixPath | None
    runner_flags: list[str]  # to add to the runner's command line
    env: dict[str, str]  # to set for the runner
    notice: str | None  # why the CPU model is used, for people

    @property
    def dispatch_libs(self) -> list[PushItem]:
        return [p for p in self.pushes if p.kind == "dispatch_lib"]

    def env_prefix(self) -> str:
        """`VAR=value ...` for a device shell command line, quoted."""
        return " ".join(f"{k}={quote(v)}" for k, v in self.env.items())

    def to_dict(self) -> dict[str, Any]:
        return {
            "soc": self.soc.to_dict() if self.soc else None,
            "backend": self.backend,
            "model": self.model,
            "device_model_path": str(self.device_model_path),
            "config": self.config,
            "pushes": [p.to_dict() for p in self.pushes],
            "dispatch_dir": str(self.dispatch_dir) if self.dispatch_dir else None,
            "runner_flags": list(self.runner_flags),
            "env": dict(self.env),
            "notice": self.notice,
        }


def _where_to_get(soc: SocInfo, names: list[str]) -> str:
    if soc.vendor == "qualcomm":
        qnn = [n for n in names if n.startswith("libQnn") and not n.endswith("Skel.so")]
        skel = [n for n in names if n.endswith("Skel.so")]
        parts = []
        if qnn:
            parts.append(f"{', '.join(qnn)} from the QAIRT SDK's lib/aarch64-android")
        if skel:
            parts.append(f"{', '.join(skel)} from the QAIRT SDK's lib/hexagon-{soc.arch}/unsigned")
        if "libLiteRtDispatch_Qualcomm.so" in names:
            parts.append("libLiteRtDispatch_Qualcomm.so from LiteRT's Android NPU runtime libraries (LiteRT release)")
        return "get " + "; ".join(parts) + " and put them in one directory (or point at the QAIRT SDK root)"
    return (
        f"get {', '.join(names)} from LiteRT's Android NPU runtime libraries (LiteRT release); "
        "the NeuroPilot runtime itself is part of the phone's vendor image"
    )


def _candidate_dirs(lib_dir: Path, soc: SocInfo) -> list[Path]:
    # The directory itself, or the QAIRT SDK layout when it is pointed at the SDK root.
    dirs = [lib_dir]
    if soc.vendor == "qualcomm":
        dirs += [lib_dir / "lib" / "aarch64-android", lib_dir / "lib" / f"hexagon-{soc.arch}" / "unsigned"]
    return dirs


def _find_libs(soc: SocInfo, lib_dir: Path) -> tuple[dict[str, Path], list[str]]:
    found: dict[str, Path] = {}
    for name in soc.dispatch_libs:
        for d in _candidate_dirs(lib_dir, soc):
            if (d / name).is_file():
                found[name] = d / name
                break
    missing = [n for n in soc.dispatch_libs if n not in found]
    return found, missing


def _npu_targets(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    npu = manifest.get("npu") or {}
    targets = npu.get("targets") if isinstance(npu, Mapping) else None
    return [t for t in (targets or []) if isinstance(t, Mapping)]


def _file_meta(manifest: Mapping[str, Any], rel: str) -> tuple[str | None, int | None]:
    meta = (manifest.get("files") or {}).get(rel) or {}
    return meta.get("sha256"), meta.get("size")


def cpu_plan(manifest: Mapping[str, Any], device_dir: PurePosixPath, notice: str | None,
             soc: SocInfo | None = None) -> DeployPlan:
    """The CPU model alone, at its bundle-relative path under `device_dir`."""
    main_model = manifest["main_model"]
    sha, size = _file_meta(manifest, main_model)
    dev = PurePosixPath(device_dir) / main_model
    return DeployPlan(soc=soc, backend="cpu", model=main_model, device_model_path=dev, config=None,
                      pushes=[PushItem("model", main_model, dev, sha, size)], dispatch_dir=None, runner_flags=[],
                      env={}, notice=notice)


def plan_for_device(
    manifest: Mapping[str, Any],
    device_props: Mapping[str, str],
    dispatch_lib_dir: Path | None,
    device_dir: PurePosixPath,
) -> DeployPlan:
    """Plan an NPU deployment of a bundle to a device; falls back to the CPU model with a notice.

    Raises UserError only when an NPU model applies but the dispatch libraries are not all there.
    Device paths keep the bundle's relative layout under `device_dir`; dispatch libraries go to
    `device_dir/dispatch`.
    """
    device_dir = PurePosixPath(device_dir)
    main_model = manifest.get("main_model")
    if not main_model:
        raise UserError("the bundle's manifest.json has no main_model", "re-run `gemma4-mobile convert`")
    soc = lookup_soc(device_props)
    targets = _npu_targets(manifest)

    def cpu(notice: str) -> DeployPlan:
        return cpu_plan(manifest, device_dir, notice, soc)

    if soc is None:
        return cpu(
            f"device SoC {describe_device_soc(device_props)} is not a Qualcomm or MediaTek NPU target "
            "this tool compiles for; using the CPU model"
        )
    entry = next(
        (t for t in targets if t.get("vendor") == soc.vendor and str(t.get("soc", "")).upper() == soc.model),
        None,
    )
    if entry is None:
        built = ", ".join(f"{t.get('vendor')}:{t.get('soc')}" for t in targets) or "none"
        return cpu(
            f"the bundle has no NPU model for {soc.target} ({soc.marketing_name}); NPU targets in it: {built}; "
            f"using the CPU model (convert with --npu {soc.target} to build one)"
        )
    status = entry.get("status")
    model_rel = entry.get("model")
    if status != "compiled" or not model_rel:
        why = entry.get("message") or f"status {status}"
        return cpu(
            f"the bundle's NPU model for {soc.target} was not built ({status}: {why}); using the CPU model"
        )
    files = manifest.get("files") or {}
    if files and model_rel not in files:
        return cpu(
            f"the bundle lists an NPU model for {soc.target} ({model_rel}) but not among its files; "
            "using the CPU model"
        )

    if dispatch_lib_dir is None:
        raise UserError(
            f"{soc.target} ({soc.marketing_name}) runs the NPU model only with its dispatch libraries: "
            f"{', '.join(soc.dispatch_libs)}",
            f"pass the directory that holds them; {_where_to_get(soc, list(soc.dispatch_libs))}",
        )
    lib_dir = Path(dispatch_lib_dir)
    if not lib_dir.is_dir():
        raise UserError(f"dispatch library directory {lib_dir} does not exist", "check the path")
    found, missing = _find_libs(soc, lib_dir)
    if missing:
        raise UserError(
            f"dispatch libraries for {soc.target} missing from {lib_dir}: {', '.join(missing)}",
            _where_to_get(soc, missing),
        )

    dispatch_dir = device_dir / DISPATCH_SUBDIR
    sha, size = _file_meta(manifest, model_rel)
    dev_model = device_dir / model_rel
    pushes = [PushItem("model", model_rel, dev_model, sha, size)]
    config_rel = entry.get("config")
    if config_rel:
        csha, csize = _file_meta(manifest, config_rel)
        pushes.append(PushItem("config", config_rel, device_dir / config_rel, csha, csize))
    for name in soc.dispatch_libs:
        host = found[name]
        pushes.append(PushItem("dispatch_lib", host, dispatch_dir / name, None, host.stat().st_size))
    env = {"LD_LIBRARY_PATH": str(dispatch_dir)}
    if soc.vendor == "qualcomm":
        # The HTP stub loads the Skel through the DSP loader, which searches ADSP_LIBRARY_PATH (';').
        env["ADSP_LIBRARY_PATH"] = ";".join((str(dispatch_dir), *_ADSP_SYSTEM_PATHS))
    return DeployPlan(
        soc=soc,
        backend="npu",
        model=model_rel,
        device_model_path=dev_model,
        config=config_rel,
        pushes=pushes,
        dispatch_dir=dispatch_dir,
        runner_flags=["--backend=npu", f"--litert_dispatch_lib_dir={dispatch_dir}"],
        env=env,
        notice=None,
    )


def backend_supported(plan: DeployPlan, backend: str) -> bool:
    """Whether `backend` can run the planned model: the NPU only with a compiled model for this SoC."""
    backend = backend.lower()
    if backend == "npu":
        return plan.backend == "npu"
    return backend in ("cpu", "gpu")


def require_backend(plan: DeployPlan, backend: str) -> None:
    """UserError, with the plan's notice, when `backend` cannot run on this device."""
    if backend_supported(plan, backend):
        return
    if backend.lower() == "npu":
        raise UserError(
            f"--backend npu is not available on this device: {plan.notice or 'no NPU model'}",
            "use --backend cpu, or convert with --npu <vendor>:<SoC> for this device's SoC",
        )
    raise UserError(f"unknown backend {backend!r}", "use cpu, gpu or npu")
