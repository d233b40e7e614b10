"""Gemma 4 format library: shared vectors (also read by the Kotlin agent-core tests) and fuzzing."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from gemma4_common.gemma4_format import (
    QUOTE,
    SPECIAL_TOKENS,
    STOP_SEQUENCES,
    Message,
    ToolCall,
    ToolCallEncodeError,
    ToolCallParseError,
    ToolResponse,
    ToolSpec,
    decode_value,
    encode_value,
    parse_model_output,
    parse_tool_call,
    render_model_turn,
    render_prompt,
    render_tool_call,
)

VECTORS = json.loads((Path(__file__).parent / "data" / "gemma4_format_vectors.json").read_text("utf-8"))


def strict_equal(a, b) -> bool:
    """Equality that tells 1, 1.0 and True apart (plain == does not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def ids(cases):
    return [c["name"] for c in cases]


@pytest.mark.parametrize("case", VECTORS["render"], ids=ids(VECTORS["render"]))
def test_render_prompt_vectors(case):
    got = render_prompt(
        [Message.from_dict(m) for m in case["messages"]],
        [ToolSpec.from_dict(t) for t in case["tools"]],
        case["system"],
        case["add_generation_prompt"],
        enable_thinking=case["enable_thinking"],
    )
    assert got == case["expected"]


@pytest.mark.parametrize("case", VECTORS["model_turn"], ids=ids(VECTORS["model_turn"]))
def test_model_turn_vectors(case):
    msg = Message.from_dict(case["message"])
    assert render_model_turn(msg) == case["expected"]
    assert render_model_turn(msg, with_terminator=True) == case["expected_with_terminator"]
    parsed = parse_model_output(case["expected"])
    assert parsed.text == msg.content
    assert parsed.thinking == msg.thinking
    assert [c.to_dict() for c in parsed.tool_calls] == [c.to_dict() for c in msg.tool_calls]
    # the terminator is a stop sequence: parsing ignores it
    assert parse_model_output(case["expected_with_terminator"]) == parsed


@pytest.mark.parametrize("case", VECTORS["values"], ids=ids(VECTORS["values"]))
def test_value_vectors(case):
    decoded = decode_value(case["encoded"])
    assert strict_equal(decoded, case["value"])
    canonical = case.get("canonical", case["encoded"])
    assert encode_value(decoded) == canonical
    if not case.get("decode_only"):
        assert encode_value(case["value"]) == case["encoded"]


@pytest.mark.parametrize("case", VECTORS["parse"], ids=ids(VECTORS["parse"]))
def test_parse_vectors(case):
    parsed = parse_model_output(case["text"])
    exp = case["expected"]
    assert parsed.text == exp["text"]
    assert parsed.thinking == exp["thinking"]
    assert len(parsed.tool_calls) == len(exp["tool_calls"])
    for got, want in zip(parsed.tool_calls, exp["tool_calls"]):
        assert got.name == want["name"]
        assert strict_equal(got.arguments, want["arguments"])
    if case["canonical"]:
        msg = Message("model", parsed.text, parsed.tool_calls, thinking=parsed.thinking)
        assert render_model_turn(msg) == case["text"]


@pytest.mark.parametrize("case", VECTORS["malformed"], ids=ids(VECTORS["malformed"]))
def test_malformed_vectors(case):
    fn = parse_model_output if case["kind"] == "output" else decode_value
    with pytest.raises(ToolCallParseError) as info:
        fn(case["text"])
    assert info.value.position == case["position"]
    assert info.value.message == case["message"]
    assert str(case["position"]) in str(info.value)


@pytest.mark.parametrize("case", VECTORS["encode_errors"], ids=ids(VECTORS["encode_errors"]))
def test_encode_error_vectors(case):
    with pytest.raises(ToolCallEncodeError):
        encode_value(case["value"])


def test_encode_rejects_non_finite_and_unknown_types():
    for bad in (float("nan"), float("inf"), {"a": float("-inf")}, object(), {1: "x"}):
        with pytest.raises(ToolCallEncodeError):
            encode_value(bad)
    with pytest.raises(ToolCallEncodeError):
        render_tool_call(ToolCall("bad name", {}))


def test_special_tokens_cover_every_marker():
    for tok in ("<bos>", "<eos>", "<pad>", "<|turn>", "<turn|>", "<|tool>", "<tool|>", "<|tool_call>",
                "<tool_call|>", "<|tool_response>", "<tool_response|>", "<|channel>", "<channel|>", QUOTE):
        assert tok in SPECIAL_TOKENS
    assert len(set(SPECIAL_TOKENS)) == len(SPECIAL_TOKENS)
    assert "<turn|>" in STOP_SEQUENCES and "<|tool_response>" in STOP_SEQUENCES
    # every marker in every rendered vector is a known special token
    import re

    for case in VECTORS["render"]:
        for marker in re.findall(r"<\|?[a-z_\"]+\|?>", case["expected"]):
            assert marker in SPECIAL_TOKENS, marker


def test_render_rejects_orphan_tool_message_and_bad_role():
    with pytest.raises(ValueError):
        render_prompt([Message("user", "hi"), Message("tool", tool_responses=[ToolResponse("f", "x")])])
    with pytest.raises(ValueError):
        render_prompt([Message("assistant", "hi")])
    with pytest.raises(ValueError):
        render_prompt([Message("system", "a"), Message("user", "b")], system="c")


def test_parse_tool_call_single():
    call = ToolCall("get_weather", {"city": "Paris", "n": 3, "flag": True, "obj": {"a": "x"}, "arr": [1, "s"]})
    text = render_tool_call(call)
    assert text == (
        '<|tool_call>call:get_weather{arr:[1,<|"|>s<|"|>],city:<|"|>Paris<|"|>,flag:true,n:3,'
        'obj:{a:<|"|>x<|"|>}}<tool_call|>'
    )
    assert parse_tool_call(text) == call
    with pytest.raises(ToolCallParseError):
        parse_tool_call(text + "x")


# --------------------------------------------------------------------------- property/fuzz tests

_ALPHABET = [
    "<|tool_call>", "<tool_call|>", "call:", "f", "{", "}", "[", "]", ":", ",", QUOTE, "a", "1", "-",
    ".", "e", "true", "null", " ", "\n", "<|channel>", "thought", "<channel|>", "<turn|>", "<", "|",
    ">", '"', "x", "é", "\U0001F600", "<|tool_response>", "None", "9" * 400,
]


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["str", "int", "float", "bool", "null"] + (["list", "dict"] if depth < 4 else [])
    kind = rng.choice(kinds)
    if kind == "str":
        return "".join(rng.choice(['a', ' ', '"', '{', '}', ',', ':', '\n', '[', 'é', '<', '|', '>', "\U0001F600"])
                       for _ in range(rng.randint(0, 8)))
    if kind == "int":
        return rng.randint(-10**12, 10**12)
    if kind == "float":
        return rng.choice([rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30), 0.5, -0.0])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["a", "B", "c_d", "x y", "k:1", "Ünï", "n-1", "$v"]
    return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_random_values_round_trip():
    rng = random.Random(1234)
    for _ in range(2000):
        v = _random_value(rng)
        enc = encode_value(v)
        back = decode_value(enc)
        assert strict_equal(back, v) or (isinstance(v, dict) and strict_equal(dict(sorted(back.items())),
                                                                             dict(sorted(v.items()))))
        assert encode_value(back) == enc


def test_random_calls_round_trip():
    rng = random.Random(99)
    for _ in range(500):
        calls = [ToolCall(rng.choice(["f", "get_weather", "a.b-c"]), {k: _random_value(rng) for k in
                 rng.sample(["city", "n", "Flag", "obj", "arr"], rng.randint(0, 5))}) for _ in range(rng.randint(0, 3))]
        msg = Message("model", rng.choice(["", "Done.", "a <b> c"]), calls,
                      thinking=rng.choice([None, "think\nhard", ""]) or None)
        text = render_model_turn(msg)
        parsed = parse_model_output(text)
        assert parsed.tool_calls == calls and parsed.text == msg.content and parsed.thinking == msg.thinking
        assert render_model_turn(Message("model", parsed.text, parsed.tool_calls, thinking=parsed.thinking)) == text


def _mutate(rng: random.Random, s: str) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        i = rng.randint(0, len(s))
        if op == 0 and s:
            j = min(len(s), i + rng.randint(1, 6))
            s = s[:i] + s[j:]
        elif op == 1:
            s = s[:i] + rng.choice(_ALPHABET) + s[i:]
        elif op == 2:
            s = s[:i]
        else:
            j = rng.randint(0, len(s))
            s = s[:i] + s[j:j + 10] + s[i:]
    return s


def _never_raises_other(fn, s):
    try:
        fn(s)
    except ToolCallParseError as e:
        assert 0 <= e.position <= len(s), (s, e.position)
    # any other exception type fails the test


def test_fuzz_random_strings_only_raise_parse_error():
    rng = random.Random(7)
    for _ in range(5000):
        s = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 30)))
        _never_raises_other(parse_model_output, s)
        _never_raises_other(decode_value, s)
        _never_raises_other(parse_model_output, "<|tool_call>call:f" + s)


def test_fuzz_mutated_canonical_outputs_only_raise_parse_error():
    rng = random.Random(11)
    seeds = [c["text"] for c in VECTORS["parse"]] + [c["expected"] for c in VECTORS["model_turn"]]
    seeds += [c["encoded"] for c in VECTORS["values"]]
    for _ in range(5000):
        s = _mutate(rng, rng.choice(seeds))
        _never_raises_other(parse_model_output, s)
        _never_raises_other(decode_value, s)


def test_deep_nesting_is_a_parse_error_not_recursion_error():
    for s in ("[" * 5000, "{a:" * 5000, "[" * 100 + "]" * 100):
        with pytest.raises(ToolCallParseError):
            decode_value(s)
        with pytest.raises(ToolCallParseError):
            parse_model_output("<|tool_call>call:f{a:" + s + "}<tool_call|>")
