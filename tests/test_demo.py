"""The README's main job, end to end: train (cached), convert, run on the host, then deploy,
benchmark, compare and run an agent on the reference emulator over ADB."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow  # trains (cached), converts two bundles, benchmarks and runs an agent


def test_demo_end_to_end(tiny_e2b, tmp_path, monkeypatch):
    from sdk_tools.demo import run_demo

    monkeypatch.setenv("ANDROID_USER_HOME", str(tmp_path / "android-home"))
    res = run_demo(tmp_path / "demo", runs=1)
    assert set(res.bundles) == {"dynamic_wi8_afp32", "dynamic_wi4c_afp32"}
    assert res.host[0]["response"] == "The capital of France is Paris."
    assert all(h["decode_tps"] > 0 for h in res.host)
    dev = res.device
    assert dev["device"]["soc"] == "SM8650"
    assert dev["bench"]["decode_tps"]["median"] > 0
    assert all(a["agree"] for a in dev["agreement"])  # the device answers as the host engine does
    assert res.agent["tool_calls"][0] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert "18" in res.agent["answer"]
    saved = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert saved["bundles"] == res.bundles
    assert (tmp_path / "demo" / "report" / "report.md").is_file()
