"""`gemma4-mobile tiny`: the built-in tiny Gemma 4 reference models (trained here, cached)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

import typer

from sdk_tools.cli.common import emit_json, emit_rows, progress_reporter
from sdk_tools.cli.options import JsonOption, VerboseOption

tiny_app = typer.Typer(help="Built-in tiny Gemma 4 models of the real architecture, trained locally.",
                       no_args_is_help=True)


@tiny_app.command("list")
def list_cmd(as_json: JsonOption = False) -> None:
    """The tiny models this version can build, and whether each is cached."""
    from sdk_tools.tinymodels.build import SPECS, cache_root

    rows = []
    for name, spec in SPECS.items():
        path = cache_root() / "tiny" / f"{name}-{spec.key()}"
        rows.append({"name": name, "mirrors": spec.mirrors, "layers": spec.num_hidden_layers,
                     "hidden": spec.hidden_size, "kv_shared": spec.num_kv_shared_layers,
                     "cached": (path / "model.safetensors").is_file(), "path": str(path)})
    emit_rows(rows, as_json,
              lambda r: f"{r['name']:<10} like {r['mirrors'].upper()}: {r['layers']} layers, hidden {r['hidden']}, "
                        f"{r['kv_shared']} KV-shared  {'cached' if r['cached'] else 'not built'}  {r['path']}")


@tiny_app.command("build")
def build_cmd(
    name: str = typer.Argument("e2b-tiny", help="e2b-tiny or e4b-tiny"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Also copy the checkpoint here."),
    force: bool = typer.Option(False, "--force", help="Retrain even if cached."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Build and train a tiny checkpoint (a few CPU minutes; cached by content hash)."""
    from gemma4_common.errors import UserError
    from sdk_tools.tinymodels.build import build_tiny, card, get_spec

    spec = get_spec(name)
    if out is not None:
        from gemma4_common.fsutil import check_output_dir

        check_output_dir(out, "-o")
    if out is not None and out.exists() and any(out.iterdir()) and not force:
        raise UserError(f"{out} exists and is not empty", "choose another -o directory or pass --force")
    with progress_reporter(rich=not as_json) as p:
        with p.step(f"train {name}", total=spec.train_steps):
            path = build_tiny(name, force=force, on_step=lambda s, loss: p.advance(1))
    if out is not None:
        from gemma4_common.fsutil import atomic_dir

        with atomic_dir(out, replace=True) as tmp:
            for f in path.iterdir():
                shutil.copy2(f, tmp / f.name)
        path = out
    info = card(path)
    if as_json:
        emit_json({"path": str(path), **info})
        return
    typer.echo(f"{path}  ({info.get('num_parameters', 0) / 1e6:.2f}M params, loss {info.get('first_loss', 0):.2f}"
               f" -> {info.get('final_loss', 0):.3f})")


def register(app: typer.Typer) -> None:
    app.add_typer(tiny_app, name="tiny")
