"""NPU variants built the way litert-torch 0.10.0's NPU pipeline builds them
(generative/export_hf/experimental/npu_export: vendor_configs.py, stages.py): a split-cache export
with the vendor's KV layout (k_ts_idx/v_ts_idx) and an external embedder, calibration on sample
prompts through ai-edge-quantizer's calibration interpreter, static a16w8 quantization with the
vendor's float-op rule, then AOT compile where the vendor SDK is present. Without the SDK the
quantized, compile-ready model and its configs are written and the target says how to install it.

Layout inside a bundle:
  npu/<vendor>/model.litertlm     compile-ready (quantized) model, shared by that vendor's SoCs
  npu/<vendor>/npu_export.json    the resolved vendor pipeline config (litert-torch's NpuPipelineConfig)
  npu/<vendor>_<SOC>/config.json  the SoC's delegate config; model.litertlm there once compiled
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from converters.npu.catalog import SocInfo
from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_write_text
from gemma4_common.progress import Progress

VARIANT_MODEL = "model.litertlm"
PIPELINE_CONFIG = "npu_export.json"


def vendor_settings(vendor: str) -> dict[str, Any]:
    """litert-torch's vendor defaults (npu_export/configs/vendor_configs.VENDOR_CONFIGS): KV layout,
    a16w8 and whether float operations are allowed. A private detail of litert-torch 0.10.0, read
    here only; tests/test_npu.py pins the values."""
    from litert_torch.generative.export_hf.experimental.npu_export.configs import vendor_configs

    cfg = vendor_configs.VENDOR_CONFIGS.get(vendor)
    if cfg is None:
        raise UserError(f"litert-torch's NPU pipeline has no settings for vendor {vendor!r}",
                        f"use one of: {', '.join(vendor_configs.VENDOR_CONFIGS)}")
    return {"k_ts_idx": int(cfg["k_ts_idx"]), "v_ts_idx": int(cfg["v_ts_idx"]), "a16w8": bool(cfg.get("a16w8", True)),
            "allow_float_operations": bool(cfg.get("allow_float_operations", True))}


def vendor_recipe_name(vendor: str) -> str:
    from converters.recipes import NPU_RECIPES

    return NPU_RECIPES[vendor]


def check_recipes(recipes: list[Any], socs: list[SocInfo]) -> None:
    """A vendor's NPU recipe asked for next to another vendor's target cannot serve it."""
    vendors = {s.vendor for s in socs}
    for r in recipes:
        if r.npu_vendor and socs and r.npu_vendor not in vendors:
            other = sorted(vendors)[0]
            raise UserError(f"recipe {r.name} is {r.npu_vendor}'s NPU recipe and cannot serve the {other} target(s)",
                            f"drop it: --npu builds each vendor's variant with its own recipe "
                            f"({vendor_recipe_name(other)} for {other}), and --recipe is for the CPU bundle")


# ---- stage 1: split-cache export ------------------------------------------------------------------
def npu_checkpoint(checkpoint: Path, model_type: str, work: Path) -> Path:
    """litert-torch's Gemma 4 split-cache exportables take the multimodal wrapper (model_type gemma4,
    per-layer inputs passed explicitly); a text-only checkpoint (gemma4_text) is re-wrapped into it
    without towers. The weights are the same tensors (checked: identical logits)."""
    if model_type != "gemma4_text":
        return checkpoint
    import torch
    from transformers import Gemma4Config, Gemma4ForCausalLM, Gemma4ForConditionalGeneration

    out = work / "gemma4-wrapped"
    text = Gemma4ForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    tc = text.config
    cfg = Gemma4Config(text_config=tc.to_dict(), vision_config=None, audio_config=None,
                       eos_token_id=tc.eos_token_id, bos_token_id=tc.bos_token_id, pad_token_id=tc.pad_token_id,
                       tie_word_embeddings=getattr(tc, "tie_word_embeddings", True))
    mm = Gemma4ForConditionalGeneration(cfg).eval()
    missing, unexpected = mm.model.language_model.load_state_dict(text.model.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"re-wrapping the text checkpoint left weights unmatched ({(missing + unexpected)[:3]})")
    mm.save_pretrained(out)
    for f in checkpoint.iterdir():
        if f.is_file() and f.name != "config.json" and not f.name.endswith((".safetensors", ".json.index")) \
                and not f.name.startswith("model.safetensors"):
            shutil.copy2(f, out / f.name)
    del text, mm
    return out


def export_split_cache(checkpoint: Path, work: Path, prefill_lengths: list[int], cache_length: int,
                       k_ts_idx: int, v_ts_idx: int, ring_buffer: int | None) -> Path:
    """Float split-cache export (prefill/decode, embedders, aux: mask, rope, cache update) packaged as
    work/float/model.litertlm."""
    from litert_torch.generative.export_hf.core import export_lib

    from converters.export import ExportOptions, export_float, package

    @dataclasses.dataclass
    class _Opts(ExportOptions):
        def kwargs(self) -> dict[str, Any]:
            kw = super().kwargs()
            kw.update(split_cache=True, k_ts_idx=k_ts_idx, v_ts_idx=v_ts_idx, externalize_embedder=True)
            return kw

    opts = _Opts(prefill_lengths=list(prefill_lengths), cache_length=cache_length,
                 sliding_window_ring_buffer_size=ring_buffer, externalize_embedder=True)
    fx = export_float(checkpoint, work / "export", opts)
    # litert-torch's export() adds the auxiliary model (mask, rope, cache update) for split caches.
    fx.artifacts = export_lib.export_auxiliary_model(fx.source, fx.config, fx.artifacts)
    return package(fx, fx.artifacts, work / "float")


@contextlib.contextmanager
def _temp_under(path: Path) -> Iterator[None]:
    """litert-torch's calibrate/quantize unpack bundles into mkdtemp() dirs they never remove: keep
    them under our work dir, which is removed with the conversion."""
    path.mkdir(parents=True, exist_ok=True)
    saved = tempfile.tempdir
    tempfile.tempdir = str(path)
    try:
        yield
    finally:
        tempfile.tempdir = saved


# ---- stages 2-3: calibrate, quantize --------------------------------------------------------------
def calibrate(float_model: Path, prompts: list[str], cache_length: int, out_dir: Path, decode_steps: int,
              progress: Progress) -> Path:
    """litert-torch's calibration loop (calib.calibrate) over our prompts, with progress: its sampling
    executor runs embedder, aux and prefill/decode signatures through ai-edge-quantizer's
    CalibrationInterpreter (profiler-based, min/max), and writes one QSV file per section."""
    from litert_torch.generative.export_hf.experimental.calib import loader, sampling_executor

    with _temp_under(out_dir.parent / "tmp"):
        cfg = loader.load_models(max_kv_cache_size=cache_length, model_path=(None, None), embedder_model_path=None,
                                 spm_path=None, transformers_model_path=None, input_litertlm=str(float_model),
                                 enable_calibration=True, use_profiler_based_calibration=True,
                                 enable_min_max_calibration_update=True, ema_smoothing_factor=0.1)
        ex = sampling_executor.Executor(cfg, stream_output=False)
        for p in prompts:
            ex.sample_text(p, max_sample_step=decode_steps)
            progress.advance(1)
        ex.save_calibration_results(str(out_dir), extra_metadata={"task_name": "gemma4-mobile"})
    return out_dir


def quantize(float_model: Path, out_model: Path, calib_dir: Path, allow_float_operations: bool) -> Path:
    """litert-torch's static-range quantization stage (calib.quantize) with the vendor's a16w8 recipe:
    KV-cache ranges aligned across signatures, embeddings inputs kept float, norms and residuals
    quantized too where the vendor allows no float operations."""
    from litert_torch.generative.export_hf.experimental.calib import quantize as quantize_lib

    with _temp_under(out_model.parent / "tmp"):
        quantize_lib.quantize(input_litertlm=str(float_model), output_litertlm=str(out_model),
                              calibration_dir=str(calib_dir), use_float_input_output_normalizer=allow_float_operations,
                              skip_mlir_passes=True)
    return out_model


def pipeline_config(checkpoint: Path, soc: SocInfo, prefill_lengths: list[int], cache_length: int,
                    decode_steps: int) -> dict[str, Any]:
    """The resolved NpuPipelineConfig litert-torch's npu_export would run with (written beside the model)."""
    from litert_torch.generative.export_hf.experimental.npu_export import config_manager

    cfg = config_manager.build_pipeline_config(str(checkpoint), soc.vendor, soc.model, prefill_lengths=prefill_lengths,
                                               cache_length=cache_length, max_calibration_decode_steps=decode_steps)
    d = cfg.to_dict()
    d.update(vendor_settings(soc.vendor))
    d["static_quantization_recipe"] = vendor_recipe_name(soc.vendor)
    return d


# ---- per convert: build each vendor's variant once, then place it in every bundle --------------------
@dataclasses.dataclass
class VendorVariant:
    vendor: str
    model: Path  # compile-ready quantized .litertlm in the work dir
    config: dict[str, Any]
    census: dict[str, Any]


def _third_party(what: str, log: Path):
    from converters.pipeline import _third_party_step

    return _third_party_step(what, log)


def build_vendor_variant(req: Any, plan: Any, vendor: str, socs: list[SocInfo], log: Path,
                         progress: Progress) -> VendorVariant:
    from converters import census as census_lib
    from converters.calibration import DECODE_STEPS

    work = log.parent / f"npu-{vendor}"
    work.mkdir(parents=True, exist_ok=True)
    vs = vendor_settings(vendor)
    cache = max(req.all_cache_lengths())
    cplan = plan.calibration
    with progress.step(f"NPU {vendor}: split-cache export (k_ts_idx {vs['k_ts_idx']}, v_ts_idx {vs['v_ts_idx']})"):
        with _third_party(f"{vendor} NPU export", log):
            ckpt = plan.npu_cache.get("checkpoint")
            if ckpt is None:
                ckpt = plan.npu_cache["checkpoint"] = npu_checkpoint(req.checkpoint, plan.info.model_type, log.parent)
            float_model = export_split_cache(ckpt, work, req.prefill_lengths, cache, vs["k_ts_idx"], vs["v_ts_idx"],
                                             req.sliding_window_ring_buffer_size)
    with progress.step(f"NPU {vendor}: calibrate on {cplan.set.name} ({len(cplan.set.prompts)} prompts)",
                       total=len(cplan.set.prompts)):
        with _third_party(f"{vendor} NPU calibration", log):
            calib_dir = calibrate(float_model, cplan.set.prompts, cache, work / "calibration", DECODE_STEPS, progress)
    recipe = vendor_recipe_name(vendor)
    with progress.step(f"NPU {vendor}: quantize ({recipe})"):
        with _third_party(f"{vendor} NPU quantization", log):
            model = quantize(float_model, work / "quantized.litertlm", calib_dir, vs["allow_float_operations"])
        census = census_lib.census(model)
    shutil.rmtree(work / "export", ignore_errors=True)
    shutil.rmtree(work / "tmp", ignore_errors=True)
    cfg = pipeline_config(req.checkpoint.resolve(), socs[0], list(req.prefill_lengths), cache, DECODE_STEPS)
    cfg.update(calibration=cplan.set.manifest_entry())
    return VendorVariant(vendor, model, cfg, census)


class PendingVariant:
    """A vendor variant being built in its own process beside the CPU conversion."""

    def __init__(self, vendor: str, child: Any):
        self.vendor, self.child = vendor, child

    def wait(self, progress: Progress) -> VendorVariant:
        with progress.step(f"NPU {self.vendor}: variant (built in parallel with the CPU bundle)"):
            outcome = self.child.relay(progress, earlier_as_notes="(parallel) ")
        return self.child.outcome_value(outcome, what=f"the {self.vendor} NPU variant's process")

    def cancel(self) -> None:
        if self.child.proc.is_alive():
            self.child.terminate()


def _vendor_child(req: Any, plan: Any, vendor: str, socs: list[SocInfo], log: Path, progress: Progress,
                  on_work_dir=None) -> VendorVariant:
    from converters.export import captured_output

    # Its own log beside the CPU conversion's, so that a failure's last lines are its own; all of its
    # output goes there (its first imports of torch and litert-torch talk on stderr).
    vlog = log.with_name(f"export-npu-{vendor}.log")
    with captured_output(vlog):
        return build_vendor_variant(req, plan, vendor, socs, vlog, progress)


def parallel_vendor_builds(plan: Any) -> int:
    """How many vendor variants to build in processes of their own, beside the CPU conversion: each is
    a split-cache export about as costly as the CPU one, and torch.export's tracing uses one core, so
    on a host with cores and RAM to spare they run at once (0: build them one after another)."""
    from converters.planner import conversion_memory_bytes, host_ram_bytes

    vendors = len({s.vendor for s in plan.npu_specs})
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    if vendors == 0 or cores < 2:
        return 0
    # Each split-cache export takes the default path's peak; the CPU conversion beside them at most
    # that much too (the lean path's peak is lower).
    one = conversion_memory_bytes(plan.info.num_parameters, converter="default")
    fit = (host_ram_bytes() - one) // one
    return max(0, min(vendors, int(fit)))


def start_vendor_builds(req: Any, plan: Any, log: Path, progress: Progress) -> list[PendingVariant]:
    """Start the vendors' variant builds in their own processes (as many as `parallel_vendor_builds`
    allows; the rest are built in turn when the first bundle needs them)."""
    from converters.isolation import Isolated

    n = parallel_vendor_builds(plan)
    if not n:
        return []
    if "checkpoint" not in plan.npu_cache:
        with progress.step("NPU: prepare the checkpoint for the split-cache exports"):
            with _third_party("NPU checkpoint", log):
                plan.npu_cache["checkpoint"] = npu_checkpoint(req.checkpoint, plan.info.model_type, log.parent)
    light = dataclasses.replace(plan, npu_cache={"checkpoint": plan.npu_cache["checkpoint"]})
    pending = []
    for vendor in list(dict.fromkeys(s.vendor for s in plan.npu_specs))[:n]:
        vsocs = [s for s in plan.npu_specs if s.vendor == vendor]
        child = Isolated(_vendor_child, (req, light, vendor, vsocs, log), die_with_parent=True)
        plan.npu_cache[vendor] = PendingVariant(vendor, child)
        pending.append(plan.npu_cache[vendor])
    progress.note(f"NPU: building {', '.join(p.vendor for p in pending)} in parallel with the CPU bundle")
    return pending


def build_npu_targets(req: Any, plan: Any, bundle_tmp: Path, log: Path, progress: Progress) -> list[dict[str, Any]]:
    """Manifest npu.targets for `plan.npu_specs`: each vendor's variant (built once per convert), its
    AOT compile per SoC (or the SDK boundary), recipe, calibration hash and op census."""
    from converters import census as census_lib
    from converters.npu import aot, configs

    socs: list[SocInfo] = plan.npu_specs
    if not socs:
        return []
    entries = []
    for vendor in dict.fromkeys(s.vendor for s in socs):
        vsocs = [s for s in socs if s.vendor == vendor]
        var = plan.npu_cache.get(vendor)
        if isinstance(var, PendingVariant):
            var = plan.npu_cache[vendor] = var.wait(progress)
        if var is None:
            var = plan.npu_cache[vendor] = build_vendor_variant(req, plan, vendor, vsocs, log, progress)
        vdir = bundle_tmp / "npu" / vendor
        vdir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(var.model, vdir / VARIANT_MODEL)
        atomic_write_text(vdir / PIPELINE_CONFIG, json.dumps(var.config, indent=2) + "\n")
        cfgs = {s.key: (configs.load_config_file(req.npu_config, s) if req.npu_config else configs.default_config(s))
                for s in vsocs}
        with progress.step(f"NPU {vendor}: AOT compile for {', '.join(s.model for s in vsocs)}"):
            results = aot.compile_for_targets(vdir / VARIANT_MODEL, vsocs, bundle_tmp, cfgs, progress=progress.note)
        fops = census_lib.float_compute_ops(var.census)
        for r in results:
            e = r.manifest_entry(bundle_tmp)
            e.update({
                "compile_ready_model": f"npu/{vendor}/{VARIANT_MODEL}",
                "pipeline_config": f"npu/{vendor}/{PIPELINE_CONFIG}",
                "recipe": var.config["static_quantization_recipe"],
                "kv_layout": {"split_cache": True, "k_ts_idx": var.config["k_ts_idx"],
                              "v_ts_idx": var.config["v_ts_idx"]},
                "allow_float_operations": var.config["allow_float_operations"],
                "calibration": var.config["calibration"],
                "float_compute_ops": fops,
                "census": census_lib.summary(var.census),
            })
            entries.append(e)
    return entries
