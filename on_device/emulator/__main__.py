"""`python -m on_device.emulator`: run one emulator in the foreground (the manager starts this)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_write_text

from .profiles import load_profile
from .server import EmulatorConfig, EmulatorServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m on_device.emulator")
    ap.add_argument("--profile", default="galaxy-s24")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--root", required=True)
    ap.add_argument("--auth", action="store_true")
    ap.add_argument("--authorized-keys")
    ap.add_argument("--accept-new-keys", action="store_true")
    ap.add_argument("--storage-bytes", type=int)
    ap.add_argument("--link-mb-s", type=float, help="the link's rate in MB/s (10^6 bytes), both directions")
    ap.add_argument("--ready-file", help="written (JSON: port, pid) once the port accepts connections")
    ap.add_argument("--log-level", default="INFO")
    a = ap.parse_args(argv)
    logging.basicConfig(level=a.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = EmulatorConfig(profile=load_profile(a.profile), root=Path(a.root), port=a.port, auth=a.auth,
                             authorized_keys=Path(a.authorized_keys) if a.authorized_keys else None,
                             accept_new_keys=a.accept_new_keys, storage_bytes=a.storage_bytes,
                             link_mb_s=a.link_mb_s)
        server = EmulatorServer(cfg)
        port = server.start()
    except UserError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot listen on port {a.port}: {e.strerror}; choose another --port", file=sys.stderr)
        return 2
    if a.ready_file:
        atomic_write_text(a.ready_file, json.dumps({"port": port, "pid": os.getpid(), "serial": server.serial}))

    def _term(signum, frame):
        server.stop()

    signal.signal(signal.SIGTERM, _term)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
