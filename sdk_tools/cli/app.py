"""The `gemma4-mobile` entry point: builds the typer app from every command module in this package
and turns the project's UserError into one line on stderr with exit status 2."""

from __future__ import annotations

import importlib
import pkgutil
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


def _register_all() -> None:
    import sdk_tools.cli as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if mod.name in {"app", "common"} or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"sdk_tools.cli.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_all()


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
        rv = app(args=argv, prog_name=PROG, standalone_mode=False)
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
