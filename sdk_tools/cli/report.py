"""`gemma4-mobile report RESULTS...`: Markdown + PNG plots from bench results, optionally compared
with a baseline (regressions beyond --threshold flagged; --fail-on-regression exits 1)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gemma4_common.errors import GateFailure
from sdk_tools.cli.common import emit_json
from sdk_tools.cli.options import JsonOption


def _expand(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out += sorted(p.glob("*.json")) if p.is_dir() else [p]
    return out


def report(
    results: List[Path] = typer.Argument(..., help="Results JSON files (or directories of them)."),
    out: Path = typer.Option(Path("bench-report"), "--out", "-o", help="Directory for report.md and plots."),
    baseline: Optional[List[Path]] = typer.Option(None, "--baseline", "-b",
                                                  help="Baseline results to compare with (repeatable)."),
    threshold: float = typer.Option(0.05, "--threshold", help="Regression threshold (fraction, 0.05 = 5%)."),
    fail_on_regression: bool = typer.Option(False, "--fail-on-regression", help="Exit 1 when a metric regressed."),
    as_json: JsonOption = False,
) -> None:
    """Write a Markdown report with tables and PNG plots of tokens/s per device, recipe and backend."""
    from sdk_tools.report import write_report

    files = write_report(_expand(list(results)), out, baseline_paths=_expand(list(baseline or [])),
                         threshold=threshold)
    if as_json:
        emit_json(files.to_dict())
    else:
        typer.echo(str(files.markdown))
        for p in files.plots:
            typer.echo(str(p))
        for c in files.regressions:
            typer.echo(f"REGRESSION {c.label}: {c.metric} {c.baseline:.2f} -> {c.new:.2f} ({c.change:+.1%})")
    if fail_on_regression and files.regressions:
        raise GateFailure(f"{len(files.regressions)} metric(s) regressed beyond {threshold:.0%}: "
                          + ", ".join(f"{c.label} {c.metric}" for c in files.regressions))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
