"""`gemma4-mobile demo`: the main job end to end on the built-in tiny model and the reference emulator."""

from __future__ import annotations

from pathlib import Path

import typer

from sdk_tools.cli.common import emit_json, progress_reporter
from sdk_tools.cli.options import JsonOption, VerboseOption


def demo_cmd(
    out: Path = typer.Option(Path("demo-out"), "-o", "--out", help="Where bundles, results and the report go."),
    model: str = typer.Option("e2b-tiny", "--model", help="Built-in tiny model: e2b-tiny or e4b-tiny."),
    profile: str = typer.Option("galaxy-s24", "--profile", help="Reference-emulator device profile."),
    runs: int = typer.Option(3, "--runs", help="Benchmark runs on the device."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Train the tiny model, convert it, run it on the host, then deploy, benchmark, compare and run an agent
    on the reference emulator over ADB."""
    from gemma4_common.fsutil import check_output_dir
    from gemma4_common.validate import positive
    from sdk_tools.demo import run_demo

    positive(runs, "--runs", example=3)
    check_output_dir(out, "-o")

    # Rich bars at a terminal; in a pipe, a CI log or with --json (stdout is the JSON), plain lines on stderr.
    with progress_reporter(rich=not as_json) as p:
        res = run_demo(out, model=model, profile=profile, runs=runs, progress=p)
    if as_json:
        emit_json(res.to_dict())
        return
    typer.echo(f"checkpoint  {res.checkpoint}")
    for recipe, path in res.bundles.items():
        typer.echo(f"bundle      {recipe:<22} {path}")
    typer.echo("\nhost (LiteRT-LM CPU engine):")
    for h in res.host:
        typer.echo(f"  {h['prompt']!r} -> {h['response']!r}")
        typer.echo(f"      TTFT {h['ttft_s'] * 1000:.1f} ms | prefill {h['prefill_tps']:.0f} tok/s | "
                   f"decode {h['decode_tps']:.0f} tok/s")
    d = res.device
    dev = d.get("device", {})
    typer.echo(f"\ndevice {d.get('serial')} ({dev.get('model')}, {dev.get('soc')}, Android {dev.get('android')}):")
    dep = d.get("deploy", {})
    typer.echo(f"  deployed {dep.get('bytes_pushed', 0) / 1e6:.2f} MB verified in {dep.get('seconds', 0):.2f} s")
    for metric, s in (d.get("bench") or {}).items():
        if isinstance(s, dict) and "median" in s:
            typer.echo(f"  {metric:<14} median {s['median']:.4g}  min {s['min']:.4g}  max {s['max']:.4g}  "
                       f"p90 {s['p90']:.4g}")
    agree = d.get("agreement", [])
    typer.echo(f"  device vs host answers: {sum(a['agree'] for a in agree)}/{len(agree)} identical")
    a = res.agent
    calls = ", ".join(f"{c['name']}({c['arguments']})" for c in a.get("tool_calls", []))
    typer.echo(f"  agent: {a.get('status')} via {calls or 'no tool'} -> {a.get('answer')!r}")
    typer.echo(f"\nreport {d.get('report')}   total {res.timings_s.get('total', 0):.0f} s")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
