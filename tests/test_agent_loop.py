"""Agent loop control flow with a scripted engine, tool registry loading, argument validation."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from gemma4_common.errors import UserError
from on_device.agent import (
    AgentLoop,
    Message,
    ToolArgumentError,
    ToolCall,
    ToolRegistry,
    ToolSpec,
    render_model_turn,
    render_prompt,
    validate_arguments,
)
from on_device.agent.schema import SchemaDefinitionError, check_schema

WEATHER = ToolSpec("get_weather", "Weather for a city.", {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city"],
    "additionalProperties": False,
})


class ScriptedEngine:
    """Replays canned outputs and records every prompt it was given."""

    def __init__(self, outputs: list[str]) -> None:
        self.outputs = list(outputs)
        self.prompts: list[str] = []
        self.stops: list[list[str]] = []

    def generate(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        self.prompts.append(prompt)
        self.stops.append(stop)
        return self.outputs.pop(0)


def call_text(name: str, **args) -> str:
    return render_model_turn(Message("model", tool_calls=[ToolCall(name, args)]), with_terminator=True)


def make_registry(fn=None) -> ToolRegistry:
    reg = ToolRegistry()
    reg.register(WEATHER, fn or (lambda city, unit="celsius", days=1: {"city": city, "temp": 15, "unit": unit}))
    return reg


# --------------------------------------------------------------------------- schema


def test_validate_arguments_lists_every_bad_field():
    validate_arguments(WEATHER, {"city": "Paris", "days": 3})
    with pytest.raises(ToolArgumentError) as info:
        validate_arguments(WEATHER, {"unit": "kelvin", "days": 9, "extra": 1})
    err = info.value
    assert sorted(err.fields) == ["city", "days", "extra", "unit"]
    assert err.tool == "get_weather"
    assert "city" in str(err) and "required" in str(err)
    assert err.to_dict()["error"] == "invalid arguments"


def test_validate_nested_paths_and_gemini_style_types():
    schema = {"type": "OBJECT", "properties": {
        "opts": {"type": "OBJECT", "properties": {"n": {"type": "INTEGER"}}, "required": ["n"]},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}},
        "label": {"type": "STRING", "nullable": True},
    }}
    validate_arguments(schema, {"opts": {"n": 1}, "tags": ["a"], "label": None})
    with pytest.raises(ToolArgumentError) as info:
        validate_arguments(schema, {"opts": {}, "tags": ["a", 2]}, tool="t")
    assert sorted(info.value.fields) == ["opts.n", "tags[1]"]


def test_booleans_are_not_integers():
    with pytest.raises(ToolArgumentError):
        validate_arguments(WEATHER, {"city": "x", "days": True})


def test_invalid_schema_is_reported():
    with pytest.raises(SchemaDefinitionError):
        check_schema({"type": "object", "properties": {"a": {"type": 5}}}, "bad")
    with pytest.raises(UserError):
        ToolRegistry().register(ToolSpec("bad", "", {"type": "object", "required": "a"}))


# --------------------------------------------------------------------------- loop


def test_loop_calls_tool_and_uses_result():
    engine = ScriptedEngine([call_text("get_weather", city="Paris"), "It is 15 C in Paris.<turn|>"])
    tr = AgentLoop(engine, make_registry(), system="You are a phone agent.").run("Weather in Paris?")
    assert tr.status == "answered"
    assert tr.answer == "It is 15 C in Paris."
    assert [c.name for c in tr.tool_calls] == ["get_weather"]
    assert tr.tool_calls[0].response == {"city": "Paris", "temp": 15, "unit": "celsius"}
    # second prompt continues the model turn right after the tool response
    assert engine.prompts[1].endswith(
        '<|turn>model\n<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>'
        '<|tool_response>response:get_weather{city:<|"|>Paris<|"|>,temp:15,unit:<|"|>celsius<|"|>}'
        "<tool_response|>")
    assert engine.prompts[0].startswith("<bos><|turn>system\nYou are a phone agent.<|tool>declaration:get_weather")
    assert "<turn|>" in engine.stops[0] and "<|tool_response>" in engine.stops[0]
    # the final message list renders as a complete conversation
    rendered = render_prompt(tr.messages, [WEATHER], tr.system, add_generation_prompt=False)
    assert rendered.endswith("<tool_response|>It is 15 C in Paris.<turn|>\n")
    json.loads(tr.to_json())


def test_loop_feeds_validation_errors_back():
    engine = ScriptedEngine([call_text("get_weather", town="Paris"), call_text("get_weather", city="Paris"), "ok"])
    tr = AgentLoop(engine, make_registry()).run("weather")
    assert tr.status == "answered"
    first = tr.steps[0].calls[0]
    assert first.error == "invalid_arguments"
    assert set(first.response["fields"]) == {"city", "town"}
    assert "response:get_weather{error:" in engine.prompts[1]
    assert tr.steps[1].calls[0].error is None


def test_loop_unknown_tool_and_tool_exception():
    def boom(city, unit="celsius", days=1):
        raise RuntimeError("sensor offline")

    engine = ScriptedEngine([call_text("no_such_tool"), call_text("get_weather", city="X"), "sorry"])
    tr = AgentLoop(engine, make_registry(boom)).run("hi")
    assert [c.error for c in tr.tool_calls] == ["unknown_tool", "exception"]
    assert tr.tool_calls[1].response == {"error": "RuntimeError: sensor offline"}
    assert tr.answer == "sorry"


def test_loop_tool_timeout():
    def slow(city, unit="celsius", days=1):
        time.sleep(5)

    engine = ScriptedEngine([call_text("get_weather", city="X"), "gave up"])
    t0 = time.monotonic()
    tr = AgentLoop(engine, make_registry(slow), step_timeout_s=0.2).run("hi")
    assert time.monotonic() - t0 < 3
    assert tr.tool_calls[0].error == "timeout"
    assert tr.status == "answered"


def test_loop_step_limit():
    engine = ScriptedEngine([call_text("get_weather", city="X")] * 3)
    tr = AgentLoop(engine, make_registry(), max_steps=3).run("loop forever")
    assert tr.status == "max_steps" and tr.answer is None
    assert len(tr.steps) == 3 and len(engine.prompts) == 3


def test_loop_parse_error_ends_run():
    engine = ScriptedEngine(['<|tool_call>call:get_weather{city:Paris}<tool_call|>'])
    tr = AgentLoop(engine, make_registry()).run("hi")
    assert tr.status == "parse_error"
    assert tr.steps[0].parse_error["position"] == 34
    json.loads(tr.to_json())


def test_loop_multiple_calls_and_thinking():
    out = render_model_turn(Message("model", thinking="two cities", tool_calls=[
        ToolCall("get_weather", {"city": "A"}), ToolCall("get_weather", {"city": "B"})]), with_terminator=True)
    engine = ScriptedEngine([out, "A and B are mild."])
    tr = AgentLoop(engine, make_registry(), enable_thinking=True).run("A and B?")
    assert [c.arguments["city"] for c in tr.tool_calls] == ["A", "B"]
    assert tr.steps[0].thinking == "two cities"
    assert engine.prompts[1].count("<|tool_response>response:get_weather") == 2
    assert "<|channel>thought\ntwo cities\n<channel|>" in engine.prompts[1]
    assert engine.prompts[0].startswith("<bos><|turn>system\n<|think|>\n")


def test_loop_result_sanitised_for_rendering():
    reg = ToolRegistry()
    reg.register(ToolSpec("odd", "", {"type": "object", "properties": {}}),
                 lambda: {"t": (1, 2), "nan": float("nan"), "q": 'a<|"|>b', 3: object})
    engine = ScriptedEngine([call_text("odd"), "done"])
    tr = AgentLoop(engine, reg).run("go")
    resp = tr.tool_calls[0].response
    assert resp["t"] == [1, 2] and resp["nan"] == "nan" and resp["q"] == 'a"b' and "3" in resp
    json.loads(tr.to_json())


# --------------------------------------------------------------------------- registry loading


def test_registry_from_module_with_decorator(tmp_path):
    mod = tmp_path / "tools.py"
    mod.write_text(textwrap.dedent('''
        from on_device.agent import tool

        @tool
        def add(a: int, b: int = 0) -> int:
            """Add two numbers."""
            return a + b

        @tool("shout", description="Upper-case text.", parameters={
            "type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
        def _shout(text):
            return text.upper()

        def helper():
            return 1
    '''))
    reg = ToolRegistry.load(mod)
    assert sorted(reg.names) == ["add", "shout"]
    add = reg.spec("add")
    assert add.description == "Add two numbers."
    assert add.parameters == {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                              "required": ["a"]}
    assert reg.execute(ToolCall("add", {"a": 2, "b": 3}), 5) == 5
    assert reg.execute(ToolCall("shout", {"text": "hi"}), 5) == "HI"
    with pytest.raises(ToolArgumentError):
        reg.execute(ToolCall("add", {"a": "2"}), 5)


def test_registry_from_json_binds_sibling_module(tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER.to_dict(),
                                                     {"type": "function", "function": {
                                                         "name": "battery", "description": "",
                                                         "parameters": {"type": "object", "properties": {}}}}]))
    (tmp_path / "tools.py").write_text("def get_weather(city, unit='celsius', days=1):\n    return city\n"
                                      "TOOLS = {'battery': lambda: 80}\n")
    for path in (tmp_path / "tools.json", tmp_path / "tools.py"):
        reg = ToolRegistry.load(path)
        assert reg.names == ["get_weather", "battery"]
        assert reg.execute(ToolCall("get_weather", {"city": "Rome"}), 5) == "Rome"
        assert reg.execute(ToolCall("battery", {}), 5) == 80


def test_registry_json_without_module_has_no_implementation(tmp_path):
    (tmp_path / "only.json").write_text(json.dumps([WEATHER.to_dict()]))
    reg = ToolRegistry.load(tmp_path / "only.json")
    engine = ScriptedEngine([call_text("get_weather", city="X"), "no tool"])
    tr = AgentLoop(engine, reg).run("hi")
    assert tr.tool_calls[0].error == "no_implementation"


@pytest.mark.parametrize("content", ["{not json", '{"tools": 3}', '[{"description": "no name"}]'])
def test_registry_bad_files_are_user_errors(tmp_path, content):
    p = tmp_path / "t.json"
    p.write_text(content)
    with pytest.raises(UserError):
        ToolRegistry.load(p)
    with pytest.raises(UserError):
        ToolRegistry.load(tmp_path / "missing.json")


def test_registry_module_import_failure_is_user_error(tmp_path):
    p = tmp_path / "broken.py"
    p.write_text("raise ImportError('nope')\n")
    with pytest.raises(UserError):
        ToolRegistry.load(p)
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(UserError):
        ToolRegistry.load(tmp_path / "empty.py")
