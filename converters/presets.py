"""Published configs of the real Gemma 4 edge models (E2B, E4B) as data: text, vision and audio
towers, so that the planner and variant detection know them without downloading anything."""

from __future__ import annotations

import copy
from typing import Any

S, F = "sliding_attention", "full_attention"

# Shared by both edge models (google/gemma-4-E2B-it and -E4B-it config.json).
VISION_CONFIG: dict[str, Any] = {
    "model_type": "gemma4_vision", "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 16,
    "num_attention_heads": 12, "num_key_value_heads": 12, "head_dim": 64, "patch_size": 16,
    "pooling_kernel_size": 3, "position_embedding_size": 10240, "use_clipped_linears": True,
    "standardize": False,
}
AUDIO_CONFIG: dict[str, Any] = {
    "model_type": "gemma4_audio", "hidden_size": 1024, "num_hidden_layers": 12, "num_attention_heads": 8,
    "subsampling_conv_channels": [128, 32], "conv_kernel_size": 5, "attention_chunk_size": 12,
    "attention_context_left": 13, "attention_context_right": 0, "output_proj_dims": 1536,
    "residual_weight": 0.5, "use_clipped_linears": True,
}
# Special token ids of the multimodal checkpoints.
MULTIMODAL_TOKENS: dict[str, int] = {
    "boi_token_id": 255_999, "eoi_token_id": 258_882, "image_token_id": 258_880, "video_token_id": 258_884,
    "boa_token_id": 256_000, "eoa_token_index": 258_883, "audio_token_id": 258_881,
}

# Parameter counts of the towers (transformers Gemma4VisionModel / Gemma4AudioModel built from the
# configs above; tests/test_planner.py recounts them on the meta device). The "adapter" is
# Gemma4MultimodalEmbedder, which projects tower features to the text hidden size.
VISION_ENCODER_PARAMS = 167_364_608
AUDIO_ENCODER_PARAMS = 304_824_608


def _text(hidden: int, layers: int, period: int, kv_heads: int, shared: int, inter: int, double_wide: bool):
    return {
        "model_type": "gemma4_text", "hidden_size": hidden, "num_hidden_layers": layers,
        "layer_types": ([S] * (period - 1) + [F]) * (layers // period),
        "num_attention_heads": 8, "num_key_value_heads": kv_heads, "num_global_key_value_heads": None,
        "head_dim": 256, "global_head_dim": 512, "intermediate_size": inter, "use_double_wide_mlp": double_wide,
        "num_kv_shared_layers": shared, "vocab_size": 262_144, "vocab_size_per_layer_input": 262_144,
        "hidden_size_per_layer_input": 256, "sliding_window": 512, "final_logit_softcapping": 30.0,
        "max_position_embeddings": 131_072, "tie_word_embeddings": True, "attention_k_eq_v": False,
        "hidden_activation": "gelu_pytorch_tanh", "rms_norm_eps": 1e-6,
    }


PRESETS: dict[str, dict[str, Any]] = {
    # E2B: 35 layers, 4 sliding : 1 full, 8/1 heads, last 20 layers reuse KV, double-wide MLP there.
    "e2b": {"model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"],
            "text_config": _text(1536, 35, 5, 1, 20, 6144, True),
            "vision_config": VISION_CONFIG, "audio_config": AUDIO_CONFIG, **MULTIMODAL_TOKENS},
    # E4B: 42 layers, 5 sliding : 1 full, 8/2 heads, last 18 layers reuse KV.
    "e4b": {"model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"],
            "text_config": _text(2560, 42, 6, 2, 18, 10240, False),
            "vision_config": VISION_CONFIG, "audio_config": AUDIO_CONFIG, **MULTIMODAL_TOKENS},
}

# The text-config fields that identify a variant (used by converters.checkpoint.detect_variant).
IDENTIFYING_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                      "num_kv_shared_layers")


def get_preset(name: str) -> dict[str, Any]:
    """A deep copy of the full multimodal config of `name` ("e2b" or "e4b")."""
    return copy.deepcopy(PRESETS[name.lower()])


def identifying(name: str) -> dict[str, int]:
    tc = PRESETS[name]["text_config"]
    return {k: tc[k] for k in IDENTIFYING_FIELDS}
