"""Quoting of device shell commands: the only place a device command line is built from parts."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Iterable


def quote(arg: str | PurePosixPath | int | float) -> str:
    return shlex.quote(str(arg))


def join(argv: Iterable[str | PurePosixPath | int | float]) -> str:
    """A device command line from argv; every element is quoted."""
    return " ".join(quote(a) for a in argv)
