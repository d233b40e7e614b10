"""The lean conversion path for large Gemma 4 checkpoints: three sections, each made in its own process.

litert-torch's default path holds the whole float32 model, its traced program and the float
flatbuffer at once (~10 bytes per parameter: ~45 GiB for E2B). Here the checkpoint becomes the
sections that Gemma 4's multimodal bundles have (LiteRT-LM runs them the same way for text):

- `prefill_decode`: the decoder with external embeddings (litert-torch's Gemma 4 exportables),
  exported with `experimental_lightweight_conversion` (the converter references the torch
  weights instead of copying them) from a model whose embedding tables are never loaded; quantized
  in a separate process that reads the float flatbuffer memory-mapped.
- `embedder` and `per_layer_embedder` (2.35 B of E2B's 4.63 B parameters): gather-only tables.
  The graph is traced once at `chunk_rows` rows; the full table is then quantized chunk by chunk by
  ai-edge-quantizer on that small graph and the chunks are joined into one flatbuffer. The recipes
  quantize embedding tables row by row (per-row channels or blocks within a row), so the joined
  table is byte-identical to quantizing the whole table at once (tests/test_realsize.py checks it).

Every stage runs as `python -m converters.lean STAGE ARGS_JSON` and dies with its parent
(PR_SET_PDEATHSIG), so an interrupted conversion leaves no stage process behind; it writes only
inside the work dir the pipeline removes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json

DEFAULT_CHUNK_ROWS = 8192
DECODER, EMBEDDER, PER_LAYER_EMBEDDER = "prefill_decode", "embedder", "per_layer_embedder"
TABLES = (EMBEDDER, PER_LAYER_EMBEDDER)
# The recipe section each bundle section is quantized with (section-keyed recipes, converters.recipes).
RECIPE_SECTION = {DECODER: "tf_lite_prefill_decode", EMBEDDER: "tf_lite_embedder",
                  PER_LAYER_EMBEDDER: "tf_lite_per_layer_embedder"}
_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------------------------ stage processes

def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class StageStats:
    """Peak anonymous RSS (RssAnon + RssShmem, what the kernel cannot drop) and wall time per stage."""

    peak_rss_bytes: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, float]]:
        return {k: {"peak_rss_bytes": v, "seconds": self.seconds.get(k, 0.0)} for k, v in self.peak_rss_bytes.items()}


def _anon_rss(pid: int) -> int:
    total = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("RssAnon:", "RssShmem:")):
                    total += int(line.split()[1]) * 1024
    except OSError:
        pass
    return total


def run_stage(stage: str, args: dict[str, Any], log: Path, stats: StageStats | None = None,
              label: str | None = None) -> dict[str, Any]:
    """Run one stage in a child process (output to `log`), return its result dict."""
    result = Path(args["work"]) / f".{label or stage}.result.json"
    result.unlink(missing_ok=True)
    args = dict(args, result=str(result))
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    t0 = time.perf_counter()
    peak = 0
    with open(log, "ab") as lf:
        proc = subprocess.Popen([sys.executable, "-m", "converters.lean", stage, json.dumps(args)], stdout=lf,
                                stderr=lf, stdin=subprocess.DEVNULL, env=env, preexec_fn=_die_with_parent)
        try:
            while True:
                try:
                    rc = proc.wait(0.5)
                    break
                except subprocess.TimeoutExpired:
                    peak = max(peak, _anon_rss(proc.pid))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if stats is not None:
        key = label or stage
        stats.peak_rss_bytes[key] = peak
        stats.seconds[key] = round(time.perf_counter() - t0, 1)
    out = read_json(result, missing={}, broken={})  # none when the stage died first: rc and the log say how
    result.unlink(missing_ok=True)
    if rc == 0 and "value" in out:
        return out["value"]
    if "user_error" in out:
        raise UserError(*out["user_error"])
    from converters.export import log_tail

    how = f"was killed by signal {-rc}" if rc < 0 else f"exited with status {rc}"
    if rc == -signal.SIGKILL:
        how += " (out of memory?)"
    raise UserError(f"the {label or stage} stage of the lean conversion {how}: {out.get('error') or log_tail(log, 2)}",
                    "free memory (see `gemma4-mobile plan`) and run again; the log lines above say more")


# ------------------------------------------------------------------------------------ model (private details)

def text_config_dict(checkpoint: Path) -> tuple[dict[str, Any], str]:
    cfg = read_json(checkpoint / "config.json", "fix or re-download config.json")
    return dict(cfg.get("text_config") or cfg), cfg.get("model_type", "gemma4_text")


def gemma4_text_only_config(checkpoint: Path) -> Any:
    """A text-only `Gemma4Config` (model_type gemma4, no towers) for a gemma4 or gemma4_text checkpoint.

    litert-torch 0.10.0 exports the external-embedder decoder and the per-layer embedder only for
    model_type gemma4 (`model_ext.exportables.get_prefill_decode_exportables`); tests/test_realsize.py
    fails if an upgrade changes that."""
    import transformers

    from converters.compat import litert_torch_load_model_settings
    from converters.export import MOE_EXPORTS_IMPLEMENTATION

    tc, _ = text_config_dict(checkpoint)
    tc = {k: v for k, v in tc.items() if k not in ("model_type", "architectures", "transformers_version")}
    config = transformers.Gemma4Config(text_config=tc, vision_config=None, audio_config=None)
    config.architectures = ["Gemma4ForConditionalGeneration"]
    litert_torch_load_model_settings(config, MOE_EXPORTS_IMPLEMENTATION)
    return config


def _checkpoint_tensors(checkpoint: Path) -> dict[str, Path]:
    index = checkpoint / "model.safetensors.index.json"
    if index.is_file():
        wm = read_json(index, "fix or re-download the checkpoint")["weight_map"]
        return {k: checkpoint / v for k, v in wm.items()}
    from safetensors import safe_open

    out = {}
    for f in sorted(checkpoint.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            out.update({k: f for k in h.keys()})
    return out


def _source_name(target: str, available: dict[str, Path]) -> str | None:
    """gemma4 checkpoints name text weights model.language_model.*, gemma4_text ones model.*."""
    for cand in (target, target.replace("model.language_model.", "model.", 1)):
        if cand in available:
            return cand
    return None


def _softcapped_head_cls() -> Any:
    import torch

    class _SoftcappedHead(torch.nn.Module):
        """The LM head with Gemma 4's final logit soft-capping, tanh(logits / cap) * cap.

        litert-torch 0.10.0's external-embedder decode module calls `lm_head` directly and so skips the
        capping that Gemma4ForCausalLM / Gemma4ForConditionalGeneration apply (log-probs off by up to
        ~0.8 nats on a trained model); tests/test_realsize.py fails if upstream starts capping itself."""

        def __init__(self, head: Any, cap: float):
            super().__init__()
            self.head = head
            self.cap = cap

        @property
        def weight(self) -> Any:
            return self.head.weight

        def forward(self, hidden: Any) -> Any:
            return torch.tanh(self.head(hidden) / self.cap) * self.cap

    return _SoftcappedHead


def SoftcappedHead(head: Any, cap: float) -> Any:  # noqa: N802 - a class made on first use (torch is lazy)
    return _softcapped_head_cls()(head, cap)


class _FileBacked:
    """float32 weights in one scratch file, each mapped back as a tensor: their pages belong to the
    page cache (clean, file-backed: the kernel can drop and re-read them) instead of anonymous memory,
    so a decoder of N parameters does not need 4N bytes of RAM that nothing else can use."""

    MIN_ELEMENTS = 1 << 16  # smaller ones stay in memory

    def __init__(self, path: Path):
        self.path = path
        self.f = open(path, "wb")
        self.offset = 0

    def add(self, t: Any) -> Any:
        import numpy as np
        import torch

        t = t.to(torch.float32).contiguous()
        if t.numel() < self.MIN_ELEMENTS:
            return t
        self.offset += -self.offset % 64
        self.f.seek(self.offset)
        self.f.write(t.numpy().tobytes())
        self.f.flush()
        arr = np.memmap(self.path, dtype=np.float32, mode="r+", offset=self.offset, shape=tuple(t.shape))
        self.offset += t.numel() * 4
        return torch.from_numpy(arr)

    def close(self) -> None:
        self.f.close()


def load_sections_model(checkpoint: Path, parts: set[str], scratch: Path | None = None) -> tuple[Any, Any]:
    """Gemma4ForConditionalGeneration (text only) with parameters on the meta device except those of
    `parts` (DECODER: every text weight but the two embedding tables, plus the token embedding as
    the tied LM head; EMBEDDER; PER_LAYER_EMBEDDER), read tensor by tensor as float32; with `scratch`
    (a file path) the large ones are file-backed (_FileBacked)."""
    import torch
    import transformers
    from litert_torch.generative.export_hf.core import export_lib  # noqa: F401 (registers lrt attention)
    from litert_torch.generative.export_hf.core import weights_loader as wl
    from litert_torch.generative.export_hf.model_ext import patches as model_patches
    from safetensors import safe_open

    config = gemma4_text_only_config(checkpoint)
    with model_patches.get_patch_context("gemma4"), wl.init_params_on_meta():
        model = transformers.Gemma4ForConditionalGeneration._from_config(config, torch_dtype=torch.float32)
    model.eval()
    lm = model.model.language_model
    want = set()
    for name, _ in model.named_parameters(remove_duplicate=False):
        is_ple = ".embed_tokens_per_layer." in name
        is_emb = ".embed_tokens." in name
        if (DECODER in parts and not is_ple) or (EMBEDDER in parts and is_emb) \
                or (PER_LAYER_EMBEDDER in parts and is_ple):
            if name.startswith("model.language_model.") or name.startswith("lm_head."):
                want.add(name)
    available = _checkpoint_tensors(checkpoint)
    # Persistent buffers the checkpoint stores (e.g. each layer's layer_scalar) are real tensors here,
    # initialised by the constructor: the decoder takes the checkpoint's values.
    params = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    buffers = {n for n in model.state_dict() if n not in params and ".embed_tokens_per_layer." not in n} \
        if DECODER in parts else set()
    handles: dict[Path, Any] = {}
    backed = _FileBacked(scratch) if scratch is not None else None
    try:
        for name in sorted(want | buffers):
            if name == "lm_head.weight":
                continue  # tied to the token embedding
            src = _source_name(name, available)
            if src is None:
                if name in buffers:
                    continue  # not stored: the constructor's value is the model's
                raise UserError(f"{checkpoint} has no tensor {name}", "re-download the checkpoint")
            path = available[src]
            if path not in handles:
                handles[path] = safe_open(str(path), framework="pt")
            t = handles[path].get_tensor(src)
            mod_name, _, leaf = name.rpartition(".")
            mod = model.get_submodule(mod_name)
            if name in buffers:
                mod._buffers[leaf] = t.to(mod._buffers[leaf].dtype)
            else:
                w = backed.add(t) if backed is not None else t.to(torch.float32)
                mod._parameters[leaf] = torch.nn.Parameter(w, requires_grad=False)
            del t
    finally:
        handles.clear()
        if backed is not None:
            backed.close()
    if DECODER in parts:
        model.lm_head.weight = lm.embed_tokens.weight  # tie_word_embeddings (Gemma 4 ties them)
        cap = config.text_config.final_logit_softcapping
        if cap:
            model.lm_head = SoftcappedHead(model.lm_head, float(cap))
        # The decoder takes per-layer embeddings as an input: the table is never part of its graph.
        lm.embed_tokens_per_layer = None
    return model, config


def _table_reader(checkpoint: Path, name: str) -> Any:
    """rows(start, end) -> float32 numpy rows of a checkpoint tensor, read slice by slice (never whole)."""
    import torch
    from safetensors import safe_open

    available = _checkpoint_tensors(checkpoint)
    src = _source_name(name, available)
    if src is None:
        raise UserError(f"{checkpoint} has no tensor {name}", "re-download the checkpoint")
    handle = safe_open(str(available[src]), framework="pt")
    sl = handle.get_slice(src)

    def rows(start: int, end: int) -> Any:
        return sl[start:end].to(torch.float32).numpy()

    return rows


def _export_config(checkpoint: Path, work: Path, opts_kw: dict[str, Any], model_config: Any) -> Any:
    from litert_torch.generative.export_hf.core import exportable_module, exportable_module_config
    from litert_torch.generative.export_hf.model_ext import extension

    valid = {f.name for f in dataclasses.fields(exportable_module.ExportableModuleConfig)}
    kw = dict(opts_kw, externalize_embedder=True)
    config = exportable_module.ExportableModuleConfig(
        model=str(checkpoint), output_dir=str(work), work_dir=str(work),
        task=exportable_module_config.ExportTask.TEXT_GENERATION,
        extra_kwargs={k: v for k, v in kw.items() if k not in valid}, **{k: v for k, v in kw.items() if k in valid})
    return extension.update_export_config(config, model_config)


def _tokenizer(checkpoint: Path) -> Any:
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(checkpoint))


# ------------------------------------------------------------------------------------ stages

def stage_decoder(a: dict[str, Any]) -> dict[str, Any]:
    """Export the float prefill/decode model (external embeddings) to work/model.tflite."""
    from converters.export import _quiet_litert_torch
    from litert_torch.generative.export_hf.core import export_lib

    _quiet_litert_torch()
    ckpt, work = Path(a["checkpoint"]), Path(a["work"])
    # Off by default: measured on a 2-layer full-width E2B, file-backed weights raised the export's
    # anonymous peak from 2.39 to 3.52 GiB (the converter copies tensors it does not own).
    scratch = work / "decoder_weights.f32" if a.get("file_backed", False) else None
    model, config = load_sections_model(ckpt, {DECODER}, scratch)
    source = export_lib.SourceModelArtifacts(model=model, model_config=config, text_model_config=config.text_config,
                                             tokenizer=_tokenizer(ckpt))
    model.generation_config.cache_implementation = "static"
    model.generation_config.do_sample = False
    ecfg = _export_config(ckpt, work, a["export_kwargs"], config)
    arts = export_lib.export_text_prefill_decode_model(source, ecfg, export_lib.ExportedModelArtifacts())
    del model, source
    if scratch is not None:
        scratch.unlink(missing_ok=True)  # mapped pages stay valid until the process ends
    return {"path": arts.prefill_decode_model_path}


def _table_module(section: str, table: Any, template: Any, config: Any) -> Any:
    """litert-torch's own exportable for the section, around an embedding of `table`'s rows."""
    import types

    import torch
    from litert_torch.generative.export_hf.core.external_emb import exportable_module as ext_emb
    from litert_torch.generative.export_hf.model_ext.gemma4 import exportable_module as g4

    emb = type(template)(table.shape[0], table.shape[1], None, embed_scale=float(template.embed_scale))
    emb.weight = torch.nn.Parameter(table, requires_grad=False)
    if section == EMBEDDER:
        return ext_emb.LiteRTExportableModuleForEmbedder(emb)
    # The per-layer embedder calls the text model's get_per_layer_inputs: give it a host with only the table.
    import transformers

    host = torch.nn.Module()
    host.embed_tokens_per_layer = emb
    host.config = config.text_config
    host.hidden_size_per_layer_input = config.text_config.hidden_size_per_layer_input
    host.get_per_layer_inputs = types.MethodType(transformers.Gemma4TextModel.get_per_layer_inputs, host)
    root = torch.nn.Module()
    root.model = torch.nn.Module()
    root.model.language_model = host
    return g4.LiteRTExportableModuleForPerLayerEmbedder(root)


def _convert_module(module: Any, text_config: Any, ecfg: Any, path: Path) -> None:
    import litert_torch

    converter = litert_torch.Converter()
    for sig, (inputs, _) in module.get_sample_inputs(text_config, ecfg).items():
        converter.add_signature(sig, module.eval(), sample_kwargs=inputs)
    converter.convert(strict_export=False).export(str(path))


def _const_tensors_with_rows(model_t: Any, rows: int) -> list[tuple[int, int]]:
    """(subgraph, tensor) of every constant tensor whose first dimension is `rows`: the table and, for
    blockwise recipes, its scales, in each signature's subgraph (they share one buffer)."""
    out = []
    for g, sg in enumerate(model_t.subgraphs):
        for i, t in enumerate(sg.tensors):
            buf = model_t.buffers[t.buffer] if t.buffer else None
            if buf is not None and buf.data is not None and len(buf.data) and t.shape is not None \
                    and len(t.shape) >= 1 and int(t.shape[0]) == rows:
                out.append((g, i))
    return out


def _chunk_parts(model_t: Any, rows: int) -> dict[tuple[int, int], dict[str, Any]]:
    """The row-dependent parts of a (quantized) table model: data bytes and per-row quantization arrays."""
    import numpy as np

    parts = {}
    for g, i in _const_tensors_with_rows(model_t, rows):
        t = model_t.subgraphs[g].tensors[i]
        q = t.quantization
        per_row = {}
        if q is not None:
            for name in ("scale", "zeroPoint", "min", "max"):
                v = getattr(q, name, None)
                if v is not None and len(v) == rows:
                    per_row[name] = np.asarray(v).copy()
        parts[(g, i)] = {"buffer": t.buffer, "per_row": per_row,
                         "data": np.asarray(model_t.buffers[t.buffer].data, dtype=np.uint8).copy()}
    return parts


def stage_table(a: dict[str, Any]) -> dict[str, Any]:
    """Write the quantized (or float) embedder / per-layer embedder section without tracing the full table.

    Trace once at `chunk_rows` rows; then for each chunk of the real table, put its rows into that
    float graph, quantize it with the recipe, and keep the quantized rows; finally write the graph
    with the joined table."""
    import numpy as np
    import torch
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    from converters.export import _quiet_litert_torch
    from converters.recipes import get_recipe

    _quiet_litert_torch()
    ckpt, work, section = Path(a["checkpoint"]), Path(a["work"]), a["section"]
    model, config = load_sections_model(ckpt, set())  # all on meta: only the module to copy
    lm = model.model.language_model
    template = lm.embed_tokens if section == EMBEDDER else lm.embed_tokens_per_layer
    rows_of = _table_reader(ckpt, "model.language_model." + ("embed_tokens" if section == EMBEDDER
                                                             else "embed_tokens_per_layer") + ".weight")
    total, width = template.weight.shape
    chunk = min(int(a.get("chunk_rows") or DEFAULT_CHUNK_ROWS), total)
    ecfg = _export_config(ckpt, work, a["export_kwargs"], config)
    float0 = work / f"{section}_chunk_float.tflite"
    _convert_module(_table_module(section, torch.from_numpy(rows_of(0, chunk)), template, config), config.text_config,
                    ecfg, float0)
    fmodel = fbu.read_model(str(float0))
    float0.unlink()
    tables = {fmodel.subgraphs[g].tensors[i].buffer for g, i in _const_tensors_with_rows(fmodel, chunk)
              if tuple(fmodel.subgraphs[g].tensors[i].shape) == (chunk, width)
              and fmodel.subgraphs[g].tensors[i].type == 0}  # TensorType.FLOAT32
    if len(tables) != 1:
        raise RuntimeError(f"{section}: expected one float32 [{chunk}, {width}] table in the traced graph, "
                           f"found {len(tables)}")
    table_buffer = tables.pop()
    recipe = get_recipe(a["recipe"])
    cfg = None if recipe.is_float else recipe.quantizer_config()
    if isinstance(cfg, dict):
        cfg = cfg.get(RECIPE_SECTION[section])

    def quantize(rows: Any) -> Any:
        """The quantized model of the chunk graph holding `rows` (chunk x width float32)."""
        fmodel.buffers[table_buffer].data = np.frombuffer(
            np.ascontiguousarray(rows, dtype=np.float32).tobytes(), dtype=np.uint8)
        content = fbu.convert_object_to_bytearray(fmodel)
        if not cfg:
            return fbu.read_model_from_bytearray(content)
        from ai_edge_quantizer import quantizer as quantizer_lib

        qt = quantizer_lib.Quantizer(content)
        qt.load_quantization_recipe(cfg)
        return fbu.read_model_from_bytearray(qt.quantize().quantized_model)

    joined: dict[tuple[int, int], dict[str, Any]] = {}
    qmodel0 = None
    for start in range(0, total, chunk):
        rows = rows_of(start, min(total, start + chunk))
        n = rows.shape[0]
        if n < chunk:  # pad the last chunk; its padding rows are dropped below
            rows = np.concatenate([rows, np.ones((chunk - n, width), dtype=rows.dtype)])
        qm = quantize(rows)
        parts = _chunk_parts(qm, chunk)
        if qmodel0 is None:
            qmodel0 = qm
        for key, p in parts.items():
            per_bytes, rem = divmod(len(p["data"]), chunk)
            if rem:
                raise RuntimeError(f"{section}: a quantized table of {len(p['data'])} bytes does not split into "
                                   f"{chunk} rows")
            slot = joined.setdefault(key, {"buffer": p["buffer"], "data": [], "per_row": {k: [] for k in p["per_row"]}})
            slot["data"].append(p["data"][: n * per_bytes])
            for k, v in p["per_row"].items():
                slot["per_row"][k].append(v[:n])
        del qm, parts, rows
    del model, lm, template
    assert qmodel0 is not None
    external: dict[int, list[Any]] = {}
    for (g, i), slot in joined.items():
        t = qmodel0.subgraphs[g].tensors[i]
        shape = np.array(t.shape, dtype=np.int32)  # the schema's int32 vector
        shape[0] = total
        t.shape = shape
        external.setdefault(slot["buffer"], slot["data"])  # signatures share the table's buffer
        for k, vals in slot["per_row"].items():
            setattr(t.quantization, k, np.concatenate(vals).astype(vals[0].dtype))
        if t.shapeSignature is not None and len(t.shapeSignature):
            sig = np.array(t.shapeSignature, dtype=np.int32)
            sig[0] = total
            t.shapeSignature = sig
    out = work / f"{section}_{recipe.name}.tflite"
    write_with_external_buffers(qmodel0, external, out)
    return {"path": str(out), "chunks": -(-total // chunk), "rows": int(total)}


def write_with_external_buffers(model_t: Any, external: dict[int, list[Any]], path: Path, align: int = 64) -> None:
    """Write a TFLite model whose large buffers (index -> list of byte chunks) follow the flatbuffer,
    addressed by Buffer.offset/size (the layout TFLite uses past 2 GB): the chunks are written as they
    are, never joined or copied into the flatbuffer builder."""
    from ai_edge_litert.tools import flatbuffer_utils as fbu

    sizes = {b: sum(len(c) for c in chunks) for b, chunks in external.items()}
    for b in external:
        buf = model_t.buffers[b]
        buf.data, buf.offset, buf.size = None, 2, sizes[b]  # placeholders: the field is written either way
    head = fbu.convert_object_to_bytearray(model_t)
    pos, offsets = len(head), {}
    for b in external:
        pos += -pos % align
        offsets[b] = pos
        model_t.buffers[b].offset = pos
        pos += sizes[b]
    head = fbu.convert_object_to_bytearray(model_t)
    if len(head) > min(offsets.values(), default=len(head)):
        raise RuntimeError("the flatbuffer grew when its buffer offsets were set")
    with open(path, "wb") as f:
        f.write(head)
        for b, chunks in external.items():
            f.write(b"\0" * (offsets[b] - f.tell()))
            for c in chunks:
                f.write(memoryview(c))


def stage_quantize(a: dict[str, Any]) -> dict[str, Any]:
    """Quantize a float TFLite model (read memory-mapped) with one section of a recipe."""
    from ai_edge_quantizer import quantizer as quantizer_lib

    from converters.recipes import get_recipe

    recipe = get_recipe(a["recipe"])
    cfg = recipe.quantizer_config()
    if isinstance(cfg, dict):
        cfg = cfg.get(RECIPE_SECTION[a["section"]])
    if not cfg:
        return {"path": a["path"]}
    out = Path(a["work"]) / (Path(a["path"]).stem + f"_{recipe.name}.tflite")
    qt = quantizer_lib.Quantizer(a["path"])
    qt.load_quantization_recipe(cfg)
    qt.quantize().export_model(str(out), overwrite=True)
    return {"path": str(out)}


STAGES = {"decoder": stage_decoder, "table": stage_table, "quantize": stage_quantize}


def _main(argv: list[str]) -> int:
    stage, args = argv[0], json.loads(argv[1])
    result = Path(args["result"])
    try:
        value = STAGES[stage](args)
        payload: dict[str, Any] = {"value": value}
        rc = 0
    except UserError as e:
        payload, rc = {"user_error": [e.problem, e.fix]}, 3
    except BaseException as e:  # noqa: BLE001 - reported to the parent, traceback to the log
        traceback.print_exc()
        payload, rc = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}, 1
    sys.stdout.flush()
    sys.stderr.flush()
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    tmp.rename(result)
    return rc


# ------------------------------------------------------------------------------------ the pipeline's entry points

@dataclass
class LeanExport:
    """What the pipeline's FloatExport is for the default path: packaging inputs plus section paths."""

    source: Any
    config: Any
    decoder_float: str
    checkpoint: Path
    work: Path
    export_kwargs: dict[str, Any]
    tokenizer_path: str
    stats: StageStats
    chunk_rows: int = DEFAULT_CHUNK_ROWS


class _PackagingModel:
    """What litert-torch's packager reads from the model: its config and generation config (stop tokens)."""

    def __init__(self, config: Any, generation_config: Any):
        self.config = config
        self.generation_config = generation_config


def export_lean(checkpoint: Path, work: Path, opts: Any, log: Path, stats: StageStats | None = None,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> LeanExport:
    """Export the float decoder in a child process; the tokenizer and packaging inputs here (no weights)."""
    import transformers
    from litert_torch.generative.export_hf.core import export_lib

    work.mkdir(parents=True, exist_ok=True)
    stats = stats or StageStats()
    kw = dict(opts.kwargs(), experimental_lightweight_conversion=True)
    kw.pop("model_dtype", None)  # bf16 tracing fails in 0.10.0's Gemma 4 attention (float32 KV cache)
    res = run_stage("decoder", {"checkpoint": str(checkpoint), "work": str(work / "decoder"), "export_kwargs": kw},
                    log, stats, label="export decoder") if _mkdir(work / "decoder") else None
    config = gemma4_text_only_config(checkpoint)
    try:
        gen = transformers.GenerationConfig.from_pretrained(str(checkpoint))
    except OSError:
        gen = transformers.GenerationConfig.from_model_config(config.text_config)
    source = export_lib.SourceModelArtifacts(model=_PackagingModel(config, gen), model_config=config,
                                             text_model_config=config.text_config, tokenizer=_tokenizer(checkpoint))
    ecfg = _export_config(checkpoint, work, kw, config)
    arts = export_lib.export_tokenizer(source, ecfg, export_lib.ExportedModelArtifacts())
    return LeanExport(source=source, config=ecfg, decoder_float=res["path"], checkpoint=checkpoint, work=work,
                      export_kwargs=kw, tokenizer_path=arts.tokenizer_model_path, stats=stats, chunk_rows=chunk_rows)


def _mkdir(p: Path) -> bool:
    p.mkdir(parents=True, exist_ok=True)
    return True


def quantize_lean(lx: LeanExport, recipe: Any, qwork: Path, log: Path) -> Any:
    """The ExportedModelArtifacts of one recipe: quantized decoder, and both tables (one process each)."""
    from litert_torch.generative.export_hf.core import export_lib

    qwork.mkdir(parents=True, exist_ok=True)
    dec = lx.decoder_float
    if not recipe.is_float:
        dec = run_stage("quantize", {"path": dec, "work": str(qwork), "recipe": recipe.name, "section": DECODER},
                        log, lx.stats, label=f"quantize decoder {recipe.name}")["path"]
    tables = {}
    for section in TABLES:
        tables[section] = run_stage("table", {"checkpoint": str(lx.checkpoint), "work": str(qwork), "section": section,
                                              "recipe": recipe.name, "export_kwargs": lx.export_kwargs,
                                              "chunk_rows": lx.chunk_rows},
                                    log, lx.stats, label=f"{section} {recipe.name}")["path"]
    return export_lib.ExportedModelArtifacts(prefill_decode_model_path=dec, embedder_model_path=tables[EMBEDDER],
                                             additional_model_paths={PER_LAYER_EMBEDDER: tables[PER_LAYER_EMBEDDER]},
                                             tokenizer_model_path=lx.tokenizer_path)


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
