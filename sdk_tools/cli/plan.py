"""`gemma4-mobile plan`: bundle size and on-device memory of a model/recipe/context, and whether it fits
a device (by serial, or a device profile) — computed from the config, nothing is converted."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sdk_tools.cli.common import emit_json
from sdk_tools.cli.options import JsonOption


def _budget(device: str | None, profile: str | None) -> tuple[int | None, str | None]:
    from gemma4_common.errors import UserError

    if device and profile:
        raise UserError("both --device and --profile given", "pass one of them")
    if profile:
        from on_device.emulator.profiles import load_profile

        p = load_profile(profile)
        return p.ram_budget_bytes, f"profile {p.name} ({p.ram_bytes / 2**30:.0f} GiB RAM, app budget)"
    if device:
        from sdk_tools.devices.discovery import open_device

        dev = open_device(device)
        mem = dev.meminfo()
        avail = mem.get("MemAvailable")
        if not avail:
            raise UserError(f"device {device} reports no MemAvailable in /proc/meminfo",
                            "pass --profile NAME for a device of the same RAM class")
        return avail, f"device {device} (MemAvailable of {mem.get('MemTotal', 0) / 2**30:.1f} GiB)"
    return None, None


def _max_positions(model: str) -> int | None:
    """max_position_embeddings of a known model or a checkpoint's config (None when it has none)."""
    from converters import presets

    key = model.strip().lower()
    if key in presets.PRESETS:
        cfg = presets.get_preset(key)
    else:
        from converters.checkpoint import read_config

        cfg = read_config(Path(model) / "config.json")
    tc = cfg.get("text_config") or cfg
    n = tc.get("max_position_embeddings") if isinstance(tc, dict) else None
    return n if isinstance(n, int) and n > 0 else None


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def plan_cmd(
    model: str = typer.Option(..., "--model", "-m", help="e2b, e4b, or a checkpoint directory."),
    recipe: str = typer.Option("dynamic_wi4b32_afp32", "--recipe", "-r",
                               help="Quantization recipe (`convert --recipe list`)."),
    context: int = typer.Option(4096, "--context", "-c", help="Context length (KV cache tokens)."),
    prefill: int = typer.Option(128, "--prefill", help="Prefill chunk length."),
    ring_buffer: Optional[int] = typer.Option(None, "--sliding-window-ring-buffer",
                                              help="Ring-buffer size of the sliding-window layers' KV cache."),
    vision: bool = typer.Option(False, "--vision", help="Include the vision encoder."),
    audio: bool = typer.Option(False, "--audio", help="Include the audio encoder."),
    device: Optional[str] = typer.Option(None, "--device", "-d", "-s",
                                         help="Device serial (budget = its MemAvailable)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Device profile name (budget = its app RAM budget)."),
    as_json: JsonOption = False,
) -> None:
    """Estimate bundle size and runtime memory; say whether it fits and what would."""
    from converters.planner import load_shape, plan
    from gemma4_common.validate import check_lengths

    if (Path(model) / "config.json").is_file():
        from converters.checkpoint import read_config

        read_config(Path(model) / "config.json")  # a list or a non-string model_type: one line
    shape = load_shape(model)
    check_lengths([prefill], [context], ring_buffer=ring_buffer, window=shape.window,
                  max_context=_max_positions(model), context_flag="--context")
    budget, source = _budget(device, profile)
    p = plan(shape, recipe, context, prefill=prefill, ring_buffer=ring_buffer, vision=vision, audio=audio,
             budget_bytes=budget, budget_source=source)
    if as_json:
        emit_json(p.to_json())
        return
    m = p.memory
    typer.echo(f"model {p.model}  recipe {p.recipe}  context {p.context}  prefill {p.prefill}"
               + (f"  ring buffer {p.ring_buffer}" if p.ring_buffer else ""))
    typer.echo(f"bundle: {_mb(p.bundle_bytes)}  ("
               + ", ".join(f"{k} {_mb(v)}" for k, v in p.bundle_sections.items()) + ")")
    typer.echo(f"memory: {_mb(m['total'])} resident = weights {_mb(m['resident_weights'])} + KV cache "
               f"{_mb(m['kv_cache'])} (sliding {_mb(m['kv_sliding'])}, full {_mb(m['kv_full'])}) + activations "
               f"{_mb(m['activations'])} + runtime {_mb(m['overhead'])}")
    typer.echo(f"        + {_mb(m['mapped_weights'])} memory-mapped embedding tables "
               f"({_mb(m['total_all_resident'])} if all resident)")
    typer.echo(f"convert on the host: ~{p.conversion_host_bytes / 2**30:.1f} GiB RAM (litert-torch's default converter)"
               + (f", ~{p.conversion_host_bytes_lean / 2**30:.1f} GiB with the lean converter"
                  if p.conversion_host_bytes_lean else "") + f"; convert here takes the {p.converter} path")
    if p.budget_bytes is not None:
        verdict = "FITS" if p.fits else "DOES NOT FIT"
        typer.echo(f"budget: {_mb(p.budget_bytes)} ({p.budget_source}): {verdict}"
                   + ("" if p.fits_all_resident or not p.fits else " (only with the embedding tables memory-mapped)"))
        if p.suggestions:
            typer.echo("would fit: " + "; ".join(
                f"{s['recipe']} up to {s['context']}"
                + (f" (ring buffer {s['ring_buffer']})" if s["ring_buffer"] else "")
                for s in p.suggestions[:5]))
        else:
            typer.echo("would fit: nothing (no recipe fits even 1024 tokens)")
    typer.echo("assumptions: " + " | ".join(a.split(".")[0] for a in p.assumptions), err=True)


def register(app: typer.Typer) -> None:
    app.command("plan")(plan_cmd)
