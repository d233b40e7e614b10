"""Named quantization recipes: what `--recipe` accepts, and how each maps onto ai-edge-quantizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gemma4_common.errors import UserError


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    weight_bits: float  # average bits per weight of the large matrices (for size planning)
    embedding_bits: float
    quantizer_recipe: str | None  # name in ai_edge_quantizer.recipe, None = float
    build: Callable[[], Any] | None = None  # custom recipe (list of op configs)

    @property
    def is_float(self) -> bool:
        return self.quantizer_recipe is None and self.build is None

    def quantizer_config(self) -> Any:
        from ai_edge_quantizer import recipe as recipe_lib

        if self.build is not None:
            return self.build()
        return getattr(recipe_lib, self.quantizer_recipe)()


def _int8_with_int4_embeddings():
    from ai_edge_quantizer import recipe as recipe_lib

    return recipe_lib.dynamic_wi4c_afp32(
        operation_name=recipe_lib.TFLOperationName.EMBEDDING_LOOKUP,
    ) + recipe_lib.dynamic_wi8c_afp32(
        operation_name=recipe_lib.TFLOperationName.FULLY_CONNECTED,
    )


RECIPES: dict[str, Recipe] = {r.name: r for r in [
    Recipe("fp32", "no quantization: float32 weights and activations", 32, 32, None),
    Recipe("dynamic_wi8_afp32", "int8 per-channel weights, float activations (dynamic range)", 8, 8,
           "dynamic_wi8_afp32"),
    Recipe("dynamic_wi8_emb4_afp32", "int8 weights with int4 embedding tables", 8, 4, None,
           build=_int8_with_int4_embeddings),
    Recipe("dynamic_wi4b32_afp32", "int4 blockwise weights (block 32), float activations", 4.5, 4.5,
           "dynamic_wi4b32_afp32"),
    Recipe("dynamic_wi4c_afp32", "int4 per-channel weights, float activations", 4, 4,
           "dynamic_wi4c_afp32"),
    Recipe("weight_only_wi8_afp32", "int8 weights dequantized at load, float compute", 8, 8,
           "weight_only_wi8_afp32"),
    Recipe("gemma4_mixed48", "Gemma 4 mixed precision: int4 for most weights, int8 where it matters", 5, 4,
           "gemma4_mixed48"),
    Recipe("gemma4_mixed48_b32", "gemma4_mixed48 with 32-wide int4 blocks", 5.5, 4.5, "gemma4_mixed48_b32"),
]}
ALIASES = {"none": "fp32", "float": "fp32", "float32": "fp32", "int8": "dynamic_wi8_afp32",
           "int4": "dynamic_wi4b32_afp32", "int4_blockwise": "dynamic_wi4b32_afp32"}


def get_recipe(name: str) -> Recipe:
    key = ALIASES.get(name.strip().lower(), name.strip())
    if key not in RECIPES:
        known = ", ".join(list(RECIPES) + list(ALIASES))
        raise UserError(f"unknown recipe {name!r}", f"use one of: {known} (see `gemma4-mobile convert --recipe list`)")
    return RECIPES[key]


def parse_recipes(spec: list[str]) -> list[Recipe]:
    out: list[Recipe] = []
    for item in spec:
        for part in item.split(","):
            if part.strip():
                r = get_recipe(part)
                if r not in out:
                    out.append(r)
    if not out:
        raise UserError("no recipe given", "pass --recipe NAME (see `--recipe list`)")
    return out
