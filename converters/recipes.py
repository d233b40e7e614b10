"""Quantization recipes: what `--recipe` accepts and how each maps onto ai-edge-quantizer.

Three sources: every recipe the installed ai-edge-quantizer provides (found by introspection of its
`recipe` module, see `library_recipe_names`), our own named ones (int4 embeddings, static int4
weights with 16-bit activations, the NPU vendors' a16w8), and a recipe JSON file given by path
(the format `Quantizer.load_quantization_recipe` reads, or a dict of .litertlm sections to such lists).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from gemma4_common.errors import UserError

# Recipe groups, in the order `--recipe list` shows them.
GROUPS: dict[str, str] = {
    "float": "float (no quantization)",
    "dynamic": "dynamic range (int weights, float activations quantized on the fly)",
    "weight_only": "weight-only (int weights dequantized to float compute)",
    "static": "static / calibrated (int weights and activations; needs --calibration or the built-in set)",
    "gemma4_mixed": "Gemma 4 mixed precision (per .litertlm section)",
    "ours": "ours (gemma4-mobile)",
    "file": "recipe JSON file",
}

# The .litertlm sections a section-keyed recipe may name (litert-torch's LiteRT-LM builder).
SECTIONS = ("tf_lite_prefill_decode", "tf_lite_embedder", "tf_lite_per_layer_embedder", "tf_lite_aux",
            "tf_lite_vision_encoder", "tf_lite_vision_adapter", "tf_lite_audio_encoder", "tf_lite_audio_adapter")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    weight_bits: float  # average bits per weight of the large matrices (for size planning)
    embedding_bits: float
    quantizer_recipe: str | None  # name in ai_edge_quantizer.recipe, None = float or custom
    build: Callable[[], Any] | None = field(default=None, compare=False)  # custom recipe (op-config list)
    group: str = "dynamic"
    activation_bits: int | None = None  # static recipes: 8 / 16; None: float activations
    source: str = "ai-edge-quantizer"  # "ai-edge-quantizer" | "gemma4-mobile" | the JSON file's path
    sha256: str | None = None  # of the JSON file, for file recipes
    # NPU vendor whose pipeline this recipe is (litert-torch's a16w8 with its float-op rule), or None.
    npu_vendor: str | None = None

    @property
    def is_float(self) -> bool:
        return self.quantizer_recipe is None and self.build is None

    @property
    def needs_calibration(self) -> bool:
        return self.activation_bits is not None

    def quantizer_config(self) -> Any:
        if self.build is not None:
            return self.build()
        return library_recipe(self.quantizer_recipe)()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "group": self.group, "description": self.description,
                "weight_bits": self.weight_bits, "embedding_bits": self.embedding_bits,
                "activation_bits": self.activation_bits, "needs_calibration": self.needs_calibration,
                "source": self.source, "sha256": self.sha256, "npu_vendor": self.npu_vendor}


# ---- ai-edge-quantizer's own recipes (the one place that knows how its module is laid out) -------
def library_recipe_names() -> list[str]:
    """The recipe names ai-edge-quantizer's `recipe` module provides.

    A private detail: 0.10.0 has no registry, so a recipe is any public module-level callable
    defined in that module (functions and the lambda aliases) that is not a class or an import.
    tests/test_recipes.py pins the 0.10.0 list and fails when an upgrade changes it.
    """
    import inspect

    from ai_edge_quantizer import recipe as recipe_lib

    names = []
    for name, obj in vars(recipe_lib).items():
        if name.startswith("_") or inspect.isclass(obj) or inspect.ismodule(obj) or not callable(obj):
            continue
        if getattr(obj, "__module__", None) != recipe_lib.__name__:
            continue
        names.append(name)
    return names


def library_recipe(name: str) -> Callable[..., Any]:
    from ai_edge_quantizer import recipe as recipe_lib

    return getattr(recipe_lib, name)


_WBITS_RE = re.compile(r"wi(\d+)")
_BLOCK_RE = re.compile(r"b(\d+)(?:_|$)")


def _block_overhead(block: int | None) -> float:
    # One 16-bit scale per block.
    return 16 / block if block else 0.0


def _bits_from_name(name: str) -> float:
    m = _WBITS_RE.search(name)
    bits = float(m.group(1)) if m else 8.0
    b = _BLOCK_RE.search(name)
    return bits + _block_overhead(int(b.group(1)) if b else None)


def _describe_library(name: str, group: str) -> str:
    """A one-line description decoded from the name (the library's naming convention)."""
    bits = _WBITS_RE.search(name)
    b = _BLOCK_RE.search(name)
    gran = f"blockwise ({b.group(1)})" if b else "per-channel"
    hr = ", Hadamard rotation" if "_hr" in name else ""
    w = f"int{bits.group(1)}" if bits else "int4"
    if group == "gemma4_mixed":
        return f"{w} {gran} for most weights, int8 for the per-layer projections{hr}"
    if group == "static":
        a = re.search(r"ai(\d+)", name)
        return f"{w} {gran} weights, int{a.group(1) if a else 8} activations (static, calibrated)"
    if "legacy" in name:
        return f"{w} {gran} weights, float activations; only tensors of >= 1024 elements (legacy)"
    kind = "float compute (weight-only)" if group == "weight_only" else "float activations (dynamic range)"
    return f"{w} {gran} weights, {kind}{hr}"


def _library_entry(name: str) -> Recipe:
    if name.startswith("gemma4_mixed"):
        group = "gemma4_mixed"
        b = _BLOCK_RE.search(name)
        over = _block_overhead(int(b.group(1)) if b else None)
        # int4 for most matrices, int8 for the per-layer projections: about one bit more on average.
        return Recipe(name, _describe_library(name, group), 5 + over, 4 + over, name, group=group)
    if name.startswith("static_"):
        m = re.search(r"ai(\d+)", name)
        bits = _bits_from_name(name)
        return Recipe(name, _describe_library(name, "static"), bits, bits, name, group="static",
                      activation_bits=int(m.group(1)) if m else 8)
    group = "weight_only" if name.startswith("weight_only") else "dynamic"
    bits = _bits_from_name(name)
    return Recipe(name, _describe_library(name, group), bits, bits, name, group=group)


# ---- ours -----------------------------------------------------------------------------------------
def _int8_with_int4_embeddings():
    from ai_edge_quantizer import recipe as recipe_lib

    return recipe_lib.dynamic_wi4c_afp32(
        operation_name=recipe_lib.TFLOperationName.EMBEDDING_LOOKUP,
    ) + recipe_lib.dynamic_wi8c_afp32(
        operation_name=recipe_lib.TFLOperationName.FULLY_CONNECTED,
    )


def _static_wi4_ai16():
    from ai_edge_quantizer import recipe_manager
    from ai_edge_quantizer.qtyping import TFLOperationName

    rm = recipe_manager.RecipeManager()
    rm.add_static_config(regex=".*", operation_name=TFLOperationName.ALL_SUPPORTED, activation_num_bits=16,
                         weight_num_bits=4)
    return rm.get_quantization_recipe()


class _RecipeBuilder:
    """The two Quantizer methods litert-torch's NPU recipe function calls, over a bare RecipeManager
    (so that the vendor recipe can be built, listed and hashed without a model)."""

    def __init__(self):
        from ai_edge_quantizer import recipe_manager

        self._rm = recipe_manager.RecipeManager()

    def add_static_config(self, regex, operation_name, activation_num_bits, weight_num_bits, weight_granularity=None,
                          algorithm_key=None):
        from ai_edge_quantizer import algorithm_manager, qtyping

        self._rm.add_static_config(regex, operation_name, activation_num_bits, weight_num_bits,
                                   weight_granularity or qtyping.QuantGranularity.CHANNELWISE,
                                   algorithm_key or algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT)

    def update_quantization_recipe(self, regex, operation_name, op_config=None, algorithm_key=None):
        from ai_edge_quantizer import algorithm_manager

        self._rm.add_quantization_config(regex, operation_name, op_config,
                                         algorithm_key or algorithm_manager.AlgorithmName.MIN_MAX_UNIFORM_QUANT)

    def get_quantization_recipe(self):
        return self._rm.get_quantization_recipe()


def vendor_a16w8_recipe(allow_float_operations: bool) -> list[dict[str, Any]]:
    """litert-torch 0.10.0's NPU main-model recipe (calib.quant_utils.add_main_model_quant_recipe with
    a16w8): 16-bit activations, 8-bit weights; with `allow_float_operations` False the norms, residual
    adds and composites are quantized too, so the graph has no float compute."""
    from litert_torch.generative.export_hf.experimental.calib import quant_utils

    b = _RecipeBuilder()
    with _quiet():
        quant_utils.add_main_model_quant_recipe(b, allow_float_operations=allow_float_operations, a16w8=True)
    return b.get_quantization_recipe()


class _quiet:
    """litert-torch's recipe functions print; keep stdout for results and --json."""

    def __enter__(self):
        import contextlib
        import io
        import sys

        self._cm = contextlib.redirect_stdout(io.StringIO() if sys.stdout is None else sys.stderr)
        return self._cm.__enter__()

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


OURS: list[Recipe] = [
    Recipe("fp32", "no quantization: float32 weights and activations", 32, 32, None, group="float",
           source="gemma4-mobile"),
    Recipe("dynamic_wi8_emb4_afp32", "int8 weights with int4 embedding tables", 8, 4, None,
           build=_int8_with_int4_embeddings, group="ours", source="gemma4-mobile"),
    Recipe("static_wi4_ai16", "int4 per-channel weights, int16 activations (static, calibrated)", 4, 4, None,
           build=_static_wi4_ai16, group="ours", activation_bits=16, source="gemma4-mobile"),
    Recipe("npu_a16w8_qualcomm", "Qualcomm HTP: int8 weights, int16 activations, no float ops "
           "(litert-torch's NPU recipe; calibrated)", 8, 8, None,
           build=functools.partial(vendor_a16w8_recipe, False), group="ours", activation_bits=16,
           source="gemma4-mobile", npu_vendor="qualcomm"),
    Recipe("npu_a16w8_mediatek", "MediaTek APU: int8 weights, int16 activations, float norms allowed "
           "(litert-torch's NPU recipe; calibrated)", 8, 8, None,
           build=functools.partial(vendor_a16w8_recipe, True), group="ours", activation_bits=16,
           source="gemma4-mobile", npu_vendor="mediatek"),
]


def _all_recipes() -> dict[str, Recipe]:
    out = {r.name: r for r in OURS}
    for name in library_recipe_names():
        out.setdefault(name, _library_entry(name))
    return out


RECIPES: dict[str, Recipe] = _all_recipes()
ALIASES = {"none": "fp32", "float": "fp32", "float32": "fp32", "int8": "dynamic_wi8_afp32",
           "int4": "dynamic_wi4b32_afp32", "int4_blockwise": "dynamic_wi4b32_afp32",
           "w8a8": "static_wi8_ai8", "w8a16": "static_wi8_ai16", "a16w8": "static_wi8_ai16",
           "w4a16": "static_wi4_ai16"}
# The vendors' a16w8 (litert-torch's NPU pipeline) by vendor.
NPU_RECIPES = {"qualcomm": "npu_a16w8_qualcomm", "mediatek": "npu_a16w8_mediatek"}


def grouped() -> dict[str, list[Recipe]]:
    out: dict[str, list[Recipe]] = {g: [] for g in GROUPS if g != "file"}
    for r in RECIPES.values():
        out.setdefault(r.group, []).append(r)
    return out


# ---- recipe JSON files ----------------------------------------------------------------------------
def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".json") or "/" in spec or spec.startswith(".")


def _entry_error(path: Path, where: str, problem: str) -> UserError:
    return UserError(f"recipe file {path}: {where} {problem}",
                     "each entry needs regex, operation, algorithm_key and op_config as ai-edge-quantizer writes "
                     "them (see its recipes/*.json)")


def _check_entries(path: Path, entries: Any, where: str) -> None:
    from ai_edge_quantizer import recipe_manager

    if not isinstance(entries, list) or not entries:
        raise _entry_error(path, where, "must be a non-empty list of op configs")
    for i, e in enumerate(entries):
        label = f"{where}[{i}]"
        if not isinstance(e, dict):
            raise _entry_error(path, label, "is not an object")
        missing = [k for k in ("regex", "operation", "algorithm_key") if k not in e]
        if e.get("algorithm_key") != "no_quantize" and "op_config" not in e:
            missing.append("op_config")
        if missing:
            raise _entry_error(path, label, f"lacks {', '.join(missing)}")
        try:
            re.compile(e["regex"])
        except (re.error, TypeError) as err:
            raise _entry_error(path, label, f"regex {e['regex']!r} is not a regular expression ({err})") from None
        from ai_edge_quantizer import algorithm_manager, qtyping

        checks = (("operation", e["operation"], [o.value for o in qtyping.TFLOperationName]),
                  ("algorithm_key", e["algorithm_key"], [a.value for a in algorithm_manager.AlgorithmName]))
        for key, value, allowed in checks:
            if value not in allowed:
                raise _entry_error(path, label, f"{key} {value!r} is not one of ai-edge-quantizer's")
        for tc in ("weight_tensor_config", "activation_tensor_config"):
            gran = ((e.get("op_config") or {}).get(tc) or {}).get("granularity")
            if gran is not None and gran not in [g.value for g in qtyping.QuantGranularity]:
                raise _entry_error(path, label, f"op_config.{tc}.granularity {gran!r} is not one of "
                                                f"{', '.join(g.value for g in qtyping.QuantGranularity)}")
        for tc in ("weight_tensor_config", "activation_tensor_config"):
            bits = ((e.get("op_config") or {}).get(tc) or {}).get("num_bits")
            if bits is not None and (not isinstance(bits, int) or isinstance(bits, bool) or bits not in (2, 4, 8, 16)):
                raise _entry_error(path, label, f"op_config.{tc}.num_bits = {bits!r} is not 2, 4, 8 or 16")
        try:
            recipe_manager.RecipeManager().load_quantization_recipe([e])
        except Exception as err:  # noqa: BLE001 - the quantizer's own verdict, in one line
            msg = " ".join(f"{type(err).__name__}: {err}".split())[:200]
            raise _entry_error(path, label, f"is refused by ai-edge-quantizer ({msg})") from None


def _entry_bits(entries: list[dict[str, Any]]) -> tuple[float, int | None]:
    """Weight bits of the broadest entry (later entries override earlier ones) and activation bits."""
    wbits, abits = 32.0, None
    for e in entries:
        cfg = e.get("op_config") or {}
        w = cfg.get("weight_tensor_config") or {}
        if w.get("num_bits"):
            gran = str(w.get("granularity", ""))
            m = re.search(r"BLOCKWISE_(\d+)", gran)
            wbits = float(w["num_bits"]) + _block_overhead(int(m.group(1)) if m else None)
        a = cfg.get("activation_tensor_config") or {}
        if a.get("num_bits") and cfg.get("compute_precision", "INTEGER") == "INTEGER" and not cfg.get(
                "explicit_dequantize"):
            abits = int(a["num_bits"])
    return wbits, abits


def load_recipe_file(spec: str | Path) -> Recipe:
    """A recipe JSON file, validated entry by entry with ai-edge-quantizer's recipe manager."""
    path = Path(spec).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"recipe file {path} does not exist",
                        "pass a recipe name (see `--recipe list`) or the path of a recipe JSON file") from None
    except OSError as e:
        raise UserError(f"cannot read recipe file {path} ({e.strerror})", "check the path and permissions") from None
    try:
        cfg = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"line {e.lineno}, column {e.colno}: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)
        raise UserError(f"recipe file {path} is not valid JSON ({where})", "fix the JSON syntax") from None
    if isinstance(cfg, dict):
        if not cfg:
            raise _entry_error(path, "the top-level object", "names no section")
        unknown = [k for k in cfg if k not in SECTIONS]
        if unknown:
            raise UserError(f"recipe file {path}: unknown section {unknown[0]!r}",
                            f"section keys are: {', '.join(SECTIONS)}")
        for k, v in cfg.items():
            _check_entries(path, v, k)
        main = cfg.get("tf_lite_prefill_decode") or next(iter(cfg.values()))
        emb = cfg.get("tf_lite_embedder") or main
    else:
        _check_entries(path, cfg, "entry")
        main = emb = cfg
    wbits, abits = _entry_bits(main)
    ebits, _ = _entry_bits(emb)
    # A partial, not a lambda: the plan travels to the conversion's child process.
    return Recipe(path.stem, f"recipe file {path}", wbits, ebits, None,
                  build=functools.partial(json.loads, json.dumps(cfg)),
                  group="file", activation_bits=abits, source=str(path.resolve()),
                  sha256=hashlib.sha256(data).hexdigest())


# ---- lookup ---------------------------------------------------------------------------------------
def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(RECIPES) + list(ALIASES), n=3, cutoff=0.6)
    return f"did you mean {', '.join(close)}? " if close else ""


def get_recipe(name: str) -> Recipe:
    spec = str(name).strip()
    key = ALIASES.get(spec.lower(), spec)
    if key in RECIPES:
        return RECIPES[key]
    if _looks_like_path(spec) or Path(spec).expanduser().is_file():
        return load_recipe_file(spec)
    raise UserError(f"unknown recipe {name!r}",
                    f"{_suggest(spec)}see `gemma4-mobile convert --recipe list` for the {len(RECIPES)} recipes, "
                    "or pass the path of a recipe JSON file")


def parse_recipes(spec: list[str]) -> list[Recipe]:
    out: list[Recipe] = []
    for item in spec:
        # A path may hold a comma; treat an existing file as one item.
        parts = [item] if Path(str(item)).expanduser().is_file() else str(item).split(",")
        for part in parts:
            if part.strip():
                r = get_recipe(part)
                if r not in out:
                    out.append(r)
    if not out:
        raise UserError("no recipe given", "pass --recipe NAME (see `--recipe list`)")
    return out


def list_rows() -> list[dict[str, Any]]:
    """`--recipe list` as rows: group, name, bits per weight, calibration, description."""
    return [r.to_dict() for rs in grouped().values() for r in rs]


def describe_list() -> str:
    lines = []
    for g, rs in grouped().items():
        if not rs:
            continue
        lines.append(f"{GROUPS[g]}:")
        for r in rs:
            act = f"a{r.activation_bits}" if r.activation_bits else "afp"
            lines.append(f"  {r.name:<24} ~{r.weight_bits:g} bits/weight  {act:<4} {r.description}")
    lines.append("aliases: " + ", ".join(f"{k}={v}" for k, v in ALIASES.items()))
    lines.append("or a recipe JSON file: --recipe path/to/recipe.json (ai-edge-quantizer's format)")
    return "\n".join(lines)


def with_name(recipe: Recipe, name: str) -> Recipe:
    return replace(recipe, name=name)
