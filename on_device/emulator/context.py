"""What the emulator hands to the device-side runner when the shell executes a runner file."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .profiles import DeviceProfile


@dataclass
class RunnerContext:
    """The runner's view of the phone: sandboxed paths, its output streams, the device profile,
    the environment of the command line (e.g. LD_LIBRARY_PATH=... prefixes) and the working dir.

    `open_file` and `listdir` are the race-free ways in (a directory fd walk inside the sandbox);
    `resolve` only names the in-sandbox host path (for logs and tests): opening it would follow a
    symlink that a concurrent client swapped in."""

    resolve: Callable[[str], Path]  # device path -> host path inside the sandbox; raises on escape
    stdout: Callable[[bytes], None]
    stderr: Callable[[bytes], None]
    profile: DeviceProfile
    env: dict[str, str]
    cwd: str
    # Set when the client went away (stream closed); a long runner may stop early.
    cancelled: threading.Event = field(default_factory=threading.Event)
    open_file: Callable[[str], int] | None = None  # device path -> read-only fd of a regular file
    listdir: Callable[[str], list[str]] | None = None  # device path -> names in that directory
    # A host directory of the emulator's own (off the device) for LiteRT-LM's weight cache, which
    # litert_lm_main on a phone keeps next to the model; None: no cache.
    engine_cache_dir: Path | None = None
