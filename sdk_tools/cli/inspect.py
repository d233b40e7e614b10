"""`gemma4-mobile inspect BUNDLE`: manifest, .litertlm sections and checksum verification."""

from __future__ import annotations

from pathlib import Path

import typer

from sdk_tools.cli.common import emit_json


def inspect_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `convert`."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Print the manifest and the .litertlm sections, and verify every checksum (exit 1 on mismatch)."""
    from converters.bundle import litertlm_sections, read_manifest, verify_bundle

    m = read_manifest(bundle)
    rows = verify_bundle(bundle)
    main = bundle / m["main_model"]
    sections = litertlm_sections(main) if main.is_file() else {"sections": []}
    ok = all(r["status"] == "ok" for r in rows)
    if as_json:
        emit_json({"manifest": m, "litertlm": sections, "verify": rows, "ok": ok})
    else:
        typer.echo(f"bundle   {bundle}")
        typer.echo(f"name     {m.get('name')}")
        recipe, export, source = m.get("recipe"), m.get("export") or {}, m.get("source") or {}
        recipe = recipe.get("name") if isinstance(recipe, dict) else recipe
        typer.echo(f"variant  {m.get('variant')}   recipe {recipe}   "
                   f"prefill {export.get('prefill_lengths')}   cache {export.get('cache_length')}")
        typer.echo(f"source   {source.get('path')} (sha256 {str(source.get('sha256'))[:16]}...)")
        typer.echo("tools    " + ", ".join(f"{k} {v}" for k, v in m.get("tool_versions", {}).items()))
        typer.echo(f"litertlm version {sections.get('version', '?')}, {len(sections['sections'])} sections:")
        for s in sections["sections"]:
            typer.echo(f"  [{s['index']}] {s['data_type']:<24} {s['model_type'] or '':<28} {s['size']:>12,d} B")
        for t in (m.get("npu") or {}).get("targets", []):
            typer.echo(f"npu      {t.get('vendor')}:{t.get('soc')} {t.get('status')} {t.get('model') or ''}")
        typer.echo("files:")
        for r in rows:
            typer.echo(f"  {r['status']:<8} {r['file']}  {r.get('size', 0):,d} B")
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
