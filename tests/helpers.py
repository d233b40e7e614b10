"""Small helpers for tests: run the CLI in-process and capture its output."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def cli(*args: str) -> CliResult:
    from sdk_tools.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def cli_subprocess(*args: str, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("gemma4-mobile")
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def assert_one_line_error(res, *needles: str) -> None:
    err = res.err if hasattr(res, "err") else res.stderr
    code = res.code if hasattr(res, "code") else res.returncode
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


def leftovers(parent: Path) -> list[str]:
    """Temporary files or dirs our atomic writers would leave behind."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else []


