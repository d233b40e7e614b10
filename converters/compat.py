"""Private details of the pinned litert-torch (0.10.0) that the converters rely on, each behind one
function named for it. tests/test_compat.py fails, naming the installed version to re-check, when an
upgrade changes one of them. (converters.lean's model internals: tests/test_realsize.py.)"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

# The attention implementation export_lib.load_model sets on the configs it loads.
LITERT_TORCH_ATTENTION = "lrt_transposed_attention"


@contextlib.contextmanager
def litert_torch_stop_token_prefixes(prefixes: Sequence[str]) -> Iterator[None]:
    """`litert_lm_builder._STOP_TOKEN_PREFIXES` set to `prefixes` for the block: the punctuation its
    build_llm_metadata puts before every stop string (read at call time), restored after."""
    from litert_torch.generative.export_hf.core import litert_lm_builder

    saved = litert_lm_builder._STOP_TOKEN_PREFIXES
    litert_lm_builder._STOP_TOKEN_PREFIXES = list(prefixes)
    try:
        yield
    finally:
        litert_lm_builder._STOP_TOKEN_PREFIXES = saved


def litert_torch_llm_export_tasks(config: Any) -> list[Callable]:
    """The export_lib tasks litert-torch's `export()` runs for an LLM, in its order, for `config`
    (an ExportableModuleConfig after update_export_config). Left out, as the pipeline does those
    itself: the AOT compile and split-cache auxiliary model (converters.npu) and the packaging
    (converters.export.package, after quantizing)."""
    from litert_torch.generative.export_hf.core import export_lib

    tasks: list[Callable] = []
    if config.externalize_embedder:  # before prefill/decode, as export() has it
        tasks.append(export_lib.export_embedder_model)
    tasks.append(export_lib.export_text_prefill_decode_model)
    tasks.append(export_lib.export_additional_models)
    if config.export_vision_encoder:
        tasks.append(export_lib.export_vision_encoder_models)
    if config.export_audio_encoder:
        tasks.append(export_lib.export_audio_encoder_models_for_llm)
    tasks.append(export_lib.export_tokenizer)
    return tasks


def litert_torch_load_model_settings(config: Any, moe_exports_implementation: str | None) -> None:
    """Set on a transformers config what litert-torch's export_lib.load_model sets on the configs it
    loads: per-layer attribute access, its attention implementation, the experts implementation,
    float32 sub-configs (for a model built here rather than loaded by litert-torch)."""
    import torch

    for c in (config, getattr(config, "text_config", None)):
        if c is not None and hasattr(c, "allow_global_per_layer_attribute_access"):
            c.allow_global_per_layer_attribute_access = True
    config._attn_implementation = LITERT_TORCH_ATTENTION
    if moe_exports_implementation:
        config._experts_implementation = moe_exports_implementation
        if hasattr(config, "text_config"):
            config.text_config._experts_implementation = moe_exports_implementation
    for name in ("text_config", "vision_config", "audio_config"):
        sub = getattr(config, name, None)
        if sub is not None and hasattr(sub, "dtype"):
            sub.dtype = torch.float32


def litert_torch_converter_v2_supported() -> bool:
    """Whether litert-torch's Converter V2 can run here (`litert_torch._convert.converter_v2.is_supported`)."""
    from litert_torch._convert import converter_v2

    return bool(converter_v2.is_supported())
