"""Run a conversion in a child process and survive whatever happens to it.

The child reports progress, its work directory and its result over a pipe. If it dies (a native
library's fatal error, a signal, the out-of-memory killer) or the parent is interrupted, the parent
removes the temporary directories the child left next to the output and raises a one-line
UserError with the last lines of the export log."""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from gemma4_common.errors import UserError
from gemma4_common.progress import Progress

POLL_S = 0.2


class _StepFailed(Exception):
    """Ends a relayed step as failed in the parent's Progress (the child's error comes separately)."""


class _PipeProgress(Progress):
    def __init__(self, conn):
        super().__init__()
        self._conn = conn

    def _start(self, name, total):
        self._conn.send(("start", name, total))

    def _fail(self, name, error):
        self._conn.send(("fail", name))

    def _end(self, name):
        self._conn.send(("end", name))

    def advance(self, amount):
        self._conn.send(("advance", amount))

    def note(self, message):
        self._conn.send(("note", message))


def _child(fn: Callable, args: tuple, conn, parent_pid: int | None) -> None:
    # The parent decides about interrupts: it terminates the child and cleans up after it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    progress = _PipeProgress(conn)
    try:
        res = fn(*args, progress, on_work_dir=lambda p: conn.send(("work", str(p))))
        conn.send(("result", res))
    except UserError as e:
        conn.send(("user_error", e.problem, e.fix))
    except BaseException as e:  # a bug: carry the traceback to the parent
        conn.send(("bug", f"{type(e).__name__}: {e}", traceback.format_exc()))
    finally:
        conn.close()


def _die_with_parent(parent_pid: int) -> None:
    """A helper process of a conversion ends with it, even if that one is killed outright (Linux
    PR_SET_PDEATHSIG; elsewhere the parent's terminate() in its cleanup does it)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:  # it died before the line above
        os._exit(1)


class Isolated:
    """`fn(*args, progress, on_work_dir=...)` running in a spawned child; its progress events are read
    as they come (a reader thread, so a child is never blocked on a full pipe while the parent is busy)
    and relayed to the parent's Progress by `relay`."""

    def __init__(self, fn: Callable, args: tuple, *, die_with_parent: bool = False):
        ctx = mp.get_context("spawn")
        recv, send = ctx.Pipe(duplex=False)
        # Not daemonic: a conversion starts helper processes of its own (NPU variants); the callers
        # terminate it on every way out.
        self.proc = ctx.Process(target=_child, args=(fn, args, send, os.getpid() if die_with_parent else None))
        # A child ended by a native fatal error leaves tqdm's semaphore behind, and multiprocessing's
        # resource tracker (started here, inheriting this environment) would warn about it on stderr.
        saved = os.environ.get("PYTHONWARNINGS")
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [saved, "ignore:resource_tracker:UserWarning"]))
        try:
            self.proc.start()
        finally:
            if saved is None:
                os.environ.pop("PYTHONWARNINGS", None)
            else:
                os.environ["PYTHONWARNINGS"] = saved
        send.close()
        self.work: str | None = None
        self._failing: set[int] = set()  # ids of relayed steps that the child reported failing
        self._events: queue.Queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(recv,), daemon=True)
        self._reader.start()

    def _read(self, recv) -> None:
        try:
            while True:
                try:
                    msg = recv.recv()
                except (EOFError, OSError):
                    break
                self._events.put((time.monotonic(), msg))
                if msg[0] in ("result", "user_error", "bug"):
                    break
        finally:
            recv.close()
            self._events.put((time.monotonic(), ("eof",)))

    def relay(self, progress: Progress, *, earlier_as_notes: str | None = None) -> tuple | None:
        """Relay events until the child's outcome ("result"/"user_error"/"bug", ...), or None if it ended
        without one. `earlier_as_notes`: steps that finished before this call (the child ran beside
        other work) are reported as notes with their times, prefixed with it."""
        steps: list[Any] = []
        started: dict[str, float] = {}
        if earlier_as_notes is not None:
            backlog = []
            while True:
                try:
                    backlog.append(self._events.get_nowait())
                except queue.Empty:
                    break
            pending = []
            for t, msg in backlog:
                if msg[0] == "start":
                    started[msg[1]] = t
                    pending.append(msg)
                elif msg[0] == "end" and pending:
                    name = pending.pop()[1]
                    progress.note(f"{earlier_as_notes}{name}: {t - started.pop(name, t):.1f} s")
                elif msg[0] in ("result", "user_error", "bug", "eof"):
                    return self._finish(msg, steps)
                elif msg[0] != "advance":
                    self._handle(msg, progress, steps)
            for msg in pending:  # still running: live from here on
                self._handle(msg, progress, steps)
        try:
            while True:
                try:
                    _, msg = self._events.get(timeout=POLL_S)
                except queue.Empty:
                    if not self.proc.is_alive() and not self._reader.is_alive() and self._events.empty():
                        return self._finish(("eof",), steps)
                    continue
                if msg[0] in ("result", "user_error", "bug", "eof"):
                    return self._finish(msg, steps)
                self._handle(msg, progress, steps)
        finally:
            while steps:  # an interrupt ends the open steps as stopped, not as done
                steps.pop().__exit__(*sys.exc_info())

    def _handle(self, msg: tuple, progress: Progress, steps: list[Any]) -> None:
        kind = msg[0]
        if kind == "start":
            cm = progress.step(msg[1], msg[2])
            cm.__enter__()
            steps.append(cm)
        elif kind == "fail":  # the child's step is ending with an error: its "end" comes next
            if steps:
                self._failing.add(id(steps[-1]))
        elif kind == "end":
            if steps:
                cm = steps.pop()
                failed = _StepFailed() if id(cm) in self._failing else None
                self._failing.discard(id(cm))
                cm.__exit__(type(failed) if failed else None, failed, None)
        elif kind == "advance":
            progress.advance(msg[1])
        elif kind == "note":
            progress.note(msg[1])
        elif kind == "work":
            self.work = msg[1]

    def _finish(self, msg: tuple, steps: list[Any]) -> tuple | None:
        # Steps still open when the child failed or died end as failed, not as done.
        failed = None if msg[0] == "result" else _StepFailed()
        while steps:
            steps.pop().__exit__(type(failed) if failed else None, failed, None)
        self.proc.join()
        return None if msg[0] == "eof" else msg

    def outcome_value(self, outcome: tuple | None, what: str = "the conversion process") -> Any:
        """The child's result; its UserError re-raised; a death or a bug as one line / RuntimeError."""
        if outcome is None or self.proc.exitcode not in (0, None):
            if outcome is None or outcome[0] == "result":
                tail = _log_tail(self.work)
                code = self.proc.exitcode
                how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
                hint = "free disk space or memory and run again" if "too large" in tail.lower() or \
                    "space" in tail.lower() else "run again; if it repeats, check the log lines above"
                raise UserError(f"{what} {how} (last log lines: {tail or 'none'})", hint)
        if outcome[0] == "result":
            return outcome[1]
        if outcome[0] == "user_error":
            raise UserError(outcome[1], outcome[2])
        raise RuntimeError(f"{what} failed with a bug: {outcome[1]}\n{outcome[2]}")

    def terminate(self) -> None:
        self.proc.terminate()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def work_prefix(pid: int) -> str:
    """Name prefix of the work directory that the conversion process `pid` makes: a run cleans up
    only its own, never that of another convert writing into the same parent directory."""
    return f".g4m-convert-{pid}-"


def _leftovers(parent: Path, before: set[str], pid: int | None, targets: Sequence[Path]) -> list[Path]:
    """What this run's child left in `parent`: its work directory, and the temporary directories
    (gemma4_common.fsutil.atomic_dir: `.<target>.<random>.part`) of this run's targets."""
    if not parent.is_dir():
        return []
    own = [re.compile(rf"\.{re.escape(t.name)}\.[^.]+\.part") for t in targets if t.parent == parent]
    prefix = work_prefix(pid) if pid is not None else None
    return [p for p in parent.iterdir() if p.name not in before
            and ((prefix and p.name.startswith(prefix)) or any(r.fullmatch(p.name) for r in own))]


def _log_tail(work: str | None) -> str:
    if not work:
        return ""
    from converters.export import log_tail

    return log_tail(Path(work) / "export.log", 2)


def run_isolated(fn: Callable, req: Any, plan: Any, progress: Progress, *, work_parent: Path,
                 targets: Sequence[Path] = ()) -> Any:
    before = {p.name for p in work_parent.iterdir()} if work_parent.is_dir() else set()
    created_parent = not work_parent.exists()
    child = Isolated(fn, (req, plan))
    try:
        return child.outcome_value(child.relay(progress))
    except BaseException:
        child.terminate()  # still running if relaying was interrupted; a no-op once it has ended
        _cleanup(work_parent, before, created_parent, child.proc.pid, targets)
        raise


def _cleanup(parent: Path, before: set[str], created_parent: bool, pid: int | None,
             targets: Sequence[Path]) -> None:
    for p in _leftovers(parent, before, pid, targets):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if created_parent and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
