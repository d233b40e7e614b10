"""The `gemma4-mobile` entry point: the typer app over the command modules of this package (listed
in COMMANDS; a command imports its own module only) that turns the project's UserError into one
line on stderr with exit status 2."""

from __future__ import annotations

import importlib
import sys

import typer

from gemma4_common.errors import GateFailure, UserError

app = typer.Typer(
    name="gemma4-mobile",
    help="Gemma 4 edge models from a Hugging Face checkpoint to a phone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _group() -> None:
    # A callback keeps the app a group when only the invoked command is registered (typer runs a
    # lone command as the app itself, and `run BUNDLE` would read "run" as its first argument).
    pass


# Every command, one module of this package each (module name = command name), in the order of
# `--help`. Explicit, so that a command runs after importing its own module only: the others (and
# what they import: torch, transformers, the converters) cost every invocation 0.1-0.3 s otherwise.
# tests/test_cli_robustness.py checks this list against the package's modules.
COMMANDS = ("demo", "convert", "inspect", "plan", "sweep", "tiny", "push", "devices", "bench", "run", "verify",
            "agent", "report", "emulator", "npu")
_registered: set[str] = set()


def _register(names) -> None:
    for name in names:
        if name in _registered:
            continue
        module = importlib.import_module(f"sdk_tools.cli.{name}")
        module.register(app)
        _registered.add(name)
    # Help lists commands in registration order: keep COMMANDS' order whatever was needed first.
    def order(info) -> int:
        return COMMANDS.index(info.name) if info.name in COMMANDS else len(COMMANDS)

    app.registered_commands.sort(key=order)
    app.registered_groups.sort(key=order)


def _register_for(argv: list[str]) -> None:
    """Register the command `argv` names (its first word), or every command (help, a typo)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    _register([first] if first in COMMANDS else COMMANDS)


def full_app() -> typer.Typer:
    """The app with every command registered (what `--help` shows; tests walk it)."""
    _register(COMMANDS)
    return app


INTERRUPTED = 130
INTERRUPTED_MESSAGE = "error: interrupted; temporary outputs were removed, nothing partial was left behind"
PROG = "gemma4-mobile"


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """The exception class `name` (UsageError, ClickException) of every click that typer may raise.

    Typer's private detail, fenced here (tests/test_cli_robustness.py fails when it changes): typer
    0.29 vendors click as `typer._click` and raises that copy's exceptions, which are not
    `click.exceptions.*`; typer exports only `BadParameter` of it, so the vendored classes are
    found in BadParameter's class hierarchy. Older typers raise the installed click's classes.
    """
    found: list[type[BaseException]] = [c for c in typer.BadParameter.__mro__ if c.__name__ == name]
    try:
        import click.exceptions as click_exceptions

        found.append(getattr(click_exceptions, name))
    except (ImportError, AttributeError):
        pass
    if not found:
        raise RuntimeError(f"cannot find click's {name} through typer {typer.__version__}: update "
                           "sdk_tools/cli/app.py:_click_classes for this typer")
    return tuple(dict.fromkeys(found))


USAGE_ERRORS = _click_classes("UsageError")
CLICK_ERRORS = _click_classes("ClickException")


def usage_line(e: BaseException) -> str:
    """`error: <what click says>; see gemma4-mobile <command> --help` on one line."""
    msg = " ".join(str(e.format_message()).split()).rstrip(".")  # type: ignore[attr-defined]
    ctx = getattr(e, "ctx", None)
    command = ctx.command_path if ctx is not None else PROG
    return f"error: {msg}; see {command} --help"


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # `kill` (SIGTERM) gets the same clean-up as Ctrl-C: temporary outputs removed, nothing partial.
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        from gemma4_common.noise import quiet_third_party

        # Before any command imports torch & co. (some log at import); `--verbose` hides nothing.
        quiet_third_party(verbose="--verbose" in args)
        _register_for(args)
        rv = app(args=args, prog_name=PROG, standalone_mode=False)
        # with standalone_mode off, click hands back typer.Exit's code instead of raising it, and
        # typer turns Ctrl-C (and SIGTERM, raised as KeyboardInterrupt) into code 130
        if rv == INTERRUPTED:
            print(INTERRUPTED_MESSAGE, file=sys.stderr)
        if isinstance(rv, int) and rv:
            return rv
    except UserError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    except GateFailure as e:
        print(f"gate failed: {e}", file=sys.stderr)
        return 1
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return INTERRUPTED
    except USAGE_ERRORS as e:
        if type(e).__name__ == "NoArgsIsHelpError":  # a bare group (`gemma4-mobile emulator`): its help
            print(e.format_message(), file=sys.stdout)  # type: ignore[attr-defined]
            return 0
        print(usage_line(e), file=sys.stderr)
        return 2
    except CLICK_ERRORS as e:  # e.g. a file click could not open
        print(f"error: {' '.join(str(e.format_message()).split())}", file=sys.stderr)  # type: ignore[attr-defined]
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
