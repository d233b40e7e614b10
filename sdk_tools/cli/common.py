"""Helpers shared by command modules: JSON output and listings, the rich consoles, and the one rich renderer of
the progress protocol (gemma4_common.progress)."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, Callable, Iterable, TypeVar

import typer
from rich.console import Console
from rich.progress import (BarColumn, Progress as RichBar, ProgressColumn, SpinnerColumn, TextColumn,
                           TimeElapsedColumn)
from rich.text import Text

from gemma4_common.progress import Progress

# Progress and human output go to stderr so that stdout stays clean for --json and results.
err_console = Console(stderr=True)
out_console = Console()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


T = TypeVar("T")


def emit_rows(items: Iterable[T], as_json: bool, line: Callable[[T], str],
              to_json: Callable[[T], Any] = lambda item: item) -> None:
    """A listing's output: with --json one JSON list of to_json(item), else line(item) per item."""
    items = list(items)
    if as_json:
        emit_json([to_json(i) for i in items])
    else:
        for i in items:
            typer.echo(line(i))


class _Amount(ProgressColumn):
    """MB and MB/s for byte transfers (totals over 64 KiB), done/total for counted steps, nothing
    for steps without a total (the spinner says they are running)."""

    def render(self, task) -> Text:
        total = task.total or 0
        if not total or task.fields.get("spinner"):
            return Text("")
        if total >= 1 << 16:
            speed = task.finished_speed or task.speed or 0.0
            return Text(f"{task.completed / 1e6:8.1f}/{total / 1e6:.1f} MB {speed / 1e6:7.1f} MB/s")
        return Text(f"{task.completed:.0f}/{total:.0f}")


def rich_bar(enabled: bool = True) -> RichBar:
    """A rich Progress on stderr that several RichProgress reporters (devices) can share."""
    # Bars are for people at a terminal; in pipes and CI logs they are noise around the results and
    # the one-line errors.
    return RichBar(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), _Amount(),
                   TimeElapsedColumn(), console=err_console, transient=False,
                   disable=not (enabled and err_console.is_terminal))


class RichProgress(Progress):
    """Renders the progress protocol as rich bars on stderr (thread-safe per instance).

    `with RichProgress(enabled=...) as p:` draws on a bar of its own and shows notes only where
    it draws. `RichProgress(bar=shared, quiet=...)` draws one device's steps on a bar that others
    share (from `rich_bar()`, entered by the caller) and prints notes as `note: ...` unless quiet,
    so that a deploy's notice reaches logs too.
    """

    def __init__(self, enabled: bool = True, *, bar: RichBar | None = None, quiet: bool = False):
        super().__init__()
        self._own = bar is None
        self._bar = rich_bar(enabled) if bar is None else bar
        self.enabled = not self._bar.disable
        if self._own:
            self._quiet, self._note_prefix = not self.enabled, ""
        else:
            self._quiet, self._note_prefix = quiet, "note: "
        self._task = None
        self._total: float | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> "RichProgress":
        if self._own:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> Any:
        return self._bar.__exit__(*exc) if self._own else None

    def _start(self, name: str, total: float | None) -> None:
        with self._lock:
            self._task = self._bar.add_task(name, total=total, spinner=not total)
            self._total = total

    def advance(self, amount: float) -> None:
        with self._lock:
            if self._task is not None:
                self._bar.advance(self._task, amount)

    def note(self, message: str) -> None:
        if not self._quiet:
            self._bar.console.print(f"{self._note_prefix}{message}", highlight=False)

    def _end(self, name: str) -> None:
        with self._lock:
            if self._task is not None:
                # A step that ended is drawn as done, spinner steps (no total) included.
                total = self._total or 1
                self._bar.update(self._task, completed=total, total=total)
                self._task = None
