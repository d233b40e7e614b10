"""`gemma4-mobile push BUNDLE --device SERIAL`: deploy a bundle (verified, resumable) to one or
more devices; the runner too where one is given or configured (bench/verify/agent need it, an app
loading the model does not)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import typer

from gemma4_common.errors import UserError
from on_device.runner_contract import DEFAULT_DEVICE_DIR
from sdk_tools.cli.common import RichProgress, emit_json, rich_bar


def push(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `gemma4-mobile convert`."),
    device: str = typer.Option(..., "--device", "-d", help="Serial, several as a,b, or `all`."),
    runner: Optional[Path] = typer.Option(None, "--runner", help="litert_lm_main for android_arm64 "
                                          "(default: $G4M_RUNNER, then the config file; none: the "
                                          "bundle alone)."),
    dispatch_libs: Optional[Path] = typer.Option(None, "--dispatch-libs",
                                                 help="Directory with the NPU dispatch libraries."),
    backend: Optional[str] = typer.Option(None, "--backend", help="cpu, gpu or npu (default: NPU model where "
                                          "the bundle has one for the device's SoC)."),
    device_dir: str = typer.Option(str(DEFAULT_DEVICE_DIR), "--device-dir", help="Directory on the device."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every file on the device again instead of "
                                "trusting its verification stamp."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Push what a device needs to run BUNDLE: model, runner, dispatch libraries; verified by sha256."""
    from sdk_tools.deploy import deploy, find_runner, runner_configured
    from sdk_tools.devices.discovery import open_device, resolve_serials

    if runner or runner_configured():
        find_runner(runner)  # fail before touching any device
    serials = resolve_serials(device)
    done: dict[str, dict] = {}
    failures: dict[str, str] = {}
    lock = threading.Lock()
    with _transfer_bar() as bar:
        def one(serial: str) -> None:
            try:
                with open_device(serial) as dev:
                    d = deploy(dev, bundle, runner=runner, dispatch_lib_dir=dispatch_libs, backend=backend,
                               device_dir=device_dir, progress=RichProgress(bar=bar, quiet=as_json),
                               runner_optional=True, rehash=rehash)
                with lock:
                    done[serial] = d.to_dict()
            except UserError as e:
                if len(serials) == 1:
                    raise
                with lock:
                    failures[serial] = e.one_line()

        if len(serials) == 1:
            one(serials[0])
        else:
            with ThreadPoolExecutor(max_workers=len(serials)) as pool:
                list(pool.map(one, serials))
    if as_json:
        emit_json({"deployments": done, "failures": failures})
    else:
        for serial, d in done.items():
            pushed = [f for f in d["files"] if f["action"] == "pushed"]
            mbps = (d["bytes_pushed"] / 1e6 / d["push_seconds"]) if d["push_seconds"] > 0 else 0.0
            typer.echo(f"{serial}: {d['bundle_name']} ({d['backend']}) at {d['bundle_dir']}: "
                       f"{len(pushed)} file(s) pushed ({d['bytes_pushed'] / 1e6:.1f} MB, {mbps:.1f} MB/s), "
                       f"{len(d['files']) - len(pushed)} unchanged, {d['seconds']:.1f} s"
                       + ("" if d.get("has_runner", True) else "; no runner (bench/verify/agent need --runner)"))
    if failures:
        raise UserError(f"{len(failures)} of {len(serials)} device(s) failed: "
                        + "; ".join(f"{s}: {m}" for s, m in failures.items()),
                        "the others were deployed; fix the failed ones and run push again")


def _transfer_bar():
    """The shared bar plus the time left: a 3 GB push says how long it will take."""
    from rich.progress import TimeRemainingColumn

    bar = rich_bar()
    bar.columns = (*bar.columns, TimeRemainingColumn())
    return bar


def register(app: typer.Typer) -> None:
    app.command("push")(push)
