"""Ahead-of-time NPU compilation per SoC with LiteRT's vendor compiler plugins, and detection of the
vendor SDKs (QAIRT, NeuroPilot) those plugins need on the host.

A .litertlm bundle goes through litert-torch's LiteRT-LM NPU compiler (`compile_litertlm`: unpack,
compile each enabled TFLite section with LiteRT's apply-plugin tool, repack); a plain .tflite goes
straight through LiteRT's apply-plugin component. Both end in `apply_plugin_main` loading
`libLiteRtCompilerPlugin_<Vendor>.so`, which loads the vendor SDK's host libraries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from converters.npu.catalog import SocInfo
from converters.npu.configs import compile_flags, validate_config
from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_path, atomic_write_text

Progress = Callable[[str], None]

# The sections litert-torch's LiteRT-LM compiler applies Qualcomm weight sharing to.
_WEIGHT_SHARING_SECTIONS = ("prefill_decode", "text_encoder", "audio_encoder_hw", "vision_encoder")

_SDK = {
    "qualcomm": {
        "package": "ai-edge-litert-sdk-qualcomm",
        "module": "ai_edge_litert_sdk_qualcomm",
        "sdk_name": "Qualcomm AI Runtime (QAIRT) SDK",
        # Environment variables Qualcomm's own tools use for an unpacked QAIRT SDK.
        "env": ("QAIRT_ROOT", "QNN_SDK_ROOT"),
        "env_subdir": "lib/x86_64-linux-clang",
        "host_libs": ("libQnnHtp.so", "libQnnSystem.so"),
        "plugin": "libLiteRtCompilerPlugin_Qualcomm.so",
    },
    "mediatek": {
        "package": "ai-edge-litert-sdk-mediatek",
        "module": "ai_edge_litert_sdk_mediatek",
        "sdk_name": "MediaTek NeuroPilot (Neuron) SDK",
        # Ours: a directory of NeuroPilot host libraries (…/host/lib of the NeuroPilot SDK).
        "env": ("NEUROPILOT_SDK_LIB_DIR",),
        "env_subdir": "",
        "host_libs": (),  # names vary by NeuroPilot version; any shared library counts
        "plugin": "libLiteRtCompilerPlugin_MediaTek.so",
    },
}


@dataclasses.dataclass
class SdkStatus:
    vendor: str
    package: str  # pip name of LiteRT's vendor SDK package
    installed: bool  # the package is importable
    version: str | None
    libs_dir: Path | None  # host libraries the compiler plugin loads
    source: str | None  # "package" or "env:<VAR>"
    env_vars: tuple[str, ...]  # what else is looked at
    plugin_path: Path | None  # LiteRT's compiler plugin (ships in ai-edge-litert)
    apply_plugin_path: Path | None  # LiteRT's apply-plugin tool (ships in ai-edge-litert)
    missing: list[str]  # what is absent, in words
    ok: bool
    message: str
    install_hint: str

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("libs_dir", "plugin_path", "apply_plugin_path"):
            d[k] = str(d[k]) if d[k] is not None else None
        d["env_vars"] = list(self.env_vars)
        return d


@dataclasses.dataclass
class NpuTargetResult:
    vendor: str
    soc: str
    status: str  # "compiled" | "sdk_missing" | "failed"
    output: Path | None  # the compiled model, only when status == "compiled"
    config: Path  # the validated config.json written for this target
    message: str

    def manifest_entry(self, bundle_dir: Path) -> dict[str, Any]:
        """The entry for manifest.json's npu.targets (paths relative to the bundle)."""

        def rel(p: Path | None) -> str | None:
            return None if p is None else Path(os.path.relpath(p, bundle_dir)).as_posix()

        return {
            "vendor": self.vendor,
            "soc": self.soc,
            "model": rel(self.output),
            "config": rel(self.config),
            "status": self.status,
            "message": self.message,
        }


def _litert_paths(vendor: str) -> tuple[Path | None, Path | None]:
    spec = importlib.util.find_spec("ai_edge_litert")
    if spec is None or not spec.submodule_search_locations:
        return None, None
    root = Path(list(spec.submodule_search_locations)[0])
    plugin = root / "vendors" / vendor / "compiler" / _SDK[vendor]["plugin"]
    tool = root / "tools" / ("apply_plugin_main.exe" if sys.platform == "win32" else "apply_plugin_main")
    return (plugin if plugin.is_file() else None), (tool if tool.is_file() else None)


def _litert_version() -> str | None:
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        return None


def install_hint(vendor: str) -> str:
    info = _SDK[vendor]
    ver = _litert_version()
    pin = f"=={ver}" if ver else ""
    if vendor == "qualcomm":
        alt = (
            "or set QAIRT_ROOT (or QNN_SDK_ROOT) to an unpacked QAIRT SDK whose lib/x86_64-linux-clang "
            f"holds {', '.join(info['host_libs'])}"
        )
    else:
        alt = "or set NEUROPILOT_SDK_LIB_DIR to the NeuroPilot SDK's host/lib directory"
    return (
        f"pip install {info['package']}{pin} (it downloads the {info['sdk_name']} while installing; "
        f"Linux x86_64 only), {alt}"
    )


def _np_version(soc: SocInfo | None) -> str:
    return soc.arch if soc is not None and soc.vendor == "mediatek" else "v8"


def _package_libs_dir(vendor: str, module: Any, soc: SocInfo | None) -> Path | None:
    """What LiteRT's own backends ask the SDK package for (qualcomm_backend.py / mediatek_backend.py)."""
    if vendor == "qualcomm":
        if hasattr(module, "path_to_sdk_libs"):
            p = module.path_to_sdk_libs()
        else:  # older packages only expose the SDK root
            root = module.get_sdk_path()
            p = None if root is None else Path(root) / "lib" / "x86_64-linux-clang"
    else:
        try:
            p = module.path_to_sdk_libs(_np_version(soc))
        except TypeError:  # packages that predate the version argument
            p = module.path_to_sdk_libs()
    return None if p is None else Path(p)


def detect_vendor_sdk(
    vendor: str, soc: SocInfo | None = None, env: Mapping[str, str] | None = None
) -> SdkStatus:
    """Whether the host can AOT-compile for `vendor` (and, for MediaTek, `soc`'s NeuroPilot version)."""
    if vendor not in _SDK:
        raise UserError(f"unknown NPU vendor {vendor!r}", f"use one of: {', '.join(_SDK)}")
    info = _SDK[vendor]
    env = os.environ if env is None else env
    hint = install_hint(vendor)
    missing: list[str] = []
    plugin, tool = _litert_paths(vendor)
    if plugin is None:
        missing.append(f"LiteRT compiler plugin {info['plugin']} (reinstall ai-edge-litert)")
    if tool is None:
        missing.append("LiteRT apply_plugin_main tool (reinstall ai-edge-litert)")

    host_ok = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")
    if not host_ok:
        missing.append(f"a Linux x86_64 host (this is {sys.platform} {platform.machine()})")

    installed = importlib.util.find_spec(info["module"]) is not None
    version: str | None = None
    libs_dir: Path | None = None
    source: str | None = None
    sdk_missing: list[str] = []  # dropped if an environment variable supplies the SDK instead
    if installed:
        try:
            version = importlib.metadata.version(info["package"])
        except importlib.metadata.PackageNotFoundError:
            version = None
        try:
            module = importlib.import_module(info["module"])
            libs_dir = _package_libs_dir(vendor, module, soc)
            source = "package"
        except NotImplementedError as e:  # unsupported host, or NeuroPilot version unknown to the package
            sdk_missing.append(f"{info['package']} support for this target ({e})")
        except Exception as e:  # noqa: BLE001 - a broken vendor install is reported, not raised
            sdk_missing.append(f"a working {info['package']} ({type(e).__name__}: {e})")
        if libs_dir is None and not sdk_missing:
            sdk_missing.append(f"the SDK files {info['package']} downloads at install")
        elif libs_dir is not None and not libs_dir.is_dir():
            sdk_missing.append(f"the SDK files {info['package']} downloads at install ({libs_dir} is absent)")
            libs_dir, source = None, None
    else:
        sdk_missing.append(f"the {info['package']} package")
    if libs_dir is None:
        for var in info["env"]:
            val = env.get(var)
            if val:
                root = Path(val).expanduser().resolve()
                cand = root / info["env_subdir"] if info["env_subdir"] else root
                if cand.is_dir():
                    libs_dir, source = cand, f"env:{var}"
                    sdk_missing = []
                    break
                sdk_missing.append(f"{cand} (from ${var})")
    missing[:0] = sdk_missing
    if libs_dir is not None:
        if info["host_libs"]:
            absent = [n for n in info["host_libs"] if not (libs_dir / n).is_file()]
            missing.extend(f"{n} in {libs_dir}" for n in absent)
        elif not any(libs_dir.glob("*.so*")):
            missing.append(f"NeuroPilot host libraries in {libs_dir}")

    ok = not missing and libs_dir is not None
    soc_label = "Qualcomm" if vendor == "qualcomm" else "MediaTek"
    if vendor == "mediatek" and soc is not None:
        soc_label += f" (NeuroPilot {soc.arch})"
    if ok:
        message = f"{info['sdk_name']} found at {libs_dir} ({source})"
    else:
        message = (
            f"{soc_label} AOT compile needs the {info['sdk_name']}; missing: {'; '.join(missing)}. "
            f"To fix: {hint}"
        )
    return SdkStatus(
        vendor=vendor,
        package=info["package"],
        installed=installed,
        version=version,
        libs_dir=libs_dir,
        source=source,
        env_vars=tuple(info["env"]),
        plugin_path=plugin,
        apply_plugin_path=tool,
        missing=missing,
        ok=ok,
        message=message,
        install_hint=hint,
    )


def _config_for(soc: SocInfo, configs: Mapping[str, Any] | None) -> dict:
    configs = configs or {}
    for key in (soc.key, soc.target, soc.model):
        if key in configs:
            return validate_config(soc, configs[key])
    return validate_config(soc, None)


def _plugin_kwargs(soc: SocInfo, cfg: dict, sdk: SdkStatus) -> dict[str, str]:
    """The apply-plugin keyword arguments (each becomes `--key=value` on apply_plugin_main)."""
    kwargs: dict[str, str] = {}
    for flag in compile_flags(soc, cfg):
        k, _, v = flag.lstrip("-").partition("=")
        kwargs[k] = v
    if sdk.plugin_path is not None:
        kwargs["libs"] = str(sdk.plugin_path.parent)
    if sdk.libs_dir is not None:
        kwargs["sdk_libs_path"] = str(sdk.libs_dir)
    return kwargs


def _compile_litertlm(model_path: Path, out: Path, soc: SocInfo, cfg: dict, sdk: SdkStatus) -> None:
    # Imported here: litert-torch pulls in torch, and only a host with the vendor SDK gets this far.
    from litert_torch.generative.export_hf.experimental.litert_lm_npu_compiler import (
        litert_lm_npu_compiler as npu_compiler,
    )

    flags = compile_flags(soc, cfg)
    if sdk.source != "package" and sdk.libs_dir is not None:
        # compile_litertlm asks the SDK package for the library path; without the package, pass it
        # the way its flags reach the apply-plugin call.
        flags.append(f"--sdk_libs_path={sdk.libs_dir}")
    sections = {}
    for name, on in cfg["sections"].items():
        section_flags = list(flags)
        if name not in _WEIGHT_SHARING_SECTIONS:
            # As compile_litertlm does: weight sharing only spans the LLM graphs, never aux.
            section_flags = [f for f in section_flags if "enable_weight_sharing" not in f]
        sections[name] = {"compile": on, "flags": section_flags}
    # compile_litertlm lists the bundle's sections on stdout; keep stdout for results and --json.
    with contextlib.redirect_stdout(sys.stderr):
        npu_compiler.compile_litertlm(
            input_litertlm=str(model_path),
            output_litertlm=str(out),
            backend=soc.vendor,
            soc_model=soc.model,
            compile_configs=sections,
            disable_weight_sharing=not cfg["options"].get("enable_weight_sharing", False),
            overwrite=True,
        )


def _compile_tflite(model_path: Path, out: Path, soc: SocInfo, cfg: dict, sdk: SdkStatus) -> None:
    from ai_edge_litert.aot.core import aot_types
    from ai_edge_litert.aot.core.apply_plugin import ApplyPlugin

    kwargs = _plugin_kwargs(soc, cfg, sdk)
    sdk_libs_path = kwargs.pop("sdk_libs_path", None)
    # The tool insists on a .tflite output name; compile next to `out` and move it in.
    with tempfile.TemporaryDirectory(prefix=".aot-", dir=out.parent) as tmp:
        compiled = Path(tmp) / "model.tflite"
        output = aot_types.Model(path=compiled)
        ApplyPlugin(experimental_capture_stderr=True)(
            aot_types.Model(path=model_path),
            output,
            soc.litert_manufacturer,
            soc.compiler_soc_model,
            sdk_libs_path=sdk_libs_path,
            **kwargs,
        )
        stats = output.partition_stats
        if stats is not None and stats.subgraph_stats and not any(
            s.num_ops_offloaded for s in stats.subgraph_stats
        ):
            raise RuntimeError(f"the {soc.vendor} compiler offloaded no op to the NPU")
        os.replace(compiled, out)


_ERROR_LOG_RE = re.compile(r"See (\S+\.error) for details")
# Most telling first: a vendor library that did not load is the usual cause.
_ERROR_LINE_RES = (
    re.compile(r"Could not load"),
    re.compile(r"Failed to load"),
    re.compile(r"not supported|unsupported", re.IGNORECASE),
    re.compile(r"ERROR"),
)


def _failure_message(e: BaseException) -> str:
    """One line: the exception, plus the telling line of apply_plugin_main's log when there is one."""
    msg = " ".join(f"{type(e).__name__}: {e}".split())
    m = _ERROR_LOG_RE.search(str(e))
    if m:
        try:
            lines = Path(m.group(1)).read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for pattern in _ERROR_LINE_RES:
            telling = [ln.strip(" └") for ln in lines if pattern.search(ln)]
            if telling:
                detail = " ".join(telling[0].split())
                msg = f"{msg} ({detail[:300]})"
                break
    return msg


@contextlib.contextmanager
def _sweep_plugin_tempdirs(vendor: str):
    """The MediaTek plugin makes /tmp/tempdir_dla.* and leaves it behind when a compile fails;
    remove the ones that appeared during the call, if empty."""
    if vendor != "mediatek":
        yield
        return
    tmp = Path("/tmp")
    before = set(tmp.glob("tempdir_dla.*"))
    try:
        yield
    finally:
        for d in set(tmp.glob("tempdir_dla.*")) - before:
            with contextlib.suppress(OSError):
                d.rmdir()


def compile_for_targets(
    model_path: Path,
    targets: list[SocInfo],
    out_dir: Path,
    configs: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    env: Mapping[str, str] | None = None,
) -> list[NpuTargetResult]:
    """AOT-compile `model_path` (.litertlm or .tflite) for each target SoC.

    For every target, `out_dir/npu/<vendor>_<SOC>/config.json` is written with the validated config,
    whether or not the vendor SDK is present. The compiled model (`model.litertlm` / `model.tflite`
    next to it) appears only complete: it is built under a temporary name and renamed. A target whose
    SDK is missing or whose compile fails has no model file (a stale one from an earlier run is
    removed so that the directory agrees with the result). Config errors raise UserError before
    anything is written.
    """
    model_path = Path(model_path)
    out_dir = Path(out_dir)
    suffix = model_path.suffix.lower()
    if suffix not in (".litertlm", ".tflite"):
        raise UserError(
            f"cannot NPU-compile {model_path.name}: expected a .litertlm bundle or a .tflite model",
            "pass the bundle's model.litertlm",
        )
    if not model_path.is_file():
        raise UserError(f"model {model_path} does not exist", "convert the model first")
    say = progress or (lambda _msg: None)
    # Validate every config first: a bad one must stop the run before any file is written.
    plan = [(soc, _config_for(soc, configs)) for soc in targets]
    sdks: dict[tuple[str, str], SdkStatus] = {}
    results: list[NpuTargetResult] = []
    for soc, cfg in plan:
        target_dir = out_dir / "npu" / soc.key
        config_path = target_dir / "config.json"
        atomic_write_text(config_path, json.dumps(cfg, indent=2) + "\n")
        final = target_dir / f"model{suffix}"
        sdk_key = (soc.vendor, soc.arch if soc.vendor == "mediatek" else "")
        if sdk_key not in sdks:
            sdks[sdk_key] = detect_vendor_sdk(soc.vendor, soc, env=env)
        sdk = sdks[sdk_key]
        if not sdk.ok:
            final.unlink(missing_ok=True)
            say(f"{soc.target}: skipped, vendor SDK missing")
            results.append(NpuTargetResult(soc.vendor, soc.model, "sdk_missing", None, config_path, sdk.message))
            continue
        say(f"{soc.target}: compiling {model_path.name} for {soc.marketing_name}")
        try:
            with _sweep_plugin_tempdirs(soc.vendor), atomic_path(final, suffix=suffix) as tmp:
                if suffix == ".litertlm":
                    _compile_litertlm(model_path, tmp, soc, cfg, sdk)
                else:
                    _compile_tflite(model_path, tmp, soc, cfg, sdk)
                if not tmp.is_file() or tmp.stat().st_size == 0:
                    raise RuntimeError("the compiler produced no output")
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - one target failing must not stop the others
            final.unlink(missing_ok=True)
            msg = _failure_message(e)
            say(f"{soc.target}: failed: {msg}")
            results.append(NpuTargetResult(soc.vendor, soc.model, "failed", None, config_path, msg))
            continue
        say(f"{soc.target}: compiled")
        results.append(
            NpuTargetResult(soc.vendor, soc.model, "compiled", final, config_path, f"compiled with {sdk.message}")
        )
    return results
