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


def _terminate_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    # `kill` (SIGTERM) gets the same clean-up as Ctrl-C: temporary outputs removed, nothing partial.
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        rv = app(args=argv, standalone_mode=False)
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
    except Exception as e:  # click's usage errors
        import click

        if isinstance(e, click.exceptions.UsageError):
            msg = e.format_message().replace("\n", " ")
            print(f"error: {msg}; see `gemma4-mobile {' '.join(sys.argv[1:2])} --help`", file=sys.stderr)
            return 2
        if isinstance(e, click.exceptions.ClickException):
            print(f"error: {e.format_message()}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
