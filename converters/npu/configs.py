"""Per-SoC NPU delegate/runtime configs: defaults, JSON-schema validation, and their translation into
LiteRT's vendor flags (--qualcomm_* / --mediatek_*) for the AOT compiler and the device runtime."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any, Mapping

from converters.npu.catalog import NEUROPILOT_SDK_VERSION_TYPE, SocInfo
from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json
from gemma4_common.json_schema import value_errors

SCHEMA_VERSION = 1
_SCHEMA_DIR = Path(__file__).parent / "schemas"

# Where each option takes effect. Compile options are passed to LiteRT's compiler plugin; runtime
# options are what the dispatch library reads on the phone. The HTP performance mode must stay at
# its default while compiling (qualcomm_flags.cc), so it is runtime-only.
_QUALCOMM_PHASE = {
    "htp_performance_mode": "runtime",
    "optimization_level": "compile",
    "enable_weight_sharing": "compile",
    "profiling": "runtime",
    "log_level": "both",
    "graph_priority": "runtime",
    "use_conv_hmx": "compile",
    "use_fold_relu": "compile",
    "use_int64_bias_as_int32": "compile",
    "vtcm_size": "compile",
    "num_hvx_thread": "compile",
    "htp_p_point": "compile",
}
_MEDIATEK_PHASE = {
    "sdk_version_type": "compile",
    "performance_mode_type": "both",
    "optimization_hint": "both",
    "enable_gemma_compiler_optimizations": "compile",
    "enable_l1_cache_optimizations": "compile",
    "use_get_supported_operations": "compile",
}

# Section defaults follow litert-torch's LiteRT-LM NPU compiler (litert_lm_npu_compiler_configs.
# GENERIC_DEFAULT_CONFIGS); a test checks they agree with the installed package.
_QUALCOMM_SECTIONS = {
    "prefill_decode": True,
    "aux": True,
    "text_encoder": True,
    "audio_encoder_hw": True,
    "vision_encoder": False,
}
_MEDIATEK_SECTIONS = {
    "prefill_decode": True,
    "text_encoder": True,
    "audio_encoder_hw": False,
    "vision_encoder": True,
}

# HTP weight sharing between graphs arrived with v73 (Snapdragon 8 Gen 2).
_WEIGHT_SHARING_MIN_HTP = 73


def _htp_version(soc: SocInfo) -> int:
    return int(soc.arch.lstrip("vV"))


@functools.cache
def load_schema(vendor: str) -> dict:
    return json.loads((_SCHEMA_DIR / f"{vendor}.json").read_text())


def default_config(soc: SocInfo) -> dict:
    """The default config for `soc` (tuned for LLM decode latency, as LiteRT-LM's defaults are)."""
    if soc.vendor == "qualcomm":
        options: dict[str, Any] = {
            "htp_performance_mode": "burst",
            "optimization_level": "O3",
            "enable_weight_sharing": _htp_version(soc) >= _WEIGHT_SHARING_MIN_HTP,
            "profiling": "off",
            "log_level": "off",
            "graph_priority": "default",
            "use_conv_hmx": True,
            "use_fold_relu": True,
            "use_int64_bias_as_int32": True,
            "vtcm_size": 0,
            "num_hvx_thread": 0,
            "htp_p_point": 0,
        }
        sections = dict(_QUALCOMM_SECTIONS)
    else:
        options = {
            "sdk_version_type": NEUROPILOT_SDK_VERSION_TYPE[soc.arch],
            "performance_mode_type": "turbo_boost",
            "optimization_hint": "low_latency",
            "enable_gemma_compiler_optimizations": True,
            "enable_l1_cache_optimizations": True,
            "use_get_supported_operations": True,
        }
        sections = dict(_MEDIATEK_SECTIONS)
    return {
        "schema_version": SCHEMA_VERSION,
        "vendor": soc.vendor,
        "soc": soc.model,
        "options": options,
        "sections": sections,
    }


def _merge(base: dict, override: Mapping[str, Any]) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _schema_at(schema: dict, path: list) -> dict:
    node = schema
    for p in path:
        node = node.get("properties", {}).get(p, {})
    return node


def _user_error(soc: SocInfo, err: Any, schema: dict) -> UserError:  # err: jsonschema.ValidationError
    where = ".".join(str(p) for p in err.absolute_path)
    label = f"{soc.target} config"
    if err.validator == "additionalProperties":
        allowed = sorted(_schema_at(schema, list(err.absolute_path)).get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed)) if isinstance(err.instance, dict) else []
        keys = ", ".join(f"{where}.{k}" if where else k for k in extra)
        return UserError(
            f"{label}: unknown key {keys}",
            f"allowed keys{' in ' + where if where else ''}: {', '.join(allowed)}",
        )
    if err.validator == "enum":
        return UserError(
            f"{label}: {where} = {err.instance!r} is not allowed",
            f"use one of: {', '.join(map(str, err.validator_value))}",
        )
    if err.validator == "const":
        return UserError(f"{label}: {where} = {err.instance!r} is not allowed", f"it must be {err.validator_value!r}")
    if err.validator in ("minimum", "maximum"):
        node = err.schema
        return UserError(
            f"{label}: {where} = {err.instance!r} is out of range",
            f"use an integer from {node.get('minimum', '-inf')} to {node.get('maximum', 'inf')}",
        )
    if err.validator == "type":
        return UserError(f"{label}: {where} = {err.instance!r} has the wrong type",
                         f"it must be a {err.validator_value}")
    if err.validator == "required":
        return UserError(f"{label}: {err.message}", "add the key, or start from `gemma4-mobile npu config --soc ...`")
    return UserError(f"{label}: {where or 'config'}: {err.message}",
                     "see `gemma4-mobile npu config --soc ...` for a valid one")


def validate_config(soc: SocInfo, cfg: Mapping[str, Any] | None) -> dict:
    """Merge `cfg` over the SoC's defaults and validate; returns the full config or raises UserError."""
    if cfg is not None and not isinstance(cfg, Mapping):
        raise UserError(f"{soc.target} config must be a JSON object", "see `gemma4-mobile npu config --soc ...`")
    cfg = dict(cfg or {})
    for key, want in (("vendor", soc.vendor), ("soc", soc.model)):
        if key in cfg and cfg[key] != want:
            raise UserError(
                f"{soc.target} config: {key} = {cfg[key]!r} does not match the target",
                f"it must be {want!r} (or leave it out)",
            )
    merged = _merge(default_config(soc), cfg)
    schema = load_schema(soc.vendor)
    errors = value_errors(schema, merged)
    if errors:
        raise _user_error(soc, errors[0], schema)
    _check_soc_limits(soc, merged)
    return merged


def _check_soc_limits(soc: SocInfo, cfg: dict) -> None:
    opts = cfg["options"]
    if soc.vendor == "qualcomm":
        if opts["enable_weight_sharing"] and _htp_version(soc) < _WEIGHT_SHARING_MIN_HTP:
            raise UserError(
                f"{soc.target} config: options.enable_weight_sharing = true is not supported on HTP {soc.arch}",
                f"weight sharing needs HTP v{_WEIGHT_SHARING_MIN_HTP} or newer; set it to false",
            )
        if opts.get("htp_p_point", 0) and opts["optimization_level"] != "O3":
            raise UserError(
                f"{soc.target} config: options.htp_p_point needs optimization_level O3",
                "set optimization_level to \"O3\" or htp_p_point to 0",
            )
    else:
        # A SoC runs models compiled for its own NeuroPilot version or an older one.
        newest = int(soc.arch.lstrip("v"))
        allowed = [v for k, v in NEUROPILOT_SDK_VERSION_TYPE.items() if int(k.lstrip("v")) <= newest]
        if opts["sdk_version_type"] not in allowed:
            raise UserError(
                f"{soc.target} config: options.sdk_version_type = {opts['sdk_version_type']!r} is newer than "
                f"{soc.marketing_name}'s NeuroPilot {soc.arch}",
                f"use one of: {', '.join(allowed)}",
            )
    if not any(cfg["sections"].values()):
        raise UserError(
            f"{soc.target} config: no section is enabled for the NPU",
            "enable at least sections.prefill_decode",
        )


def load_config_file(path: Path | str, soc: SocInfo) -> dict:
    """Read a user's JSON config and return it merged and validated for `soc`."""
    data = read_json(path, "fix the JSON syntax", what="NPU config file")
    if not isinstance(data, dict):
        raise UserError(f"NPU config file {path} must hold a JSON object", "see `gemma4-mobile npu config --soc ...`")
    return validate_config(soc, data)


def _flag_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def vendor_flags(soc: SocInfo, cfg: Mapping[str, Any], phase: str) -> dict[str, str]:
    """LiteRT flag name -> value for `phase` ("compile" or "runtime"), from a validated config."""
    table = _QUALCOMM_PHASE if soc.vendor == "qualcomm" else _MEDIATEK_PHASE
    out: dict[str, str] = {}
    for key, value in cfg["options"].items():
        if table.get(key) in (phase, "both"):
            out[f"{soc.vendor}_{key}"] = _flag_value(value)
    return out


def compile_flags(soc: SocInfo, cfg: Mapping[str, Any]) -> list[str]:
    """`--qualcomm_optimization_level=O3`-style flags for LiteRT's compiler plugin."""
    return [f"--{k}={v}" for k, v in vendor_flags(soc, cfg, "compile").items()]


def runtime_flags(soc: SocInfo, cfg: Mapping[str, Any]) -> list[str]:
    """The runtime side of the config as LiteRT's flag parser spells it (for runners that accept it)."""
    return [f"--{k}={v}" for k, v in vendor_flags(soc, cfg, "runtime").items()]
