"""NPU targets: the Qualcomm/MediaTek SoC catalog, per-SoC delegate configs and AOT compilation."""

from converters.npu.catalog import SocInfo, all_socs, get_soc, lookup_soc, parse_target, parse_targets
from converters.npu.configs import (
    compile_flags,
    default_config,
    load_config_file,
    runtime_flags,
    validate_config,
)

__all__ = [
    "SocInfo",
    "all_socs",
    "get_soc",
    "lookup_soc",
    "parse_target",
    "parse_targets",
    "default_config",
    "validate_config",
    "load_config_file",
    "compile_flags",
    "runtime_flags",
]
