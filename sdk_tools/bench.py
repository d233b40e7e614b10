"""On-device benchmarks: run the runner contract through the device shell, parse its figures,
repeat (warmup + runs), summarise (median, min, max, p90) and store a results JSON; fleets run
several devices in parallel (sdk_tools.fleet), and one that drops out does not stop the others."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

from converters.bundle import read_manifest
from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_write_text
from gemma4_common.progress import Progress
from gemma4_common.stats import percentile
from gemma4_common.shell import join
from on_device.runner_contract import (EXIT_BAD_FLAGS, EXIT_LMK_KILLED, RunnerInvocation, RunnerOutputError,
                                       RunnerResult, build_argv, parse_output)
from sdk_tools.deploy import Deployment, deploy
from sdk_tools.devices.base import Device
from sdk_tools.fleet import FleetOutcome, on_each

RESULTS_FORMAT = "gemma4-mobile-bench/1"
METRICS = ("decode_tps", "prefill_tps", "ttft_s", "init_s", "peak_mem_mb")


@dataclasses.dataclass
class BenchSettings:
    prefill: int = 256
    decode: int = 128
    runs: int = 5
    warmup: int = 1
    backend: str = "cpu"
    threads: int | None = None

    def validate(self) -> None:
        if self.backend not in ("cpu", "gpu", "npu"):
            raise UserError(f"unknown backend {self.backend!r}", "use --backend cpu, gpu or npu")
        if self.runs < 1:
            raise UserError("--runs must be at least 1", "pass --runs 1 or more")
        if self.warmup < 0:
            raise UserError("--warmup cannot be negative", "pass --warmup 0 or more")
        if self.prefill < 1 or self.decode < 1:
            raise UserError("--prefill and --decode must be at least 1 token", "pass positive token counts")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be at least 1", "omit it to use the runner's default")


def invocation_for(deployment: Deployment, settings: BenchSettings) -> RunnerInvocation:
    return RunnerInvocation(
        model_path=deployment.model_path,
        backend=settings.backend,
        benchmark=True,
        prefill_tokens=settings.prefill,
        decode_tokens=settings.decode,
        report_peak_memory=True,
        dispatch_lib_dir=deployment.dispatch_dir if settings.backend == "npu" else None,
        num_threads=settings.threads,
        # The KV cache must hold the synthetic prompt and the decoded tokens.
        max_num_tokens=settings.prefill + settings.decode + 8,
    )


def runner_command(deployment: Deployment, invocation: RunnerInvocation) -> str:
    """The device shell command line: environment (NPU library paths) + quoted argv."""
    argv = join(build_argv(deployment.runner_path, invocation))
    env = deployment.env_prefix() if invocation.backend == "npu" else ""
    return f"{env} {argv}" if env else argv


def _last_lines(text: str, n: int = 4) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def run_runner(device: Device, deployment: Deployment, invocation: RunnerInvocation,
               timeout_s: float | None = None) -> RunnerResult:
    """Run the device runner once; its figures, or UserError saying why it failed."""
    cmd = runner_command(deployment, invocation)
    r = device.shell_result(cmd, timeout_s=timeout_s)
    out, err = r.out, r.err
    runner = deployment.runner_path
    if r.rc in (126, 127):
        raise UserError(f"the runner {runner} on {device.serial} is missing or not executable "
                        f"({_last_lines(err or out, 2)})",
                        "run `gemma4-mobile push` again (it re-sends the runner); on a phone, use "
                        "litert_lm_main built for android_arm64")
    if r.rc == EXIT_LMK_KILLED:
        raise UserError(f"the runner was killed on {device.serial} (exit 137, low-memory killer): the model "
                        f"needs more RAM than the device allows ({_last_lines(err or out, 2)})",
                        "use a smaller recipe (e.g. int4) or a device with more RAM")
    if r.rc == EXIT_BAD_FLAGS:
        raise UserError(f"the runner on {device.serial} rejected its flags: {_last_lines(err or out)}",
                        "use a litert_lm_main build that matches the runner contract "
                        "(see on_device/runner_contract.py)")
    if r.rc != 0:
        raise UserError(f"the runner failed on {device.serial} (exit {r.rc}, backend {invocation.backend}): "
                        f"{_last_lines(err or out)}",
                        "check the backend and the deployed files (`gemma4-mobile push`)" +
                        ("; for --backend npu the dispatch libraries must match the device"
                         if invocation.backend == "npu" else ""))
    try:
        return parse_output(out, expect_benchmark=invocation.benchmark,
                            expect_response=invocation.input_prompt is not None)
    except RunnerOutputError as e:
        raise UserError(f"cannot read the runner's output on {device.serial}: {e}",
                        "use a litert_lm_main build that prints the BenchmarkInfo block (--benchmark)") from None


def summarize(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": percentile(values, 50), "min": min(values), "max": max(values),
            "p90": percentile(values, 90), "n": len(values)}


def _run_dict(r: RunnerResult, seconds: float) -> dict[str, Any]:
    d = {m: getattr(r, m) for m in METRICS}
    d["wall_s"] = seconds
    return d


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("gemma4-mobile")
    except Exception:
        return "unknown"


def bench(device: Device, bundle_dir: Path | str, settings: BenchSettings, *, runner: Path | str | None = None,
          dispatch_lib_dir: Path | str | None = None, deployment: Deployment | None = None,
          device_dir: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Deploy (skipping what is unchanged) and benchmark; returns the results dict (see write_results)."""
    settings.validate()
    progress = progress or Progress()
    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    info = device.info()
    info.storage_free_bytes = None
    if deployment is None:
        if runner is None:
            from sdk_tools.deploy import RUNNER_HELP

            raise UserError("bench needs a device runner (litert_lm_main) and none was given", RUNNER_HELP)
        kw = {"device_dir": device_dir} if device_dir else {}
        deployment = deploy(device, bundle_dir, runner=runner, dispatch_lib_dir=dispatch_lib_dir,
                            backend=settings.backend, progress=progress, **kw)
    inv = invocation_for(deployment, settings)
    warm, runs = [], []
    total = settings.warmup + settings.runs
    with progress.step(f"{device.serial}: bench {settings.warmup}+{settings.runs} runs", total=total):
        for i in range(total):
            t0 = time.perf_counter()
            res = run_runner(device, deployment, inv)
            (warm if i < settings.warmup else runs).append(_run_dict(res, time.perf_counter() - t0))
            progress.advance(1)
    summary = {m: summarize([r[m] for r in runs if r[m] is not None]) for m in METRICS}
    recipe = manifest.get("recipe")
    return {
        "format": RESULTS_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tool_version": _tool_version(),
        "device": info.to_dict(),
        "bundle": {
            "name": manifest.get("name") or bundle_dir.name,
            "path": str(bundle_dir),
            "recipe": recipe.get("name") if isinstance(recipe, dict) else recipe,
            "variant": manifest.get("variant"),
            "manifest_hash": deployment.manifest_hash,
            "model": str(deployment.model_path),
        },
        "settings": dataclasses.asdict(settings),
        "backend": settings.backend,
        "deployment": {"device_dir": str(deployment.device_dir), "runner": str(deployment.runner_path),
                       "model": str(deployment.model_path), "notice": deployment.notice,
                       "bytes_pushed": deployment.bytes_pushed},
        "command": runner_command(deployment, inv),
        # What the figures depend on: the CPU threads the runner was told to use (null: LiteRT-LM's
        # own default, the same one `litert-lm benchmark` uses without --cpu-thread-count), the
        # exact device command line, and each run's wall time including process start.
        "threads": settings.threads,
        "threads_source": "--threads" if settings.threads is not None else "runner default",
        "runner_command": runner_command(deployment, inv),
        "warmup_runs": warm,
        "runs": runs,
        "summary": summary,
    }


def results_filename(results: dict[str, Any]) -> str:
    dev = results["device"]
    parts = [results["bundle"].get("name") or "bundle", dev.get("model") or "device", dev.get("serial") or "",
             results.get("backend") or "cpu"]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(p for p in parts if p)) + ".json"


def write_results(results: dict[str, Any], path: Path | str) -> Path:
    path = Path(path)
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    return path


# ---- fleets -------------------------------------------------------------------------------------
@dataclasses.dataclass
class BenchRun:
    """One device's benchmark: the results dict (see `bench`) and the file it was written to."""

    path: Path
    results: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What a command prints of it: file, device, backend, bundle, summary."""
        r = self.results
        return {"file": str(self.path), "device": r["device"], "backend": r["backend"], "bundle": r["bundle"],
                "summary": r["summary"]}


def bench_fleet(serials: list[str], bundle_dir: Path | str, settings: BenchSettings, out_dir: Path | str, *,
                runner: Path | str | None, dispatch_lib_dir: Path | str | None = None,
                open_device: Callable[[str], Device] | None = None,
                progress_for: Callable[[str], Progress] | None = None) -> FleetOutcome[BenchRun]:
    """Benchmark every device in parallel (sdk_tools.fleet); each writes its own results file in out_dir."""
    from gemma4_common.fsutil import check_output_dir

    settings.validate()
    out_dir = check_output_dir(out_dir, "-o")  # before any device runs

    def work(dev: Device) -> BenchRun:
        res = bench(dev, bundle_dir, settings, runner=runner, dispatch_lib_dir=dispatch_lib_dir,
                    progress=progress_for(dev.serial) if progress_for else None)
        return BenchRun(write_results(res, out_dir / results_filename(res)), res)

    return on_each(serials, work, open_device=open_device)


__all__ = ["BenchRun", "BenchSettings", "bench", "bench_fleet", "invocation_for", "run_runner",
           "runner_command", "summarize", "percentile", "write_results", "results_filename"]
