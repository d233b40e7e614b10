"""Tiny multimodal Gemma 4 checkpoints of the real architecture (`Gemma4ForConditionalGeneration`:
text decoder with per-layer embeddings and KV sharing, vision tower, audio tower, and the two
multimodal embedders), random weights, with the tokenizer, image processor and audio feature
extractor saved so that litert-torch can export the encoders. Cached by content hash.

Shapes litert-torch's Gemma 4 encoder export fixes (so the tiny towers keep them): the vision
adapter's sample input is as wide as one 16x16x3 patch (768), so the vision hidden size is 768; the
audio encoder takes 128 mel bins and its adapter 1536-wide features, so output_proj_dims is 1536;
transformers sizes the audio input projection from subsampling_conv_channels[0] // 4 (it assumes the
first conv has as many channels as there are mel bins), so that stays 128.
Everything else (layers, MLP widths, positions) is small.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from gemma4_common.fsutil import atomic_dir
from sdk_tools.tinymodels import build, corpus

MM_VERSION = 1

# The placeholders LiteRT-LM's Gemma 4 data processor looks for in the rendered prompt, and the
# begin/end markers it inserts around each image / audio clip (its defaults).
MM_TOKENS = {
    "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
    "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>", "audio_token": "<audio_soft_token>",
}

# Image items render as <start_of_image>, audio items as <start_of_audio>; text as is.
MM_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- for m in messages -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "<|turn>{{ role }}\n"
    "{%- if m['content'] is string -%}{{ m['content'] | trim }}"
    "{%- else -%}{%- for item in m['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{ item['text'] | trim }}"
    "{%- elif item['type'] == 'image' -%}<start_of_image>"
    "{%- elif item['type'] == 'audio' -%}<start_of_audio>"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "<turn|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|turn>model\n{%- endif -%}"
)

TEXT = dict(hidden_size=64, num_hidden_layers=10, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
            global_head_dim=32, intermediate_size=128, num_kv_shared_layers=5, use_double_wide_mlp=True,
            hidden_size_per_layer_input=16, sliding_window=64)
VISION = dict(hidden_size=768, intermediate_size=128, num_hidden_layers=1, num_attention_heads=12,
              num_key_value_heads=12, head_dim=64, patch_size=16, pooling_kernel_size=3,
              position_embedding_size=256, use_clipped_linears=True, standardize=False)
AUDIO = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, subsampling_conv_channels=[128, 8],
             conv_kernel_size=5, attention_chunk_size=12, attention_context_left=13, attention_context_right=0,
             output_proj_dims=1536, residual_weight=0.5, use_clipped_linears=True)
VOCAB = 512
SEED = 0


def key() -> str:
    blob = json.dumps({"text": TEXT, "vision": VISION, "audio": AUDIO, "vocab": VOCAB, "tokens": MM_TOKENS,
                       "template": MM_CHAT_TEMPLATE, "v": MM_VERSION, "corpus": corpus.CORPUS_VERSION,
                       "seed": SEED}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def build_tiny_multimodal(root: Path | None = None, *, force: bool = False) -> Path:
    """Directory of the tiny multimodal checkpoint (built on first use, then cached)."""
    root = root or build.cache_root() / "tiny"
    final = root / f"e2b-mm-tiny-{key()}"
    if (final / "model.safetensors").is_file() and not force:
        return final
    with build._cache_lock(final):
        if (final / "model.safetensors").is_file() and not force:
            return final
        _build(final)
    return final


def make_tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    base = build.make_tokenizer(corpus.training_texts(SEED), VOCAB)
    backend = base.backend_tokenizer
    backend.add_special_tokens(list(MM_TOKENS.values()))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  extra_special_tokens={**build.EXTRA_SPECIAL, **MM_TOKENS}, model_max_length=4096)
    tok.chat_template = MM_CHAT_TEMPLATE
    return tok


def make_config(tok) -> Any:
    from transformers import Gemma4AudioConfig, Gemma4Config, Gemma4TextConfig, Gemma4VisionConfig

    S, F = build.S, build.F
    ids = tok.convert_tokens_to_ids
    v = len(tok)
    text = Gemma4TextConfig(
        vocab_size=v, vocab_size_per_layer_input=v, layer_types=[S, S, S, S, F] * 2,
        final_logit_softcapping=30.0, max_position_embeddings=4096, tie_word_embeddings=True,
        pad_token_id=ids("<pad>"), bos_token_id=ids("<bos>"),
        eos_token_id=[ids("<eos>"), ids("<turn|>")], **TEXT)
    return Gemma4Config(
        text_config=text, vision_config=Gemma4VisionConfig(**VISION), audio_config=Gemma4AudioConfig(**AUDIO),
        boi_token_id=ids(MM_TOKENS["boi_token"]), eoi_token_id=ids(MM_TOKENS["eoi_token"]),
        image_token_id=ids(MM_TOKENS["image_token"]), boa_token_id=ids(MM_TOKENS["boa_token"]),
        eoa_token_index=ids(MM_TOKENS["eoa_token"]), eoa_token_id=ids(MM_TOKENS["eoa_token"]),
        audio_token_id=ids(MM_TOKENS["audio_token"]), video_token_id=ids(MM_TOKENS["image_token"]),
        eos_token_id=[ids("<eos>"), ids("<turn|>")], tie_word_embeddings=True,
    )


def _build(final: Path) -> None:
    import torch
    from transformers import Gemma4ForConditionalGeneration
    from transformers.models.gemma4.feature_extraction_gemma4 import Gemma4AudioFeatureExtractor
    # the PIL image processor: torchvision-free
    from transformers.models.gemma4.image_processing_pil_gemma4 import Gemma4ImageProcessorPil as Gemma4ImageProcessor

    torch.manual_seed(SEED)
    tok = make_tokenizer()
    cfg = make_config(tok)
    model = Gemma4ForConditionalGeneration(cfg).eval()
    image_processor = Gemma4ImageProcessor(patch_size=VISION["patch_size"],
                                           pooling_kernel_size=VISION["pooling_kernel_size"])
    feature_extractor = Gemma4AudioFeatureExtractor(feature_size=128)
    with atomic_dir(final, replace=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # AutoImageProcessor and AutoFeatureExtractor both read preprocessor_config.json; one file
        # carries the fields of both (the class keys tell each loader which class to build).
        image_processor.save_pretrained(tmp)
        ip = json.loads((tmp / "preprocessor_config.json").read_text())
        feature_extractor.save_pretrained(tmp)
        fe = json.loads((tmp / "preprocessor_config.json").read_text())
        (tmp / "preprocessor_config.json").write_text(json.dumps({**fe, **ip}, indent=2))
        (tmp / "tiny_model_card.json").write_text(json.dumps({
            "name": "e2b-mm-tiny", "mirrors": "e2b", "key": key(), "random_weights": True,
            "text": TEXT, "vision": VISION, "audio": AUDIO, "tokens": MM_TOKENS,
            "num_parameters": sum(p.numel() for p in model.parameters()),
        }, indent=2))
