"""End to end agent workflows: JSON-schema-constrained generation (a weak fake model, the trained
tiny model on the host), the agent loop with the trained tiny bundle on the host and on the
reference emulator through ADB and the runner contract, and the `agent` CLI."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest

from on_device.agent import AgentLoop, Message, ToolRegistry, render_prompt
from on_device.agent.constrained import generate_json
from gemma4_common.gemma4_format import cut_at_stop
from on_device.agent.host import HostTextEngine, RunnerTextEngine
from on_device.runner_contract import RunnerResult
from sdk_tools.tinymodels import corpus

from support import REPO
from support.cli import assert_one_line_error, cli

EXAMPLES = REPO / "on_device" / "agent" / "examples"
TOY_PY = EXAMPLES / "toy_tools.py"
TOY_JSON = EXAMPLES / "toy_tools.json"

CITY = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"], "additionalProperties": False}
RICH = {
    "type": "object",
    "properties": {
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
        "score": {"type": ["number", "null"]},
        "where": {"$ref": "#/$defs/place"},
    },
    "required": ["unit", "days", "where"],
    "additionalProperties": False,
    "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string", "minLength": 1}},
                        "required": ["city"]}},
}
SCHEMAS = [
    CITY, RICH,
    {"type": "array", "items": {"anyOf": [{"type": "integer"}, {"type": "string"}]}, "minItems": 2, "maxItems": 4},
    {},  # any JSON value
    {"type": "object", "additionalProperties": {"type": "integer"}, "maxProperties": 3},
    {"type": "string", "maxLength": 20},
    {"const": {"a": [1, 2]}},
]
TRAINED_PROMPTS = [f"Describe {city} as JSON." for city in corpus.CAPITALS.values()]
ODD_PROMPTS = ["What is 2 + 2?", "Hello!", "Describe London as JSON.", "Wake me up at 7:30.",
               "Give me JSON about Oslo."]


def valid(value, schema) -> bool:
    return not list(jsonschema.Draft202012Validator(schema).iter_errors(value))


class WeakModel:
    """A model that writes random junk (and, if it can score, picks options at random)."""

    def __init__(self, seed: int, can_score: bool) -> None:
        self.rnd = random.Random(seed)
        self.can_score = can_score

    def continue_text(self, text: str, max_new_tokens: int, stop: list[str]) -> str:
        alphabet = 'ab"{}[],: 0123456789\\\n-.etruflsn<>'
        return "".join(self.rnd.choice(alphabet) for _ in range(self.rnd.randint(0, 30)))

    def choose(self, text: str, options: list[str]) -> int | None:
        return self.rnd.randrange(len(options)) if self.can_score else None


@pytest.fixture(scope="module")
def host_engine(e2b_int8_bundle):
    manifest = json.loads((e2b_int8_bundle / "manifest.json").read_text())
    with HostTextEngine.open(e2b_int8_bundle / manifest["main_model"],
                             max_num_tokens=manifest["export"]["cache_length"]) as eng:
        yield eng


# ---- constrained decoding without a model --------------------------------------------------------

@pytest.mark.parametrize("can_score", [True, False])
def test_constrained_json_from_a_junk_model_is_always_valid(can_score):
    for si, schema in enumerate(SCHEMAS):
        for seed in range(40):
            value, text = generate_json(WeakModel(seed * 31 + si, can_score), "P:", schema, 16)
            assert json.loads(text) == value
            assert valid(value, schema), (schema, text)


def test_constrained_json_keeps_a_model_that_already_complies():
    answer = '{"city":"Paris","country":"France"}<turn|>'

    class Good:
        calls = 0

        def continue_text(self, text, n, stop):
            self.calls += 1
            return cut_at_stop(answer, stop, keep=False)[0]

        def choose(self, text, options):  # never needed: the draft names every choice
            raise AssertionError("scored although the draft complied")

    g = Good()
    res = generate_json(g, "P:", CITY, 64, details=True)
    assert res.value == {"city": "Paris", "country": "France"}
    assert res.text == '{"city": "Paris", "country": "France"}'
    assert g.calls == 1 and res.scored == 0 and res.forced == 0


def test_constrained_json_bad_schema_is_a_user_error():
    from gemma4_common.errors import UserError

    with pytest.raises(UserError):
        generate_json(WeakModel(0, True), "P:", {"type": "nope"}, 8)
    with pytest.raises(UserError):
        generate_json(WeakModel(0, True), "P:", [1, 2], 8)


# ---- constrained decoding with the trained tiny model (host) -------------------------------------

def test_constrained_json_tiny_model_host(host_engine):
    """Every prompt gives schema-valid JSON; where the model's own output was already right (up
    to the closing brace, which the engine's stop handling may eat), it is kept as is."""
    kept = 0
    for q in TRAINED_PROMPTS + ODD_PROMPTS:
        prompt = render_prompt([Message("user", q)], add_bos=False)
        res = generate_json(host_engine, prompt, CITY, 64, details=True)
        assert valid(res.value, CITY), (q, res.text)
        free = host_engine.continue_text(prompt, 64, ["<turn|>", "<eos>"]).strip()
        for candidate in (free, free + "}"):
            try:
                own = json.loads(candidate)
            except json.JSONDecodeError:
                continue
            if valid(own, CITY):
                assert res.value == own, (q, free, res.text)
                kept += 1
    assert kept >= len(TRAINED_PROMPTS) // 2  # the tiny model learned the format for most of them


@pytest.mark.slow
def test_constrained_json_tiny_model_rich_schema(host_engine):
    for q in ["Describe Paris as JSON.", "What is the weather in Rome?", "Hello!"]:
        prompt = render_prompt([Message("user", q)], add_bos=False)
        res = generate_json(host_engine, prompt, RICH, 48, details=True)
        assert valid(res.value, RICH), (q, res.text)
        assert res.scored > 0  # the model never saw this schema: the engine had to score options


# ---- the agent loop with the trained tiny bundle -------------------------------------------------

def _check_weather_run(tr, engine_prompts: list[str] | None = None) -> None:
    assert tr.status == "answered", tr.to_json()
    calls = tr.tool_calls
    assert [c.name for c in calls] == ["get_weather"], tr.to_json()
    assert calls[0].arguments == {"city": "Paris"} and calls[0].error is None
    assert calls[0].response == {"temp_c": 18, "condition": "sunny"}
    # the result went back to the model, which used it in its answer
    assert "<|tool_response>response:get_weather{condition:<|\"|>sunny<|\"|>,temp_c:18}<tool_response|>" \
        in tr.steps[1].prompt
    assert "18" in tr.answer and "sunny" in tr.answer, tr.answer


def test_agent_loop_host_calls_the_right_tool(host_engine):
    reg = ToolRegistry.load(TOY_PY)
    tr = AgentLoop(host_engine, reg, system=corpus.SYSTEM_TOOLS, max_steps=4, max_new_tokens=64).run(
        "What is the weather in Paris?")
    _check_weather_run(tr)
    tr = AgentLoop(host_engine, reg, system=corpus.SYSTEM_TOOLS, max_steps=4, max_new_tokens=64).run(
        "How much battery do I have left?")
    assert [(c.name, c.arguments) for c in tr.tool_calls] == [("get_battery", {})]


def test_agent_loop_on_emulator_through_adb(emulator, e2b_int8_bundle, runner_file):
    from sdk_tools.devices.discovery import open_device
    from sdk_tools.engines import open_text_engine

    with open_device(emulator.serial) as dev, \
            open_text_engine(e2b_int8_bundle, dev, runner=runner_file, timeout_s=300) as eng:
        assert isinstance(eng, RunnerTextEngine) and eng.deployment.has_runner
        reg = ToolRegistry.load(TOY_JSON)
        tr = AgentLoop(eng, reg, system=corpus.SYSTEM_TOOLS, max_steps=4, max_new_tokens=64).run(
            "What is the weather in Paris?")
        _check_weather_run(tr)
        assert eng.generations == 2
        # the runner was sent the rendered prompt, not the chat-templated user text
        inv = eng.invocation(tr.steps[0].prompt, 64)
        assert not inv.apply_prompt_template and inv.input_prompt.startswith("<|turn>system\n")
        # structured output on the device: no scoring there, the draft and the schema decide
        res = generate_json(eng, render_prompt([Message("user", "Describe Oslo as JSON.")], add_bos=False),
                            CITY, 64, details=True)
        assert valid(res.value, CITY) and res.scored == 0


def test_runner_engine_cuts_at_stop_sequences():
    seen = []

    def run(inv):
        seen.append(inv)
        return RunnerResult(response='<|tool_call>call:add{a:1,b:2}<tool_call|><|tool_response>junk')

    eng = RunnerTextEngine(run, "/data/local/tmp/m.litertlm")
    out = eng.generate("<bos>hi", 10, ["<|tool_response>"])
    assert out == "<|tool_call>call:add{a:1,b:2}<tool_call|><|tool_response>"
    assert seen[0].input_prompt == "hi" and seen[0].max_output_tokens == 10
    assert "--apply_prompt_template=false" in seen[0].flags()
    assert eng.choose("x", ["a", "b"]) is None


# ---- the CLI -------------------------------------------------------------------------------------

def test_cli_agent_host_json_and_transcript(e2b_int8_bundle, tmp_path):
    out = tmp_path / "t.json"
    res = cli("agent", e2b_int8_bundle, "--tools", TOY_PY, "--prompt", "What is the weather in Paris?",
              "--system", corpus.SYSTEM_TOOLS, "--max-steps", "4", "--max-tokens", "64", "--json",
              "--transcript", out)
    assert res.code == 0, res.err
    data = res.json()
    assert data["status"] == "answered" and data["tools"] == ["get_weather", "add", "set_alarm", "get_battery"]
    call = data["steps"][0]["calls"][0]
    assert call["name"] == "get_weather" and call["arguments"] == {"city": "Paris"}
    assert json.loads(out.read_text()) == data


def test_cli_agent_json_schema_mode(e2b_int8_bundle, tmp_path):
    schema = tmp_path / "city.json"
    schema.write_text(json.dumps(CITY))
    res = cli("agent", e2b_int8_bundle, "--json-schema", schema, "--prompt", "Describe Oslo as JSON.")
    assert res.code == 0, res.err
    assert valid(json.loads(res.out), CITY)


def test_cli_agent_on_emulator(emulator, e2b_int8_bundle, runner_file):
    res = cli("agent", e2b_int8_bundle, "--device", emulator.serial, "--runner", runner_file, "--tools", TOY_JSON,
              "--prompt", "What is the weather in Paris?", "--system", corpus.SYSTEM_TOOLS, "--max-tokens", "64",
              "--json")
    assert res.code == 0, res.err
    data = res.json()
    assert data["device"] == emulator.serial
    calls = [(c["name"], c["arguments"]) for s in data["steps"] for c in s["calls"]]
    assert calls == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize("setup,args,needles", [
    ("none", ["--tools", "{tmp}/missing.json"], ["tools file", "does not exist"]),
    ("none", ["--tools", "{tmp}/missing.py"], ["not found"]),
    ("malformed", ["--tools", "{tmp}/tools.json"], ["not valid JSON"]),
    ("wrong_shape", ["--tools", "{tmp}/tools.json"], ["expected a list"]),
    ("bad_schema", ["--tools", "{tmp}/tools.json"], ["parameters schema"]),
    ("broken_py", ["--tools", "{tmp}/tools.py"], ["importing"]),
    ("none", [], ["no tools given"]),
    ("malformed", ["--json-schema", "{tmp}/tools.json"], ["not valid JSON"]),
    ("none", ["--json-schema", "{tmp}/nope.json"], ["schema file", "does not exist"]),
    ("none", ["--tools", str(TOY_JSON), "--json-schema", str(TOY_JSON)], ["cannot be combined"]),
    ("none", ["--tools", str(TOY_JSON), "--max-steps", "0"], ["--max-steps"]),
    ("none", ["--tools", str(TOY_JSON)], ["not a bundle directory"]),
])
def test_cli_agent_bad_input_is_one_line_exit_2(tmp_path, setup, args, needles):
    files = {"malformed": ("tools.json", '[{"name": "x",'),
             "wrong_shape": ("tools.json", '{"name": "x"}'),
             "bad_schema": ("tools.json", '[{"name": "x", "parameters": {"type": "objekt"}}]'),
             "broken_py": ("tools.py", "import no_such_module_here\n")}
    if setup in files:
        name, text = files[setup]
        (tmp_path / name).write_text(text)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    res = cli("agent", bundle, *[a.format(tmp=tmp_path) for a in args], "--prompt", "hi")
    assert_one_line_error(res, *needles)
