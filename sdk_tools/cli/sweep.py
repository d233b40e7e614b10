"""`gemma4-mobile sweep CHECKPOINT --recipes a,b,c -o DIR`: convert with each recipe and tabulate
size, host decode speed and accuracy (Markdown, JSON and a size-vs-accuracy plot)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from sdk_tools.cli.common import emit_json, progress_reporter
from sdk_tools.cli.options import JsonOption, VerboseOption


def sweep_cmd(
    checkpoint: Path = typer.Argument(..., help="Hugging Face Gemma 4 checkpoint directory."),
    recipes: List[str] = typer.Option(["fp32,dynamic_wi8_afp32,dynamic_wi4b32_afp32"], "--recipes", "-r",
                                      help="Recipes, comma-separated or repeated (see `convert --recipe list`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Directory for the bundles and sweep.{md,json,png}."),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help="JSONL evaluation set (default: the shipped one)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N evaluation items."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Greedy continuation length per prompt."),
    cache_length: int = typer.Option(1024, "--cache-length", help="KV cache length of the bundles."),
    bench_prefill: int = typer.Option(64, "--bench-prefill", help="Prefill tokens of the speed benchmark."),
    bench_decode: int = typer.Option(64, "--bench-decode", help="Decode tokens of the speed benchmark."),
    calibration: Optional[str] = typer.Option(None, "--calibration",
                                              help="Calibration prompts for static recipes and NPU rows (chat JSONL, "
                                                   "or `default`: the built-in set, also used when omitted)."),
    npu: List[str] = typer.Option([], "--npu", help="Add a row per vendor for its NPU variant, e.g. qualcomm:SM8750."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Convert CHECKPOINT with each recipe (one export) and write the recipe table."""
    from sdk_tools.accuracy.evalset import load_eval
    from sdk_tools.accuracy.sweep import markdown, sweep
    from sdk_tools.accuracy.verify import VerifySettings

    from gemma4_common import validate
    from gemma4_common.fsutil import check_output_dir

    for flag, v in (("--max-new-tokens", max_new_tokens), ("--cache-length", cache_length),
                    ("--bench-prefill", bench_prefill), ("--bench-decode", bench_decode)):
        validate.positive(v, flag, example=64)
    check_output_dir(out, "-o")
    items = load_eval(eval_file, limit)
    with progress_reporter(rich=not as_json) as progress:
        res = sweep(checkpoint, list(recipes), out, items, settings=VerifySettings(max_new_tokens=max_new_tokens),
                    cache_length=cache_length, bench_prefill=bench_prefill, bench_decode=bench_decode,
                    calibration=calibration, npu_targets=list(npu), progress=progress)
    if as_json:
        emit_json(res)
        return
    typer.echo(markdown(res).rstrip())
    typer.echo(f"written: {res['files']['md']}, {res['files']['json']}, {res['files']['png']}")


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_cmd)
