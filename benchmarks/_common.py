"""What the benchmark scripts share: a scratch directory, a background emulator, a private adb server,
the `gemma4-mobile` command line, and timed subprocesses. Scripts import it as `benchmarks._common`
after putting the repository root on sys.path."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from on_device.emulator.server import free_port

if TYPE_CHECKING:
    from on_device.emulator.manager import EmulatorRecord

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ROOT", "adb_server", "background_emulator", "clean_env", "free_port", "g4m_command", "require_adb",
           "run_timed", "scratch_dir"]


def require_adb() -> str | None:
    """Debian's adb, or None after saying how to install it."""
    adb_bin = shutil.which("adb")
    if adb_bin is None:
        print("error: Debian's adb is not installed (apt-get install adb)", file=sys.stderr)
    return adb_bin


def g4m_command() -> list[str]:
    """`gemma4-mobile` of this interpreter's environment (or the module where it is not installed)."""
    exe = Path(sys.executable).parent / "gemma4-mobile"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sdk_tools.cli.app"]


def clean_env(drop: tuple[str, ...] = ("ANDROID_", "ADB_"), **set_: str) -> dict[str, str]:
    """This process's environment without the user's adb / device settings (`drop` prefixes), plus `set_`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(set_)
    return env


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory, removed at the end."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def background_emulator(profile: str, link_mb_s: float | None = None) -> Iterator[EmulatorRecord]:
    """An emulator started as a background process (as `gemma4-mobile emulator start` does) under
    $GEMMA4_MOBILE_HOME, stopped at the end; `link_mb_s` as `emulator start --link-mb-s`."""
    from on_device.emulator import manager

    rec = manager.start(profile=profile, link_mb_s=link_mb_s)
    try:
        yield rec
    finally:
        manager.stop(rec.id)


def run_timed(cmd: list[str], env: dict[str, str], *, timeout: float = 1800, what: str | None = None,
              check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    """Wall seconds and result of `cmd` (output captured, no stdin, cwd the repository root); with
    `check`, a non-zero exit ends the script with the command's stderr."""
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout, cwd=ROOT)
    dt = time.perf_counter() - t0
    if check and r.returncode != 0:
        raise SystemExit(f"error: {what or ' '.join(cmd[:4]) + '...'} failed: {r.stderr.decode()[-2000:]}")
    return dt, r


@contextlib.contextmanager
def adb_server(adb_bin: str, env: dict[str, str], serial: str) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """Debian's adb server (on env's ANDROID_ADB_SERVER_PORT) connected to `serial`; yields `adb(*args)`
    (unchecked) and kills the server at the end. `adb connect` exits 0 even when it fails, so its
    output is what is checked."""

    def adb(*args: str) -> subprocess.CompletedProcess:
        return run_timed([adb_bin, *args], env, check=False)[1]

    adb("start-server")
    try:
        out = adb("connect", serial)
        if f"connected to {serial}" not in out.stdout.decode():
            raise SystemExit(f"error: adb connect failed: {out.stdout.decode()}{out.stderr.decode()}")
        yield adb
    finally:
        adb("kill-server")
