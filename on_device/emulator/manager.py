"""Start, stop and list reference emulators as background processes.

Each emulator gets a state directory under `$GEMMA4_MOBILE_HOME/emulators/` (default
`~/.cache/gemma4-mobile/emulators/`) holding state.json (pid, port, serial, profile, root), its log
and, unless `--root` was given, its sandboxed filesystem.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gemma4_common.errors import UserError
from gemma4_common.config import state_dir
from gemma4_common.fsutil import atomic_write_text, read_json

from .fs import check_root
from .profiles import list_profiles, load_profile
from .sandbox import check_available

_REPO_ROOT = Path(__file__).resolve().parents[2]
_CHILDREN: dict[int, subprocess.Popen] = {}


def home() -> Path:
    return state_dir()


def emulators_dir() -> Path:
    return home() / "emulators"


@dataclass
class EmulatorRecord:
    id: str
    serial: str
    host: str
    port: int
    pid: int
    profile: str
    root: str
    log: str
    state_dir: str
    own_root: bool
    auth: bool
    started_at: float
    alive: bool = True
    link_mb_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _pid_is_emulator(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"on_device.emulator" in f.read()
    except (OSError, IndexError):
        return False


def _port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _load(state_dir: Path) -> EmulatorRecord | None:
    data = read_json(state_dir / "state.json", missing=None, broken=None)  # gone or unreadable: no emulator
    try:
        rec = EmulatorRecord(**{**data, "alive": True})
    except TypeError:  # not an object, or not the fields of a record
        return None
    rec.alive = _pid_is_emulator(rec.pid)
    return rec


def list_emulators() -> list[EmulatorRecord]:
    d = emulators_dir()
    if not d.is_dir():
        return []
    recs = [r for p in sorted(d.iterdir()) if p.is_dir() and (r := _load(p)) is not None]
    return sorted(recs, key=lambda r: r.started_at)


def start(profile: str = "galaxy-s24", port: int = 0, auth: bool = False, authorized_keys: Path | None = None,
          accept_new_keys: bool = False, root: Path | None = None, storage_bytes: int | None = None,
          timeout_s: float = 30.0, link_mb_s: float | None = None) -> EmulatorRecord:
    """Start an emulator in the background; returns once its port accepts connections. `link_mb_s`:
    the rate of its link to the host (MB/s, both directions; None: loopback speed)."""
    load_profile(profile)  # fail early, with the list of profiles, on a bad name
    if port and 5554 <= port <= 5585:
        raise UserError(f"port {port} is in 5554-5585, which a local adb server claims for emulators",
                        "choose another --port or leave it out for a free one")
    if authorized_keys is not None and not Path(authorized_keys).is_file():
        raise UserError(f"authorized-keys file {authorized_keys} does not exist",
                        "pass an adbkey.pub-format file (e.g. ~/.android/adbkey.pub) or leave it out")
    if storage_bytes is not None and storage_bytes <= 0:
        raise UserError("--storage-bytes must be positive", "pass the phone's /data size in bytes")
    if link_mb_s is not None and not link_mb_s > 0:
        raise UserError("--link-mb-s must be positive", "pass the link's rate in MB/s, e.g. 40 for USB 2")
    if root is not None:
        check_root(Path(root).expanduser().resolve(), root)
    check_available()  # says so in one line, with the fix, where bubblewrap cannot run
    ident = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
    state_dir = emulators_dir() / ident
    state_dir.mkdir(parents=True, exist_ok=False)
    own_root = root is None
    root_path = (state_dir / "root") if own_root else Path(root).expanduser().resolve()
    if not own_root and root_path.exists() and not root_path.is_dir():
        shutil.rmtree(state_dir, ignore_errors=True)
        raise UserError(f"--root {root} is not a directory", "pass a directory for the device filesystem")
    keys = Path(authorized_keys).resolve() if authorized_keys else state_dir / "adb_keys"
    if auth and not keys.exists():
        keys.touch()
    log_path = state_dir / "emulator.log"
    ready = state_dir / "ready.json"
    cmd = [sys.executable, "-m", "on_device.emulator", "--profile", profile, "--port", str(port),
           "--root", str(root_path), "--ready-file", str(ready)]
    if auth:
        cmd += ["--auth", "--authorized-keys", str(keys)]
    if accept_new_keys:
        cmd += ["--accept-new-keys"]
    if storage_bytes:
        cmd += ["--storage-bytes", str(storage_bytes)]
    if link_mb_s:
        cmd += ["--link-mb-s", repr(float(link_mb_s))]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True, cwd=str(state_dir))
    _CHILDREN[proc.pid] = proc
    deadline = time.monotonic() + timeout_s
    info = None
    while time.monotonic() < deadline:
        if ready.exists():
            info = json.loads(ready.read_text())
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    if info is None or not _port_accepts("127.0.0.1", int(info["port"])):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        tail = " | ".join(log_path.read_text(errors="replace").strip().splitlines()[-3:])
        shutil.rmtree(state_dir, ignore_errors=True)
        raise UserError(f"the emulator did not start: {tail or 'no output'}",
                        "check the port and profile; run with --foreground to see its log")
    rec = EmulatorRecord(id=ident, serial=info["serial"], host="127.0.0.1", port=int(info["port"]), pid=proc.pid,
                         profile=profile, root=str(root_path), log=str(log_path), state_dir=str(state_dir),
                         own_root=own_root, auth=auth, started_at=time.time(), link_mb_s=link_mb_s)
    atomic_write_text(state_dir / "state.json", json.dumps(rec.to_json(), indent=2))
    return rec


def _terminate(pid: int, timeout_s: float = 10.0) -> None:
    if not _pid_is_emulator(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _pid_is_emulator(pid):
        child = _CHILDREN.get(pid)
        if child is not None:
            try:
                child.wait(0.05)
            except subprocess.TimeoutExpired:
                pass
        else:
            time.sleep(0.05)
    if _pid_is_emulator(pid):
        os.kill(pid, signal.SIGKILL)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait()


def stop(serial: str) -> EmulatorRecord:
    """Stop the emulator with this serial (or port); its state dir (and own root) is removed."""
    recs = list_emulators()
    match = [r for r in recs if serial in (r.serial, str(r.port), r.id)]
    if not match:
        known = ", ".join(r.serial for r in recs) or "none running"
        raise UserError(f"no emulator {serial!r}", f"see `gemma4-mobile emulator list` ({known})")
    rec = match[0]
    _terminate(rec.pid)
    shutil.rmtree(rec.state_dir, ignore_errors=True)
    rec.alive = False
    return rec


def stop_all() -> list[EmulatorRecord]:
    return [stop(r.id) for r in list_emulators()]


__all__ = ["EmulatorRecord", "home", "list_emulators", "list_profiles", "start", "stop", "stop_all"]
