"""Inspect and validate a Hugging Face Gemma 4 checkpoint directory and detect its variant."""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from converters.presets import PRESETS, identifying
from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json

GEMMA4_MODEL_TYPES = {"gemma4", "gemma4_text"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")

# Published text configs of the real edge models (the fields that identify them; converters.presets).
KNOWN_VARIANTS: dict[str, dict[str, int]] = {name: identifying(name) for name in PRESETS}


@dataclass
class CheckpointInfo:
    path: Path
    model_type: str
    multimodal: bool
    variant: str  # "e2b" | "e4b" | "custom"
    text_config: dict[str, Any]
    tokenizer_file: str
    weight_files: list[str]
    num_parameters: int
    has_vision: bool = False
    has_audio: bool = False
    layer_types: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        d.pop("text_config")
        tc = self.text_config
        d["shape"] = {k: tc.get(k) for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "global_head_dim", "intermediate_size", "vocab_size", "num_kv_shared_layers",
            "hidden_size_per_layer_input", "use_double_wide_mlp", "sliding_window",
            "final_logit_softcapping")}
        d["layer_types"] = {"sliding": self.layer_types.count("sliding_attention"),
                            "full": self.layer_types.count("full_attention")}
        return d


def safetensors_tensors(path: Path) -> dict[str, dict[str, Any]]:
    """Parse a safetensors header and check that the file holds every byte it declares."""
    fix = "re-download or re-save the checkpoint (e.g. model.save_pretrained)"
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path.name} is truncated (no safetensors header)", fix)
        (hlen,) = struct.unpack("<Q", head)
        if hlen <= 0 or hlen > min(size - 8, 100 << 20):
            raise UserError(f"{path.name} is corrupt (header length {hlen} does not fit a {size}-byte file)", fix)
        try:
            header = json.loads(f.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path.name} is corrupt (unreadable safetensors header)", fix) from None
    if not isinstance(header, dict):
        raise UserError(f"{path.name} is corrupt (its safetensors header is a JSON {type(header).__name__}, "
                        "not an object)", fix)
    header.pop("__metadata__", None)
    end = 0
    for name, meta in header.items():
        try:
            lo, hi = meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path.name} is corrupt (tensor {name} has no data offsets)", fix) from None
        if not all(type(v) is int and v >= 0 for v in (lo, hi)) or lo > hi:
            raise UserError(f"{path.name} is corrupt (tensor {name} has data offsets {[lo, hi]!r}, "
                            "not two whole numbers in order)", fix)
        shape = meta.get("shape", [])
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise UserError(f"{path.name} is corrupt (tensor {name} has shape {shape!r})", fix)
        end = max(end, hi)
    if 8 + hlen + end > size:
        raise UserError(
            f"{path.name} is truncated: header declares {8 + hlen + end} bytes, file has {size}", fix)
    return header


def _numel(shape: list[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def detect_variant(tc: dict[str, Any]) -> str:
    for name, ref in KNOWN_VARIANTS.items():
        if all(tc.get(k) == v for k, v in ref.items()):
            return name
    return "custom"


def read_config(cfg_path: Path) -> dict[str, Any]:
    """config.json as a dict whose model_type is a string (its value is checked by the caller)."""
    cfg = read_json(cfg_path, "fix or re-download config.json")
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_path} holds a JSON {type(cfg).__name__}, not an object",
                        "use the config.json that came with the checkpoint")
    model_type = cfg.get("model_type")
    if not isinstance(model_type, str):
        raise UserError(f"{cfg_path}: model_type is {model_type!r}, not a name",
                        "use the config.json that came with the checkpoint (model_type gemma4 or gemma4_text)")
    return cfg


def inspect_checkpoint(path: Path | str) -> CheckpointInfo:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint directory {path} does not exist",
                        "pass the directory holding config.json and *.safetensors")
    if not path.is_dir():
        raise UserError(f"{path} is not a directory", "pass the checkpoint directory, not a file")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{path} has no config.json", "pass a Hugging Face checkpoint directory")
    cfg = read_config(cfg_path)
    model_type = cfg["model_type"]
    if model_type not in GEMMA4_MODEL_TYPES:
        raise UserError(f"{path} holds a {model_type!r} checkpoint, not Gemma 4",
                        "gemma4-mobile converts Gemma 4 checkpoints (model_type gemma4 or gemma4_text)")
    multimodal = model_type == "gemma4"
    tc = cfg.get("text_config", {}) if multimodal else cfg
    if not isinstance(tc, dict) or "hidden_size" not in tc:
        raise UserError(f"{cfg_path} has no usable text config (hidden_size missing)",
                        "use the config.json that came with the checkpoint")
    tok = next((n for n in TOKENIZER_FILES if (path / n).is_file()), None)
    if tok is None:
        raise UserError(f"{path} has no tokenizer (tokenizer.json or tokenizer.model)",
                        "copy the tokenizer files of the model into the checkpoint directory")
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    if not weights:
        raise UserError(f"{path} has no *.safetensors weights",
                        "save the model with safetensors (save_pretrained does by default)")
    nparams = 0
    for w in weights:
        for meta in safetensors_tensors(path / w).values():
            nparams += _numel(meta.get("shape", []))
    return CheckpointInfo(
        path=path, model_type=model_type, multimodal=multimodal, variant=detect_variant(tc),
        text_config=tc, tokenizer_file=tok, weight_files=weights, num_parameters=nparams,
        has_vision=multimodal and bool(cfg.get("vision_config")),
        has_audio=multimodal and bool(cfg.get("audio_config")),
        layer_types=list(tc.get("layer_types") or []),
    )


def checkpoint_hash(path: Path | str) -> str:
    """sha256 over the names and contents of the files that define the model (sorted)."""
    path = Path(path)
    h = hashlib.sha256()
    for p in sorted(path.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix not in (".json", ".safetensors", ".model", ".jinja", ".txt"):
            continue
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()
