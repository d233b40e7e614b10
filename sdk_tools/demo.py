"""The main job end to end on the built-in tiny model: train it, convert it, run it on the host,
then treat the reference emulator as a phone over ADB — deploy verified, benchmark, compare its
answers with the host's, and run a tool-calling agent on it. Every step is a library call that
the CLI commands use too."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma4_common.fsutil import atomic_write_bytes, atomic_write_text
from gemma4_common.progress import Progress

DEMO_PROMPTS = ["What is the capital of France?", "What is 7 + 5?", "Describe Rome as JSON."]


@dataclass
class DemoResult:
    out_dir: Path
    checkpoint: Path
    bundles: dict[str, str] = field(default_factory=dict)
    host: list[dict[str, Any]] = field(default_factory=list)
    device: dict[str, Any] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"out_dir": str(self.out_dir), "checkpoint": str(self.checkpoint), "bundles": self.bundles,
                "host": self.host, "device": self.device, "agent": self.agent, "timings_s": self.timings_s}


def run_demo(out_dir: Path, *, model: str = "e2b-tiny",
             recipes: tuple[str, ...] = ("dynamic_wi8_afp32", "dynamic_wi4c_afp32"),
             profile: str = "galaxy-s24", runs: int = 3, progress: Progress | None = None) -> DemoResult:
    from converters.pipeline import ConvertRequest, convert
    from gemma4_common.gemma4_format import Message, STOP_SEQUENCES, cut_at_stop, render_prompt
    from sdk_tools.engines import open_text_engine
    from sdk_tools.tinymodels.build import build_tiny, get_spec

    progress = progress or Progress()
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    spec = get_spec(model)
    with progress.step(f"train {model} ({spec.train_steps} steps; cached for later runs)", total=spec.train_steps):
        ckpt = build_tiny(model, on_step=lambda s, loss: progress.advance(1))
    res = DemoResult(out_dir=out_dir, checkpoint=ckpt)

    conv = convert(ConvertRequest(checkpoint=ckpt, out_dir=out_dir / "bundles", recipes=list(recipes),
                                  prefill_lengths=[128], cache_length=1024, force=True), progress)
    for path, m in zip(conv.bundles, conv.manifests):
        res.bundles[m["recipe"]["name"]] = str(path)
    main_bundle = conv.bundles[0]

    with progress.step("run on the host (LiteRT-LM CPU)"):
        with open_text_engine(main_bundle) as eng:
            for p in DEMO_PROMPTS:
                text = eng.generate(render_prompt([Message("user", p)], add_bos=False), 48, STOP_SEQUENCES)
                s = eng.last.stats
                res.host.append({"prompt": p, "response": cut_at_stop(text)[0], "ttft_s": s.ttft_s,
                                 "prefill_tps": s.prefill_tps, "decode_tps": s.decode_tps})

    res.device = _device_part(main_bundle, out_dir, profile, runs, res, progress)
    res.timings_s = {**progress.timings, "total": time.perf_counter() - t0}
    atomic_write_text(out_dir / "demo.json", json.dumps(res.to_dict(), indent=2, default=str) + "\n")
    return res


def _device_part(bundle: Path, out_dir: Path, profile: str, runs: int, res: DemoResult,
                 progress: Progress) -> dict[str, Any]:
    from gemma4_common.gemma4_format import Message, STOP_SEQUENCES, cut_at_stop, render_prompt
    from on_device.agent.loop import AgentLoop, ToolRegistry
    from on_device.emulator import manager
    from on_device.runner_contract import emulator_runner_bytes
    from sdk_tools.bench import BenchSettings, bench, write_results
    from sdk_tools.deploy import deploy
    from sdk_tools.devices.discovery import open_device
    from sdk_tools.engines import open_text_engine
    from sdk_tools.report import write_report

    runner = out_dir / "emulator-runner" / "litert_lm_main"
    atomic_write_bytes(runner, emulator_runner_bytes())
    with progress.step(f"start the reference emulator ({profile})"):
        rec = manager.start(profile=profile)
    out: dict[str, Any] = {"serial": rec.serial, "profile": profile}
    try:
        with open_device(rec.serial) as dev:
            info = dev.info()
            out["device"] = {"model": info.model, "soc": info.soc_model, "ram_bytes": info.ram_bytes,
                             "android": info.android, "abi": info.abi}
            with progress.step("deploy over ADB (push, sha256 on the device, rename)"):
                dep = deploy(dev, bundle, runner=runner, progress=progress)
            out["deploy"] = {"bytes_pushed": dep.bytes_pushed, "seconds": dep.push_seconds,
                             "model_path": str(dep.model_path)}
            with progress.step(f"benchmark on the device ({runs} runs)"):
                results = bench(dev, bundle, BenchSettings(prefill=128, decode=64, runs=runs, warmup=1),
                                deployment=dep, progress=progress)
            rpath = write_results(results, out_dir / "results" / "bench.json")
            report = write_report([rpath], out_dir / "report")
            out["bench"] = {k: v for k, v in results.get("summary", {}).items()}
            out["report"] = str(report.markdown)
            with open_text_engine(bundle, dev, deployment=dep) as eng:
                with progress.step("same prompts on the device vs the host"):
                    agree = []
                    for h in res.host:
                        prompt = render_prompt([Message("user", h["prompt"])], add_bos=False)
                        dev_text = cut_at_stop(eng.generate(prompt, 48, STOP_SEQUENCES))[0]
                        agree.append({"prompt": h["prompt"], "device": dev_text, "host": h["response"],
                                      "agree": dev_text == h["response"]})
                    out["agreement"] = agree
                with progress.step("agent: tool call on the device"):
                    from importlib import resources

                    from sdk_tools.tinymodels.corpus import SYSTEM_TOOLS

                    tools = Path(str(resources.files("on_device.agent") / "examples" / "toy_tools.json"))
                    tr = AgentLoop(eng, ToolRegistry.load(tools), system=SYSTEM_TOOLS, max_steps=4).run(
                        "What is the weather in Paris?")
                    res.agent = {"status": tr.status, "answer": tr.answer,
                                 "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in tr.tool_calls]}
    finally:
        manager.stop(rec.serial)
    return out
