"""The options several commands share (one definition each, used as `name: JsonOption = False`), and
the one place the CLI resolves the device runner before handing it to the library."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gemma4_common.config import config_value, env, env_name
from gemma4_common.errors import UserError
from on_device.runner_contract import RUNNER_NAME

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DevicesOption = Annotated[str, typer.Option("--device", "-d", help="Serial, several as a,b, or `all`.")]
DeviceOption = Annotated[Optional[str], typer.Option(
    "--device", "-d", help="Device serial (see `gemma4-mobile devices`).")]
RunnerOption = Annotated[Optional[Path], typer.Option(
    "--runner", help=f"litert_lm_main for android_arm64 (default: ${env_name('RUNNER')}, then the config file).")]
DispatchLibsOption = Annotated[Optional[Path], typer.Option(
    "--dispatch-libs", help="Directory with the NPU dispatch libraries.")]
# Read by cli/app.py:main before the command runs (gemma4_common.noise.quiet_third_party); a command
# declares it so that its --help shows it.
VerboseOption = Annotated[bool, typer.Option("--verbose", help="Show third-party log output too.")]


def resolve_runner(option: Path | None, *, required: bool = True) -> Path | None:
    """The host file to push as the device runner: --runner, then $GEMMA4_MOBILE_RUNNER, then the
    config file's "runner"; checked before any device is touched. None when nothing is given and
    `required` is False (push: the bundle alone, for an app that loads the model itself)."""
    from sdk_tools.deploy import RUNNER_HELP, check_runner_file

    if option:
        source, path = "--runner", Path(option)
    elif env("RUNNER"):
        source, path = f"${env_name('RUNNER')}", Path(env("RUNNER") or "").expanduser()
    else:
        value, cfg = config_value("runner")
        if not value:
            if not required:
                return None
            raise UserError(f"no device runner ({RUNNER_NAME}) given", RUNNER_HELP)
        source, path = f"config {cfg}", Path(str(value)).expanduser()
    check_runner_file(path, source)
    return path
