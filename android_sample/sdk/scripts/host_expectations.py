"""Expected texts for the Kotlin SDK's JUnit tests, from the Python host engine in the same CI run:
the tiny e2b int8 bundle from the test cache, and each demo prompt's greedy answer exactly as
`sdk_tools.demo` computes it (rendered with gemma4_common.gemma4_format, 48 tokens, cut at the first
stop marker). Writes one JSON file: {"bundle", "library", "max_num_tokens", "max_new_tokens",
"cases", "agent"}; the agent part is the Python AgentLoop's run of the weather question with the
toy tools on the same engine.

Usage: .venv/bin/python android_sample/sdk/scripts/host_expectations.py OUT.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

# Same recipe list as tests/conftest.py's e2b_bundles, so this hits the same cache as pytest.
TEST_RECIPES = ["fp32", "dynamic_wi8_afp32", "dynamic_wi4c_afp32"]
MAX_NUM_TOKENS = 1024
MAX_NEW_TOKENS = 48


def main(out: Path) -> None:
    import litert_lm

    from gemma4_common.fsutil import atomic_write_text
    from gemma4_common.gemma4_format import Message, STOP_SEQUENCES, cut_at_stop, render_prompt
    from on_device.engine import HostEngine
    from sdk_tools.demo import DEMO_PROMPTS
    from on_device.agent.host import HostTextEngine
    from on_device.agent.loop import AgentLoop, ToolRegistry
    from sdk_tools.tinymodels.build import build_tiny, cached_bundles
    from sdk_tools.tinymodels.corpus import SYSTEM_TOOLS

    bundle = cached_bundles(build_tiny("e2b-tiny"), TEST_RECIPES)["dynamic_wi8_afp32"]
    library = Path(litert_lm.__file__).parent / "liblitert-lm.so"
    cases = []
    with HostEngine(bundle / "model.litertlm", max_num_tokens=MAX_NUM_TOKENS) as eng:
        for p in DEMO_PROMPTS:
            rendered = render_prompt([Message("user", p)], add_bos=False)
            g = eng.generate(rendered, MAX_NEW_TOKENS, stop=STOP_SEQUENCES)
            # As sdk_tools.demo reports it: cut at the first stop marker, the marker left out.
            response = cut_at_stop(g.text, STOP_SEQUENCES, keep=False)[0]
            cases.append({"prompt": p, "rendered": rendered, "response": response,
                          "tokens": len(eng.tokenize(rendered))})
        # The agent on the same engine with the toy tools (the Kotlin test declares its own copies).
        tools = ROOT / "on_device" / "agent" / "examples" / "toy_tools.py"
        question = "What is the weather in Paris?"
        tr = AgentLoop(HostTextEngine(eng), ToolRegistry.load(tools), system=SYSTEM_TOOLS, max_steps=4,
                       max_new_tokens=64).run(question)
        agent = {"question": question, "system": SYSTEM_TOOLS, "max_new_tokens": 64, "status": tr.status,
                 "answer": tr.answer, "prompts": [s.prompt for s in tr.steps],
                 "calls": [{"name": c.name, "arguments": c.arguments, "response": c.response} for c in tr.tool_calls]}
    atomic_write_text(out, json.dumps({"bundle": str(bundle), "library": str(library),
                                       "max_num_tokens": MAX_NUM_TOKENS, "max_new_tokens": MAX_NEW_TOKENS,
                                       "cases": cases, "agent": agent}, indent=2) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
