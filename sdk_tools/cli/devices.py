"""`gemma4-mobile devices`: what is reachable over ADB (adb server and TCP), with model, SoC, RAM,
Android version, ABI and free storage."""

from __future__ import annotations

from typing import List, Optional

import typer

from sdk_tools.cli.common import emit_json
from sdk_tools.cli.options import JsonOption


def devices(
    connect: Optional[List[str]] = typer.Option(None, "--connect", "-c",
                                                help="Also probe this HOST:PORT (repeatable); remembered."),
    as_json: JsonOption = False,
) -> None:
    """List reachable devices."""
    from gemma4_common.validate import host_port
    from sdk_tools.devices.discovery import list_devices, remember_serial

    connect = [host_port(c, "--connect") for c in connect or []]
    infos = list_devices(connect)
    for i in infos:
        if i.state == "device" and connect and i.serial in connect:
            remember_serial(i.serial)
    if as_json:
        emit_json([i.to_dict() for i in infos])
        return
    if not infos:
        typer.echo("no devices (plug a phone in with USB debugging on, pass --connect HOST:PORT, "
                   "or `gemma4-mobile emulator start`)")
        return
    for i in infos:
        if i.state != "device":
            typer.echo(f"{i.serial:<22} {i.state:<12} {i.error or ''}")
            continue
        ram = f"{i.ram_bytes / 2**30:.1f}GiB" if i.ram_bytes else "?"
        free = f"{i.storage_free_bytes / 1e9:.1f}GB" if i.storage_free_bytes is not None else "?"
        typer.echo(f"{i.serial:<22} {i.model:<14} {i.soc_vendor:<9} {i.soc_model:<10} ram={ram:<8} "
                   f"android={i.android:<3} abi={i.abi:<11} free={free:<8} via={i.transport}")


def register(app: typer.Typer) -> None:
    app.command("devices")(devices)
