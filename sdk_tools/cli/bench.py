"""`gemma4-mobile bench BUNDLE --device SERIAL`: deploy, run the runner contract on the device
(warmup + runs), summarise, and write one results JSON per device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gemma4_common.errors import UserError
from sdk_tools.cli.common import RichProgress, emit_json, err_console, rich_bar


def bench(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `gemma4-mobile convert`."),
    device: str = typer.Option(..., "--device", "-d", help="Serial, several as a,b, or `all`."),
    prefill: int = typer.Option(256, "--prefill", help="Prompt tokens per run."),
    decode: int = typer.Option(128, "--decode", help="Decoded tokens per run."),
    runs: int = typer.Option(5, "--runs", help="Measured runs."),
    warmup: int = typer.Option(1, "--warmup", help="Runs before measuring (not counted)."),
    backend: str = typer.Option("cpu", "--backend", help="cpu, gpu or npu."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the runner."),
    runner: Optional[Path] = typer.Option(None, "--runner", help="litert_lm_main for android_arm64 "
                                          "(default: $G4M_RUNNER, then the config file)."),
    dispatch_libs: Optional[Path] = typer.Option(None, "--dispatch-libs",
                                                 help="Directory with the NPU dispatch libraries."),
    out: Path = typer.Option(Path("bench-results"), "--out", "-o", help="Directory for the results JSON files."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Benchmark BUNDLE on one or more devices (in parallel); median, min, max and p90 over runs."""
    from sdk_tools.bench import BenchSettings, bench_fleet, load_json_summary
    from sdk_tools.deploy import find_runner
    from sdk_tools.devices.discovery import resolve_serials

    settings = BenchSettings(prefill=prefill, decode=decode, runs=runs, warmup=warmup, backend=backend.lower(),
                             threads=threads)
    settings.validate()
    from gemma4_common.fsutil import check_output_dir

    check_output_dir(out, "-o")
    find_runner(runner)
    serials = resolve_serials(device)
    with rich_bar() as bar:
        outcome = bench_fleet(serials, bundle, settings, out, runner=runner, dispatch_lib_dir=dispatch_libs,
                              progress_for=lambda s: RichProgress(bar=bar, quiet=as_json))
    if as_json:
        emit_json({"results": {s: load_json_summary(p) for s, p in outcome.results.items()},
                   "failures": outcome.failures})
    else:
        for serial, path in outcome.results.items():
            s = load_json_summary(path)
            d, p = s["summary"]["decode_tps"], s["summary"]["prefill_tps"]
            typer.echo(f"{serial}: decode {d['median']:.2f} tok/s (min {d['min']:.2f}, max {d['max']:.2f}, "
                       f"p90 {d['p90']:.2f}), prefill {p['median']:.2f} tok/s -> {path}")
    if outcome.failures:
        if len(serials) == 1:
            raise UserError(next(iter(outcome.failures.values())))
        for serial, msg in outcome.failures.items():
            err_console.print(f"{serial}: failed: {msg}", highlight=False)
        raise UserError(f"{len(outcome.failures)} of {len(serials)} device(s) failed: "
                        + "; ".join(f"{s}: {m}" for s, m in outcome.failures.items()),
                        f"results of the others are in {out}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
