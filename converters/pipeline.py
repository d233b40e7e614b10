"""`convert`: checkpoint -> one bundle per recipe (export once, quantize per recipe, package,
optional NPU AOT), each written to a temporary directory and renamed into place when complete."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from converters.bundle import MAIN_MODEL, is_bundle, litertlm_sections, write_manifest
from converters.calibration import recipe_manifest
from converters.checkpoint import CheckpointInfo, checkpoint_hash, inspect_checkpoint
from converters.export import (ExportOptions, captured_output, export_float, log_tail, package,
                               quantize_artifacts, tool_versions)
from converters.recipes import Recipe, parse_recipes
from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_dir
from gemma4_common.progress import Progress
from gemma4_common.validate import check_lengths


@dataclass
class ConvertRequest:
    checkpoint: Path
    out_dir: Path
    recipes: list[str] = field(default_factory=lambda: ["dynamic_wi8_afp32"])
    prefill_lengths: list[int] = field(default_factory=lambda: [128])
    cache_length: int = 1024
    force: bool = False
    npu_targets: list[str] = field(default_factory=list)  # "qualcomm:SM8650"
    npu_config: Path | None = None
    sliding_window_ring_buffer_size: int | None = None
    name: str | None = None
    # Long context: several KV-cache lengths in one bundle (cache_length is then their maximum).
    cache_lengths: list[int] = field(default_factory=list)
    vision: bool = False  # export the vision encoder (multimodal checkpoints)
    audio: bool = False  # export the audio encoder
    use_v2: bool = False  # litert-torch Converter V2: weights streamed from the checkpoint
    delete_in_memory_params: bool = False
    # One bundle (and one export) per cache length instead of one bundle with a signature set per
    # length: LiteRT-LM 0.18.1's CPU executor runs only bundles with a single `decode` signature.
    bundle_per_cache_length: bool = False
    ignore_memory_check: bool = False  # convert even when the estimate says the host's RAM is too small
    # "auto" (lean for checkpoints whose default conversion would not fit comfortably), "default"
    # (litert-torch's export_hf, one process) or "lean" (converters.lean: sections, one process each).
    converter: str = "auto"
    # Calibration prompts for static recipes and NPU variants: a chat JSONL path, or "default" for
    # the built-in set (converters.calibration).
    calibration: str | None = None

    def all_cache_lengths(self) -> list[int]:
        return sorted(set(self.cache_lengths or [self.cache_length]))


@dataclass
class ConvertResult:
    checkpoint: CheckpointInfo
    bundles: list[Path]
    manifests: list[dict[str, Any]]
    timings: dict[str, float]


@dataclass(frozen=True)
class _Job:
    recipe: Recipe
    cache_lengths: tuple[int, ...]  # the KV-cache lengths of this bundle's export
    target: Path
    ctx: str = ""  # "ctx<N>" when the request makes one bundle per cache length


def _jobs(req: ConvertRequest, recipes: list[Recipe]) -> list[_Job]:
    """One recipe: OUT_DIR is the bundle. Several: OUT_DIR/<recipe> for each. With a bundle per cache
    length: OUT_DIR/ctx<N> (one recipe) or OUT_DIR/<recipe>-ctx<N> (several)."""
    lengths = req.all_cache_lengths()
    if req.bundle_per_cache_length:
        return [_Job(r, (n,), req.out_dir / (f"ctx{n}" if len(recipes) == 1 else f"{r.name}-ctx{n}"), f"ctx{n}")
                for n in lengths for r in recipes]
    if len(recipes) == 1:
        return [_Job(recipes[0], tuple(lengths), req.out_dir)]
    return [_Job(r, tuple(lengths), req.out_dir / r.name) for r in recipes]


def _check_out_dir(req: ConvertRequest, targets: list[Path]) -> None:
    out = req.out_dir
    if out.exists() and not out.is_dir():
        raise UserError(f"output path {out} exists and is a file", "choose another -o directory")
    if req.force:
        return
    if targets == [out]:
        if out.exists() and any(out.iterdir()) and not is_bundle(out):
            raise UserError(f"output directory {out} exists and is not a bundle",
                            "choose another -o directory, or pass --force to replace it")
    elif out.exists():
        for child in out.iterdir():
            if child.name.startswith("."):
                continue
            if not (child.is_dir() and is_bundle(child)):
                raise UserError(f"output directory {out} holds {child.name}, which is not a bundle",
                                "choose another -o directory, or pass --force")


def _block_size(recipe_name: str) -> int | None:
    import re

    m = re.search(r"b(32|64)(?:_|$)", recipe_name)
    return int(m.group(1)) if m else None


def _validate(req: ConvertRequest) -> tuple[CheckpointInfo, list[Recipe]]:
    info = inspect_checkpoint(req.checkpoint)
    recipes = parse_recipes(req.recipes)
    # One validator for plan and convert (gemma4_common.validate).
    max_pos = info.text_config.get("max_position_embeddings")
    check_lengths(req.prefill_lengths, [req.cache_length, *req.cache_lengths],
                  ring_buffer=req.sliding_window_ring_buffer_size,
                  window=int(info.text_config.get("sliding_window") or 0),
                  max_context=max_pos if isinstance(max_pos, int) else None)
    for flag, want, has, files in (("--vision", req.vision, info.has_vision, ("preprocessor_config.json",)),
                                   ("--audio", req.audio, info.has_audio, ("preprocessor_config.json",))):
        if not want:
            continue
        if not has:
            what = "vision" if flag == "--vision" else "audio"
            raise UserError(f"{req.checkpoint} has no {what} tower (model_type {info.model_type})",
                            f"drop {flag}, or convert a multimodal Gemma 4 checkpoint (model_type gemma4)")
        missing = [f for f in files if not (req.checkpoint / f).is_file()]
        if missing:
            raise UserError(f"{req.checkpoint} has no {missing[0]} (the image/audio processor settings)",
                            "copy the processor files of the model into the checkpoint directory")
    if req.use_v2 and (req.vision or req.audio):
        raise UserError("litert-torch's Converter V2 (--use-v2) exports text generation only",
                        "convert the encoders without --use-v2")
    if req.use_v2:
        check_converter_v2()
    return info, recipes


def choose_converter(req: ConvertRequest, info: CheckpointInfo) -> str:
    """The conversion path (planner.choose_converter): what --converter forces, else the leanest correct one."""
    from converters.planner import choose_converter as choose

    if req.converter not in ("auto", "default", "lean"):
        raise UserError(f"unknown converter {req.converter!r}", "pass --converter auto, default or lean")
    has_ple = bool(info.text_config.get("hidden_size_per_layer_input"))
    lean_ok = has_ple and not (req.vision or req.audio or req.use_v2)
    if req.converter == "lean" and not lean_ok:
        why = ("it exports text generation only (drop --vision/--audio/--use-v2)" if has_ple
               else "this checkpoint has no per-layer embeddings")
        raise UserError(f"--converter lean cannot convert this request: {why}", "use --converter default")
    if req.converter != "auto":
        return req.converter
    return choose(info.num_parameters, lean_ok=lean_ok)


def _check_host_memory(info: CheckpointInfo, converter: str) -> None:
    """A real-size checkpoint needs more RAM than many hosts have (E2B: ~45 GiB by the default path);
    say so before a conversion that the OOM killer would end minutes later."""
    from converters.planner import conversion_memory_bytes, host_ram_bytes, load_shape

    shape = load_shape(str(info.path)) if converter == "lean" else None
    need, have = conversion_memory_bytes(info.num_parameters, converter=converter, shape=shape), host_ram_bytes()
    if need > have:
        what = "the lean converter" if converter == "lean" else "litert-torch's default converter"
        raise UserError(f"converting this {info.num_parameters / 1e9:.2f}B-parameter checkpoint needs ~"
                        f"{need / 2**30:.1f} GiB of RAM with {what}; this host has {have / 2**30:.1f} GiB",
                        "convert on a host with more memory, or pass --ignore-memory-check to try anyway")


def _check_scratch_disk(req: ConvertRequest, info: CheckpointInfo, converter: str, recipes: list[Recipe],
                        parent: Path) -> None:
    """The float intermediates, the quantized sections and the bundles must fit on the output's disk."""
    from converters.planner import load_shape, scratch_disk_bytes

    need = scratch_disk_bytes(load_shape(str(info.path)), [r.name for r in recipes], converter=converter)
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UserError(f"converting needs ~{need / 1e9:.1f} GB of free disk under {probe} for scratch files and "
                        f"bundles; {free / 1e9:.1f} GB is free",
                        "free disk space or choose an -o directory on a larger disk")


def check_converter_v2() -> None:
    """Converter V2 lowers through TensorFlow's `convert_mlir_bytecode`, which tensorflow-cpu 2.21.0 lacks;
    say so before the export starts instead of failing minutes into it."""
    from importlib.metadata import PackageNotFoundError, version

    # Importing litert-torch and TensorFlow prints library noise; keep the terminal to our one line.
    with captured_output(Path(os.devnull)):
        from converters.compat import litert_torch_converter_v2_supported

        supported = litert_torch_converter_v2_supported()
    if supported:
        return
    tf = "?"
    for dist in ("tensorflow-cpu", "tensorflow", "tf-nightly"):
        try:
            tf = f"{dist} {version(dist)}"
            break
        except PackageNotFoundError:
            continue
    raise UserError(f"--use-v2 needs TensorFlow's convert_mlir_bytecode (litert-torch Converter V2); {tf} has none",
                    "convert without --use-v2/--delete-in-memory-params, or install a tf-nightly (Python >= 3.11) "
                    "that provides it")


def _disk_error(e: OSError, where: Path) -> UserError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return UserError(f"disk full while writing {where}", "free space or choose another -o directory")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return UserError(f"cannot write {where} ({e.strerror})", "choose a writable -o directory")
    return UserError(f"write failed under {where} ({e.strerror or e})", "check the disk and the -o directory")


@contextlib.contextmanager
def _third_party_step(what: str, log: Path) -> Iterator[None]:
    """Run a litert-torch / quantizer step with its output in the log; its failures become one line."""
    try:
        with captured_output(log):
            yield
    except (UserError, KeyboardInterrupt):
        raise
    except OSError as e:
        raise _disk_error(e, log.parent) from None
    except Exception as e:
        first = f"{type(e).__name__}: {e}".split("\n")[0][:300]
        raise UserError(f"{what} failed ({first})", f"last log lines: {log_tail(log)}") from None


@dataclass
class _Plan:
    info: CheckpointInfo
    jobs: list[_Job]
    npu_specs: list[Any]
    src_hash: str
    calibration: Any = None  # converters.calibration.CalibrationPlan, when a recipe or NPU target needs it
    converter: str = "default"  # "default" | "lean" (choose_converter)
    npu_cache: dict[str, Any] = field(default_factory=dict)  # NPU variants, built once per convert

    @property
    def targets(self) -> list[Path]:
        return [j.target for j in self.jobs]


def convert(req: ConvertRequest, progress: Progress | None = None, *, isolate: bool = True) -> ConvertResult:
    """Validate here (fast, one-line errors), then produce the bundles.

    With `isolate` (the default) export, quantization and packaging run in a child process: their
    native code can end the process outright (LLVM's fatal errors call exit(1) on a failed write),
    and only a parent that survives can remove the partial work and say what happened.
    """
    progress = progress or Progress()
    with progress.step("validate checkpoint"):
        info, recipes = _validate(req)
        jobs = _jobs(req, recipes)
        _check_out_dir(req, [j.target for j in jobs])  # before hashing a checkpoint of gigabytes
        converter = choose_converter(req, info)
        if not req.use_v2 and not req.ignore_memory_check:
            _check_host_memory(info, converter)
        _check_scratch_disk(req, info, converter, recipes, _work_parent(req, [j.target for j in jobs]))
        from converters.calibration import plan_calibration

        npu_specs = _parse_npu(req.npu_targets)
        plan = _Plan(info=info, jobs=jobs, npu_specs=npu_specs, src_hash=checkpoint_hash(req.checkpoint),
                     calibration=plan_calibration(req, recipes, npu_specs), converter=converter)
    progress.note(f"checkpoint: Gemma 4 {info.variant.upper() if info.variant != 'custom' else 'custom size'}"
                  f" ({info.num_parameters / 1e6:.2f}M parameters, {len(info.layer_types)} layers)")
    progress.note(f"converter: {converter}")
    if not isolate:
        return _produce(req, plan, progress)
    from converters.isolation import run_isolated

    return run_isolated(_produce, req, plan, progress, work_parent=_work_parent(req, plan.targets),
                        targets=plan.targets)


def _work_parent(req: ConvertRequest, targets: list[Path]) -> Path:
    return req.out_dir.parent if targets == [req.out_dir] else req.out_dir


def _produce(req: ConvertRequest, plan: _Plan, progress: Progress, on_work_dir=None) -> ConvertResult:
    parent = _work_parent(req, plan.targets)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        from converters.isolation import work_prefix  # unique per run: cleanup never takes another's

        work = Path(tempfile.mkdtemp(prefix=work_prefix(os.getpid()), dir=parent))
    except OSError as e:
        raise _disk_error(e, req.out_dir) from None
    if on_work_dir is not None:
        on_work_dir(work)
    log = work / "export.log"
    bundles: list[Path] = []
    manifests: list[dict[str, Any]] = []
    # Jobs that share their cache lengths share one float export (all of them, unless split per length).
    exports: dict[tuple[int, ...], list[_Job]] = {}
    for job in plan.jobs:
        exports.setdefault(job.cache_lengths, []).append(job)
    pending: list[Any] = []
    try:
        if plan.npu_specs:
            from converters.npu.variant import start_vendor_builds

            pending = start_vendor_builds(req, plan, log, progress)
        versions = tool_versions()
        for lengths, jobs in exports.items():
            opts = ExportOptions(prefill_lengths=req.prefill_lengths, cache_length=max(lengths),
                                 cache_lengths=list(lengths) if len(lengths) > 1 else None,
                                 sliding_window_ring_buffer_size=req.sliding_window_ring_buffer_size,
                                 export_vision_encoder=req.vision, export_audio_encoder=req.audio,
                                 externalize_embedder=plan.info.model_type == "gemma4",
                                 use_v2=req.use_v2, delete_in_memory_params=req.delete_in_memory_params)
            ctx = jobs[0].ctx
            tag = f"-{ctx}" if ctx else ""
            with progress.step(("export float sections (lean)" if plan.converter == "lean" else
                                "export float model (litert-torch)") + (f", cache {lengths[0]}" if ctx else "")):
                with _third_party_step("litert-torch export", log):
                    if plan.converter == "lean":
                        from converters.lean import export_lean

                        fx = export_lean(req.checkpoint, work / f"float{tag}", opts, log)
                    else:
                        fx = export_float(req.checkpoint, work / f"float{tag}", opts)
            for job in jobs:
                manifests.append(_make_bundle(req, plan, job, fx, work / f"{job.recipe.name}{tag}", log, versions,
                                              progress))
                bundles.append(job.target)
            shutil.rmtree(work / f"float{tag}", ignore_errors=True)  # its bundles are made: free the disk
    finally:
        for p in pending:
            p.cancel()
        shutil.rmtree(work, ignore_errors=True)
    return ConvertResult(checkpoint=plan.info, bundles=bundles, manifests=manifests, timings=dict(progress.timings))


def _make_bundle(req: ConvertRequest, plan: _Plan, job: _Job, fx: Any, qwork: Path, log: Path,
                 versions: dict[str, str], progress: Progress) -> dict[str, Any]:
    """Quantize one export with one recipe, package it, NPU-compile it, write the manifest; the bundle
    appears at its target only when all of it is there."""
    recipe, final, info = job.recipe, job.target, plan.info
    label = f"{recipe.name} {job.ctx}".strip()
    try:
        with atomic_dir(final, replace=True) as tmp:
            with progress.step(f"quantize {label}"):
                try:
                    with _third_party_step(f"quantizing with {recipe.name}", log):
                        from converters.calibration import calibration_hook

                        if plan.converter == "lean":
                            from converters.lean import quantize_lean

                            arts = quantize_lean(fx, recipe, qwork, log)
                        else:
                            arts = quantize_artifacts(fx, recipe, qwork,
                                                      calibrate=calibration_hook(plan.calibration, recipe, progress))
                except UserError as e:
                    block = _block_size(recipe.name)
                    if block and "Failed to get quantization parameters" in e.problem:
                        raise UserError(
                            f"recipe {recipe.name} needs every quantized weight dimension to be a multiple of "
                            f"{block}, and this checkpoint has smaller or unaligned ones",
                            "use a channelwise recipe such as dynamic_wi4c_afp32 or dynamic_wi8_afp32") from None
                    raise
            with progress.step(f"package {label}"):
                with _third_party_step("packaging the .litertlm", log):
                    model = package(fx, arts, tmp)
                if model.name != MAIN_MODEL:
                    model.rename(tmp / MAIN_MODEL)
            npu_entries = []
            if plan.npu_specs:
                npu_entries = _compile_npu(req, plan, tmp, log, progress)
            sections = litertlm_sections(tmp / MAIN_MODEL)
            name = req.name or f"{req.checkpoint.resolve().name}-{recipe.name}"
            return write_manifest(tmp, {
                "name": name + (f"-{job.ctx}" if job.ctx else ""),
                "variant": info.variant,
                "model_type": info.model_type,
                "recipe": {"name": recipe.name, "description": recipe.description,
                           "weight_bits": recipe.weight_bits, "embedding_bits": recipe.embedding_bits,
                           **recipe_manifest(recipe, plan.calibration, tmp / MAIN_MODEL)},
                "source": {"path": str(req.checkpoint.resolve()), "sha256": plan.src_hash,
                           "num_parameters": info.num_parameters},
                "export": {"prefill_lengths": req.prefill_lengths, "cache_length": max(job.cache_lengths),
                           "cache_lengths": list(job.cache_lengths),
                           "sliding_window_ring_buffer_size": req.sliding_window_ring_buffer_size,
                           "vision": req.vision, "audio": req.audio, "converter": plan.converter,
                           **({"lean_stages": fx.stats.to_json()} if plan.converter == "lean" else {})},
                "text_config": info.summary()["shape"],
                "sections": [{k: s[k] for k in ("data_type", "model_type", "size")} for s in sections["sections"]],
                "npu": {"targets": npu_entries},
                "tool_versions": versions,
            })
    except OSError as e:
        raise _disk_error(e, final) from None


def _parse_npu(specs: list[str]) -> list[Any]:
    if not specs:
        return []
    from converters.npu.catalog import parse_targets

    out: list[Any] = []
    for soc in parse_targets(",".join(specs)):
        if soc not in out:
            out.append(soc)
    return out


def _compile_npu(req: ConvertRequest, plan: _Plan, bundle_tmp: Path, log: Path,
                 progress: Progress) -> list[dict[str, Any]]:
    """The NPU variants the vendors' way (converters.npu.variant: split-cache export, calibrated
    a16w8, AOT compile where the SDK is present); returns the manifest's npu.targets."""
    from converters.npu.variant import build_npu_targets

    return build_npu_targets(req, plan, bundle_tmp, log, progress)
