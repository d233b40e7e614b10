"""Recipe sweep: convert one checkpoint with several recipes (one float export), then measure each
bundle (size, host decode speed, accuracy against PyTorch) into one table users pick a recipe
from: sweep.json, sweep.md and a size-vs-accuracy plot (sweep.png).

Static (calibrated) recipes and NPU variants are measured on the LiteRT interpreter
(sdk_tools.accuracy.interpreter): LiteRT-LM 0.18.1's CPU engine does not run their int16 I/O or
split caches, so they get no host speed figure."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_write_text
from gemma4_common.progress import Progress
from sdk_tools.accuracy.evalset import EvalItem
from sdk_tools.accuracy.verify import VerifySettings, load_reference, reference_run, verify_host

SWEEP_FORMAT = "gemma4-mobile-sweep/1"


def sweep(checkpoint: Path | str, recipes: Sequence[str], out_dir: Path | str, items: Sequence[EvalItem], *,
          settings: VerifySettings | None = None, bench_prefill: int = 64, bench_decode: int = 64,
          cache_length: int = 1024, prefill_lengths: Sequence[int] = (128,), bundles: dict[str, Path] | None = None,
          calibration: str | None = None, npu_targets: Sequence[str] = (),
          progress: Progress | None = None) -> dict[str, Any]:
    """Convert (unless `bundles` {recipe: dir} is given) and measure; writes the three files in out_dir.

    Static recipes calibrate on `calibration` (the built-in set when None); `npu_targets` adds a row
    per vendor for its NPU variant (split cache, calibrated a16w8)."""
    from converters.pipeline import ConvertRequest, convert
    from converters.recipes import parse_recipes
    from on_device.engine import benchmark

    progress = progress or Progress()
    settings = settings or VerifySettings()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    parsed = parse_recipes(list(recipes))
    names = [r.name for r in parsed]
    static = {r.name for r in parsed if r.needs_calibration}
    if (static or npu_targets) and calibration is None:
        calibration = "default"
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output path {out_dir} exists and is a file", "choose another -o directory")
    t0 = time.perf_counter()
    if bundles is None:
        res = convert(ConvertRequest(checkpoint=checkpoint, out_dir=out_dir / "bundles", recipes=names,
                                     prefill_lengths=list(prefill_lengths), cache_length=cache_length, force=True,
                                     calibration=calibration if (static or npu_targets) else None,
                                     npu_targets=list(npu_targets)),
                      progress)
        bundles = {m["recipe"]["name"]: p for p, m in zip(res.bundles, res.manifests)}
    convert_s = time.perf_counter() - t0
    with progress.step("load PyTorch checkpoint"):
        ref = load_reference(checkpoint)
    rr = reference_run(ref, items, settings, progress=progress)
    rows = []
    measured = [(name, Path(bundles[name]), Path(bundles[name]) / "model.litertlm", name) for name in names]
    if npu_targets:
        import json as json_lib

        first = Path(bundles[names[0]])
        seen = set()
        for t in json_lib.loads((first / "manifest.json").read_text())["npu"]["targets"]:
            if t["vendor"] not in seen:
                seen.add(t["vendor"])
                measured.append((f"{t['recipe']} ({t['vendor']} NPU variant)", first, first / t["compile_ready_model"],
                                 t["recipe"]))
    for name, bdir, model, recipe in measured:
        interp = recipe in static or bdir / "model.litertlm" != model
        if interp:
            from sdk_tools.accuracy.interpreter import verify_interpreter

            with progress.step(f"accuracy {name} (LiteRT interpreter)"):
                rep = verify_interpreter(model, checkpoint, items, recipe=recipe, cache_length=cache_length,
                                         settings=settings, reference=rr, progress=progress)
            st = None
        else:
            rep = verify_host(bdir, checkpoint, items, settings=settings, reference=rr, progress=progress)
            with progress.step(f"benchmark {name} (host CPU)"):
                st = benchmark(model, bench_prefill, bench_decode, max_num_tokens=bench_prefill + bench_decode + 8)
        s = rep["summary"]
        rows.append({"recipe": name, "recipe_class": rep["recipe_class"], "bundle": str(bdir),
                     "engine": "interpreter" if interp else "litert-lm",
                     "model_bytes": model.stat().st_size, "decode_tps": st.decode_tps if st else None,
                     "prefill_tps": st.prefill_tps if st else None,
                     "ppl_ratio": s["ppl_ratio"], "ref_ppl": s["ref_ppl"], "bundle_ppl": s["bundle_ppl"],
                     "mean_logprob_delta": s["mean_logprob_delta"], "p99_logprob_delta": s["p99_logprob_delta"],
                     "max_logprob_delta": s["max_logprob_delta"], "greedy_agreement": s["greedy_agreement"],
                     "gates_passed": rep["passed"],
                     "failed_gates": [c["metric"] for c in rep["gate_results"] if not c["passed"]]})
    result = {"format": SWEEP_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "checkpoint": str(checkpoint), "eval_items": len(items),
              "settings": {"max_new_tokens": settings.max_new_tokens, "bench_prefill": bench_prefill,
                           "bench_decode": bench_decode, "cache_length": cache_length},
              "convert_s": convert_s, "rows": rows}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "sweep.json", json.dumps(result, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "sweep.md", markdown(result))
    plot(result, out_dir / "sweep.png")
    result["files"] = {k: str(out_dir / f"sweep.{k}") for k in ("json", "md", "png")}
    return result


def _f(x: Any, spec: str) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Recipe sweep: {Path(result['checkpoint']).name}", "",
             f"{result['eval_items']} evaluation prompts; greedy continuations of up to "
             f"{result['settings']['max_new_tokens']} tokens; host decode speed from LiteRT-LM's benchmark "
             f"({result['settings']['bench_prefill']} prefill + {result['settings']['bench_decode']} decode tokens, "
             "CPU, one run: indicative only; n/a for static and NPU variants, measured on the LiteRT "
             "interpreter).", "",
             "| recipe | bundle size (MB) | host decode (tok/s) | ppl ratio | mean abs dlogp | p99 abs dlogp "
             "| greedy agreement | gates |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["rows"]:
        gates = "pass" if r["gates_passed"] else "FAIL: " + ", ".join(r["failed_gates"])
        lines.append(f"| {r['recipe']} | {r['model_bytes'] / 1e6:.2f} | {_f(r['decode_tps'], '.1f')} "
                     f"| {_f(r['ppl_ratio'], '.4f')} | {_f(r['mean_logprob_delta'], '.2e')} "
                     f"| {_f(r['p99_logprob_delta'], '.2e')} | {_f(r['greedy_agreement'], '.0%')} "
                     f"| {gates} ({r['recipe_class']}) |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    xs = [r["model_bytes"] / 1e6 for r in rows]
    ys = [r["mean_logprob_delta"] if r["mean_logprob_delta"] is not None else float("nan") for r in rows]
    ax.scatter(xs, ys, color="tab:blue")
    for x, y, r in zip(xs, ys, rows):
        ax.annotate(f"{r['recipe']}\nppl x{_f(r['ppl_ratio'], '.3f')}", (x, y), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xlabel("bundle size (MB)")
    ax.set_ylabel("mean |log-prob delta| vs PyTorch (nats/token)")
    ax.set_title(f"size vs accuracy: {Path(result['checkpoint']).name}")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
