"""Every bad input a user (or a red-team pass) gives the CLI is one line, exit 2, no traceback:
usage errors of every command, broken checkpoint files, out-of-range values, prompts that do not
fit or are not UTF-8, output paths that cannot be written, tools modules that exit, and two
conversions sharing a parent directory."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import struct
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from support import REPO
from support.cli import assert_one_line_error, cli, cli_subprocess
from support.files import copy_checkpoint, leftovers

# ---------------------------------------------------------------- every command: usage errors


def _commands():
    """(argv path, callback) of every leaf command registered on the typer app, found by walking
    the app itself (commands and sub-apps), so that a new command is covered without editing this."""
    from sdk_tools.cli.app import full_app

    app = full_app()
    out = []

    def walk(t, path):
        for c in t.registered_commands:
            out.append(([*path, c.name or c.callback.__name__.replace("_", "-")], c.callback))
        for g in t.registered_groups:
            walk(g.typer_instance, [*path, g.name])

    walk(app, [])
    return out


COMMANDS = _commands()
NUMERIC = (int, float, typing.Optional[int], typing.Optional[float], typing.List[int])


def _params(callback):
    """[(name, OptionInfo|ArgumentInfo, annotation)] of a command's parameters."""
    hints = typing.get_type_hints(callback)
    return [(n, p.default, hints[n]) for n, p in inspect.signature(callback).parameters.items()]


def _required_args(callback) -> list[str]:
    """Placeholders for the required parameters, so that parsing reaches the parameter under test."""
    argv: list[str] = []
    for _, info, ann in _params(callback):
        if getattr(info, "default", None) is not ...:
            continue
        value = "1" if ann in NUMERIC else "x"
        decls = getattr(info, "param_decls", None)
        argv += [decls[0], value] if decls else [value]
    return argv


def _ids(cmds):
    return [" ".join(p) for p, _ in cmds]


def assert_usage_error(res, *needles):
    assert_one_line_error(res, *needles)
    assert "; see gemma4-mobile" in res.err and "--help" in res.err, res.err


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"run", "plan", "convert", "bench", "emulator start", "emulator runner", "tiny build", "npu config"} <= names
    assert len(names) >= 20


@pytest.mark.parametrize("path,callback", COMMANDS, ids=_ids(COMMANDS))
def test_unknown_option_is_one_line(path, callback):
    res = cli(*path, "--no-such-option-xyz")
    assert_usage_error(res, "no such option", "--no-such-option-xyz", f"gemma4-mobile {' '.join(path)} --help")


REQUIRED = [(p, c) for p, c in COMMANDS if _required_args(c)]


@pytest.mark.parametrize("path,callback", REQUIRED, ids=_ids(REQUIRED))
def test_missing_argument_is_one_line(path, callback):
    res = cli(*path)
    assert_usage_error(res, "missing")


WITH_NUMBERS = [(p, c, info.param_decls[0]) for p, c in COMMANDS for _, info, ann in _params(c)
                if ann in NUMERIC and getattr(info, "param_decls", None)]


@pytest.mark.parametrize("path,callback,flag", WITH_NUMBERS, ids=[f"{' '.join(p)} {f}" for p, _, f in WITH_NUMBERS])
def test_non_number_is_one_line(path, callback, flag):
    res = cli(*path, *_required_args(callback), flag, "abc")
    assert_usage_error(res, "invalid value", flag)


def test_commands_with_numbers_and_required_args_exist():
    # the two parametrized walks above must not be vacuous
    assert len(REQUIRED) >= 10 and len(WITH_NUMBERS) >= 15


@pytest.mark.parametrize("argv,needle", [
    (["nosuch"], "no such command"),
    (["plan", "--model", "e2b", "--prefill", "abc"], "--prefill"),
    (["plan", "--model", "e2b", "--context", "4k"], "--context"),
    (["emulator", "start", "--port", "abc"], "--port"),
    (["bench", "b", "-d", "x", "--runs", "xyz"], "--runs"),
    (["run", "--prompt", "hi"], "missing argument"),
])
def test_reported_usage_errors(argv, needle):
    assert_usage_error(cli(*argv), needle)


def test_usage_errors_in_a_fresh_process():
    """The installed entry point (not only main()): one line, exit 2, nothing of click's usage block."""
    res = cli_subprocess("plan", "--model", "e2b", "--prefill", "abc", timeout=120)
    assert_one_line_error(res, "--prefill")
    assert "Usage:" not in res.stderr and res.stdout == ""


def test_click_classes_fence():
    """The private typer detail app.py depends on: the classes it catches are what typer raises.
    Fails on a typer upgrade that moves them (then update app._click_classes and the pin)."""
    import typer

    from sdk_tools.cli.app import CLICK_ERRORS, USAGE_ERRORS, full_app

    app = full_app()
    raised = []
    for argv in (["--no-such"], ["plan", "--prefill", "x"], ["nosuch"], ["run"]):
        try:
            app(args=argv, prog_name="gemma4-mobile", standalone_mode=False)
        except Exception as e:  # noqa: BLE001 - we want to see what typer raises
            raised.append(e)
    assert len(raised) == 4
    assert all(isinstance(e, USAGE_ERRORS) for e in raised), [type(e).__mro__ for e in raised]
    assert all(isinstance(e, CLICK_ERRORS) for e in raised)
    assert issubclass(typer.BadParameter, USAGE_ERRORS)
    # the version the fence was written against is the one pyproject pins
    pins = (REPO / "pyproject.toml").read_text()
    assert f'"typer=={typer.__version__}"' in pins, "typer changed: re-check app._click_classes, then pin it"


def test_the_command_list_is_every_command_module():
    """cli/app.py lists the commands explicitly (a command imports its own module only): the list
    must name every module of the package that registers one, and nothing else."""
    import pkgutil

    import sdk_tools.cli as pkg
    from sdk_tools.cli.app import COMMANDS

    modules = {m.name for m in pkgutil.iter_modules(pkg.__path__)
               if hasattr(importlib.import_module(f"sdk_tools.cli.{m.name}"), "register")}
    assert sorted(COMMANDS) == sorted(modules)


def test_a_command_imports_only_its_own_module():
    """`gemma4-mobile push --help` does not import the converters, torch or the other commands."""
    code = ("import sys; from sdk_tools.cli.app import main; rc = main(['push', '--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('sdk_tools.cli.') or m in "
            "('torch', 'transformers', 'converters.pipeline', 'litert_torch')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = r.stdout.strip().splitlines()[-1]
    # common and options: the renderers and the options every command shares
    assert loaded == ("['sdk_tools.cli.app', 'sdk_tools.cli.common', 'sdk_tools.cli.options', "
                      "'sdk_tools.cli.push']"), loaded


def test_bare_group_prints_its_help():
    res = cli("emulator")
    assert res.code == 0 and "start" in res.out and "Traceback" not in res.err


# ---------------------------------------------------------------- bad checkpoint files

def _checkpoint_dir(tiny_e2b: Path, tmp_path: Path) -> Path:
    return copy_checkpoint(tiny_e2b, tmp_path / "ck")


@pytest.mark.parametrize("config,needle", [
    ([{"model_type": "gemma4"}], "json list, not an object"),
    ({"model_type": ["gemma4"]}, "model_type is ['gemma4']"),
])
def test_bad_config_json(tiny_e2b, tmp_path, config, needle):
    ck = _checkpoint_dir(tiny_e2b, tmp_path)
    (ck / "config.json").write_text(json.dumps(config))
    assert_one_line_error(cli("convert", ck, "-o", tmp_path / "out"), needle)
    assert_one_line_error(cli("plan", "--model", ck), needle)
    assert not (tmp_path / "out").exists()


def test_binary_config_json(tiny_e2b, tmp_path):
    ck = _checkpoint_dir(tiny_e2b, tmp_path)
    (ck / "config.json").write_bytes(b"\xff\xfe\x00\x01PK\x03\x04")
    assert_one_line_error(cli("convert", ck, "-o", tmp_path / "out"), "config.json is not json text", "byte 0")
    assert_one_line_error(cli("plan", "--model", ck), "not json text")


def _safetensors(path: Path, header) -> None:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 64)


@pytest.mark.parametrize("header,needle", [
    ([1, 2], "header is a json list"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": ["0", "16"]}}, "data offsets ['0', '16']"),
    ({"w": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}}, "shape ['4']"),
])
def test_bad_safetensors_header(tiny_e2b, tmp_path, header, needle):
    ck = _checkpoint_dir(tiny_e2b, tmp_path)
    for f in ck.glob("*.safetensors"):
        f.unlink()
    _safetensors(ck / "model.safetensors", header)
    assert_one_line_error(cli("convert", ck, "-o", tmp_path / "out"), "corrupt", needle)


# ---------------------------------------------------------------- values out of range

@pytest.mark.parametrize("argv,needle", [
    (["--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--max-tokens", "-1"], "--max-tokens must be at least 1"),
    (["--threads", "-5"], "--threads must be at least 1"),
    (["--context", "0"], "--context must be at least 1"),
])
def test_run_values(tmp_path, argv, needle):
    # refused before the bundle is even looked at
    assert_one_line_error(cli("run", tmp_path / "no-bundle", "--prompt", "hi", *argv), needle)


@pytest.mark.parametrize("argv,needle", [
    (["--prefill", "0"], "--prefill must be a positive number"),
    (["--prefill", "8192", "--context", "4096"], "prefill length 8192 is larger than the cache length 4096"),
    (["--sliding-window-ring-buffer", "0"], "--sliding-window-ring-buffer must be a positive number"),
    (["--sliding-window-ring-buffer", "100"], "smaller than the sliding window 512"),
    (["--context", str(10**12)], "is too long (the model has 131072 positions)"),
    (["--context", "-4"], "--context must be a positive number"),
])
def test_plan_values(argv, needle):
    assert_one_line_error(cli("plan", "--model", "e2b", *argv), needle)


@pytest.mark.parametrize("argv,needle", [
    (["--prefill", "0"], "--prefill must be a positive number"),
    (["--sliding-window-ring-buffer", "0"], "--sliding-window-ring-buffer must be a positive number"),
    (["--cache-length", str(10**12)], "is too long (the model has 4096 positions)"),
])
def test_convert_shares_the_validator(tiny_e2b, tmp_path, argv, needle):
    res = cli("convert", tiny_e2b, "-o", tmp_path / "out", *argv)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "out").exists()


def test_one_validator_for_plan_and_convert():
    import converters.pipeline as pipeline
    import sdk_tools.cli.plan as plan_cli
    from gemma4_common.validate import check_lengths

    assert pipeline.check_lengths is check_lengths
    assert "check_lengths(" in inspect.getsource(plan_cli.plan_cmd)


@pytest.mark.parametrize("serial,needle", [
    ("not a serial", "is not host:port"),
    ("127.0.0.1", "is not host:port"),
    ("127.0.0.1:0", "outside 1-65535"),
    ("127.0.0.1:99999", "outside 1-65535"),
    ("::1:5555", "brackets"),
])
def test_devices_connect_values(serial, needle):
    assert_one_line_error(cli("devices", "--connect", serial), needle)


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_emulator_port_range(port):
    res = cli("emulator", "start", "--port", port)
    assert_one_line_error(res, f"--port {port} is not a tcp port")
    assert "File " not in res.err and "line " not in res.err


# ---------------------------------------------------------------- prompts that cannot run

def test_prompt_longer_than_the_cache(e2b_int8_bundle):
    res = cli("run", e2b_int8_bundle, "--raw", "--prompt", "the cat sat " * 400)
    assert_one_line_error(res, "tokens, more than the context of 1024", "--context")
    # the same through --context: the check follows the context the engine runs with
    res = cli("run", e2b_int8_bundle, "--raw", "--context", "64", "--prompt", "the cat sat " * 30)
    assert_one_line_error(res, "more than the context of 64")


def test_prompt_that_just_fits_runs(e2b_int8_bundle):
    from gemma4_common.errors import UserError
    from on_device.engine import HostEngine

    with HostEngine(e2b_int8_bundle / "model.litertlm", max_num_tokens=64) as eng:
        ids = eng.tokenize("the cat sat " * 40)
        fits = eng._engine.detokenize(ids[:62])  # BOS + 62 + one new token = 64
        assert len(eng.tokenize(fits)) == 62
        assert eng.generate(fits, max_new_tokens=4).stats.decode_tokens >= 1
        with pytest.raises(UserError, match="more than the context"):
            eng.generate(eng._engine.detokenize(ids[:63]), max_new_tokens=4)


def test_prompt_not_utf8_in_process(tmp_path, e2b_int8_bundle):
    assert_one_line_error(cli("run", e2b_int8_bundle, "--prompt", "caf\udce9"), "not valid utf-8", "b'\\xe9'")


def test_prompt_not_utf8_from_argv_and_stdin(e2b_int8_bundle, tmp_path):
    """Real bytes that are not UTF-8, in argv and piped to `agent` on stdin."""
    res = cli_subprocess("run", e2b_int8_bundle, "--prompt", b"caf\xe9", timeout=120)
    assert_one_line_error(res, "not valid utf-8")
    tools = tmp_path / "tools.py"
    tools.write_text("from on_device.agent import tool\n\n@tool\ndef ping() -> str:\n    'Ping.'\n    return 'pong'\n")
    res = cli_subprocess("agent", e2b_int8_bundle, "--tools", tools, input=b"caf\xe9\n", timeout=120)
    assert_one_line_error(res, "not valid utf-8")


@pytest.mark.slow
def test_huge_eval_item_is_skipped_with_a_note_before_either_side_runs(tiny_e2b, e2b_int8_bundle, tmp_path):
    """Issue 15: an item the cache cannot hold is skipped (and said so in the report); exit 2 only
    when nothing is left."""
    ev = tmp_path / "eval.jsonl"
    huge = json.dumps({"prompt": "the cat sat " * 50_000, "target": " end"}) + "\n"
    ev.write_text(json.dumps({"prompt": "small", "target": " ok"}) + "\n" + huge)
    out = tmp_path / "report.json"
    res = cli("verify", e2b_int8_bundle, "--checkpoint", tiny_e2b, "--eval", ev, "-o", out)
    assert res.code in (0, 1), res.err  # evaluated (gates may pass or fail on one item)
    report = json.loads(out.read_text())
    assert report["eval"]["items"] == 1 and report["eval"]["given"] == 2 and report["eval"]["skipped"] == 1
    assert report["eval"]["skipped_items"][0]["item"] == 2
    assert any("1 of 2 evaluation items skipped" in n for n in report["summary"]["notes"])
    only_huge = tmp_path / "huge.jsonl"
    only_huge.write_text(huge)
    res = cli("verify", e2b_int8_bundle, "--checkpoint", tiny_e2b, "--eval", only_huge)
    assert_one_line_error(res, "no evaluation item fits the bundle's cache (1024)", "item 1 needs")


# ---------------------------------------------------------------- output paths

@pytest.fixture
def readonly_dir(tmp_path):
    """A directory this process cannot create files in (root ignores modes: then a sysfs one)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o555)
        yield d
        d.chmod(0o755)
        return
    d = Path("/sys/kernel")
    try:
        (d / ".g4m-probe").touch()
    except OSError:
        yield d
        return
    pytest.skip("no directory here refuses root's writes")


def _output_cases(tmp_path: Path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    return a_file, a_dir


FILE_OUTPUTS = {
    "verify -o": lambda p: ["verify", "no-bundle", "--checkpoint", "no-ckpt", "-o", p],
    "agent --transcript": lambda p: ["agent", "no-bundle", "--tools", "t.py", "--transcript", p],
    "emulator runner -o": lambda p: ["emulator", "runner", "-o", p],
}
DIR_OUTPUTS = {
    "report -o": lambda p: ["report", "results.json", "-o", p],
    "bench -o": lambda p: ["bench", "no-bundle", "-d", "127.0.0.1:1", "-o", p],
}


@pytest.mark.parametrize("name", list(FILE_OUTPUTS))
def test_file_outputs(name, tmp_path, readonly_dir):
    a_file, a_dir = _output_cases(tmp_path)
    argv = FILE_OUTPUTS[name]
    assert_one_line_error(cli(*argv(a_dir)), "is a directory", "pass a file path")
    assert_one_line_error(cli(*argv(a_file / "x.json")), "is a file, not a directory")
    assert_one_line_error(cli(*argv(readonly_dir / "x.json")), "cannot write", "permission denied")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", list(DIR_OUTPUTS))
def test_dir_outputs(name, tmp_path, readonly_dir):
    a_file, _ = _output_cases(tmp_path)
    argv = DIR_OUTPUTS[name]
    assert_one_line_error(cli(*argv(a_file)), "is a file, not a directory")
    assert_one_line_error(cli(*argv(a_file / "sub")), "is a file, not a directory")
    assert_one_line_error(cli(*argv(readonly_dir / "out")), "cannot write", "permission denied")
    assert leftovers(tmp_path) == []


def test_runner_output_is_written_executable(tmp_path):
    res = cli("emulator", "runner", "-o", tmp_path / "new" / "litert_lm_main")
    assert res.code == 0, res.err
    assert os.access(tmp_path / "new" / "litert_lm_main", os.X_OK)
    assert leftovers(tmp_path / "new") == []


# ---------------------------------------------------------------- tools modules that exit

def test_tools_module_that_exits_at_import(tmp_path):
    tools = tmp_path / "tools.py"
    tools.write_text("import sys\nsys.exit(0)\n")
    res = cli("agent", tmp_path / "no-bundle", "--tools", tools, "--prompt", "hi")
    assert_one_line_error(res, "importing", "sys.exit(0)", "must define tools")


def test_tool_that_exits_is_a_tool_error(tmp_path):
    from on_device.agent import AgentLoop, Message, ToolCall, ToolRegistry, render_model_turn

    tools = tmp_path / "tools.py"
    tools.write_text(textwrap.dedent('''
        import sys
        from on_device.agent import tool

        @tool
        def quit_now(code: int) -> str:
            """Exit."""
            sys.exit(code)
    '''))
    reg = ToolRegistry.load(tools)

    class Scripted:  # the model's two turns: a call of the tool, then an answer
        outputs = [render_model_turn(Message("model", tool_calls=[ToolCall("quit_now", {"code": 7})]),
                                     with_terminator=True), "done"]

        def generate(self, prompt, max_new_tokens, stop):
            return self.outputs.pop(0)

    tr = AgentLoop(Scripted(), reg).run("hi")  # returns: SystemExit(7) does not end the agent
    assert tr.status == "answered" and tr.answer == "done"
    call = tr.tool_calls[0]
    assert call.error == "exception" and "sys.exit(7)" in call.response["error"]


# ---------------------------------------------------------------- two conversions, one parent

def _dies_mid_work(req, plan, progress, on_work_dir=None):
    """A conversion child that makes its work directory and its target's temporary directory the way
    converters.pipeline does, while another convert in the same parent makes its own (`plan`: their
    names), then dies the way a native fatal error ends it."""
    import tempfile

    from converters.isolation import work_prefix

    parent = Path(req)
    work = Path(tempfile.mkdtemp(prefix=work_prefix(os.getpid()), dir=parent))
    on_work_dir(work)
    tempfile.mkdtemp(prefix=".mine.", suffix=".part", dir=parent)
    for name in plan:
        (parent / name).mkdir()
    os._exit(1)


def test_a_failed_convert_cleans_only_its_own_work(tmp_path):
    from converters.isolation import run_isolated, work_prefix
    from gemma4_common.errors import UserError
    from gemma4_common.progress import Progress

    parent = tmp_path / "shared"
    parent.mkdir()
    # what another convert in the same parent has made since this one started: new, but not ours
    others = [f"{work_prefix(424242)}abc", ".theirs.k2j3h4g5.part", ".mine.v2.k2j3h4g5.part",
              ".mine-v2.k2j3h4g5.part"]
    with pytest.raises(UserError, match="exited with status 1"):
        run_isolated(_dies_mid_work, str(parent), others, Progress(), work_parent=parent,
                     targets=[parent / "mine"])
    assert sorted(p.name for p in parent.iterdir()) == sorted(others)


# ---------------------------------------------------------------- pinned dependencies

def test_every_direct_dependency_is_pinned():
    """Each third-party distribution that the packages import is in pyproject with an exact pin."""
    import ast
    import importlib.metadata as md
    import re

    pins = {m.group(1).lower().replace("_", "-"): m.group(2)
            for m in re.finditer(r'"([A-Za-z0-9_.-]+)==([^"]+)"', (REPO / "pyproject.toml").read_text())}
    owners = md.packages_distributions()
    stdlib = set(sys.stdlib_module_names)
    ours = {"sdk_tools", "converters", "on_device", "gemma4_common"}
    # click: only caught when installed (older typers raise it); the pinned typer does not need it
    optional = {"click"}
    missing = set()
    for pkg in ours:
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else []
                for n in names:
                    top = n.split(".")[0]
                    if top in stdlib or top in ours or top in optional:
                        continue
                    dists = [d.lower().replace("_", "-") for d in owners.get(top, [top])]
                    if not any(d in pins for d in dists):
                        missing.add(f"{top} ({f.relative_to(REPO)})")
    assert not missing, sorted(missing)
