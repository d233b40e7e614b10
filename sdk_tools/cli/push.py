"""`gemma4-mobile push BUNDLE --device SERIAL`: deploy a bundle (verified, resumable) to one or
more devices; the runner too where one is given or configured (bench/verify/agent need it, an app
loading the model does not)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from on_device.runner_contract import DEFAULT_DEVICE_DIR
from sdk_tools.cli.common import RichProgress, emit_json, rich_bar
from sdk_tools.cli.options import (DevicesOption, DispatchLibsOption, JsonOption, RunnerOption, VerboseOption,
                                    resolve_runner)


def push(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `gemma4-mobile convert`."),
    device: DevicesOption = ...,
    runner: RunnerOption = None,
    dispatch_libs: DispatchLibsOption = None,
    backend: Optional[str] = typer.Option(None, "--backend", help="cpu, gpu or npu (default: NPU model where "
                                          "the bundle has one for the device's SoC)."),
    device_dir: str = typer.Option(str(DEFAULT_DEVICE_DIR), "--device-dir", help="Directory on the device."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every file on the device again instead of "
                                "trusting its verification stamp."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Push what a device needs to run BUNDLE: model, runner (if given or configured; none: the bundle
    alone), dispatch libraries; verified by sha256."""
    from sdk_tools.deploy import deploy
    from sdk_tools.devices.discovery import resolve_serials
    from sdk_tools.fleet import on_each

    runner_path = resolve_runner(runner, required=False)  # before touching any device
    serials = resolve_serials(device)
    with _transfer_bar() as bar:
        outcome = on_each(serials, lambda dev: deploy(
            dev, bundle, runner=runner_path, dispatch_lib_dir=dispatch_libs, backend=backend, device_dir=device_dir,
            progress=RichProgress(bar=bar, quiet=as_json), rehash=rehash))
    if as_json:
        emit_json({"deployments": {s: d.to_dict() for s, d in outcome.results.items()},
                   "failures": outcome.failures})
    else:
        for serial, d in outcome.results.items():
            pushed = [f for f in d.files if f.action == "pushed"]
            mbps = (d.bytes_pushed / 1e6 / d.push_seconds) if d.push_seconds > 0 else 0.0
            typer.echo(f"{serial}: {d.bundle_name} ({d.backend}) at {d.bundle_dir}: "
                       f"{len(pushed)} file(s) pushed ({d.bytes_pushed / 1e6:.1f} MB, {mbps:.1f} MB/s), "
                       f"{len(d.files) - len(pushed)} unchanged, {d.seconds:.1f} s"
                       + ("" if d.has_runner else "; no runner (bench/verify/agent need --runner)"))
    outcome.raise_failures(len(serials), "the others were deployed; fix the failed ones and run push again")


def _transfer_bar():
    """The shared bar plus the time left: a 3 GB push says how long it will take."""
    from rich.progress import TimeRemainingColumn

    bar = rich_bar()
    bar.columns = (*bar.columns, TimeRemainingColumn())
    return bar


def register(app: typer.Typer) -> None:
    app.command("push")(push)
