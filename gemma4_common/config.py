"""Where gemma4-mobile's settings come from, in one place: its environment variables (one prefix,
GEMMA4_MOBILE_), its state directory and its config file. The CLI resolves settings with these and
passes them down; library code takes them as arguments (the state directory, a cache location
rather than a setting, is the one thing library code asks for itself, through `state_dir()`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


PREFIX = "GEMMA4_MOBILE_"
_LEGACY_PREFIX = "G4M_"  # before 0.1: still read, with a one-time note naming the new variable
_noted: set[str] = set()

# The variables, by suffix: what each is for (README, "Environment").
VARIABLES = {
    "HOME": "state directory (caches, emulators, remembered devices); default ~/.cache/gemma4-mobile",
    "CONFIG": "config file; default $XDG_CONFIG_HOME/gemma4-mobile/config.json",
    "RUNNER": "litert_lm_main to push when --runner is not given",
    "DEVICES": "extra TCP serials (HOST:PORT, comma-separated) that `devices` and `--device all` probe",
    "PUSH_SYNC": ("1: push with sync SEND then sha256sum (for a device whose exec: misbehaves); 0: streamed "
                  "through exec: (default: streamed to a phone; to an emulator, whose CPU is the host's, "
                  "sync from 8 MiB)"),
    "VERBOSE": "1: show third-party log output (as --verbose does)",
}


def env_name(suffix: str) -> str:
    return PREFIX + suffix


def env(suffix: str) -> str | None:
    """$GEMMA4_MOBILE_<suffix>, or the older $G4M_<suffix> (noted once on stderr); None when unset or empty."""
    value = os.environ.get(PREFIX + suffix)
    if value:
        return value
    legacy = os.environ.get(_LEGACY_PREFIX + suffix)
    if legacy:
        if suffix not in _noted:
            _noted.add(suffix)
            print(f"note: ${_LEGACY_PREFIX}{suffix} is now ${PREFIX}{suffix}; the old name still works for now",
                  file=sys.stderr)
        return legacy
    return None


def env_bool(suffix: str) -> bool | None:
    """$GEMMA4_MOBILE_<suffix> as a yes/no: True for 1/true/yes/on, False for 0/false/no/off, None
    when unset or anything else (the caller's default applies)."""
    value = (env(suffix) or "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def env_flag(suffix: str) -> bool:
    return env_bool(suffix) is True


def state_dir() -> Path:
    """The state directory: $GEMMA4_MOBILE_HOME, else ~/.cache/gemma4-mobile."""
    base = env("HOME")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "gemma4-mobile"


def config_file() -> Path:
    explicit = env("CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gemma4-mobile" / "config.json"


def config_value(key: str) -> tuple[Any, Path]:
    """(value of `key` in the config file or None, the file's path); a broken file is a UserError."""
    from gemma4_common.fsutil import read_json

    path = config_file()
    data = read_json(path, "fix it or remove it", what="the config file", missing=None)
    return (data.get(key) if isinstance(data, dict) else None), path
