"""`gemma4-mobile emulator ...`: start, stop and list reference emulators, and list device profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gemma4_common.errors import UserError
from sdk_tools.cli.common import emit_json, emit_rows, err_console
from sdk_tools.cli.options import JsonOption

emulator_app = typer.Typer(help="Reference emulator: a virtual phone that speaks ADB on a loopback port.",
                           no_args_is_help=True)


@emulator_app.command("start")
def start(
    profile: str = typer.Option("galaxy-s24", "--profile", help="Device profile (see `emulator profiles`)."),
    port: int = typer.Option(0, "--port", help="TCP port on 127.0.0.1; 0 picks a free one outside 5554-5585."),
    auth: bool = typer.Option(False, "--auth", help="Require RSA authentication like a real phone."),
    authorized_keys: Optional[Path] = typer.Option(None, "--authorized-keys",
                                                   help="Trusted host keys, adbkey.pub format."),
    accept_new_keys: bool = typer.Option(False, "--accept-new-keys",
                                         help="Accept (and remember) a key a host offers."),
    root: Optional[Path] = typer.Option(None, "--root", help="Host directory holding the device filesystem."),
    storage_bytes: Optional[int] = typer.Option(None, "--storage-bytes", help="Override the /data size."),
    link_mb_s: Optional[float] = typer.Option(
        None, "--link-mb-s", help="Rate of the link to the host in MB/s, both directions (USB 2 ~40; "
        "default: loopback speed)."),
    foreground: bool = typer.Option(False, "--foreground", help="Serve in this process until Ctrl-C."),
    as_json: JsonOption = False,
) -> None:
    """Start an emulator (Android's mksh + toybox in a bubblewrap sandbox, as uid shell); prints its
    serial (127.0.0.1:PORT) once it accepts connections."""
    from gemma4_common.validate import check_port, positive

    check_port(port, "--port", allow_zero=True)
    positive(storage_bytes, "--storage-bytes", example=8 << 30)
    positive(link_mb_s, "--link-mb-s", example=40)
    if foreground:
        _run_foreground(profile, port, auth, authorized_keys, accept_new_keys, root, storage_bytes, as_json,
                        link_mb_s)
        return
    from on_device.emulator import manager

    rec = manager.start(profile=profile, port=port, auth=auth, authorized_keys=authorized_keys,
                        accept_new_keys=accept_new_keys, root=root, storage_bytes=storage_bytes, link_mb_s=link_mb_s)
    if as_json:
        emit_json(rec.to_json())
    else:
        typer.echo(rec.serial)
        err_console.print(f"emulator {rec.profile} pid {rec.pid}, root {rec.root}, log {rec.log}")


def _run_foreground(profile, port, auth, authorized_keys, accept_new_keys, root, storage_bytes, as_json,
                    link_mb_s=None) -> None:
    import logging
    import tempfile

    from on_device.emulator import EmulatorConfig, EmulatorServer, load_profile

    if port and 5554 <= port <= 5585:
        raise UserError(f"port {port} is in 5554-5585, which a local adb server claims for emulators",
                        "choose another --port")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = root or Path(tempfile.mkdtemp(prefix="g4m-emulator-"))
    cfg = EmulatorConfig(profile=load_profile(profile), root=root, port=port, auth=auth,
                         authorized_keys=authorized_keys, accept_new_keys=accept_new_keys,
                         storage_bytes=storage_bytes, link_mb_s=link_mb_s)
    server = EmulatorServer(cfg)
    try:
        server.start()
    except OSError as e:
        raise UserError(f"cannot listen on port {port}: {e.strerror}", "choose another --port") from None
    if as_json:
        emit_json({"serial": server.serial, "port": server.port, "profile": profile, "root": str(root)})
    else:
        typer.echo(server.serial)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@emulator_app.command("stop")
def stop(
    serial: Optional[str] = typer.Argument(None, help="Serial (127.0.0.1:PORT) or port of the emulator."),
    all_: bool = typer.Option(False, "--all", help="Stop every emulator this user started."),
    as_json: JsonOption = False,
) -> None:
    """Stop an emulator (or all of them)."""
    from on_device.emulator import manager

    if all_:
        recs = manager.stop_all()
    elif serial:
        recs = [manager.stop(serial)]
    else:
        raise UserError("which emulator?", "pass its serial (see `gemma4-mobile emulator list`) or --all")
    emit_rows(recs, as_json, lambda r: f"stopped {r.serial}", lambda r: r.to_json())


@emulator_app.command("list")
def list_(as_json: JsonOption = False) -> None:
    """List the emulators started with `emulator start`."""
    from on_device.emulator import manager

    emit_rows(manager.list_emulators(), as_json,
              lambda r: f"{r.serial:<22} {'running' if r.alive else 'dead':<8} {r.profile:<16} pid={r.pid} "
                        f"auth={'on' if r.auth else 'off'}"
                        + (f" link={r.link_mb_s:g}MB/s" if r.link_mb_s else "") + f" root={r.root}",
              lambda r: r.to_json())


@emulator_app.command("profiles")
def profiles(as_json: JsonOption = False) -> None:
    """List the device profiles."""
    from on_device.emulator.profiles import list_profiles, load_profile

    emit_rows((load_profile(n) for n in list_profiles()), as_json,
              lambda p: f"{p.name:<16} {p.model:<12} {p.props.get('ro.soc.model', ''):<10} "
                        f"ram={p.ram_bytes / 2**30:.0f}GiB npu={p.npu or '-':<9} {p.description}",
              lambda p: p.to_json())


@emulator_app.command("runner")
def runner(
    output: Path = typer.Option(..., "--output", "-o", help="File to write (pass it to push/bench --runner)."),
    as_json: JsonOption = False,
) -> None:
    """Write the reference emulator's runner file (what it executes in place of litert_lm_main)."""
    import os

    from gemma4_common.fsutil import atomic_path, check_output_file, output_error
    from on_device.runner_contract import emulator_runner_bytes

    check_output_file(output, "--output")
    try:
        with atomic_path(output) as tmp:
            tmp.write_bytes(emulator_runner_bytes())
            os.chmod(tmp, 0o755)  # executable when it appears: no window with a runner that cannot run
    except OSError as e:
        raise output_error(e, output, "--output") from None
    if as_json:
        emit_json({"runner": str(output)})
    else:
        typer.echo(str(output))


def register(app: typer.Typer) -> None:
    app.add_typer(emulator_app, name="emulator")
