"""litert-torch `export_hf` for Gemma 4, split so that one float export serves many recipes.

`export_float` runs the text prefill/decode, per-layer-embedder and tokenizer export tasks once;
`quantize_artifacts` applies a recipe to every exported TFLite model; `package` writes the
`.litertlm` with litert-torch's own LiteRT-LM packager. `export_reference` calls the public
`export()` in one go (the benchmark's peer).
"""

from __future__ import annotations

import contextlib
import dataclasses

import os
import sys

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from converters.compat import litert_torch_llm_export_tasks, litert_torch_stop_token_prefixes
from converters.recipes import Recipe

# transformers 5.24 refuses the default experts implementation during export.
MOE_EXPORTS_IMPLEMENTATION = "eager"


@dataclass
class ExportOptions:
    prefill_lengths: list[int]
    cache_length: int
    sliding_window_ring_buffer_size: int | None = None
    export_vision_encoder: bool = False
    export_audio_encoder: bool = False
    use_v2: bool = False
    delete_in_memory_params: bool = False
    # Several KV-cache lengths in one model (signatures prefill_X_cache_Y / decode_cache_Y);
    # cache_length is then their maximum (the context the metadata declares).
    cache_lengths: list[int] | None = None
    # Gemma 4 multimodal checkpoints (model_type gemma4) need the embedder and per-layer embedder
    # exported as their own models; text-only ones (gemma4_text) keep them in the decoder.
    externalize_embedder: bool = False
    # Memory levers of litert-torch 0.10.0: load and trace in bfloat16 (half the weight bytes; with
    # 0.10.0 Gemma 4's attention fails on its float32 KV cache, measured), and hand large constants to
    # the converter lazily (the lean path uses it: converters.lean).
    model_dtype: str | None = None
    lightweight_conversion: bool = False

    @property
    def multimodal(self) -> bool:
        return self.export_vision_encoder or self.export_audio_encoder

    def kwargs(self) -> dict[str, Any]:
        lengths = sorted(set(self.cache_lengths or [self.cache_length]))
        kw: dict[str, Any] = dict(
            prefill_lengths=list(self.prefill_lengths),
            cache_length=max(lengths),
            bundle_litert_lm=True,
            # litert-torch quantizes to int8 by default; we export float once and apply each
            # recipe ourselves (quantize_artifacts).
            quantization_recipe="none",
            vision_encoder_quantization_recipe="none",
            audio_encoder_quantization_recipe="none",
        )
        if not self.use_v2:
            # Converter V2 refuses the option (it only concerns models with experts).
            kw["moe_exports_implementation"] = MOE_EXPORTS_IMPLEMENTATION
        if len(lengths) > 1:
            kw["cache_lengths"] = lengths
        if self.externalize_embedder and not self.multimodal:
            kw["externalize_embedder"] = True
        if self.sliding_window_ring_buffer_size:
            kw["sliding_window_ring_buffer_size"] = self.sliding_window_ring_buffer_size
        if self.multimodal:
            # The multimodal task exports both encoders unless told otherwise.
            kw["export_vision_encoder"] = self.export_vision_encoder
            kw["export_audio_encoder"] = self.export_audio_encoder
        if self.use_v2:
            kw["use_v2"] = True
            kw["delete_in_memory_params"] = self.delete_in_memory_params
        if self.model_dtype:
            kw["model_dtype"] = self.model_dtype
        if self.lightweight_conversion:
            kw["experimental_lightweight_conversion"] = True
        return kw


@contextlib.contextmanager
def captured_output(log_path: Path) -> Iterator[None]:
    """Send everything written to fd 1 and 2 (Python, TF, absl, C++) to a log file.

    Keeps stdout clean for --json and the terminal free of third-party noise; the log is kept in
    the work dir and its tail is shown when a step fails. With $GEMMA4_MOBILE_VERBOSE (--verbose)
    what the block wrote is copied to stderr after it, failed or not.
    """
    from gemma4_common.config import env_flag

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "ab") as log:
        start = log.tell()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            if env_flag("VERBOSE"):
                log.flush()
                with open(log_path, "rb") as written:
                    written.seek(start)
                    sys.stderr.buffer.write(written.read())
                    sys.stderr.flush()


def log_tail(log_path: Path, n: int = 3) -> str:
    try:
        lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def _quiet_litert_torch() -> None:
    import litert_torch

    litert_torch.config.show_progress = False


@dataclass
class FloatExport:
    source: Any  # litert-torch SourceModelArtifacts
    config: Any  # ExportableModuleConfig
    artifacts: Any  # ExportedModelArtifacts (float TFLite paths)


def export_float(checkpoint: Path, work_dir: Path, opts: ExportOptions) -> FloatExport:
    """Load the checkpoint and export float TFLite models + tokenizer into work_dir."""
    _quiet_litert_torch()
    from litert_torch.generative.export_hf import export_utils
    from litert_torch.generative.export_hf.core import export_lib, exportable_module, exportable_module_config

    valid = {f.name for f in dataclasses.fields(exportable_module.ExportableModuleConfig)}
    kw = opts.kwargs()
    config_args = {k: v for k, v in kw.items() if k in valid}
    extra = {k: v for k, v in kw.items() if k not in valid}
    # Vision/audio encoders are exported by the multimodal task (it also externalizes the embedders).
    task = (exportable_module_config.ExportTask.MULTIMODAL_LM if opts.multimodal
            else exportable_module_config.ExportTask.TEXT_GENERATION)
    config = exportable_module.ExportableModuleConfig(
        model=str(checkpoint), output_dir=str(work_dir), work_dir=str(work_dir), task=task,
        extra_kwargs=extra, **config_args,
    )
    export_utils.validate_pipeline_config(config)
    source = export_lib.load_model(str(checkpoint), config, task=config.task)
    config = export_lib.update_export_config(config, source)
    artifacts = export_lib.ExportedModelArtifacts()
    for t in litert_torch_llm_export_tasks(config):
        artifacts = t(source, config, artifacts)
    return FloatExport(source=source, config=config, artifacts=artifacts)


_QUANTIZED_FIELDS = {"prefill_decode_model_path": "tf_lite_prefill_decode",
                     "embedder_model_path": "tf_lite_embedder"}
# Encoders get int8 weights under any quantized recipe (litert-torch's own default for them); the
# audio encoder has convolutions, which XNNPACK runs on CPU only with weight-only int8.
_ENCODER_RECIPES = {"vision_encoder_model_path": "dynamic_wi8_afp32",
                    "vision_adapter_model_path": "dynamic_wi8_afp32",
                    "audio_encoder_model_path": "weight_only_wi8_afp32",
                    "audio_adapter_model_path": "dynamic_wi8_afp32"}


def quantize_artifacts(fx: FloatExport, recipe: Recipe, work_dir: Path, calibrate: Any = None) -> Any:
    """A copy of the float artifacts with every LLM TFLite model quantized by `recipe`.

    `calibrate(model_path, quantizer) -> qsvs` (converters.calibration.calibrator_for) feeds static
    recipes their calibration results."""
    if recipe.is_float:
        return fx.artifacts
    from ai_edge_quantizer import quantizer as quantizer_lib
    from ai_edge_quantizer import recipe as recipe_lib

    work_dir.mkdir(parents=True, exist_ok=True)

    config = recipe.quantizer_config()

    def q(path: str, section: str) -> str:
        # Section-keyed recipes (e.g. gemma4_mixed48) give each model of the bundle its own config.
        cfg = config.get(section) if isinstance(config, dict) else config
        if not cfg:
            return path
        out = work_dir / (Path(path).stem + f"_{recipe.name}.tflite")
        qt = quantizer_lib.Quantizer(path)
        qt.load_quantization_recipe(cfg)
        qsvs = calibrate(path, qt) if calibrate is not None and qt.need_calibration else None
        qt.quantize(qsvs).export_model(str(out), overwrite=True)
        return str(out)

    changes: dict[str, Any] = {}
    for f, section in _QUANTIZED_FIELDS.items():
        p = getattr(fx.artifacts, f)
        if p:
            changes[f] = q(p, section)
    if fx.artifacts.additional_model_paths:
        changes["additional_model_paths"] = {
            k: q(v, f"tf_lite_{k}") for k, v in fx.artifacts.additional_model_paths.items()
        }
    for f, name in _ENCODER_RECIPES.items():
        p = getattr(fx.artifacts, f, None)
        if p:
            out = work_dir / (Path(p).stem + f"_{recipe.name}.tflite")
            qt = quantizer_lib.Quantizer(p)
            qt.load_quantization_recipe(getattr(recipe_lib, name)())
            qt.quantize().export_model(str(out), overwrite=True)
            changes[f] = str(out)
    return dataclasses.replace(fx.artifacts, **changes)


def package(fx: FloatExport, artifacts: Any, out_dir: Path) -> Path:
    """Write out_dir/model.litertlm from (possibly quantized) artifacts."""
    from litert_torch.generative.export_hf.core import litert_lm_builder

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(fx.config, output_dir=str(out_dir))
    # The packager adds punctuation-prefixed copies of every stop string ('.<turn|>', '}<turn|>')
    # for tokenizers that merge them; LiteRT-LM then drops the matched pair, losing the final '.'
    # or '}' of an answer. Gemma 4's stop markers are special tokens that never merge, so only the
    # markers themselves are written.
    with litert_torch_stop_token_prefixes([]):
        res = litert_lm_builder.package_model(fx.source, cfg, artifacts)
    return Path(res.litert_lm_model_path)


def export_reference(checkpoint: Path, out_dir: Path, opts: ExportOptions, recipe: Recipe) -> Path:
    """The public litert-torch export() in one call: what a user would run by hand."""
    _quiet_litert_torch()
    from litert_torch.generative.export_hf import export as export_mod

    kw = opts.kwargs()
    if not recipe.is_float:
        if recipe.quantizer_recipe is None:
            raise ValueError(f"recipe {recipe.name} has no litert-torch name")
        kw["quantization_recipe"] = recipe.quantizer_recipe
    export_mod.export(model=str(checkpoint), output_dir=str(out_dir), **kw)
    return out_dir / "model.litertlm"


def tool_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("gemma4-mobile", "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "litert-lm-api",
                 "litert-lm-builder", "transformers", "torch", "tensorflow-cpu"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["python"] = sys.version.split()[0]
    return out


