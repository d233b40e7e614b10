"""A minimal progress protocol that library code reports to; the CLI renders it with rich."""

from __future__ import annotations

import contextlib
import time
from typing import Iterator


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
        finally:
            self.timings[name] = time.perf_counter() - t0
            self._end(name)

    def advance(self, amount: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def _start(self, name: str, total: float | None) -> None:
        pass

    def _end(self, name: str) -> None:
        pass
