"""A small POSIX-ish shell and toybox-like commands over the sandbox, answering like Android's
/system/bin/sh: quoting, `;` `&&` `||` `|`, redirections, `$?`, and the commands device tooling
uses. Executing a pushed runner file hands over to the device-side runner contract."""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import logging
import os
import re
import stat as statmod
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Callable


from .context import RunnerContext
from .fs import FsError, SandboxFS
from .profiles import DeviceProfile

log = logging.getLogger(__name__)

SH = "/system/bin/sh"
DEFAULT_PATH = "/product/bin:/apex/com.android.runtime/bin:/apex/com.android.art/bin:/system_ext/bin:/system/bin:/system/xbin:/odm/bin:/vendor/bin:/vendor/xbin"
_FALLBACK_MAGIC = b"#!/system/bin/g4m-emulator-runner\n"


def runner_magic() -> bytes:
    try:
        from on_device.runner_contract import EMULATOR_RUNNER_MAGIC

        return EMULATOR_RUNNER_MAGIC
    except ImportError:
        return _FALLBACK_MAGIC


def default_runner(argv: list[str], ctx: RunnerContext) -> int:
    from on_device.runner import run_runner

    return run_runner(argv, ctx)


@dataclass
class Device:
    """What the shell needs to know of the phone it runs on."""

    fs: SandboxFS
    profile: DeviceProfile
    props: dict[str, str]
    boot_time: float = field(default_factory=time.time)
    run_runner: Callable[[list[str], RunnerContext], int] = default_runner


# ---- input ---------------------------------------------------------------------------------------
class Stdin:
    def read(self, n: int = -1) -> bytes:  # pragma: no cover - interface
        return b""

    def readline(self) -> bytes:
        out = bytearray()
        while True:
            c = self.read(1)
            if not c:
                return bytes(out)
            out += c
            if c == b"\n":
                return bytes(out)


class BytesStdin(Stdin):
    def __init__(self, data: bytes = b""):
        self._b = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._b.read(n)

    def readline(self) -> bytes:
        return self._b.readline()


class QueueStdin(Stdin):
    """Stdin fed from another thread (the adb stream); `close()` is end of file."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._eof = False
        self._cv = threading.Condition()

    def feed(self, data: bytes) -> None:
        with self._cv:
            self._buf += data
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            self._eof = True
            self._cv.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cv:
            while not self._buf and not self._eof:
                self._cv.wait()
            if n < 0:
                while not self._eof:
                    self._cv.wait()
                n = len(self._buf)
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data

    def readline(self) -> bytes:
        with self._cv:
            while b"\n" not in self._buf and not self._eof:
                self._cv.wait()
            i = self._buf.find(b"\n")
            n = len(self._buf) if i < 0 else i + 1
            data = bytes(self._buf[:n])
            del self._buf[:n]
            return data


@dataclass
class IO:
    stdin: Stdin
    out: Callable[[bytes], None]
    err: Callable[[bytes], None]
    cancelled: threading.Event = field(default_factory=threading.Event)

    def say(self, text: str) -> None:
        self.out(text.encode())

    def complain(self, text: str) -> None:
        self.err(text.encode() if text.endswith("\n") else (text + "\n").encode())


class ShellExit(Exception):
    def __init__(self, code: int):
        self.code = code


class ShellSyntaxError(Exception):
    pass


# ---- lexer ---------------------------------------------------------------------------------------
# A word is a list of segments: ("lit", text, quoted), ("var", name, quoted), ("cmd", script, quoted).
Seg = tuple[str, str, bool]


@dataclass
class Word:
    segs: list[Seg]


@dataclass
class Op:
    op: str


@dataclass
class Redir:
    fd: int
    mode: str  # ">", ">>", "<", "dup"
    dup_to: int = -1


_SPECIAL_VARS = set("?#@*$!0123456789-")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokenize(src: str) -> list:
    toks: list = []
    segs: list[Seg] = []
    lit = ""
    started = False  # a word is in progress (even an empty quoted one)
    i, n = 0, len(src)

    def flush_lit(quoted: bool = False) -> None:
        nonlocal lit
        if lit:
            segs.append(("lit", lit, quoted))
            lit = ""

    def end_word() -> None:
        nonlocal segs, started
        flush_lit()
        if started:
            toks.append(Word(segs))
        segs, started = [], False

    def read_var(j: int, quoted: bool) -> int:
        """src[j] is just after '$'; append the segment and return the next index."""
        nonlocal lit
        if j < n and src[j] == "{":
            k = src.find("}", j)
            if k < 0:
                raise ShellSyntaxError("${: missing }")
            flush_lit(quoted)
            segs.append(("var", src[j + 1:k], quoted))
            return k + 1
        if j < n and src[j] == "(":
            depth, k = 1, j + 1
            while k < n and depth:
                if src[k] == "(":
                    depth += 1
                elif src[k] == ")":
                    depth -= 1
                k += 1
            if depth:
                raise ShellSyntaxError("$(: missing )")
            flush_lit(quoted)
            segs.append(("cmd", src[j + 1:k - 1], quoted))
            return k
        if j < n and src[j] in _SPECIAL_VARS:
            flush_lit(quoted)
            segs.append(("var", src[j], quoted))
            return j + 1
        m = _NAME_RE.match(src, j)
        if m:
            flush_lit(quoted)
            segs.append(("var", m.group(0), quoted))
            return m.end()
        lit += "$"
        return j

    while i < n:
        c = src[i]
        if c == "\\":
            if i + 1 < n:
                if src[i + 1] != "\n":
                    flush_lit()
                    segs.append(("lit", src[i + 1], True))
                    started = True
                i += 2
            else:
                i += 1
            continue
        if c == "'":
            k = src.find("'", i + 1)
            if k < 0:
                raise ShellSyntaxError("unterminated '")
            flush_lit()
            segs.append(("lit", src[i + 1:k], True))
            started = True
            i = k + 1
            continue
        if c == '"':
            flush_lit()
            started = True
            i += 1
            while True:
                if i >= n:
                    raise ShellSyntaxError('unterminated "')
                c = src[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\" and i + 1 < n and src[i + 1] in '$`"\\\n':
                    if src[i + 1] != "\n":
                        lit += src[i + 1]
                    i += 2
                    continue
                if c == "$":
                    i = read_var(i + 1, True)
                    continue
                if c == "`":
                    k = src.find("`", i + 1)
                    if k < 0:
                        raise ShellSyntaxError("unterminated `")
                    flush_lit(True)
                    segs.append(("cmd", src[i + 1:k], True))
                    i = k + 1
                    continue
                lit += c
                i += 1
            if lit or not segs or segs[-1][0] != "lit":
                segs.append(("lit", lit, True))
                lit = ""
            continue
        if c == "$":
            started = True
            i = read_var(i + 1, False)
            continue
        if c == "`":
            k = src.find("`", i + 1)
            if k < 0:
                raise ShellSyntaxError("unterminated `")
            flush_lit()
            segs.append(("cmd", src[i + 1:k], False))
            started = True
            i = k + 1
            continue
        if c in " \t":
            end_word()
            i += 1
            continue
        if c == "#" and not started:
            while i < n and src[i] != "\n":
                i += 1
            continue
        if c in "<>":
            fd = 1 if c == ">" else 0
            if started and segs == [] and lit.isdigit() and len(lit) == 1:
                fd = int(lit)
                lit, started = "", False
            else:
                end_word()
            if c == ">" and src.startswith(">>", i):
                toks.append(Redir(fd, ">>"))
                i += 2
            elif src.startswith(">&", i) or src.startswith("<&", i):
                j = i + 2
                m = re.match(r"\d", src[j:])
                if not m:
                    raise ShellSyntaxError(f"syntax error: '{src[i:j + 1]}' unexpected")
                toks.append(Redir(fd, "dup", int(m.group(0))))
                i = j + 1
            else:
                toks.append(Redir(fd, c))
                i += 1
                if c == ">" and i < n and src[i] == "|":
                    i += 1
            continue
        if c in ";&|\n()":
            end_word()
            two = src[i:i + 2]
            if two in ("&&", "||", ";;"):
                toks.append(Op(two))
                i += 2
            else:
                toks.append(Op(c))
                i += 1
            continue
        lit += c
        started = True
        i += 1
    end_word()
    return toks


# ---- parser --------------------------------------------------------------------------------------
@dataclass
class Command:
    assigns: list[tuple[str, Word]]
    words: list[Word]
    redirs: list[tuple[Redir, Word | None]]


@dataclass
class Pipeline:
    commands: list[Command]
    negate: bool = False


@dataclass
class AndOr:
    first: Pipeline
    rest: list[tuple[str, Pipeline]]


def parse(tokens: list) -> list[AndOr]:
    pos = 0
    result: list[AndOr] = []

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def parse_command() -> Command:
        nonlocal pos
        cmd = Command([], [], [])
        while True:
            t = peek()
            if isinstance(t, Word):
                pos += 1
                first = t.segs[0] if t.segs else None
                if (not cmd.words and first and first[0] == "lit" and not first[2]
                        and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", first[1])):
                    name, _, rest = first[1].partition("=")
                    cmd.assigns.append((name, Word(([("lit", rest, False)] if rest else []) + t.segs[1:])))
                else:
                    cmd.words.append(t)
            elif isinstance(t, Redir):
                pos += 1
                if t.mode == "dup":
                    cmd.redirs.append((t, None))
                else:
                    target = peek()
                    if not isinstance(target, Word):
                        raise ShellSyntaxError("syntax error: unexpected redirection")
                    pos += 1
                    cmd.redirs.append((t, target))
            else:
                break
        return cmd

    def parse_pipeline() -> Pipeline:
        nonlocal pos
        negate = False
        t = peek()
        if isinstance(t, Word) and t.segs == [("lit", "!", False)]:
            negate = True
            pos += 1
        cmds = [parse_command()]
        while isinstance(peek(), Op) and peek().op == "|":
            pos += 1
            while isinstance(peek(), Op) and peek().op == "\n":
                pos += 1
            cmds.append(parse_command())
        for c in cmds:
            if not c.words and not c.assigns and not c.redirs:
                t = peek()
                raise ShellSyntaxError(f"syntax error: '{t.op if isinstance(t, Op) else 'newline'}' unexpected")
        return Pipeline(cmds, negate)

    while pos < len(tokens):
        t = peek()
        if isinstance(t, Op) and t.op in (";", "\n", "&"):
            if t.op != "\n" and pos == 0:
                raise ShellSyntaxError(f"syntax error: '{t.op}' unexpected")
            pos += 1
            continue
        if isinstance(t, Op) and t.op in ("(", ")", ";;", "&&", "||", "|"):
            raise ShellSyntaxError(f"syntax error: '{t.op}' unexpected")
        first = parse_pipeline()
        rest: list[tuple[str, Pipeline]] = []
        while isinstance(peek(), Op) and peek().op in ("&&", "||"):
            op = peek().op
            pos += 1
            while isinstance(peek(), Op) and peek().op == "\n":
                pos += 1
            rest.append((op, parse_pipeline()))
        result.append(AndOr(first, rest))
        t = peek()
        if t is not None and not (isinstance(t, Op) and t.op in (";", "\n", "&")):
            raise ShellSyntaxError(f"syntax error: '{t.op if isinstance(t, Op) else '?'}' unexpected")
    return result


# ---- the shell -----------------------------------------------------------------------------------
def _mode_string(mode: int) -> str:
    return statmod.filemode(mode)


def _fmt_err(name: str, e: OSError, shown: str | None = None) -> str:
    path = shown if shown is not None else getattr(e, "device_path", None) or e.filename
    return f"{name}: {path}: {e.strerror or os.strerror(e.errno or errno.EIO)}"


class Shell:
    """One shell session: cwd, variables and `$?` persist across `run()` calls."""

    def __init__(self, device: Device, env: dict[str, str] | None = None, cwd: str = "/",
                 args: list[str] | None = None):
        self.dev = device
        self.fs = device.fs
        self.env: dict[str, str] = {
            "PATH": DEFAULT_PATH, "HOME": "/", "SHELL": SH, "USER": "shell", "LOGNAME": "shell",
            "HOSTNAME": "localhost", "TMPDIR": "/data/local/tmp", "ANDROID_DATA": "/data",
            "ANDROID_ROOT": "/system", "EXTERNAL_STORAGE": "/sdcard", "TERM": "dumb",
        }
        if env:
            self.env.update(env)
        self.vars: dict[str, str] = {}
        self.cwd = cwd
        self.args = args or [SH]
        self.last_rc = 0
        self.exited: int | None = None

    # -- entry points --
    def run(self, script: str, io_: IO) -> int:
        """Run a command line (or several lines); returns the exit status of the last command."""
        try:
            tree = parse(tokenize(script))
        except ShellSyntaxError as e:
            io_.complain(f"{SH}: {e}")
            self.last_rc = 1
            return 1
        try:
            for andor in tree:
                if io_.cancelled.is_set():
                    break
                self._run_andor(andor, io_)
        except ShellExit as e:
            self.last_rc = e.code
            self.exited = e.code
        return self.last_rc

    def interactive(self, io_: IO, prompt: bool = False) -> int:
        """Read commands from stdin line by line until end of input or `exit`."""
        buf = ""
        while self.exited is None and not io_.cancelled.is_set():
            if prompt and not buf:
                io_.out(f"{self.dev.props.get('ro.product.device', 'localhost')}:{self.cwd} $ ".encode())
            line = io_.stdin.readline()
            if not line:
                if buf.strip():
                    self.run(buf, io_)
                break
            buf += line.decode("utf-8", "replace")
            try:
                tokenize(buf)
            except ShellSyntaxError as e:
                if "unterminated" in str(e) or "missing" in str(e):
                    continue  # a quoted string spans lines
            self.run(buf, io_)
            buf = ""
        return self.exited if self.exited is not None else self.last_rc

    # -- structure --
    def _run_andor(self, ao: AndOr, io_: IO) -> None:
        self.last_rc = self._run_pipeline(ao.first, io_)
        for op, pl in ao.rest:
            if (op == "&&") == (self.last_rc == 0):
                self.last_rc = self._run_pipeline(pl, io_)

    def _run_pipeline(self, pl: Pipeline, io_: IO) -> int:
        if len(pl.commands) == 1:
            rc = self._run_command(pl.commands[0], io_)
        else:
            data_in = io_.stdin
            rc = 0
            for i, cmd in enumerate(pl.commands):
                last = i == len(pl.commands) - 1
                if last:
                    rc = self._run_command(cmd, IO(data_in, io_.out, io_.err, io_.cancelled))
                else:
                    buf = io.BytesIO()
                    try:
                        self._run_command(cmd, IO(data_in, buf.write, io_.err, io_.cancelled))
                    except ShellExit:
                        pass  # exit inside a pipeline only ends that part
                    data_in = BytesStdin(buf.getvalue())
        return (0 if rc else 1) if pl.negate else rc

    # -- expansion --
    def _var(self, name: str) -> str | None:
        if name == "?":
            return str(self.last_rc)
        if name == "$":
            return str(os.getpid())
        if name == "#":
            return str(len(self.args) - 1)
        if name in ("@", "*"):
            return " ".join(self.args[1:])
        if name.isdigit():
            k = int(name)
            return self.args[k] if k < len(self.args) else ""
        if name in self.vars:
            return self.vars[name]
        return self.env.get(name)

    def _command_subst(self, script: str) -> str:
        buf = io.BytesIO()
        sub = Shell(self.dev, dict(self.env), self.cwd, self.args)
        sub.vars = dict(self.vars)
        sub.last_rc = self.last_rc
        sub.run(script, IO(BytesStdin(), buf.write, self._err_sink))
        return buf.getvalue().decode("utf-8", "replace").rstrip("\n")

    _err_sink: Callable[[bytes], None] = staticmethod(lambda b: None)

    def expand_word(self, w: Word) -> list[str]:
        """A word after parameter expansion and globbing (possibly no words, possibly several)."""
        text = ""
        pattern = ""
        has_glob = False
        any_quoted = False
        for kind, val, quoted in w.segs:
            if kind == "lit":
                s = val
            elif kind == "var":
                s = self._var(val) or ""
            else:
                s = self._command_subst(val)
            any_quoted = any_quoted or quoted
            text += s
            if kind == "lit" and not quoted and any(ch in s for ch in "*?["):
                has_glob = True
                pattern += s
            else:
                pattern += re.sub(r"([*?\[])", r"[\1]", s)
        if has_glob:
            matches = self._glob(pattern)
            if matches:
                return matches
        if not text and not any_quoted:
            return []
        return [text]

    def _glob(self, pattern: str) -> list[str]:
        absolute = pattern.startswith("/")
        parts = [p for p in pattern.split("/") if p]
        bases = ["/" if absolute else ""]
        for i, part in enumerate(parts):
            nxt = []
            for b in bases:
                if any(ch in part for ch in "*?["):
                    try:
                        names = self.fs.listdir(b or ".", self.cwd)
                    except OSError:
                        continue
                    for nm in names:
                        if nm.startswith(".") and not part.startswith("."):
                            continue
                        if fnmatch.fnmatchcase(nm, part):
                            nxt.append(f"{b.rstrip('/')}/{nm}" if b else nm)
                            if not absolute and b == "":
                                nxt[-1] = nm
                else:
                    lit = re.sub(r"\[([*?\[])\]", r"\1", part)
                    cand = f"{b.rstrip('/')}/{lit}" if b else lit
                    if i == len(parts) - 1 and not self.fs.exists(cand, self.cwd):
                        continue
                    nxt.append(cand)
            bases = nxt
        return sorted(bases)

    # -- simple commands --
    def _run_command(self, cmd: Command, io_: IO) -> int:
        argv: list[str] = []
        for w in cmd.words:
            argv.extend(self.expand_word(w))
        assigns = {name: "".join(self.expand_word(w)) or "" for name, w in cmd.assigns}
        files: list = []
        out, err, stdin = io_.out, io_.err, io_.stdin
        try:
            for r, target in cmd.redirs:
                if r.mode == "dup":
                    src = {1: out, 2: err}.get(r.dup_to)
                    if src is None:
                        raise ShellSyntaxError(f"{r.dup_to}: bad file descriptor")
                    if r.fd == 1:
                        out = src
                    elif r.fd == 2:
                        err = src
                    continue
                words = self.expand_word(target) if target else []
                if len(words) != 1:
                    io_.complain(f"{SH}: {''.join(words) or 'redirection'}: ambiguous redirect")
                    return 1
                path = words[0]
                if r.mode == "<":
                    stdin = BytesStdin(self.fs.read_bytes(path, self.cwd))
                    continue
                if path == "/dev/null":
                    f = None
                    sink = _discard
                else:
                    f = self.fs.open_write(path, self.cwd, append=r.mode == ">>")
                    files.append(f)
                    sink = f.write
                if r.fd == 1:
                    out = sink
                elif r.fd == 2:
                    err = sink
        except FsError as e:
            for f in files:
                f.close()
            io_.complain(f"{SH}: {e.device_path}: {'cannot create' if e.errno != errno.ENOENT else 'cannot open'}: {e.strerror}"
                         if e.errno not in (errno.ENOENT,) else f"{SH}: {e.device_path}: No such file or directory")
            return 1
        except ShellSyntaxError as e:
            io_.complain(f"{SH}: {e}")
            return 1
        try:
            if not argv:
                self.vars.update(assigns)
                return 0
            sub = IO(stdin, out, err, io_.cancelled)
            try:
                return self._dispatch(argv, assigns, sub)
            except FsError as e:
                sub.complain(_fmt_err(argv[0], e))
                return 1
        finally:
            for f in files:
                f.close()

    def _dispatch(self, argv: list[str], assigns: dict[str, str], io_: IO) -> int:
        name = argv[0]
        builtin = BUILTINS.get(name)
        if builtin is not None and "/" not in name:
            if assigns and name not in ("export",):
                saved = dict(self.env)
                self.env.update(assigns)
                try:
                    return builtin(self, argv, io_)
                finally:
                    self.env = saved
            return builtin(self, argv, io_)
        env = {**self.env, **assigns}
        if "/" in name:
            return self.exec_file(name, argv, env, io_)
        for d in env.get("PATH", DEFAULT_PATH).split(":"):
            cand = f"{d.rstrip('/')}/{name}" if d else name
            try:
                st = self.fs.stat(cand, self.cwd)
            except OSError:
                continue
            if statmod.S_ISREG(st.st_mode):
                return self.exec_file(cand, [cand, *argv[1:]], env, io_)
        io_.complain(f"{SH}: {name}: inaccessible or not found")
        return 127

    def exec_file(self, path: str, argv: list[str], env: dict[str, str], io_: IO) -> int:
        """Execute a file in the sandbox as a phone would: a runner, a shell script, or refuse."""
        try:
            st = self.fs.stat(path, self.cwd)
        except OSError:
            io_.complain(f"{SH}: {path}: inaccessible or not found")
            return 127
        if statmod.S_ISDIR(st.st_mode):
            io_.complain(f"{SH}: {path}: can't execute: Is a directory")
            return 126
        if not st.st_mode & 0o111:
            io_.complain(f"{SH}: {path}: can't execute: Permission denied")
            return 126
        try:
            with self.fs.open_read(path, self.cwd) as f:
                head = f.read(256)
        except OSError as e:
            io_.complain(f"{SH}: {path}: can't execute: {e.strerror}")
            return 126
        magic = runner_magic()
        if head.startswith(magic):
            return self._run_runner(path, argv, env, io_)
        if head.startswith(b"\x7fELF"):
            bits = 64 if len(head) > 4 and head[4] == 2 else 32
            io_.complain(f"{SH}: {path}: not executable: {bits}-bit ELF file")
            return 126
        if head.startswith(b"#!"):
            interp = head[2:].split(b"\n", 1)[0].strip().split(b" ")[0].decode("utf-8", "replace")
            if interp not in (SH, "/bin/sh", "/system/bin/sh"):
                io_.complain(f"{SH}: {path}: No such file or directory")
                return 127
        try:
            script = self.fs.read_bytes(path, self.cwd).decode("utf-8")
        except UnicodeDecodeError:
            io_.complain(f"{SH}: {path}: can't execute: Exec format error")
            return 126
        sub = Shell(self.dev, env, self.cwd, [path, *argv[1:]])
        return sub.run(script, io_)

    def _run_runner(self, path: str, argv: list[str], env: dict[str, str], io_: IO) -> int:
        cwd = self.cwd
        fs = self.fs

        def resolve(device_path: str):
            return fs.resolve(str(device_path), cwd)

        ctx = RunnerContext(resolve=resolve, stdout=io_.out, stderr=io_.err, profile=self.dev.profile,
                            env=dict(env), cwd=cwd, cancelled=io_.cancelled,
                            open_file=lambda p: fs.open_fd(str(p), cwd),
                            listdir=lambda p: fs.listdir(str(p), cwd))
        log.info("runner: %s", " ".join(argv))
        try:
            rc = int(self.dev.run_runner(list(argv), ctx))
        except Exception as e:  # a runner bug: report it like a crashed native binary would
            log.error("runner crashed:\n%s", traceback.format_exc())
            io_.complain(f"{path}: runner crashed: {type(e).__name__}: {e}")
            return 134
        return rc & 0xFF


def _discard(_: bytes) -> None:
    pass


# ---- builtins ------------------------------------------------------------------------------------
BUILTINS: dict[str, Callable[[Shell, list[str], IO], int]] = {}


def builtin(*names: str):
    def deco(fn):
        for n in names:
            BUILTINS[n] = fn
        return fn

    return deco


def _split_flags(argv: list[str], allowed: str) -> tuple[set[str], list[str], str | None]:
    """Toybox-style short flags; returns (flags, operands, bad flag)."""
    flags: set[str] = set()
    rest: list[str] = []
    it = iter(argv[1:])
    for a in it:
        if a == "--":
            rest.extend(it)
            break
        if a.startswith("-") and len(a) > 1 and not rest:
            for ch in a[1:]:
                if ch not in allowed:
                    return flags, rest, ch
                flags.add(ch)
        else:
            rest.append(a)
    return flags, rest, None


def _bad_flag(io_: IO, name: str, ch: str) -> int:
    io_.complain(f"{name}: Unknown option '{ch}' (see \"{name} --help\")")
    return 1


@builtin("true", ":")
def b_true(sh, argv, io_):
    return 0


@builtin("false")
def b_false(sh, argv, io_):
    return 1


@builtin("exit")
def b_exit(sh, argv, io_):
    code = sh.last_rc
    if len(argv) > 1:
        try:
            code = int(argv[1]) & 0xFF
        except ValueError:
            io_.complain(f"{SH}: exit: {argv[1]}: bad number")
            code = 1
    raise ShellExit(code)


@builtin("echo")
def b_echo(sh, argv, io_):
    args = argv[1:]
    newline, escapes = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        newline = newline and "n" not in args[0]
        escapes = "e" in args[0] or (escapes and "E" not in args[0])
        args = args[1:]
    text = " ".join(args)
    if escapes:
        text = text.encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
    io_.say(text + ("\n" if newline else ""))
    return 0


@builtin("printf")
def b_printf(sh, argv, io_):
    if len(argv) < 2:
        io_.complain("printf: Needs 1 argument")
        return 1
    fmt = argv[1].encode("utf-8").decode("unicode_escape").encode("latin-1").decode("utf-8", "replace")
    args = argv[2:]
    out = []
    specs = re.findall(r"%[-+ 0#]*\d*(?:\.\d+)?[sdiuxXoc%f]", fmt)
    nspec = sum(1 for s in specs if s != "%%")
    while True:
        chunk = args[:nspec] if nspec else []
        args = args[nspec:] if nspec else []
        vals = []
        for s in specs:
            if s == "%%":
                continue
            v = chunk.pop(0) if chunk else ""
            if s[-1] in "diuxXoc":
                try:
                    v = int(v or 0, 0)
                except ValueError:
                    v = 0
            elif s[-1] == "f":
                v = float(v or 0)
            vals.append(v)
        py = re.sub(r"%([-+ 0#]*\d*(?:\.\d+)?)[iu]", r"%\1d", fmt)
        try:
            out.append(py % tuple(vals))
        except (TypeError, ValueError):
            out.append(fmt)
        if not args or not nspec:
            break
    io_.say("".join(out))
    return 0


@builtin("getprop")
def b_getprop(sh, argv, io_):
    props = sh.dev.props
    if len(argv) == 1:
        io_.say("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
        return 0
    io_.say(props.get(argv[1], argv[2] if len(argv) > 2 else "") + "\n")
    return 0


@builtin("setprop")
def b_setprop(sh, argv, io_):
    if len(argv) != 3:
        io_.complain("setprop: Need 2 arguments")
        return 1
    io_.complain(f"Failed to set property '{argv[1]}' to '{argv[2]}'.\nSee dmesg for error reason.")
    return 1


@builtin("uname")
def b_uname(sh, argv, io_):
    flags, _, bad = _split_flags(argv, "asnrvmo")
    if bad:
        return _bad_flag(io_, "uname", bad)
    p = sh.dev.profile
    fields = {
        "s": "Linux", "n": "localhost", "r": p.kernel_release,
        "v": "#1 SMP PREEMPT Mon Jan  1 00:00:00 UTC 2024", "m": "aarch64", "o": "Toybox",
    }
    if "a" in flags:
        keys = "snrvmo"
    else:
        keys = "".join(k for k in "snrvmo" if k in flags) or "s"
    io_.say(" ".join(fields[k] for k in keys) + "\n")
    return 0


@builtin("cd")
def b_cd(sh, argv, io_):
    target = argv[1] if len(argv) > 1 else sh.env.get("HOME", "/")
    try:
        dev, _ = sh.fs.canonical(target, sh.cwd)
        if not statmod.S_ISDIR(sh.fs.stat(target, sh.cwd).st_mode):
            raise FsError(errno.ENOTDIR, target)
    except FsError as e:
        io_.complain(f"{SH}: cd: {target}: {e.strerror}")
        return 2
    sh.cwd = str(dev)
    return 0


@builtin("pwd")
def b_pwd(sh, argv, io_):
    io_.say(sh.cwd + "\n")
    return 0


@builtin("export")
def b_export(sh, argv, io_):
    for a in argv[1:]:
        k, eq, v = a.partition("=")
        if eq:
            sh.env[k] = v
        elif k in sh.vars:
            sh.env[k] = sh.vars.pop(k)
    return 0


@builtin("unset")
def b_unset(sh, argv, io_):
    for a in argv[1:]:
        sh.env.pop(a, None)
        sh.vars.pop(a, None)
    return 0


@builtin("env")
def b_env(sh, argv, io_):
    env = dict(sh.env)
    args = argv[1:]
    while args and "=" in args[0]:
        k, _, v = args.pop(0).partition("=")
        env[k] = v
    if args:
        saved = sh.env
        sh.env = env
        try:
            return sh._dispatch(args, {}, io_)
        finally:
            sh.env = saved
    io_.say("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
    return 0


@builtin("id")
def b_id(sh, argv, io_):
    io_.say("uid=2000(shell) gid=2000(shell) groups=2000(shell),1004(input),1007(log),1011(adb),"
            "1015(sdcard_rw),1028(sdcard_r),3001(net_bt_admin),3002(net_bt),3003(inet) "
            "context=u:r:shell:s0\n")
    return 0


@builtin("whoami")
def b_whoami(sh, argv, io_):
    io_.say("shell\n")
    return 0


@builtin("sleep")
def b_sleep(sh, argv, io_):
    try:
        secs = float(argv[1]) if len(argv) > 1 else 0
    except ValueError:
        io_.complain(f"sleep: invalid number '{argv[1]}'")
        return 1
    io_.cancelled.wait(secs)
    return 0


@builtin("nproc")
def b_nproc(sh, argv, io_):
    io_.say(f"{sh.dev.profile.cpu_count}\n")
    return 0


@builtin("date")
def b_date(sh, argv, io_):
    if len(argv) > 1 and argv[1].startswith("+"):
        fmt = argv[1][1:]
        io_.say(time.strftime(fmt.replace("%s", str(int(time.time()))), time.localtime()) + "\n")
    else:
        io_.say(time.strftime("%a %b %d %H:%M:%S %Z %Y") + "\n")
    return 0


@builtin("which")
def b_which(sh, argv, io_):
    rc = 0
    for name in argv[1:]:
        found = None
        for d in sh.env.get("PATH", DEFAULT_PATH).split(":"):
            cand = f"{d.rstrip('/')}/{name}"
            if name in BUILTINS and d == "/system/bin":
                found = cand
                break
            try:
                st = sh.fs.stat(cand)
                if statmod.S_ISREG(st.st_mode) and st.st_mode & 0o111:
                    found = cand
                    break
            except OSError:
                pass
        if found:
            io_.say(found + "\n")
        else:
            rc = 1
    return rc


@builtin("command")
def b_command(sh, argv, io_):
    if len(argv) > 2 and argv[1] == "-v":
        return b_which(sh, ["which", *argv[2:]], io_)
    if len(argv) > 1:
        return sh._dispatch(argv[1:], {}, io_)
    return 0


@builtin("sh")
def b_sh(sh, argv, io_):
    if len(argv) > 2 and argv[1] == "-c":
        sub = Shell(sh.dev, dict(sh.env), sh.cwd, [argv[3] if len(argv) > 3 else SH, *argv[4:]])
        return sub.run(argv[2], io_)
    if len(argv) > 1:
        try:
            script = sh.fs.read_bytes(argv[1], sh.cwd).decode("utf-8", "replace")
        except FsError as e:
            io_.complain(f"{SH}: {argv[1]}: {e.strerror}")
            return 127
        sub = Shell(sh.dev, dict(sh.env), sh.cwd, argv[1:])
        return sub.run(script, io_)
    sub = Shell(sh.dev, dict(sh.env), sh.cwd)
    return sub.interactive(io_)


def _test_eval(sh: Shell, args: list[str]) -> bool:
    if not args:
        return False
    if args[0] == "!":
        return not _test_eval(sh, args[1:])
    if len(args) >= 3 and "-a" in args[1:-1]:
        i = args.index("-a", 1)
        return _test_eval(sh, args[:i]) and _test_eval(sh, args[i + 1:])
    if len(args) >= 3 and "-o" in args[1:-1]:
        i = args.index("-o", 1)
        return _test_eval(sh, args[:i]) or _test_eval(sh, args[i + 1:])
    if len(args) == 1:
        return args[0] != ""
    if len(args) == 2:
        op, val = args
        if op == "-z":
            return val == ""
        if op == "-n":
            return val != ""
        try:
            st = sh.fs.stat(val, sh.cwd) if op != "-L" else sh.fs.lstat(val, sh.cwd)
        except OSError:
            return False
        m = st.st_mode
        return {
            "-e": True, "-f": statmod.S_ISREG(m), "-d": statmod.S_ISDIR(m), "-L": statmod.S_ISLNK(m),
            "-h": statmod.S_ISLNK(m), "-s": st.st_size > 0, "-r": True, "-x": bool(m & 0o111),
            "-w": sh.fs.mount_mode(sh.fs.canonical(val, sh.cwd)[0]) == "rw",
        }.get(op, False)
    a, op, b = args[0], args[1], args[2]
    if op in ("=", "=="):
        return a == b
    if op == "!=":
        return a != b
    ints = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__, "-gt": int.__gt__,
            "-le": int.__le__, "-ge": int.__ge__}
    if op in ints:
        try:
            return ints[op](int(a), int(b))
        except ValueError:
            return False
    return False


@builtin("test", "[")
def b_test(sh, argv, io_):
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            io_.complain("[: missing ]")
            return 2
        args = args[:-1]
    return 0 if _test_eval(sh, args) else 1


def _owner(sh: Shell, dev: PurePosixPath) -> str:
    return "shell" if sh.fs.mount_mode(dev) == "rw" else "root"


def _ls_long(sh: Shell, st: os.stat_result, name: str, dev: PurePosixPath, link: str | None, human: bool) -> str:
    owner = _owner(sh, dev)
    group = "shell" if owner == "shell" else "root"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
    size = _human(st.st_size) if human else str(st.st_size)
    tail = f" -> {link}" if link is not None else ""
    return f"{_mode_string(st.st_mode)} {st.st_nlink:>2} {owner:<5} {group:<5} {size:>9} {when} {name}{tail}\n"


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.1f}{unit}" if unit and n < 10 else f"{int(n)}{unit}"
        n /= 1024
    return str(n)


@builtin("ls")
def b_ls(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "laA1dhRsFtrSn")
    if bad:
        return _bad_flag(io_, "ls", bad)
    paths = paths or ["."]
    rc = 0
    files, dirs = [], []
    for p in paths:
        try:
            st = sh.fs.lstat(p, sh.cwd)
            if statmod.S_ISLNK(st.st_mode) and "l" not in flags and "d" not in flags:
                st = sh.fs.stat(p, sh.cwd)
        except OSError as e:
            io_.complain(_fmt_err("ls", e, p))
            rc = 1
            continue
        if statmod.S_ISDIR(st.st_mode) and "d" not in flags:
            dirs.append(p)
        else:
            files.append((p, st))
    show_all = "a" in flags
    almost = "A" in flags

    def entry_line(name: str, full: str, st: os.stat_result) -> str:
        if "l" not in flags and "n" not in flags:
            return name + "\n"
        dev = sh.fs.canonical(full, sh.cwd, follow=False)[0]
        link = sh.fs.readlink(full, sh.cwd) if statmod.S_ISLNK(st.st_mode) else None
        return _ls_long(sh, st, name, dev, link, "h" in flags)

    for p, st in files:
        io_.say(entry_line(p, p, st))
    multi = len(dirs) + len(files) > 1 or "R" in flags
    queue = list(dirs)
    first = not files
    while queue:
        d = queue.pop(0)
        try:
            names = sh.fs.listdir(d, sh.cwd)
        except OSError as e:
            io_.complain(_fmt_err("ls", e, d))
            rc = 1
            continue
        if show_all:
            names = [".", ".."] + names
        elif not almost:
            names = [n for n in names if not n.startswith(".")]
        if multi:
            io_.say(("" if first else "\n") + f"{d}:\n")
        first = False
        lines = []
        total = 0
        subdirs = []
        for nm in names:
            full = f"{d.rstrip('/')}/{nm}" if d != "/" else f"/{nm}"
            try:
                st = sh.fs.lstat(full, sh.cwd)
            except OSError:
                continue
            total += (st.st_blocks * 512 + 1023) // 1024
            lines.append(entry_line(nm, full, st))
            if "R" in flags and statmod.S_ISDIR(st.st_mode) and nm not in (".", ".."):
                subdirs.append(full)
        if "l" in flags or "n" in flags:
            io_.say(f"total {total}\n")
        io_.say("".join(lines))
        queue[0:0] = subdirs
    return rc


@builtin("cat")
def b_cat(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "uv")
    if bad:
        return _bad_flag(io_, "cat", bad)
    rc = 0
    for p in paths or ["-"]:
        if p == "-":
            while True:
                chunk = io_.stdin.read(65536)
                if not chunk:
                    break
                io_.out(chunk)
            continue
        try:
            with sh.fs.open_read(p, sh.cwd) as f:
                while True:
                    chunk = f.read(1 << 20)
                    if not chunk:
                        break
                    io_.out(chunk)
        except OSError as e:
            io_.complain(_fmt_err("cat", e, p))
            rc = 1
    return rc


def _read_input(sh: Shell, io_: IO, name: str, paths: list[str]) -> tuple[list[tuple[str, bytes]], int]:
    rc = 0
    items = []
    for p in paths or ["-"]:
        if p == "-":
            items.append(("-", io_.stdin.read()))
            continue
        try:
            items.append((p, sh.fs.read_bytes(p, sh.cwd)))
        except OSError as e:
            io_.complain(_fmt_err(name, e, p))
            rc = 1
    return items, rc


@builtin("head", "tail")
def b_head_tail(sh, argv, io_):
    name = argv[0]
    n = 10
    nbytes = None
    paths = []
    args = argv[1:]
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-n", "-c") and i + 1 < len(args):
            if a == "-c":
                nbytes = int(args[i + 1])
            n = int(args[i + 1].lstrip("+-") or 10)
            i += 2
            continue
        if re.fullmatch(r"-n?\d+", a):
            n = int(a.lstrip("-n"))
        else:
            paths.append(a)
        i += 1
    items, rc = _read_input(sh, io_, name, paths)
    for _, data in items:
        if nbytes is not None:
            io_.out(data[:nbytes] if name == "head" else data[-nbytes:] if nbytes else b"")
            continue
        lines = data.splitlines(keepends=True)
        io_.out(b"".join(lines[:n] if name == "head" else (lines[-n:] if n else [])))
    return rc


@builtin("wc")
def b_wc(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "lcwm")
    if bad:
        return _bad_flag(io_, "wc", bad)
    flags = flags or {"l", "w", "c"}
    items, rc = _read_input(sh, io_, "wc", paths)
    for p, data in items:
        vals = []
        if "l" in flags:
            vals.append(data.count(b"\n"))
        if "w" in flags:
            vals.append(len(data.split()))
        if "c" in flags or "m" in flags:
            vals.append(len(data))
        tail = "" if p == "-" else f" {p}"
        io_.say(" ".join(str(v) for v in vals) + tail + "\n")
    return rc


@builtin("grep")
def b_grep(sh, argv, io_):
    flags, rest, bad = _split_flags(argv, "viFEcqlnwo")
    if bad:
        return _bad_flag(io_, "grep", bad)
    if not rest:
        io_.complain("grep: Needs 1 argument")
        return 2
    pat, paths = rest[0], rest[1:]
    text = re.escape(pat) if "F" in flags else pat
    if "F" not in flags and "E" not in flags:
        text = text.replace(r"\|", "|").replace(r"\(", "(").replace(r"\)", ")")
    if "w" in flags:
        text = rf"\b(?:{text})\b"
    try:
        rx = re.compile(text.encode(), re.I if "i" in flags else 0)
    except re.error:
        io_.complain(f"grep: bad regex '{pat}'")
        return 2
    items, rc = _read_input(sh, io_, "grep", paths)
    found = False
    for p, data in items:
        count = 0
        for lineno, line in enumerate(data.splitlines(), 1):
            hit = bool(rx.search(line)) != ("v" in flags)
            if not hit:
                continue
            found = True
            count += 1
            if "q" in flags or "l" in flags or "c" in flags:
                continue
            prefix = (f"{p}:" if len(items) > 1 else "") + (f"{lineno}:" if "n" in flags else "")
            io_.out(prefix.encode() + line + b"\n")
        if "c" in flags:
            io_.say((f"{p}:" if len(items) > 1 else "") + f"{count}\n")
        if "l" in flags and count:
            io_.say(p + "\n")
    if rc:
        return 2
    return 0 if found else 1


@builtin("rm")
def b_rm(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "rRfiv")
    if bad:
        return _bad_flag(io_, "rm", bad)
    if not paths:
        if "f" in flags:
            return 0
        io_.complain("rm: Needs 1 argument (see \"rm --help\")")
        return 1
    rc = 0
    for p in paths:
        try:
            sh.fs.remove(p, sh.cwd, recursive=bool(flags & {"r", "R"}))
        except OSError as e:
            if "f" in flags and e.errno == errno.ENOENT:
                continue
            if e.errno == errno.EISDIR:
                io_.complain(f"rm: {p}: Is a directory")
            else:
                io_.complain(_fmt_err("rm", e, p))
            rc = 1
    return rc


@builtin("rmdir")
def b_rmdir(sh, argv, io_):
    rc = 0
    for p in argv[1:]:
        try:
            sh.fs.rmdir(p, sh.cwd)
        except OSError as e:
            io_.complain(_fmt_err("rmdir", e, p))
            rc = 1
    return rc


@builtin("mkdir")
def b_mkdir(sh, argv, io_):
    args = argv[1:]
    parents, mode = False, 0o771
    paths = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-p":
            parents = True
        elif a == "-m" and i + 1 < len(args):
            mode = int(args[i + 1], 8)
            i += 1
        elif a.startswith("-") and len(a) > 1 and not paths:
            for ch in a[1:]:
                if ch == "p":
                    parents = True
                elif ch != "v":
                    return _bad_flag(io_, "mkdir", ch)
        else:
            paths.append(a)
        i += 1
    if not paths:
        io_.complain("mkdir: Needs 1 argument (see \"mkdir --help\")")
        return 1
    rc = 0
    for p in paths:
        try:
            sh.fs.mkdir(p, sh.cwd, parents=parents, mode=mode)
        except OSError as e:
            io_.complain(f"mkdir: '{p}': {e.strerror}")
            rc = 1
    return rc


def _copy_or_move(sh: Shell, argv: list[str], io_: IO, move: bool) -> int:
    name = argv[0]
    flags, paths, bad = _split_flags(argv, "rRfpaivnHLP")
    if bad:
        return _bad_flag(io_, name, bad)
    if len(paths) < 2:
        io_.complain(f"{name}: Needs 2 arguments (see \"{name} --help\")")
        return 1
    *srcs, dst = paths
    if len(srcs) > 1:
        try:
            st = sh.fs.stat(dst, sh.cwd)
            is_dir = statmod.S_ISDIR(st.st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            io_.complain(f"{name}: '{dst}' not directory")
            return 1
    rc = 0
    for s in srcs:
        try:
            if move:
                sh.fs.rename(s, dst, sh.cwd)
            else:
                sh.fs.copy(s, dst, sh.cwd, recursive=bool(flags & {"r", "R", "a"}))
        except OSError as e:
            if e.errno == errno.EISDIR and not move:
                io_.complain(f"{name}: {s}: Is a directory" if getattr(e, "device_path", s) == s
                             else _fmt_err(name, e))
            else:
                io_.complain(_fmt_err(name, e))
            rc = 1
    return rc


@builtin("cp")
def b_cp(sh, argv, io_):
    return _copy_or_move(sh, argv, io_, move=False)


@builtin("mv")
def b_mv(sh, argv, io_):
    return _copy_or_move(sh, argv, io_, move=True)


def _apply_mode(spec: str, mode: int, is_dir: bool) -> int | None:
    if re.fullmatch(r"[0-7]{1,4}", spec):
        return int(spec, 8)
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxXst]*)", clause)
        if not m:
            return None
        who, op, perms = m.groups()
        who = who or "a"
        bits = 0
        for w in ("u", "g", "o"):
            if w in who or "a" in who:
                shift = {"u": 6, "g": 3, "o": 0}[w]
                for p in perms:
                    if p == "r":
                        bits |= 4 << shift
                    elif p == "w":
                        bits |= 2 << shift
                    elif p == "x" or (p == "X" and (is_dir or mode & 0o111)):
                        bits |= 1 << shift
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mask = sum((7 << {"u": 6, "g": 3, "o": 0}[w]) for w in "ugo" if w in who or "a" in who)
            mode = (mode & ~mask) | bits
    return mode


@builtin("chmod")
def b_chmod(sh, argv, io_):
    args = argv[1:]
    recursive = False
    if args and args[0] == "-R":
        recursive, args = True, args[1:]
    if len(args) < 2:
        io_.complain("chmod: Needs 2 arguments (see \"chmod --help\")")
        return 1
    spec, paths = args[0], args[1:]
    rc = 0
    targets: list[str] = []
    for p in paths:
        targets.append(p)
        if recursive:
            try:
                if sh.fs.is_dir(p, sh.cwd):
                    targets.extend(sh.fs.walk_tree(p, sh.cwd))
            except OSError:
                pass
    for p in targets:
        try:
            st = sh.fs.stat(p, sh.cwd)
            new = _apply_mode(spec, statmod.S_IMODE(st.st_mode), statmod.S_ISDIR(st.st_mode))
            if new is None:
                io_.complain(f"chmod: bad mode '{spec}'")
                return 1
            sh.fs.chmod(p, new, sh.cwd)
        except OSError as e:
            io_.complain(_fmt_err("chmod", e, p))
            rc = 1
    return rc


@builtin("touch")
def b_touch(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "acm")
    if bad:
        return _bad_flag(io_, "touch", bad)
    rc = 0
    for p in paths:
        try:
            sh.fs.touch(p, sh.cwd)
        except OSError as e:
            io_.complain(_fmt_err("touch", e, p))
            rc = 1
    return rc


@builtin("ln")
def b_ln(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "sfnv")
    if bad:
        return _bad_flag(io_, "ln", bad)
    if "s" not in flags or len(paths) != 2:
        io_.complain("ln: only 'ln -s TARGET LINK' is supported here")
        return 1
    target, link = paths
    try:
        if "f" in flags:
            try:
                sh.fs.remove(link, sh.cwd)
            except OSError:
                pass
        sh.fs.symlink(target, link, sh.cwd)
    except OSError as e:
        io_.complain(_fmt_err("ln", e, link))
        return 1
    return 0


@builtin("readlink")
def b_readlink(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "fenqm")
    if bad:
        return _bad_flag(io_, "readlink", bad)
    rc = 0
    for p in paths:
        try:
            if flags & {"f", "e", "m"}:
                io_.say(str(sh.fs.canonical(p, sh.cwd)[0]) + "\n")
            else:
                io_.say(sh.fs.readlink(p, sh.cwd) + "\n")
        except OSError:
            rc = 1
    return rc


@builtin("basename")
def b_basename(sh, argv, io_):
    if len(argv) < 2:
        return 1
    base = PurePosixPath(argv[1]).name or "/"
    if len(argv) > 2 and base.endswith(argv[2]) and base != argv[2]:
        base = base[: -len(argv[2])]
    io_.say(base + "\n")
    return 0


@builtin("dirname")
def b_dirname(sh, argv, io_):
    if len(argv) < 2:
        return 1
    io_.say(str(PurePosixPath(argv[1]).parent) + "\n")
    return 0


def _hash_cmd(algo: str):
    def run(sh, argv, io_):
        _, paths, _ = _split_flags(argv, "bc")
        rc = 0
        for p in paths or ["-"]:
            if p == "-":
                digest = hashlib.new(algo, io_.stdin.read()).hexdigest()
            else:
                try:
                    h = hashlib.new(algo)
                    with sh.fs.open_read(p, sh.cwd) as f:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                    digest = h.hexdigest()
                except OSError as e:
                    io_.complain(_fmt_err(argv[0], e, p))
                    rc = 1
                    continue
            io_.say(f"{digest}  {p}\n")
        return rc

    return run


BUILTINS["sha256sum"] = _hash_cmd("sha256")
BUILTINS["sha1sum"] = _hash_cmd("sha1")
BUILTINS["md5sum"] = _hash_cmd("md5")


@builtin("stat")
def b_stat(sh, argv, io_):
    args = argv[1:]
    fmt = None
    follow = False
    paths = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in ("-c", "--format") and i + 1 < len(args):
            fmt = args[i + 1]
            i += 2
            continue
        if a.startswith("--format="):
            fmt = a.split("=", 1)[1]
        elif a in ("-L",):
            follow = True
        else:
            paths.append(a)
        i += 1
    if not paths:
        io_.complain("stat: Needs 1 argument (see \"stat --help\")")
        return 1
    rc = 0
    for p in paths:
        try:
            st = sh.fs.stat(p, sh.cwd) if follow else sh.fs.lstat(p, sh.cwd)
            dev = sh.fs.canonical(p, sh.cwd, follow=follow)[0]
        except OSError as e:
            io_.complain(f"stat: '{p}': {e.strerror}")
            rc = 1
            continue
        owner = _owner(sh, dev)
        uid = 2000 if owner == "shell" else 0
        kind = ("directory" if statmod.S_ISDIR(st.st_mode) else "symbolic link" if statmod.S_ISLNK(st.st_mode)
                else ("regular empty file" if st.st_size == 0 else "regular file"))
        vals = {
            "n": p, "N": f"'{p}'", "s": str(st.st_size), "a": f"{statmod.S_IMODE(st.st_mode):o}",
            "A": _mode_string(st.st_mode), "F": kind, "U": owner, "G": owner, "u": str(uid), "g": str(uid),
            "Y": str(int(st.st_mtime)), "X": str(int(st.st_atime)), "Z": str(int(st.st_ctime)),
            "y": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(st.st_mtime)), "h": str(st.st_nlink),
            "i": str(st.st_ino), "b": str(st.st_blocks), "B": "512", "f": f"{st.st_mode:x}", "t": "0", "T": "0",
            "d": "0", "D": "0", "o": "4096", "%": "%",
        }
        if fmt is not None:
            text = re.sub(r"%(.)", lambda m: vals.get(m.group(1), m.group(0)), fmt)
            io_.say(text + "\n")
        else:
            io_.say(f"  File: {p}\n  Size: {st.st_size}\t Blocks: {st.st_blocks}\t IO Blocks: 512\t{kind}\n"
                    f"Device: 0h/0d\t Inode: {st.st_ino}\t Links: {st.st_nlink}\n"
                    f"Access: ({vals['a']:>04}/{vals['A']})\tUid: ({uid:5}/{owner:>8})\tGid: ({uid:5}/{owner:>8})\n"
                    f"Modify: {vals['y']}\n")
    return rc


@builtin("df")
def b_df(sh, argv, io_):
    flags, paths, bad = _split_flags(argv, "hkPa")
    if bad:
        return _bad_flag(io_, "df", bad)
    fs = sh.fs
    rows = []
    total = fs.storage_bytes
    used = fs.usage()
    avail = max(0, total - used)
    data_row = ("/dev/block/dm-48", total, used, avail, "/data")
    sys_row = ("/dev/block/dm-6", 6 << 30, 6 << 30, 0, "/")
    if paths:
        for p in paths:
            try:
                dev, _ = fs.canonical(p, sh.cwd)
                fs.stat(p, sh.cwd)
            except OSError as e:
                io_.complain(_fmt_err("df", e, p))
                return 1
            rows.append(data_row if fs.in_quota(dev) else sys_row)
    else:
        rows = [sys_row, ("tmpfs", 0x100000000, 0, 0x100000000, "/dev"), data_row]
    if "h" in flags:
        io_.say("Filesystem        Size  Used Avail Use% Mounted on\n")
    else:
        io_.say("Filesystem       1K-blocks     Used Available Use% Mounted on\n")
    for name, size, u, a, mnt in rows:
        pct = f"{(u * 100 + size - 1) // size if size else 0}%"
        if "h" in flags:
            io_.say(f"{name:<16} {_human(size):>5} {_human(u):>5} {_human(a):>5} {pct:>4} {mnt}\n")
        else:
            io_.say(f"{name:<16} {size // 1024:>9} {u // 1024:>8} {a // 1024:>9} {pct:>4} {mnt}\n")
    return 0


@builtin("free")
def b_free(sh, argv, io_):
    total = sh.dev.profile.ram_bytes
    avail = sh.dev.profile.ram_budget_bytes
    used = total - avail
    io_.say("\t\ttotal        used        free      shared     buffers\n"
            f"Mem:    {total:>12} {used:>11} {avail:>11} {0:>11} {0:>11}\n")
    return 0


@builtin("getenforce")
def b_getenforce(sh, argv, io_):
    io_.say("Enforcing\n")
    return 0


@builtin("reboot")
def b_reboot(sh, argv, io_):
    io_.complain("reboot: Operation not permitted")
    return 1


@builtin("su")
def b_su(sh, argv, io_):
    io_.complain(f"{SH}: su: inaccessible or not found")
    return 127
