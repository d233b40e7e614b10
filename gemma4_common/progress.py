"""A minimal progress protocol that library code reports to, and its plain-line renderer for pipes and
CI logs (the CLI renders it with rich at a terminal: sdk_tools.cli.common.RichProgress)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from typing import Iterator, TextIO


class Progress:
    """No-op reporter; subclasses draw. `step` wraps a long step, `advance` reports bytes/items."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str, total: float | None = None) -> Iterator["Progress"]:
        t0 = time.perf_counter()
        self._start(name, total)
        try:
            yield self
        except BaseException as e:
            self._fail(name, e)
            raise
        finally:
            self.timings[name] = time.perf_counter() - t0
            self._end(name)

    def advance(self, amount: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def _start(self, name: str, total: float | None) -> None:
        pass

    def _fail(self, name: str, error: BaseException) -> None:
        """The step `name` is ending with `error` (called just before `_end`)."""

    def _end(self, name: str) -> None:
        pass


HEARTBEAT_S = 10.0  # the issue asks for a line at least every 15 s; margin for a busy machine


def format_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"


def format_amount(done: float, total: float) -> str:
    """MB for byte transfers (totals over 64 KiB, as the rich renderer), else a count."""
    if total >= 1 << 16:
        return f"{done / 1e6:.1f}/{total / 1e6:.1f} MB"
    return f"{done:.0f}/{total:.0f}"


@dataclass
class _Open:
    name: str
    total: float | None
    depth: int
    t0: float
    done: float = 0.0
    outcome: str = "done in"
    shown: bool = False  # its start line was printed


class PlainProgress(Progress):
    """The protocol as plain lines, for pipes and CI logs: one line when a step ends (with its time),
    the notes, and, while a step runs and nothing was printed for `heartbeat_s`,
    a heartbeat for the innermost step: `name: 412/1200, 15 s`, or `name: still running, 45 s` when
    it has no total (a long library call that reports nothing). A step's start line (`name ...`) is
    printed once something is printed inside it, so that nested lines have their context; a step
    that fails with nothing printed stays silent, leaving its one-line error alone on stderr (what
    bad input gets). Thread-safe; the heartbeat thread (a daemon) starts with the first step and
    stops at `close()` / the end of `with`."""

    def __init__(self, stream: TextIO | None = None, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        super().__init__()
        self._stream = stream  # None: sys.stderr when writing (tests and redirections replace it)
        self.heartbeat_s = heartbeat_s
        self._open: list[_Open] = []  # running steps, innermost last
        self._cond = threading.Condition()
        self._last = time.monotonic()  # when the last line was printed
        self._thread: threading.Thread | None = None
        self._closed = False

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=1)

    def _write(self, line: str) -> None:
        # Called with the lock held. A closed or broken stream (a pipe whose reader left) loses the
        # line, never the step.
        stream = self._stream or sys.stderr
        with contextlib.suppress(OSError, ValueError):
            stream.write(line + "\n")
            stream.flush()
        self._last = time.monotonic()

    def _show_open(self) -> None:
        # With the lock held: the start lines of the running steps not shown yet, outermost first.
        for step in self._open:
            if not step.shown:
                step.shown = True
                self._write(f"{'  ' * step.depth}{step.name} ...")

    def _start(self, name: str, total: float | None) -> None:
        with self._cond:
            step = _Open(name, total, len(self._open), time.monotonic())
            self._open.append(step)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def advance(self, amount: float) -> None:
        with self._cond:
            if self._open:
                self._open[-1].done += amount

    def note(self, message: str) -> None:
        with self._cond:
            self._show_open()
            self._write(f"{'  ' * len(self._open)}{message}")

    def _fail(self, name: str, error: BaseException) -> None:
        with self._cond:
            step = self._find(name)
            if step is not None:
                step.outcome = "interrupted after" if isinstance(error, KeyboardInterrupt) else "failed after"

    def _end(self, name: str) -> None:
        with self._cond:
            step = self._find(name)
            if step is None:
                return
            if step.outcome != "done in" and not step.shown:
                self._open.remove(step)  # nothing was said of it: its error says it
                return
            self._open.remove(step)
            self._show_open()
            self._write(f"{'  ' * step.depth}{name}: {step.outcome} {format_seconds(time.monotonic() - step.t0)}")

    def _find(self, name: str) -> _Open | None:
        return next((s for s in reversed(self._open) if s.name == name), None)

    def _beat(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                due = self._last + self.heartbeat_s
                if self._open and now >= due:
                    self._show_open()
                    step = self._open[-1]
                    amount = (format_amount(step.done, step.total) if step.total else "still running")
                    self._write(f"{'  ' * step.depth}{step.name}: {amount}, {format_seconds(now - step.t0)}")
                    continue
                self._cond.wait(timeout=(due - now) if self._open else None)
