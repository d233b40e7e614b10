"""Third-party noise kept out of the CLI's output unless verbose: torchao's failed loads of its
optional CUDA kernels, torch's `_pytree` deprecation warnings, LiteRT/TFLite `INFO:` lines,
transformers' deprecation notes and progress bars. Only known lines below ERROR are hidden; errors
always pass."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import warnings

from gemma4_common.config import env_flag, env_name

# Lines (or log messages) that are known noise, by source.
NOISE = [
    re.compile(r"Failed to load \S+\.so\b"),  # torchao: its CUDA kernels, on a CPU-only host
    re.compile(r"is an Enum subclass and is now natively supported by torch\.compile"),  # torch _pytree
    re.compile(r"^(INFO|VERBOSE): "),  # LiteRT / TFLite native logging
    re.compile(r"^I\d{4} \d\d:\d\d:\d\d"),  # absl C++ INFO lines (I1201 19:40:20.48 ...)
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"),
    re.compile(r"\b(is|are) deprecated\b.*\b(removed|future|version)\b|\bdeprecated\b.*\buse\b", re.I),
]
# What an error looks like: such a line is never noise.
ERROR = re.compile(r"^(E|F)\d{4} |\b(ERROR|FATAL|Error|Exception|Traceback)\b")

# The loggers that the noise above comes through (logging.Logger filters see only records
# logged on the logger itself, so each is named).
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "absl", "tensorflow", "litert_torch", "ai_edge_quantizer",
                 "transformers", "transformers.modeling_utils", "transformers.configuration_utils",
                 "transformers.tokenization_utils_base")
# Modules whose DeprecationWarning/FutureWarning (warnings module) are theirs to fix, not ours.
NOISY_MODULES = r"(torch|torchao|transformers|tokenizers|litert_torch|litert_lm|ai_edge_\w+|tensorflow|jax|absl)(\.|$)"


def is_noise(line: str) -> bool:
    """True for a known third-party noise line; never for one that reads like an error."""
    line = line.strip()
    return bool(line) and not ERROR.search(line) and any(p.search(line) for p in NOISE)


class NoiseFilter(logging.Filter):
    """Drops a record below ERROR whose message is known noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        try:
            return not is_noise(record.getMessage())
        except Exception:  # a record whose arguments do not format: let logging report it
            return True


_FILTER = NoiseFilter()


def quiet_third_party(verbose: bool = False) -> bool:
    """Hide the known noise in this process (call it before the libraries are imported: some log
    at import), and keep native INFO logging out of the processes it starts. Verbose (the argument
    or $GEMMA4_MOBILE_VERBOSE) hides nothing and exports the variable, so that child processes and
    LiteRT-LM's captured log (on_device.engine) show everything too. Returns the verbosity used."""
    if verbose or env_flag("VERBOSE"):
        os.environ[env_name("VERBOSE")] = "1"
        return True
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category, module=NOISY_MODULES)
    # Native TF/TFLite logging of the conversion (its log's tail is what a failed step shows): INFO
    # off, warnings and errors kept. A value the user set wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # Their progress bars (transformers' "Writing model shards", hub downloads): the caller's step
    # reports that work. Read when huggingface_hub is imported; switched off directly if it was.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "huggingface_hub" in sys.modules:
        with contextlib.suppress(Exception):
            sys.modules["huggingface_hub"].utils.disable_progress_bars()
    return False
