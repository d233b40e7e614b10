"""`gemma4-mobile npu ...`: list the NPU SoCs, print or check a per-SoC config, show vendor SDK status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from converters.npu.catalog import all_socs, get_soc
from converters.npu.configs import default_config, load_config_file
from sdk_tools.cli.common import emit_json, emit_rows, err_console
from sdk_tools.cli.options import JsonOption

npu_app = typer.Typer(help="NPU targets: SoC catalog, delegate configs, vendor SDKs.", no_args_is_help=True)


@npu_app.command("socs")
def socs(
    vendor: Optional[str] = typer.Option(None, "--vendor", help="qualcomm or mediatek"),
    as_json: JsonOption = False,
) -> None:
    """List the SoCs the AOT compiler targets and what a device reports for them."""
    emit_rows(all_socs(vendor), as_json,
              lambda s: f"{s.vendor:<9} {s.model:<7} {s.marketing_name:<25} {s.npu_name:<16} "
                        f"platform={','.join(s.board_platforms)}",
              lambda s: s.to_dict())


@npu_app.command("config")
def config(
    soc: str = typer.Option(..., "--soc", help="SoC model, e.g. SM8650 or MT6991"),
    vendor: Optional[str] = typer.Option(None, "--vendor", help="qualcomm or mediatek"),
    file: Optional[Path] = typer.Option(None, "--file", help="A config to validate against the SoC."),
    as_json: JsonOption = False,
) -> None:
    """Print the default config for a SoC, or validate one (printing it merged with the defaults)."""
    info = get_soc(vendor, soc)
    cfg = load_config_file(file, info) if file is not None else default_config(info)
    if as_json:
        emit_json({"soc": info.target, "source": str(file) if file else "default", "valid": True, "config": cfg})
        return
    if file is not None:
        err_console.print(f"{file}: valid for {info.target} ({info.marketing_name})", highlight=False)
    typer.echo(json.dumps(cfg, indent=2))


@npu_app.command("sdk")
def sdk(as_json: JsonOption = False) -> None:
    """Whether this host can AOT-compile for each vendor, and what to install if not."""
    from converters.npu.aot import detect_vendor_sdk

    emit_rows((detect_vendor_sdk(v) for v in ("qualcomm", "mediatek")), as_json,
              lambda s: f"{s.vendor}: {'ok' if s.ok else 'missing'}: {s.message}", lambda s: s.to_dict())


def register(app: typer.Typer) -> None:
    app.add_typer(npu_app, name="npu")
