"""Reports for people from bench results JSON: a Markdown file with tables and PNG plots
(tokens/s per device, recipe and backend), and a comparison of a baseline with new results that
flags regressions beyond a threshold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_path, atomic_write_text, check_output_dir, output_error
from sdk_tools.bench import RESULTS_FORMAT

# metric -> (column title, unit, higher is better)
METRIC_INFO = {
    "decode_tps": ("Decode", "tok/s", True),
    "prefill_tps": ("Prefill", "tok/s", True),
    "ttft_s": ("TTFT", "s", False),
    "init_s": ("Init", "s", False),
    "peak_mem_mb": ("Peak mem", "MB", False),
}


def fmt(v: float | None, metric: str | None = None) -> str:
    """How every number appears in the report: 2 decimals, 3 for seconds (TTFT, init)."""
    if v is None:
        return "-"
    return f"{v:.3f}" if metric in ("ttft_s", "init_s") else f"{v:.2f}"


def load_results(path: Path | str) -> dict[str, Any]:
    from gemma4_common.fsutil import read_json

    path = Path(path)
    fix = "pass files written by `gemma4-mobile bench`"
    data = read_json(path, fix, what="results file", missing_fix=fix)
    if not isinstance(data, dict) or data.get("format") != RESULTS_FORMAT:
        raise UserError(f"{path} is not a bench results file "
                        f"(format {data.get('format') if isinstance(data, dict) else None!r})",
                        "pass files written by `gemma4-mobile bench`")
    data["_path"] = str(path)
    return data


def label(r: dict[str, Any]) -> str:
    dev = r.get("device") or {}
    return (f"{dev.get('model') or dev.get('serial')} / {r['bundle'].get('recipe') or r['bundle'].get('name')} / "
            f"{r.get('backend')}")


def key(r: dict[str, Any]) -> tuple:
    """What makes two results comparable: device, recipe/variant, backend and token counts."""
    dev = r.get("device") or {}
    s = r.get("settings") or {}
    return (dev.get("model"), dev.get("soc_model"), r["bundle"].get("recipe"), r["bundle"].get("variant"),
            r.get("backend"), s.get("prefill"), s.get("decode"))


def median(r: dict[str, Any], metric: str) -> float | None:
    s = (r.get("summary") or {}).get(metric)
    return None if s is None else s.get("median")


@dataclasses.dataclass
class Change:
    label: str
    metric: str
    baseline: float | None
    new: float | None
    change: float | None  # relative, signed: + means better
    regression: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare(baseline: dict[str, Any], new: dict[str, Any], threshold: float = 0.05) -> list[Change]:
    """Per metric: relative change of the medians (positive = better); regression beyond threshold."""
    out = []
    for metric, (_, _, higher) in METRIC_INFO.items():
        b, n = median(baseline, metric), median(new, metric)
        if b is None or n is None or b == 0:
            out.append(Change(label(new), metric, b, n, None, False))
            continue
        rel = (n - b) / abs(b)
        better = rel if higher else -rel
        out.append(Change(label(new), metric, b, n, better, better < -threshold))
    return out


def pair_up(baselines: list[dict[str, Any]], news: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Match results by key; with one of each, compare them whatever their keys."""
    if len(baselines) == 1 and len(news) == 1:
        return [(baselines[0], news[0])]
    by_key = {key(b): b for b in baselines}
    return [(by_key[key(n)], n) for n in news if key(n) in by_key]


@dataclasses.dataclass
class ReportFiles:
    markdown: Path
    plots: list[Path]
    changes: list[Change]

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.regression]

    def to_dict(self) -> dict[str, Any]:
        return {"markdown": str(self.markdown), "plots": [str(p) for p in self.plots],
                "changes": [c.to_dict() for c in self.changes],
                "regressions": [c.to_dict() for c in self.regressions]}


def _plot_tps(results: list[dict[str, Any]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [label(r) for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(results) + 4), 4.5))
    for ax, metric in zip(axes, ("decode_tps", "prefill_tps")):
        meds, lo, hi = [], [], []
        for r in results:
            s = (r.get("summary") or {}).get(metric) or {}
            m = s.get("median") or 0.0
            meds.append(m)
            lo.append(max(0.0, m - (s.get("min") if s.get("min") is not None else m)))
            hi.append(max(0.0, (s.get("max") if s.get("max") is not None else m) - m))
        xs = range(len(results))
        bars = ax.bar(xs, meds, yerr=[lo, hi], capsize=4, color="#3b7dd8")
        ax.bar_label(bars, labels=[fmt(m) for m in meds], fontsize=8)
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("tokens/s (median, min-max)")
        ax.set_title(METRIC_INFO[metric][0])
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _plot_compare(pairs: list[tuple[dict, dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(pairs) + 3), 4.5))
    width = 0.38
    xs = list(range(len(pairs)))
    base = [median(b, "decode_tps") or 0.0 for b, _ in pairs]
    new = [median(n, "decode_tps") or 0.0 for _, n in pairs]
    b1 = ax.bar([x - width / 2 for x in xs], base, width, label="baseline", color="#999999")
    b2 = ax.bar([x + width / 2 for x in xs], new, width, label="new", color="#3b7dd8")
    ax.bar_label(b1, labels=[fmt(v) for v in base], fontsize=8)
    ax.bar_label(b2, labels=[fmt(v) for v in new], fontsize=8)
    ax.set_xticks(xs)
    ax.set_xticklabels([label(n) for _, n in pairs], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("decode tokens/s (median)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _summary_table(results: list[dict[str, Any]]) -> list[str]:
    head = ["Device", "Serial", "SoC", "Bundle", "Recipe", "Backend", "Prefill/Decode tokens", "Runs"]
    for metric, (title, unit, _) in METRIC_INFO.items():
        head.append(f"{title} median ({unit})")
    head += ["Decode p90 (tok/s)", "Decode min (tok/s)", "Decode max (tok/s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        dev, b, s = r.get("device") or {}, r["bundle"], r.get("settings") or {}
        dec = (r.get("summary") or {}).get("decode_tps") or {}
        row = [dev.get("model", ""), dev.get("serial", ""),
               f"{dev.get('soc_vendor', '')} {dev.get('soc_model', '')}".strip(),
               str(b.get("name", "")), str(b.get("recipe") or ""), str(r.get("backend", "")),
               f"{s.get('prefill')}/{s.get('decode')}", str(len(r.get("runs") or []))]
        row += [fmt(median(r, m), m) for m in METRIC_INFO]
        row += [fmt(dec.get("p90")), fmt(dec.get("min")), fmt(dec.get("max"))]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def write_report(result_paths: list[Path | str], out_dir: Path | str, *, baseline_paths: list[Path | str] = (),
                 threshold: float = 0.05, title: str = "gemma4-mobile benchmark report") -> ReportFiles:
    """Write report.md and PNG plots into out_dir; compare with baselines when given."""
    if not result_paths:
        raise UserError("no results files given", "pass files written by `gemma4-mobile bench`")
    if not 0 <= threshold < 1:
        raise UserError(f"--threshold {threshold} is out of range", "use a fraction such as 0.05 for 5%")
    out_dir = check_output_dir(out_dir, "-o")
    results = [load_results(p) for p in result_paths]
    baselines = [load_results(p) for p in baseline_paths]
    try:
        return _write(results, baselines, out_dir, threshold, title)
    except OSError as e:
        raise output_error(e, out_dir, "-o") from None


def _write(results: list[dict], baselines: list[dict], out_dir: Path, threshold: float, title: str) -> ReportFiles:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [_plot_tps(results, out_dir / "tokens_per_s.png", title)]
    md = [f"# {title}", "", f"{len(results)} result file(s).", "", "## Summary (median over runs)", ""]
    md += _summary_table(results)
    md += ["", "![tokens per second](tokens_per_s.png)", ""]
    for r in results:
        md += [f"### {label(r)} ({r.get('device', {}).get('serial', '')})", "",
               f"- bundle `{r['bundle'].get('name')}` manifest sha256 `{r['bundle'].get('manifest_hash', '')[:16]}`",
               f"- settings: {json.dumps(r.get('settings'))}", f"- results file: `{r['_path']}`", "",
               "| Run | " + " | ".join(f"{t} ({u})" for t, u, _ in METRIC_INFO.values()) + " |",
               "|---|---|---|---|---|---|"]
        for i, run in enumerate(r.get("runs") or [], 1):
            md.append("| " + " | ".join([str(i), *[fmt(run.get(m), m) for m in METRIC_INFO]]) + " |")
        md.append("")
    changes: list[Change] = []
    if baselines:
        pairs = pair_up(baselines, results)
        if not pairs:
            raise UserError("no baseline matches the results (same device, recipe, backend and token counts)",
                            "pass a baseline measured with the same settings")
        md += [f"## Comparison with baseline (regression: worse by more than {threshold:.0%})", "",
               "| Result | Metric | Baseline | New | Change | Regression |", "|---|---|---|---|---|---|"]
        for b, n in pairs:
            for c in compare(b, n, threshold):
                changes.append(c)
                ch = "-" if c.change is None else f"{c.change:+.1%}"
                md.append(f"| {c.label} | {METRIC_INFO[c.metric][0]} ({METRIC_INFO[c.metric][1]}) | "
                          f"{fmt(c.baseline, c.metric)} | {fmt(c.new, c.metric)} | {ch} | "
                          f"{'**REGRESSION**' if c.regression else 'ok'} |")
        md.append("")
        plots.append(_plot_compare(pairs, out_dir / "compare_decode.png"))
        md += ["![baseline vs new](compare_decode.png)", ""]
    md_path = out_dir / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return ReportFiles(md_path, plots, changes)
