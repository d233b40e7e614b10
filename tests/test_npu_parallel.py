"""The NPU vendor variants are built in processes of their own beside the CPU conversion
(converters.npu.variant.start_vendor_builds over converters.isolation.Isolated): when they may run
at once, how their progress and failures reach the parent, and that none outlives its conversion."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from converters.isolation import Isolated
from gemma4_common.errors import UserError
from gemma4_common.progress import Progress


class _Recorder(Progress):
    def __init__(self):
        super().__init__()
        self.events: list[tuple] = []

    def _start(self, name, total):
        self.events.append(("start", name))

    def _end(self, name):
        self.events.append(("end", name))

    def note(self, message):
        self.events.append(("note", message))


def _two_steps(delay, progress, on_work_dir=None):
    with progress.step("first"):
        pass
    with progress.step("second"):
        time.sleep(delay)
    return {"done": delay}


def _user_error(progress, on_work_dir=None):
    raise UserError("calibration prompt 3 is longer than the cache", "raise --cache-length")


def _killed(progress, on_work_dir=None):
    os.kill(os.getpid(), signal.SIGKILL)


def _parent_of_sleeper(pid_file, progress, on_work_dir=None):
    Isolated(_sleep_long, (pid_file,), die_with_parent=True)
    time.sleep(60)


def _sleep_long(pid_file, progress, on_work_dir=None):
    Path(pid_file + ".tmp").write_text(str(os.getpid()))
    os.rename(pid_file + ".tmp", pid_file)  # running: its death signal is set by now
    time.sleep(60)


def test_finished_steps_become_notes_and_a_running_one_is_relayed_live():
    child = Isolated(_two_steps, (1.5,))
    time.sleep(1.0)  # the parent is busy elsewhere while the child works
    rec = _Recorder()
    outcome = child.relay(rec, earlier_as_notes="(parallel) ")
    assert child.outcome_value(outcome) == {"done": 1.5}
    notes = [e[1] for e in rec.events if e[0] == "note"]
    assert any(n.startswith("(parallel) first: ") and n.endswith(" s") for n in notes), rec.events
    # "second" was still running when the parent came to wait: it is shown as a live step
    assert ("start", "second") in rec.events and ("end", "second") in rec.events


def test_a_variant_process_user_error_is_the_parents_one_line_error():
    child = Isolated(_user_error, ())
    outcome = child.relay(Progress())
    with pytest.raises(UserError, match="longer than the cache") as e:
        child.outcome_value(outcome, what="the qualcomm NPU variant's process")
    assert e.value.fix == "raise --cache-length"


def test_a_killed_variant_process_is_named_in_one_line():
    child = Isolated(_killed, ())
    outcome = child.relay(Progress())
    with pytest.raises(UserError, match=r"the mediatek NPU variant's process was killed by signal 9"):
        child.outcome_value(outcome, what="the mediatek NPU variant's process")


def test_variant_processes_die_with_their_conversion(tmp_path):
    """A conversion killed outright (the OOM killer) takes its variant builds with it."""
    pid_file = tmp_path / "pid"
    parent = Isolated(_parent_of_sleeper, (str(pid_file),))
    deadline = time.monotonic() + 60
    while not pid_file.exists():
        assert time.monotonic() < deadline and parent.proc.is_alive()
        time.sleep(0.1)
    grandchild = int(pid_file.read_text())
    os.kill(parent.proc.pid, signal.SIGKILL)
    parent.proc.join()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # reaped by init once dead; a zombie still answers kill(0): check its state
        try:
            if Path(f"/proc/{grandchild}/stat").read_text().split(") ")[1][0] == "Z":
                break
        except (FileNotFoundError, IndexError):
            break
        time.sleep(0.1)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the variant process outlived its conversion")


def _plan(params: int, vendors: list[str]):
    socs = [SimpleNamespace(vendor=v) for v in vendors]
    return SimpleNamespace(info=SimpleNamespace(num_parameters=params), npu_specs=socs, converter="default")


def test_parallel_only_with_cores_and_memory_to_spare(monkeypatch):
    from converters import planner
    from converters.npu import variant

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(planner, "host_ram_bytes", lambda: 24 * 2**30)
    tiny = _plan(630_000, ["qualcomm", "mediatek", "qualcomm"])
    assert variant.parallel_vendor_builds(tiny) == 2  # one process per vendor, not per SoC
    assert variant.parallel_vendor_builds(_plan(630_000, [])) == 0
    e2b = _plan(5_100_000_000, ["qualcomm", "mediatek"])  # ~45 GiB each by the default path
    assert variant.parallel_vendor_builds(e2b) == 0
    monkeypatch.setattr(planner, "host_ram_bytes", lambda: 256 * 2**30)
    need = planner.conversion_memory_bytes(5_100_000_000)
    assert variant.parallel_vendor_builds(e2b) == min(2, (256 * 2**30 - need) // need)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert variant.parallel_vendor_builds(tiny) == 0  # one core: in turn
