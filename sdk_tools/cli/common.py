"""Helpers shared by command modules: JSON output and the rich console."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Progress and human output go to stderr so that stdout stays clean for --json and results.
err_console = Console(stderr=True)
out_console = Console()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()
