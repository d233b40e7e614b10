"""Diagnostics of the processes on a device, for failure messages."""

from __future__ import annotations

SHELLS_AND_DD = "pgrep -x sh; pgrep -x dd; pgrep -x busybox"


def device_processes(dev, pids: str = SHELLS_AND_DD) -> str:
    """What runs on the device, and the signal state of the processes the `pids` command lists
    (shells and dd by default): why a cut session's command or a process is still there (did its
    SIGHUP arrive, or is it ignored or blocked?). `dev`: a sdk_tools Device or an adb-shell client."""
    cmd = (f"ps -A -o PID,PGID,STAT,ARGS; for p in $({pids}); do echo pid $p; "
           "grep -E '^(State|SigPnd|ShdPnd|SigBlk|SigIgn)' /proc/$p/status 2>/dev/null; done")
    out = dev.shell(cmd)
    return out if isinstance(out, str) else out[1]  # adb-shell gives the text, a Device (rc, out, err)
