"""Reports: report.md and PNG plots are written, the numbers in the Markdown equal the results
JSON's, and a comparison flags regressions beyond the threshold."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sdk_tools.bench import RESULTS_FORMAT, summarize
from sdk_tools.report import METRIC_INFO, fmt, write_report

from support.cli import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_results(path: Path, *, model: str, serial: str, recipe: str, decode: list[float],
                 prefill: list[float], backend: str = "cpu") -> Path:
    runs = [{"decode_tps": d, "prefill_tps": p, "ttft_s": 8 / p, "init_s": 0.4 + i / 100, "peak_mem_mb": 500.0 + i,
             "wall_s": 1.0} for i, (d, p) in enumerate(zip(decode, prefill))]
    doc = {
        "format": RESULTS_FORMAT, "created": "2026-01-01T00:00:00Z", "tool_version": "test",
        "device": {"serial": serial, "model": model, "soc_vendor": "qualcomm", "soc_model": "SM8650"},
        "bundle": {"name": f"e2b-{recipe}", "recipe": recipe, "variant": "e2b", "manifest_hash": "ab" * 32},
        "settings": {"prefill": 256, "decode": 128, "runs": len(runs), "warmup": 1, "backend": backend,
                     "threads": None},
        "backend": backend, "warmup_runs": [], "runs": runs,
        "summary": {m: summarize([r[m] for r in runs]) for m in METRIC_INFO},
    }
    path.write_text(json.dumps(doc))
    return path


def _table_rows(md: str, header_start: str) -> list[list[str]]:
    lines = md.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(header_start))
    head = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, [c.strip() for c in line.strip("|").split("|")])))
    return rows


def test_report_numbers_equal_json(tmp_path):
    a = fake_results(tmp_path / "a.json", model="SM-S921U", serial="s24", recipe="int8",
                     decode=[20.125, 21.5, 19.75, 22.0, 20.9], prefill=[300.0, 310.5, 305.25, 299.0, 301.0])
    b = fake_results(tmp_path / "b.json", model="Pixel 8 Pro", serial="p8", recipe="int4",
                     decode=[30.0, 31.0, 29.5], prefill=[400.0, 410.0, 405.0])
    files = write_report([a, b], tmp_path / "out")
    md = files.markdown.read_text()
    assert [p.name for p in files.plots] == ["tokens_per_s.png"]
    assert files.plots[0].read_bytes().startswith(PNG_MAGIC) and files.plots[0].stat().st_size > 5000
    rows = _table_rows(md, "| Device")
    assert len(rows) == 2
    for row, path in zip(rows, (a, b)):
        data = json.loads(path.read_text())
        s = data["summary"]
        assert row["Serial"] == data["device"]["serial"]
        for metric, (title, unit, _) in METRIC_INFO.items():
            assert row[f"{title} median ({unit})"] == fmt(s[metric]["median"], metric)
            assert float(row[f"{title} median ({unit})"]) == pytest.approx(s[metric]["median"], abs=0.005)
        assert row["Decode p90 (tok/s)"] == fmt(s["decode_tps"]["p90"])
        assert row["Decode min (tok/s)"] == fmt(s["decode_tps"]["min"])
        assert row["Decode max (tok/s)"] == fmt(s["decode_tps"]["max"])
        assert row["Runs"] == str(len(data["runs"]))
    # Per-run tables hold each raw run.
    runs_a = json.loads(a.read_text())["runs"]
    per_run = _table_rows(md, "| Run")
    assert [r["Decode (tok/s)"] for r in per_run] == [fmt(r["decode_tps"]) for r in runs_a]
    assert [r["TTFT (s)"] for r in per_run] == [fmt(r["ttft_s"], "ttft_s") for r in runs_a]


def test_compare_flags_regressions(tmp_path):
    base = fake_results(tmp_path / "base.json", model="SM-S921U", serial="s24", recipe="int8",
                        decode=[20.0, 20.0, 20.0], prefill=[300.0, 300.0, 300.0])
    new = fake_results(tmp_path / "new.json", model="SM-S921U", serial="s24", recipe="int8",
                       decode=[17.0, 17.0, 17.0], prefill=[298.0, 298.0, 298.0])
    files = write_report([new], tmp_path / "out", baseline_paths=[base], threshold=0.05)
    reg = {c.metric for c in files.regressions}
    assert "decode_tps" in reg and "prefill_tps" not in reg  # -15% vs -0.7%
    dec = next(c for c in files.changes if c.metric == "decode_tps")
    assert dec.change == pytest.approx(-0.15)
    md = files.markdown.read_text()
    assert "**REGRESSION**" in md and "-15.0%" in md
    assert (tmp_path / "out" / "compare_decode.png").read_bytes().startswith(PNG_MAGIC)

    res = cli("report", new, "--baseline", base, "-o", tmp_path / "cli", "--json")
    assert res.code == 0
    doc = res.json()
    assert [c["metric"] for c in doc["regressions"]] == ["decode_tps"]
    assert cli("report", new, "--baseline", base, "-o", tmp_path / "cli", "--fail-on-regression").code == 1
    assert cli("report", new, "--baseline", base, "-o", tmp_path / "cli", "--threshold", "0.2",
               "--fail-on-regression").code == 0


def test_report_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"hello": 1}')
    res = cli("report", bad, "-o", tmp_path / "o")
    assert res.code == 2
    err = res.err.strip()
    assert len(err.splitlines()) == 1 and "not a bench results file" in err
    res = cli("report", tmp_path / "missing.json")
    assert res.code == 2
    assert re.search(r"does not exist", res.err)
