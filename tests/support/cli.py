"""The two ways tests call the CLI: `cli(...)` in-process, and the installed `gemma4-mobile`
script in a fresh process (`cli_subprocess`, or `cli_popen` for a test that signals it), for what
only a real process shows: its exit status, native output on fd 2, signals."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def cli(*args) -> CliResult:
    """`gemma4-mobile ARGS` run in this process, its stdout and stderr captured."""
    from sdk_tools.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def _argv(args) -> list:
    exe = Path(sys.executable).with_name("gemma4-mobile")
    return [str(exe), *(a if isinstance(a, bytes) else str(a) for a in args)]


def _text(data: bytes) -> str:
    # what text=True gives (UTF-8 locale, universal newlines)
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


def cli_subprocess(*args, timeout: float = 600, input: str | bytes | None = None,
                   **kw) -> subprocess.CompletedProcess:
    """The installed script run to its end; stdout and stderr as text. An argument or `input`
    given as bytes goes as it is (bytes that are not UTF-8, as a shell can pass them)."""
    if isinstance(input, str):
        input = input.encode()
    p = subprocess.run(_argv(args), capture_output=True, timeout=timeout, input=input, **kw)
    return subprocess.CompletedProcess(p.args, p.returncode, _text(p.stdout), _text(p.stderr))


def cli_popen(*args, **kw) -> subprocess.Popen:
    """The installed script started and left running (text pipes for stdout and stderr)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(_argv(args), text=True, **kw)


def assert_one_line_error(res, *needles: str) -> str:
    """A CliResult or CompletedProcess that failed as bad input does: exit 2, one `error: ` line
    naming each needle (case-insensitive), no traceback. Returns that line."""
    err = res.err if hasattr(res, "err") else res.stderr
    code = res.code if hasattr(res, "code") else res.returncode
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])
    return lines[0]


def assert_error_after_progress(res, *needles: str) -> str:
    """A command that failed after its work had begun: exit 2, its progress lines (in a pipe, the
    plain renderer's) and then one `error: ` line, the last, naming each needle; no traceback."""
    err = res.err if hasattr(res, "err") else res.stderr
    code = res.code if hasattr(res, "code") else res.returncode
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, (code, err)
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err
    assert [ln for ln in lines if ln.startswith("error")] == [lines[-1]], err
    for n in needles:
        assert n.lower() in lines[-1].lower(), (n, lines[-1])
    return lines[-1]
