"""Helpers shared by command modules: JSON output and listings, the rich consoles, the one rich renderer of
the progress protocol (gemma4_common.progress) and the choice between it and the plain-line one."""

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

from gemma4_common.progress import HEARTBEAT_S, PlainProgress, Progress

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
        self._tasks: list[tuple[str, Any, float | None]] = []  # running steps (name, task, total), innermost last
        self._lock = threading.Lock()

    def __enter__(self) -> "RichProgress":
        if self._own:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> Any:
        return self._bar.__exit__(*exc) if self._own else None

    def _start(self, name: str, total: float | None) -> None:
        with self._lock:
            self._tasks.append((name, self._bar.add_task(name, total=total, spinner=not total), total))

    def advance(self, amount: float) -> None:
        with self._lock:
            if self._tasks:
                self._bar.advance(self._tasks[-1][1], amount)

    def note(self, message: str) -> None:
        if not self._quiet:
            self._bar.console.print(f"{self._note_prefix}{message}", highlight=False)

    def _fail(self, name: str, error: BaseException) -> None:
        with self._lock:
            for step, task, _ in reversed(self._tasks):
                if step == name:
                    self._bar.update(task, description=f"{name} (stopped: {type(error).__name__})")
                    break

    def _end(self, name: str) -> None:
        with self._lock:
            i = next((i for i in reversed(range(len(self._tasks))) if self._tasks[i][0] == name), None)
            if i is None:
                return
            _, task, total = self._tasks.pop(i)
            # A step that ended is drawn as done, spinner steps (no total) included; an outer step
            # stops too, not only the innermost one.
            total = total or 1
            self._bar.update(task, completed=total, total=total)


def progress_reporter(rich: bool = True, *, heartbeat_s: float = HEARTBEAT_S) -> RichProgress | PlainProgress:
    """The reporter for a long command, used as `with progress_reporter(...) as p`: rich bars when
    stderr is a terminal and `rich` (False for --json), else plain lines on stderr with a heartbeat
    every `heartbeat_s` of silence (gemma4_common.progress.PlainProgress), for pipes and CI logs."""
    if rich and err_console.is_terminal:
        return RichProgress()
    return PlainProgress(heartbeat_s=heartbeat_s)
