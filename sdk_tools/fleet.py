"""Run one piece of work on each of several devices at once: open each device, run the work in a
thread of its own, collect the results and the drop-outs. A device that fails does not stop the
others; with a single device its error is the command's error, unchanged."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Generic, TypeVar

from gemma4_common.errors import UserError
from sdk_tools.devices.base import Device

T = TypeVar("T")


@dataclasses.dataclass
class FleetOutcome(Generic[T]):
    results: dict[str, T]  # serial -> what the work returned, in the order of the serials given
    failures: dict[str, str]  # serial -> one-line reason

    def raise_failures(self, total: int, fix: str) -> None:
        """UserError naming every failed device, if any did (the others' results stand)."""
        if self.failures:
            raise UserError(f"{len(self.failures)} of {total} device(s) failed: "
                            + "; ".join(f"{s}: {m}" for s, m in self.failures.items()), fix)


def on_each(serials: list[str], work: Callable[[Device], T], *,
            open_device: Callable[[str], Device] | None = None) -> FleetOutcome[T]:
    """`work(device)` for every serial, in parallel threads, each on a device opened (and closed) for it."""
    if open_device is None:
        from sdk_tools.devices.discovery import open_device

    def one(serial: str) -> T:
        with open_device(serial) as dev:
            return work(dev)

    if len(serials) == 1:
        return FleetOutcome({serials[0]: one(serials[0])}, {})
    done: dict[str, Any] = {}
    failures: dict[str, str] = {}
    lock = threading.Lock()

    def guarded(serial: str) -> None:
        try:
            result = one(serial)
        except UserError as e:
            reason = e.one_line()
        except Exception as e:  # a bug on one device must not hide the others' results
            reason = f"{type(e).__name__}: {e}"
        else:
            with lock:
                done[serial] = result
            return
        with lock:
            failures[serial] = reason

    with ThreadPoolExecutor(max_workers=len(serials)) as pool:
        list(pool.map(guarded, serials))
    return FleetOutcome({s: done[s] for s in serials if s in done}, {s: failures[s] for s in serials if s in failures})
