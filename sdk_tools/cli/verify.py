"""`gemma4-mobile verify BUNDLE --checkpoint DIR`: the bundle against its PyTorch checkpoint on the
host, or (`--device SERIAL`) a device's runner against the reference; exit 1 when a gate fails."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from sdk_tools.cli.common import emit_json, progress_reporter
from sdk_tools.cli.options import DeviceOption, JsonOption, resolve_runner, RunnerOption, VerboseOption


def verify_cmd(
    bundle: Path = typer.Argument(..., help="Bundle directory made by `gemma4-mobile convert`."),
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="The Hugging Face checkpoint it came from."),
    eval_file: Optional[Path] = typer.Option(None, "--eval", help='JSONL of {"prompt": ..., "target": ...} lines '
                                             "(default: the set shipped with gemma4-mobile)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use only the first N evaluation items."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Greedy continuation length per prompt."),
    device: DeviceOption = None,
    reference_device: Optional[str] = typer.Option(None, "--reference-device",
                                                   help="Reference device (normally the reference emulator); "
                                                        "default: the host engine that the emulator runs."),
    runner: RunnerOption = None,
    seed: int = typer.Option(0, "--seed", help="Sampler seed sent to the runner (sampling is greedy)."),
    max_ppl_ratio: Optional[float] = typer.Option(None, "--max-ppl-ratio", help="Gate: bundle/reference perplexity."),
    max_mean_logprob_delta: Optional[float] = typer.Option(None, "--max-mean-logprob-delta",
                                                           help="Gate: mean |log-prob delta| per token."),
    max_p99_logprob_delta: Optional[float] = typer.Option(None, "--max-p99-logprob-delta",
                                                          help="Gate: p99 |log-prob delta|."),
    min_greedy_agreement: Optional[float] = typer.Option(None, "--min-greedy-agreement",
                                                         help="Gate: share of prompts whose greedy text equals "
                                                              "PyTorch's."),
    min_device_agreement: Optional[float] = typer.Option(None, "--min-device-agreement",
                                                         help="Gate: share of prompts where device and reference "
                                                              "agree."),
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Write the full report JSON here."),
) -> None:
    """Compare BUNDLE with its checkpoint (log-prob deltas, perplexity ratio, greedy agreement) or,
    with --device, a device's outputs with the reference emulator's and PyTorch's; gates per recipe."""
    from sdk_tools.accuracy.evalset import load_eval
    from sdk_tools.accuracy.verify import (VerifySettings, raise_on_failure, summary_lines, verify_device,
                                           verify_host, write_report)

    from gemma4_common.fsutil import check_output_file

    if out is not None:
        check_output_file(out, "-o")  # before minutes of work
    items = load_eval(eval_file, limit)
    settings = VerifySettings(max_new_tokens=max_new_tokens, seed=seed)
    settings.validate()
    runner_path = resolve_runner(runner) if device else None
    overrides = {"max_ppl_ratio": max_ppl_ratio, "max_mean_logprob_delta": max_mean_logprob_delta,
                 "max_p99_logprob_delta": max_p99_logprob_delta, "min_greedy_agreement": min_greedy_agreement,
                 "min_device_agreement": min_device_agreement}
    with progress_reporter(rich=not as_json) as progress:
        if device:
            report = verify_device(bundle, checkpoint, items, device, reference_serial=reference_device,
                                   runner=runner_path, settings=settings, overrides=overrides, progress=progress)
        else:
            report = verify_host(bundle, checkpoint, items, settings=settings, overrides=overrides,
                                 progress=progress)
    if out is not None:
        write_report(report, out, flag="-o")
    if as_json:
        emit_json({k: v for k, v in report.items() if k not in ("items",)} if out is not None else report)
    else:
        for line in summary_lines(report):
            typer.echo(line)
        if out is not None:
            typer.echo(f"report: {out}")
    raise_on_failure(report)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
