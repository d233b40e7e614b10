"""Footprint planner: bundle size and on-device memory of a Gemma 4 model for a recipe and context
length, computed from the config alone (no conversion), and whether it fits a RAM budget.

Assumptions (also listed in `Plan.assumptions`, which `gemma4-mobile plan` prints):
- Bundle = the sections litert-torch writes for Gemma 4: for model_type gemma4 (the published
  checkpoints) an embedder (token embeddings), a per-layer embedder (the per-layer embedding table)
  and a prefill/decode model (every linear layer, the tied LM head as its own copy, norms in
  float32); for text-only gemma4_text checkpoints one prefill/decode model holding all of it (the
  tied embedding stored once); plus tokenizer (zlib), metadata and vision/audio encoders when
  exported. Linear weights take the recipe's `weight_bits`, embedding tables its
  `embedding_bits` (block scales are included in those averages); encoders are int8 for any
  quantized recipe (litert-torch's encoder default), float32 otherwise. Layers that reuse another
  layer's KV (num_kv_shared_layers) have no K/V projections. A graph overhead per layer and
  signature is calibrated on the real tiny bundles (tests/test_planner.py checks size within 5%).
- Runtime memory: the prefill/decode weights are resident (XNNPACK packs them into its own buffers);
  the two embedding tables are memory-mapped from the bundle and only looked up row by row, so they
  count as mapped, not resident (the "all resident" figure adds them for a device that keeps every
  touched page). KV cache is float32 (LiteRT-LM CPU default), one K and one V buffer per layer
  that owns its KV: full-attention layers hold the whole context; sliding-window layers hold the
  ring-buffer size when one is exported, else the whole context too. Activations: one prefill
  chunk (hidden states, MLP, attention scores against the whole cache, per-layer inputs) and one
  vocabulary of logits, float32. A fixed runtime overhead (engine, tokenizer, allocator slack) of
  64 MiB. Encoders count only when the bundle holds them.
"""

from __future__ import annotations

import math
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from converters import presets
from converters.recipes import RECIPES, Recipe, get_recipe
from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json

MiB = 1 << 20
RUNTIME_OVERHEAD_BYTES = 64 * MiB
KV_BYTES = 4  # float32 KV cache
ACT_BYTES = 4
# Graph (flatbuffer ops, tensors, signature maps) per decoder layer and signature, and per model;
# calibrated on the tiny bundles (test_planner.py::test_size_matches_real_tiny_bundles).
GRAPH_BYTES_PER_LAYER_SIGNATURE = 65_000
GRAPH_BYTES_PER_MODEL = 12_000  # each extra model (embedders, encoders)
METADATA_BYTES = 61_000  # litertlm header, LLM + executor metadata, section alignment
# Size of the Gemma 4 tokenizer section (262k-entry SentencePiece/HF tokenizer, zlib) for presets.
PRESET_TOKENIZER_BYTES = 4_700_000
DEFAULT_CONTEXTS = (1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
# Host memory of one conversion with litert-torch's default converter (the float32 model, its traced
# program and the float TFLite flatbuffer at once): peak anonymous RSS fitted on full-width E2B-shaped
# checkpoints of 2 and 4 layers (0.62 and 0.82 B params: 8.60 and 10.48 GiB) by
# `benchmarks/realsize_convert.py --sweep-layers 2,4`; the full 4.63 B-param E2B passed 22 GiB and was
# stopped there, consistent with the fit's 44.9 GiB.
CONVERT_FIXED_BYTES = int(3.01 * (1 << 30))
CONVERT_BYTES_PER_PARAM = 9.72


# The lean converter (converters.lean): the peak is that of its largest stage, each its own process.
# Fitted per stage on full-width E2B-shaped checkpoints of 2 and 35 layers (decoder 0.48 / 2.28 B
# params, per-layer table 0.13 / 2.35 B) by `benchmarks/realsize_convert.py --converter lean`
# (peak RssAnon+RssShmem of each stage process): decoder export 2.39 / 9.62 GiB (lightweight
# conversion: the converter references the float32 torch weights, ~4.3 bytes per decoder parameter:
# linear layers, norms and the tied LM head); decoder quantization 2.58 / 5.14 GiB (float flatbuffer
# memory-mapped). The 4-layer model (decoder 0.61 B) then measured 2.76 / 2.70 GiB = 1.03x / 1.01x of
# these lines. A table stage holds its quantized rows and writes them after the flatbuffer
# (converters.lean.write_with_external_buffers): E2B's per-layer table (2.35 B) 5.06 GiB, the 4-layer
# model's (0.27 B) 1.06 GiB and its token embedder (0.40 B) 1.31 GiB.
LEAN_DECODER_FIXED_BYTES = int(0.45 * (1 << 30))
LEAN_DECODER_BYTES_PER_PARAM = 4.32
LEAN_QUANTIZE_FIXED_BYTES = int(1.89 * (1 << 30))
LEAN_QUANTIZE_BYTES_PER_PARAM = 1.53
LEAN_TABLE_FIXED_BYTES = int(0.6 * (1 << 30))
LEAN_TABLE_BYTES_PER_PARAM = 2.0
# The processes around the stages (the CLI and the conversion process that packages): E2B's whole tree
# peaked at 10.20 GiB with its decoder-export stage at 9.62 GiB.
LEAN_PARENTS_BYTES = int(0.58 * (1 << 30))
# `convert` takes the lean path by itself when the default path's estimate passes this share of the
# host's RAM (and the request is one the lean path makes: text only, per-layer embeddings).
LEAN_WHEN_DEFAULT_NEEDS = 0.5


def lean_stage_bytes(s: "ModelShape") -> dict[str, int]:
    """Estimated peak host RAM of each stage of the lean converter."""
    pc = count_params(s)
    decoder = pc.linear + pc.norms + pc.embedding  # the LM head is the tied token embedding
    return {
        "export decoder": LEAN_DECODER_FIXED_BYTES + int(LEAN_DECODER_BYTES_PER_PARAM * decoder),
        "quantize decoder": LEAN_QUANTIZE_FIXED_BYTES + int(LEAN_QUANTIZE_BYTES_PER_PARAM * decoder),
        "embedder": LEAN_TABLE_FIXED_BYTES + int(LEAN_TABLE_BYTES_PER_PARAM * pc.embedding),
        "per_layer_embedder": LEAN_TABLE_FIXED_BYTES + int(LEAN_TABLE_BYTES_PER_PARAM * pc.per_layer_embedding),
    }


def conversion_memory_bytes(parameters: int, converter: str = "default", shape: "ModelShape | None" = None) -> int:
    """Estimated peak host RAM to convert a checkpoint of `parameters` (with `converter`; the lean
    one needs the shape, since its peak is that of its largest section)."""
    if converter == "lean":
        if shape is None:
            raise ValueError("the lean converter's estimate needs the model shape")
        return max(lean_stage_bytes(shape).values()) + LEAN_PARENTS_BYTES
    return CONVERT_FIXED_BYTES + int(CONVERT_BYTES_PER_PARAM * parameters)


def choose_converter(parameters: int, *, lean_ok: bool, host_bytes: int | None = None) -> str:
    """The leanest correct path: lean for a checkpoint whose default conversion would take more than
    LEAN_WHEN_DEFAULT_NEEDS of this host's RAM, when the lean path can make the request."""
    host = host_ram_bytes() if host_bytes is None else host_bytes
    if lean_ok and conversion_memory_bytes(parameters) > LEAN_WHEN_DEFAULT_NEEDS * host:
        return "lean"
    return "default"


def scratch_disk_bytes(s: "ModelShape", recipes: list[str], converter: str = "default") -> int:
    """Free disk a conversion needs at its peak: the float intermediates (float32), then per recipe its
    quantized sections and the bundle being written; 10% slack."""
    import dataclasses

    pc = count_params(s)
    shape = dataclasses.replace(s, separate_embedders=True) if converter == "lean" else s
    if converter == "lean":
        floats = 4 * (pc.linear + pc.norms + pc.embedding)  # the decoder only: tables are written quantized
    else:
        floats = 4 * (pc.checkpoint_text + (pc.embedding if s.separate_embedders else 0))
    per_recipe = [2 * estimate_bundle(shape, get_recipe(r)).total for r in recipes] or [0]
    return int(1.1 * (floats + max(per_recipe) + sum(per_recipe) // 2))


def host_ram_bytes() -> int:
    """This host's physical RAM (MemTotal)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class ModelShape:
    """The fields of a Gemma 4 config that decide sizes."""

    name: str
    vocab: int
    vocab_per_layer: int
    hidden: int
    layer_types: tuple[str, ...]
    heads: int
    kv_heads: int
    global_kv_heads: int
    head_dims: tuple[int, ...]  # per layer (sliding: head_dim, full: global_head_dim)
    intermediate: int
    double_wide: bool
    kv_shared: int
    ple: int  # per-layer embedding width
    window: int
    k_eq_v: bool
    vision: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    tokenizer_bytes: int = PRESET_TOKENIZER_BYTES
    # model_type gemma4 (the published checkpoints, multimodal ones) exports the token and
    # per-layer embedders as their own models; gemma4_text keeps both inside the decoder, where
    # the tied embedding is one constant shared by the lookup and the LM head.
    separate_embedders: bool = True

    @property
    def layers(self) -> int:
        return len(self.layer_types)

    @property
    def first_shared(self) -> int:
        return self.layers - self.kv_shared

    def owns_kv(self, i: int) -> bool:
        return i < self.first_shared

    def kv_heads_at(self, i: int) -> int:
        return self.global_kv_heads if self.layer_types[i] == presets.F else self.kv_heads

    def inter_at(self, i: int) -> int:
        return self.intermediate * (2 if self.double_wide and not self.owns_kv(i) else 1)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], name: str = "custom", tokenizer_bytes: int | None = None) -> "ModelShape":
        tc = cfg.get("text_config") or cfg
        n = int(tc["num_hidden_layers"])
        types = tuple(tc.get("layer_types") or [presets.F] * n)
        hd = int(tc.get("head_dim") or tc["hidden_size"] // tc["num_attention_heads"])
        ghd = int(tc.get("global_head_dim") or hd)
        plc = tc.get("per_layer_config") or {}
        dims = []
        for i, t in enumerate(types):
            d = ghd if t == presets.F else hd
            over = plc.get(str(i)) if isinstance(plc, dict) else (plc[i] if i < len(plc) else None)
            if isinstance(over, dict) and over.get("head_dim"):
                d = int(over["head_dim"])
            dims.append(d)
        kv = int(tc.get("num_key_value_heads") or tc["num_attention_heads"])
        return cls(
            name=name, vocab=int(tc["vocab_size"]),
            vocab_per_layer=int(tc.get("vocab_size_per_layer_input") or tc["vocab_size"]),
            hidden=int(tc["hidden_size"]), layer_types=types, heads=int(tc["num_attention_heads"]),
            kv_heads=kv, global_kv_heads=int(tc.get("num_global_key_value_heads") or kv), head_dims=tuple(dims),
            intermediate=int(tc["intermediate_size"]), double_wide=bool(tc.get("use_double_wide_mlp")),
            kv_shared=int(tc.get("num_kv_shared_layers") or 0), ple=int(tc.get("hidden_size_per_layer_input") or 0),
            window=int(tc.get("sliding_window") or 0), k_eq_v=bool(tc.get("attention_k_eq_v")),
            vision=cfg.get("vision_config") if "text_config" in cfg else None,
            audio=cfg.get("audio_config") if "text_config" in cfg else None,
            tokenizer_bytes=PRESET_TOKENIZER_BYTES if tokenizer_bytes is None else tokenizer_bytes,
            separate_embedders=cfg.get("model_type", "gemma4") == "gemma4",
        )


def load_shape(model: str) -> ModelShape:
    """`e2b` / `e4b` (published configs) or a checkpoint directory (its config.json and tokenizer)."""
    key = model.strip().lower()
    if key in presets.PRESETS:
        return ModelShape.from_config(presets.get_preset(key), name=key)
    path = Path(model)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{model!r} is neither a known model nor a checkpoint directory",
                        f"pass one of {', '.join(presets.PRESETS)} or a directory holding config.json")
    cfg = read_json(cfg_path, "fix or re-download config.json")
    tc = cfg.get("text_config") or cfg
    if cfg.get("model_type") not in ("gemma4", "gemma4_text") or "hidden_size" not in tc:
        raise UserError(f"{cfg_path} is not a Gemma 4 config", "pass a Gemma 4 checkpoint directory")
    tok = path / "tokenizer.json"
    tok_bytes = len(zlib.compress(tok.read_bytes())) if tok.is_file() else None
    from converters.checkpoint import detect_variant

    return ModelShape.from_config(cfg, name=f"{detect_variant(tc)}:{path.name}", tokenizer_bytes=tok_bytes)


# ------------------------------------------------------------------------------ parameters

@dataclass
class ParamCounts:
    embedding: int  # token embeddings (vocab x hidden)
    per_layer_embedding: int  # vocab_per_layer x layers x ple
    linear: int  # every matmul weight of the decoder (q, k, v, o, MLP, per-layer gate/projection)
    norms: int  # RMSNorm weights and layer scalars (stay float32)
    lm_head: int  # the tied LM head, exported as its own copy inside the prefill/decode model
    vision_encoder: int = 0
    vision_adapter: int = 0
    audio_encoder: int = 0
    audio_adapter: int = 0

    @property
    def checkpoint_text(self) -> int:
        """Parameters of the text model as a checkpoint stores them (tied head counted once)."""
        return self.embedding + self.per_layer_embedding + self.linear + self.norms


def count_params(s: ModelShape, *, vision: bool = False, audio: bool = False) -> ParamCounts:
    h, L = s.hidden, s.layers
    linear = h * L * s.ple  # per_layer_model_projection
    norms = h + s.ple  # final norm, per_layer_projection_norm
    for i in range(L):
        hd = s.head_dims[i]
        linear += h * s.heads * hd * 2  # q_proj, o_proj
        if s.owns_kv(i):
            kvh = s.kv_heads_at(i)
            linear += h * kvh * hd * (1 if s.k_eq_v and s.layer_types[i] == presets.F else 2)
            norms += hd  # k_norm
        linear += 3 * h * s.inter_at(i)  # gate, up, down
        if s.ple:
            linear += 2 * h * s.ple  # per_layer_input_gate, per_layer_projection
            norms += h  # post_per_layer_input_norm
        norms += 4 * h + hd + 1  # input/post-attn/pre-ffn/post-ffn norms, q_norm, layer_scalar
    pc = ParamCounts(embedding=s.vocab * h, per_layer_embedding=s.vocab_per_layer * L * s.ple,
                     linear=linear, norms=norms, lm_head=s.vocab * h)
    if vision and s.vision:
        pc.vision_encoder = _vision_params(s.vision)
        pc.vision_adapter = s.vision["hidden_size"] * h
    if audio and s.audio:
        pc.audio_encoder = _audio_params(s.audio)
        pc.audio_adapter = s.audio.get("output_proj_dims", s.audio["hidden_size"]) * h
    return pc


def _vision_params(v: dict[str, Any]) -> int:
    if _same(v, presets.VISION_CONFIG):
        return presets.VISION_ENCODER_PARAMS
    h, i, n = v["hidden_size"], v["intermediate_size"], v["num_hidden_layers"]
    heads, kvh, hd = v["num_attention_heads"], v.get("num_key_value_heads", v["num_attention_heads"]), v["head_dim"]
    layer = h * heads * hd * 2 + h * kvh * hd * 2 + 3 * h * i + 4 * h + 2 * hd
    patch = 3 * v["patch_size"] ** 2 * h + 2 * v["position_embedding_size"] * h
    return n * layer + patch


def _audio_params(a: dict[str, Any]) -> int:
    if _same(a, presets.AUDIO_CONFIG):
        return presets.AUDIO_ENCODER_PARAMS
    h, n = a["hidden_size"], a["num_hidden_layers"]
    # conformer block: 2 macaron FFNs (4x), attention (4 h^2), light conv (~3 h^2)
    return n * (2 * 2 * 4 * h * h + 4 * h * h + 3 * h * h) + h * a.get("output_proj_dims", h)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "output_proj_dims")
    return all(a.get(k) == b.get(k) for k in keys)


# ------------------------------------------------------------------------------ bundle size

def _bytes(params: int, bits: float) -> int:
    return int(math.ceil(params * bits / 8))


@dataclass
class BundleEstimate:
    sections: dict[str, int]  # section -> bytes

    @property
    def total(self) -> int:
        return sum(self.sections.values())


def signature_count(prefill_lengths: list[int], cache_lengths: list[int]) -> int:
    return (len(prefill_lengths) + 1) * len(cache_lengths)


def _section_bits(recipe: Recipe) -> dict[str, tuple[float, float | None]] | None:
    """For a section-keyed recipe (a dict of .litertlm sections, e.g. gemma4_mixed48): per section, the
    bits of its catch-all entry and of its `per_layer` entry (block scales included); else None."""
    import re

    if recipe.group not in ("gemma4_mixed", "file") or recipe.is_float:
        return None
    try:
        cfg = recipe.quantizer_config()
    except Exception:  # noqa: BLE001 - an unreadable file recipe: fall back to the recipe's averages
        return None
    if not isinstance(cfg, dict):
        return None

    def bits(entry: dict[str, Any]) -> float:
        w = entry.get("op_config", {}).get("weight_tensor_config", {})
        b = float(w.get("num_bits", 32))
        gran = str(w.get("granularity", "")).upper()
        if "BLOCKWISE" in gran:
            m = re.search(r"(\d+)", gran.rsplit(".", 1)[-1])
            block = int(w.get("block_size") or (m.group(1) if m else 0) or 0)
            if block:
                b += 16 / block  # one float16 scale per block
        return b

    out = {}
    for section, entries in cfg.items():
        base = next((bits(e) for e in entries if e.get("regex") == ".*"), None)
        per_layer = next((bits(e) for e in entries if e.get("regex") == "per_layer"), None)
        out[section] = (base if base is not None else 32.0, per_layer)
    return out


def estimate_bundle(s: ModelShape, recipe: Recipe, *, prefill_lengths: list[int] | None = None,
                    cache_lengths: list[int] | None = None, vision: bool = False,
                    audio: bool = False) -> BundleEstimate:
    pc = count_params(s, vision=vision, audio=audio)
    prefill_lengths = prefill_lengths or [128]
    cache_lengths = cache_lengths or [4096]
    wb = recipe.weight_bits
    eb = recipe.embedding_bits
    enc_bits = 32 if recipe.is_float else 8
    graph = GRAPH_BYTES_PER_LAYER_SIGNATURE * s.layers * signature_count(prefill_lengths, cache_lengths)
    by_section = _section_bits(recipe)
    if s.separate_embedders and by_section is not None:
        # Section-keyed recipes (gemma4_mixed48): each section's own bits; a section the recipe does not
        # name stays float32; the decoder's `per_layer` projections take that entry's bits.
        (db, dpl), (ebits, _), (pbits, _) = (by_section.get(k, (32.0, None)) for k in
                                             ("tf_lite_prefill_decode", "tf_lite_embedder",
                                              "tf_lite_per_layer_embedder"))
        ple_linear = s.hidden * s.layers * s.ple * 3 if s.ple else 0  # model projection, input gate, projection
        sec = {
            "prefill_decode": _bytes(pc.linear - ple_linear + pc.lm_head, db) + _bytes(ple_linear, dpl or db)
            + pc.norms * 4 + graph,
            "embedder": _bytes(pc.embedding, ebits) + GRAPH_BYTES_PER_MODEL,
        }
        if pc.per_layer_embedding:
            sec["per_layer_embedder"] = _bytes(pc.per_layer_embedding, pbits) + GRAPH_BYTES_PER_MODEL
    elif s.separate_embedders:
        sec = {
            "prefill_decode": _bytes(pc.linear + pc.lm_head, wb) + pc.norms * 4 + graph,
            "embedder": _bytes(pc.embedding, eb) + GRAPH_BYTES_PER_MODEL,
        }
        if pc.per_layer_embedding:
            sec["per_layer_embedder"] = _bytes(pc.per_layer_embedding, eb) + GRAPH_BYTES_PER_MODEL
    else:
        sec = {"prefill_decode": _bytes(pc.linear + pc.embedding, wb) + _bytes(pc.per_layer_embedding, eb)
               + pc.norms * 4 + graph}
    if pc.vision_encoder:
        sec["vision_encoder"] = _bytes(pc.vision_encoder, enc_bits) + GRAPH_BYTES_PER_MODEL
        sec["vision_adapter"] = _bytes(pc.vision_adapter, enc_bits) + GRAPH_BYTES_PER_MODEL
        sec["end_of_vision"] = s.hidden * 4 + GRAPH_BYTES_PER_MODEL
    if pc.audio_encoder:
        sec["audio_encoder"] = _bytes(pc.audio_encoder, enc_bits) + GRAPH_BYTES_PER_MODEL
        sec["audio_adapter"] = _bytes(pc.audio_adapter, enc_bits) + GRAPH_BYTES_PER_MODEL
        sec["end_of_audio"] = s.hidden * 4 + GRAPH_BYTES_PER_MODEL
    sec["tokenizer"] = s.tokenizer_bytes
    sec["metadata"] = METADATA_BYTES
    return BundleEstimate(sec)


# ------------------------------------------------------------------------------ runtime memory

@dataclass
class MemoryEstimate:
    resident_weights: int
    mapped_weights: int  # memory-mapped embedding tables (looked up row by row)
    kv_cache: int
    kv_sliding: int
    kv_full: int
    activations: int
    overhead: int

    @property
    def total(self) -> int:
        """What the process needs resident: weights + KV + activations + overhead."""
        return self.resident_weights + self.kv_cache + self.activations + self.overhead

    @property
    def total_all_resident(self) -> int:
        return self.total + self.mapped_weights


def kv_cache_bytes(s: ModelShape, context: int, ring_buffer: int | None = None) -> tuple[int, int]:
    """(sliding-layer bytes, full-layer bytes) of the KV cache at `context` tokens."""
    sliding = full = 0
    ring = _round32(ring_buffer) if ring_buffer else None
    for i, t in enumerate(s.layer_types):
        if not s.owns_kv(i):
            continue  # reuses an earlier layer's cache
        length = min(ring, context) if (t == presets.S and ring) else context
        b = 2 * s.kv_heads_at(i) * s.head_dims[i] * length * KV_BYTES
        if t == presets.S:
            sliding += b
        else:
            full += b
    return sliding, full


def _round32(n: int) -> int:
    return (n + 31) // 32 * 32  # litert-torch rounds the ring-buffer size up to 32


def activation_bytes(s: ModelShape, context: int, prefill: int) -> int:
    t = prefill
    hidden = 4 * t * s.hidden  # residual, normed, attention out, MLP out
    mlp = 2 * t * max(s.inter_at(i) for i in range(s.layers))
    attn_scores = s.heads * t * context
    qkv = t * s.heads * max(s.head_dims) * 3
    ple = t * s.layers * s.ple * 2
    logits = s.vocab
    return (hidden + mlp + attn_scores + qkv + ple + logits) * ACT_BYTES


def estimate_memory(s: ModelShape, bundle: BundleEstimate, context: int, *, prefill: int = 128,
                    ring_buffer: int | None = None) -> MemoryEstimate:
    # (single-model layouts keep the tables inside the decoder: all resident)
    mapped = bundle.sections.get("embedder", 0) + bundle.sections.get("per_layer_embedder", 0)
    resident = sum(v for k, v in bundle.sections.items() if k not in ("embedder", "per_layer_embedder"))
    sl, fu = kv_cache_bytes(s, context, ring_buffer)
    return MemoryEstimate(resident_weights=resident, mapped_weights=mapped, kv_cache=sl + fu, kv_sliding=sl,
                          kv_full=fu, activations=activation_bytes(s, context, min(prefill, context)),
                          overhead=RUNTIME_OVERHEAD_BYTES)


# ------------------------------------------------------------------------------ plan

ASSUMPTIONS = [" ".join(item.split()) for item in
               (__doc__ or "").split("Assumptions", 1)[-1].split('"""')[0].split("\n- ")[1:]]


@dataclass
class Plan:
    model: str
    recipe: str
    context: int
    prefill: int
    ring_buffer: int | None
    vision: bool
    audio: bool
    parameters: dict[str, int]
    bundle_bytes: int
    bundle_sections: dict[str, int]
    memory: dict[str, int]
    conversion_host_bytes: int = 0  # peak host RAM to convert it (default converter)
    converter: str = "default"  # the path `convert` takes by itself on this host (choose_converter)
    conversion_host_bytes_lean: int | None = None  # peak host RAM with the lean converter (None: not possible)
    conversion_stages_lean: dict[str, int] = field(default_factory=dict)
    budget_bytes: int | None = None
    budget_source: str | None = None
    fits: bool | None = None
    fits_all_resident: bool | None = None
    suggestions: list[dict[str, Any]] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=lambda: list(ASSUMPTIONS))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan(model: str | ModelShape, recipe: str, context: int, *, prefill: int = 128, ring_buffer: int | None = None,
         vision: bool = False, audio: bool = False, budget_bytes: int | None = None,
         budget_source: str | None = None, converter: str | None = None) -> Plan:
    s = model if isinstance(model, ModelShape) else load_shape(model)
    r = get_recipe(recipe)
    if context <= 0:
        raise UserError("context must be a positive number of tokens", "pass e.g. --context 4096")
    if (vision and not s.vision) or (audio and not s.audio):
        raise UserError(f"{s.name} has no {'vision' if vision and not s.vision else 'audio'} tower",
                        "drop --vision/--audio, or plan a multimodal checkpoint (model_type gemma4)")
    pc = count_params(s, vision=vision, audio=audio)
    all_params = pc.checkpoint_text + pc.vision_encoder + pc.vision_adapter + pc.audio_encoder + pc.audio_adapter
    lean_ok = not (vision or audio) and s.ple > 0
    chosen = converter or choose_converter(all_params, lean_ok=lean_ok)
    if chosen == "lean" and not lean_ok:
        raise UserError("the lean converter exports text generation of checkpoints with per-layer embeddings only",
                        "drop --vision/--audio, or plan the default converter")
    if chosen == "lean":  # its bundle has the embedder and per-layer embedder as their own sections
        import dataclasses

        s = dataclasses.replace(s, separate_embedders=True)
    b = estimate_bundle(s, r, prefill_lengths=[prefill], cache_lengths=[context], vision=vision, audio=audio)
    m = estimate_memory(s, b, context, prefill=prefill, ring_buffer=ring_buffer)
    stages = lean_stage_bytes(s) if lean_ok else {}
    p = Plan(model=s.name, recipe=r.name, context=context, prefill=prefill, ring_buffer=ring_buffer,
             vision=vision, audio=audio, parameters=asdict(pc) | {"checkpoint_text": pc.checkpoint_text},
             bundle_bytes=b.total, bundle_sections=b.sections,
             memory=asdict(m) | {"total": m.total, "total_all_resident": m.total_all_resident},
             conversion_host_bytes=conversion_memory_bytes(all_params), converter=chosen,
             conversion_host_bytes_lean=max(stages.values()) + LEAN_PARENTS_BYTES if stages else None,
             conversion_stages_lean=stages,
             budget_bytes=budget_bytes, budget_source=budget_source)
    if budget_bytes is not None:
        p.fits = m.total <= budget_bytes
        p.fits_all_resident = m.total_all_resident <= budget_bytes
        p.suggestions = suggest(s, budget_bytes, prefill=prefill, ring_buffer=ring_buffer, vision=vision,
                                audio=audio, want_context=context)
    return p


def suggest(s: ModelShape, budget_bytes: int, *, prefill: int = 128, ring_buffer: int | None = None,
            vision: bool = False, audio: bool = False, want_context: int | None = None) -> list[dict[str, Any]]:
    """For each recipe, the longest of DEFAULT_CONTEXTS (and the requested context) that fits, and
    whether a sliding-window ring buffer would stretch it; recipes that fit nothing are left out."""
    out = []
    contexts = sorted(set(DEFAULT_CONTEXTS) | ({want_context} if want_context else set()))
    rings = [ring_buffer] if ring_buffer else [None, _round32(s.window + prefill) if s.window else None]
    for r in RECIPES.values():
        best = None
        for ring in dict.fromkeys(rings):
            b = estimate_bundle(s, r, prefill_lengths=[prefill], cache_lengths=[max(contexts)], vision=vision,
                                audio=audio)
            for c in contexts:
                m = estimate_memory(s, b, c, prefill=prefill, ring_buffer=ring)
                if m.total <= budget_bytes and (best is None or c > best["context"]):
                    best = {"recipe": r.name, "context": c, "ring_buffer": ring, "memory_total": m.total,
                            "bundle_bytes": b.total}
        if best:
            out.append(best)
    out.sort(key=lambda d: (-d["context"], -RECIPES[d["recipe"]].weight_bits))
    return out
