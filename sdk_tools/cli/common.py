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


class RichProgress:
    """Renders gemma4_common.progress.Progress steps as a rich spinner/bar on stderr."""

    def __new__(cls, enabled: bool = True):
        from gemma4_common.progress import Progress

        class _Rich(Progress):
            def __init__(self, enabled: bool):
                super().__init__()
                from rich.progress import (BarColumn, Progress as RP, SpinnerColumn, TextColumn,
                                           TimeElapsedColumn, TransferSpeedColumn)

                # Bars are for people at a terminal; in pipes and CI logs they are noise around
                # the results and the one-line errors.
                enabled = enabled and err_console.is_terminal
                self.enabled = enabled
                self._rp = RP(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                              TransferSpeedColumn(), TimeElapsedColumn(), console=err_console,
                              transient=False, disable=not enabled)
                self._task = None

            def __enter__(self):
                self._rp.__enter__()
                return self

            def __exit__(self, *exc):
                return self._rp.__exit__(*exc)

            def _start(self, name, total):
                self._task = self._rp.add_task(name, total=total)

            def _end(self, name):
                if self._task is not None:
                    t = self._rp.tasks[-1]
                    self._rp.update(self._task, completed=t.total if t.total else 1, total=t.total or 1)
                    self._task = None

            def advance(self, amount):
                if self._task is not None:
                    self._rp.advance(self._task, amount)

            def note(self, message):
                if self.enabled:
                    self._rp.console.print(message, highlight=False)

        return _Rich(enabled)
