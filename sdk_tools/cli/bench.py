"""`gemma4-mobile bench BUNDLE --device SERIAL`: deploy, run the runner contract on the device
(warmup + runs), summarise, and write one results JSON per device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sdk_tools.cli.common import RichProgress, emit_json, err_console, rich_bar
from sdk_tools.cli.options import (DevicesOption, DispatchLibsOption, JsonOption, RunnerOption, VerboseOption,
                                    resolve_runner)


def bench(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `gemma4-mobile convert`."),
    device: DevicesOption = ...,
    prefill: int = typer.Option(256, "--prefill", help="Prompt tokens per run."),
    decode: int = typer.Option(128, "--decode", help="Decoded tokens per run."),
    runs: int = typer.Option(5, "--runs", help="Measured runs."),
    warmup: int = typer.Option(1, "--warmup", help="Runs before measuring (not counted)."),
    backend: str = typer.Option("cpu", "--backend", help="cpu, gpu or npu."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the runner."),
    runner: RunnerOption = None,
    dispatch_libs: DispatchLibsOption = None,
    out: Path = typer.Option(Path("bench-results"), "--out", "-o", help="Directory for the results JSON files."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Benchmark BUNDLE on one or more devices (in parallel); median, min, max and p90 over runs."""
    from gemma4_common.fsutil import check_output_dir
    from sdk_tools.bench import BenchSettings, bench_fleet
    from sdk_tools.devices.discovery import resolve_serials

    settings = BenchSettings(prefill=prefill, decode=decode, runs=runs, warmup=warmup, backend=backend.lower(),
                             threads=threads)
    settings.validate()
    check_output_dir(out, "-o")
    runner_path = resolve_runner(runner)
    serials = resolve_serials(device)
    with rich_bar() as bar:
        outcome = bench_fleet(serials, bundle, settings, out, runner=runner_path, dispatch_lib_dir=dispatch_libs,
                              progress_for=lambda s: RichProgress(bar=bar, quiet=as_json))
    if as_json:
        emit_json({"results": {s: r.summary() for s, r in outcome.results.items()}, "failures": outcome.failures})
    else:
        for serial, run in outcome.results.items():
            d, p = run.results["summary"]["decode_tps"], run.results["summary"]["prefill_tps"]
            typer.echo(f"{serial}: decode {d['median']:.2f} tok/s (min {d['min']:.2f}, max {d['max']:.2f}, "
                       f"p90 {d['p90']:.2f}), prefill {p['median']:.2f} tok/s -> {run.path}")
        for serial, msg in outcome.failures.items():
            err_console.print(f"{serial}: failed: {msg}", highlight=False)
    outcome.raise_failures(len(serials), f"results of the others are in {out}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
