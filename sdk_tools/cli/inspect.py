"""`gemma4-mobile inspect BUNDLE`: manifest, .litertlm sections, checksum verification and each
model's op census (ops by type and dtype), flagging float compute ops where the NPU vendor forbids them."""

from __future__ import annotations

from pathlib import Path

import typer

from sdk_tools.cli.common import emit_json
from sdk_tools.cli.options import JsonOption


def inspect_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `convert`."),
    as_json: JsonOption = False,
) -> None:
    """Print the manifest and the .litertlm sections, and verify every checksum (exit 1 on mismatch)."""
    from converters.bundle import litertlm_sections, read_manifest, verify_bundle

    m = read_manifest(bundle)
    rows = verify_bundle(bundle)
    main = bundle / m["main_model"]
    sections = litertlm_sections(main) if main.is_file() else {"sections": []}
    ok = all(r["status"] == "ok" for r in rows)
    census = _census(bundle, m)
    if as_json:
        emit_json({"manifest": m, "litertlm": sections, "verify": rows, "ok": ok, "census": census})
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
        for rel, c in census.items():
            _print_census(rel, c)
        typer.echo("files:")
        for r in rows:
            typer.echo(f"  {r['status']:<8} {r['file']}  {r.get('size', 0):,d} B")
    if not ok:
        raise typer.Exit(1)


def _models(bundle: Path, m: dict) -> list[tuple[str, str | None]]:
    """(path relative to the bundle, NPU vendor or None) of every model the bundle holds."""
    out: list[tuple[str, str | None]] = [(m["main_model"], None)]
    for t in m.get("npu", {}).get("targets", []):
        for key in ("compile_ready_model", "model"):
            rel = t.get(key)
            if rel and (rel, t["vendor"]) not in out and (bundle / rel).is_file():
                out.append((rel, t["vendor"]))
    return out


def _census(bundle: Path, m: dict) -> dict:
    from converters import census as census_lib
    from gemma4_common.errors import UserError

    out = {}
    for rel, vendor in _models(bundle, m):
        forbidden = False
        if vendor:
            from converters.npu.variant import vendor_settings

            forbidden = not vendor_settings(vendor)["allow_float_operations"]
        try:
            c = census_lib.census(bundle / rel)
        except (UserError, ValueError, OSError) as e:  # a model that does not parse is reported, not raised
            out[rel] = {"vendor": vendor, "error": str(e)[:200], "flagged": []}
            continue
        fops = census_lib.float_compute_ops(c)
        out[rel] = {"vendor": vendor, "float_forbidden": forbidden, "float_compute_ops": fops,
                    "flagged": sorted(k for k, n in fops.items() if n and forbidden),
                    "sections": census_lib.summary(c)}
    return out


def _print_census(rel: str, c: dict) -> None:
    vendor = c.get("vendor")
    rule = f" ({vendor} NPU: {'no float ops allowed' if c.get('float_forbidden') else 'float ops allowed'})" \
        if vendor else ""
    typer.echo(f"census   {rel}{rule}")
    if "error" in c:
        typer.echo(f"  unreadable: {c['error']}")
        return
    for section, sigs in c["sections"].items():
        for sig, d in sigs.items():
            ops = ", ".join(f"{k} {n}" for k, n in sorted(d["ops"].items(), key=lambda kv: -kv[1]))
            typer.echo(f"  {section}/{sig}: {d['total']} ops, {d['float_compute_ops']} float compute: {ops}")
    fops = c["float_compute_ops"]
    if c["flagged"]:
        typer.echo(f"  float compute ops ({vendor}): FORBIDDEN by the vendor: "
                   + ", ".join(f"{k} {fops[k]}" for k in c["flagged"]))
    elif vendor:
        total = sum(fops.values())
        typer.echo(f"  float compute ops ({vendor}) in prefill/decode: {'none' if not total else total}")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_cmd)
