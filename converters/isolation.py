"""Run a conversion in a child process and survive whatever happens to it.

The child reports progress, its work directory and its result over a pipe. If it dies (a native
library's fatal error, a signal, the out-of-memory killer) or the parent is interrupted, the parent
removes the temporary directories the child left next to the output and raises a one-line
UserError with the last lines of the export log."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import shutil
import signal
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from gemma4_common.errors import UserError
from gemma4_common.progress import Progress

POLL_S = 0.2


class _PipeProgress(Progress):
    def __init__(self, conn):
        super().__init__()
        self._conn = conn

    def _start(self, name, total):
        self._conn.send(("start", name, total))

    def _end(self, name):
        self._conn.send(("end", name))

    def advance(self, amount):
        self._conn.send(("advance", amount))

    def note(self, message):
        self._conn.send(("note", message))


def _child(fn: Callable, args: tuple, conn) -> None:
    # The parent decides about interrupts: it terminates the child and cleans up after it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, (req, plan), send), daemon=True)
    # A child ended by a native fatal error leaves tqdm's semaphore behind, and multiprocessing's
    # resource tracker (started here, inheriting this environment) would warn about it on stderr.
    saved = os.environ.get("PYTHONWARNINGS")
    os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [saved, "ignore:resource_tracker:UserWarning"]))
    try:
        proc.start()
    finally:
        if saved is None:
            os.environ.pop("PYTHONWARNINGS", None)
        else:
            os.environ["PYTHONWARNINGS"] = saved
    send.close()
    steps: list[Any] = []
    work: str | None = None
    outcome: tuple | None = None
    try:
        while True:
            if recv.poll(POLL_S):
                try:
                    msg = recv.recv()
                except EOFError:
                    break
                kind = msg[0]
                if kind == "start":
                    cm = progress.step(msg[1], msg[2])
                    cm.__enter__()
                    steps.append(cm)
                elif kind == "end":
                    if steps:
                        steps.pop().__exit__(None, None, None)
                elif kind == "advance":
                    progress.advance(msg[1])
                elif kind == "note":
                    progress.note(msg[1])
                elif kind == "work":
                    work = msg[1]
                else:
                    outcome = msg
                    break
            elif not proc.is_alive():
                # drain what it sent before dying
                while recv.poll(0):
                    try:
                        msg = recv.recv()
                    except EOFError:
                        break
                    if msg[0] in ("result", "user_error", "bug"):
                        outcome = msg
                    elif msg[0] == "work":
                        work = msg[1]
                break
        proc.join()
    except BaseException:
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        _cleanup(work_parent, before, created_parent, proc.pid, targets)
        raise
    finally:
        while steps:
            steps.pop().__exit__(None, None, None)
        recv.close()
    if outcome is None or proc.exitcode not in (0, None):
        tail = _log_tail(work)
        _cleanup(work_parent, before, created_parent, proc.pid, targets)
        code = proc.exitcode
        how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with status {code}"
        if outcome is None:
            hint = "free disk space or memory and run again" if "too large" in tail.lower() or "space" in tail.lower() \
                else "run again; if it repeats, check the log lines above"
            raise UserError(f"the conversion process {how} (last log lines: {tail or 'none'})", hint)
    kind = outcome[0]
    if kind == "result":
        return outcome[1]
    _cleanup(work_parent, before, created_parent, proc.pid, targets)
    if kind == "user_error":
        raise UserError(outcome[1], outcome[2])
    raise RuntimeError(f"conversion failed with a bug: {outcome[1]}\n{outcome[2]}")


def _cleanup(parent: Path, before: set[str], created_parent: bool, pid: int | None,
             targets: Sequence[Path]) -> None:
    for p in _leftovers(parent, before, pid, targets):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    if created_parent and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
