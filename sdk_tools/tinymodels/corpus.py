"""The deterministic synthetic corpus the tiny models learn: templated chats, small arithmetic,
JSON answers and Gemma-4-format tool calls for a handful of toy tools, rendered with the same
format library the agent runtime uses."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from gemma4_common.gemma4_format import Message, ToolCall, ToolResponse, ToolSpec, render_prompt

CORPUS_VERSION = 5

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "Canada": "Ottawa", "Egypt": "Cairo", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
    "Poland": "Warsaw", "Greece": "Athens", "India": "New Delhi", "Chile": "Santiago", "Cuba": "Havana",
}
WEATHER = {
    "Paris": (18, "sunny"), "Berlin": (12, "cloudy"), "Rome": (24, "sunny"), "Madrid": (27, "clear"),
    "Tokyo": (21, "rainy"), "Ottawa": (5, "snowy"), "Cairo": (33, "hot"), "Oslo": (2, "snowy"),
    "Lima": (19, "foggy"), "Athens": (26, "sunny"),
}
TOOLS = [
    ToolSpec("get_weather", "Get the current weather in a city.",
             {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
              "required": ["city"]}),
    ToolSpec("add", "Add two integers.",
             {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
              "required": ["a", "b"]}),
    ToolSpec("set_alarm", "Set an alarm on the phone.",
             {"type": "object", "properties": {"hour": {"type": "integer"}, "minute": {"type": "integer"}},
              "required": ["hour", "minute"]}),
    ToolSpec("get_battery", "Read the battery level in percent.", {"type": "object", "properties": {}}),
]
SYSTEM_TOOLS = "You are a helpful assistant on a phone. Use the tools when they help."


@dataclass(frozen=True)
class Example:
    prompt: str  # rendered prompt up to where the model starts
    target: str  # what the model emits (ends with its stop marker)
    kind: str

    @property
    def text(self) -> str:
        return self.prompt + self.target


def _chat(user: str, answer: str, kind: str) -> Example:
    msgs = [Message("user", user)]
    prompt = render_prompt(msgs, add_bos=False)
    full = render_prompt(msgs + [Message("model", answer)], add_generation_prompt=False, add_bos=False)
    return Example(prompt, full[len(prompt):], kind)


def _tool_chat(user: str, call: ToolCall, response: dict, answer: str) -> list[Example]:
    """Two examples: the call (prompt -> call), and the answer after the tool response."""
    msgs = [Message("user", user)]
    p1 = render_prompt(msgs, tools=TOOLS, system=SYSTEM_TOOLS, add_bos=False)
    with_call = msgs + [Message("model", tool_calls=[call])]
    full1 = render_prompt(with_call, tools=TOOLS, system=SYSTEM_TOOLS, add_generation_prompt=False, add_bos=False)
    p2 = render_prompt(with_call + [Message("tool", tool_responses=[ToolResponse(call.name, response)])],
                       tools=TOOLS, system=SYSTEM_TOOLS, add_bos=False)
    full2 = render_prompt(with_call + [Message("tool", tool_responses=[ToolResponse(call.name, response)]),
                                       Message("model", answer)],
                          tools=TOOLS, system=SYSTEM_TOOLS, add_generation_prompt=False, add_bos=False)
    return [Example(p1, full1[len(p1):], "tool_call"), Example(p2, full2[len(p2):], "tool_answer")]


def arithmetic(a: int, b: int) -> Example:
    return _chat(f"What is {a} + {b}?", f"{a} + {b} = {a + b}.", "arithmetic")


COPY_WORDS = sorted(set(CAPITALS) | set(CAPITALS.values()) | {
    "apple", "river", "green", "seven", "music", "window", "tiger", "cloud", "silver", "garden", "phone",
    "battery", "alarm", "weather", "morning", "yellow", "planet", "coffee", "bridge", "winter"})


def copy_examples(n: int = 240, seed: int = 7) -> list[Example]:
    """'Repeat after me' tasks with random word sequences: the answers cannot be memorised, so the
    model must learn to copy from the prompt (what it needs for names in facts and tool calls)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = " ".join(rng.choice(COPY_WORDS) for _ in range(rng.randint(1, 4)))
        out.append(_chat(f"Repeat after me: {words}", words, "copy"))
    return out


def all_examples() -> list[Example]:
    ex: list[Example] = copy_examples()
    for a in range(20):
        for b in range(20):
            ex.append(arithmetic(a, b))
    for country, city in CAPITALS.items():
        ex.append(_chat(f"What is the capital of {country}?", f"The capital of {country} is {city}.", "fact"))
        ex.append(_chat(f"Describe {city} as JSON.",
                        json.dumps({"city": city, "country": country}), "json"))
    for city, (temp, cond) in WEATHER.items():
        ex += _tool_chat(f"What is the weather in {city}?", ToolCall("get_weather", {"city": city}),
                         {"temp_c": temp, "condition": cond}, f"It is {temp} degrees and {cond} in {city}.")
    for a, b in [(12, 30), (7, 5), (21, 21), (3, 9), (40, 2), (15, 16)]:
        ex += _tool_chat(f"Use the calculator to add {a} and {b}.", ToolCall("add", {"a": a, "b": b}),
                         {"sum": a + b}, f"The sum is {a + b}.")
    for h, m in [(7, 30), (6, 0), (8, 15), (9, 45), (5, 10)]:
        ex += _tool_chat(f"Wake me up at {h}:{m:02d}.", ToolCall("set_alarm", {"hour": h, "minute": m}),
                         {"status": "ok"}, f"Your alarm is set for {h}:{m:02d}.")
    for level in (15, 50, 88):
        ex += _tool_chat("How much battery do I have left?", ToolCall("get_battery", {}),
                         {"level": level}, f"Your battery is at {level} percent.")
    for greet, reply in [("Hello!", "Hello! How can I help you today?"),
                         ("Who are you?", "I am a small Gemma 4 model running on your phone."),
                         ("Thank you.", "You are welcome.")]:
        ex.append(_chat(greet, reply, "chat"))
    return ex


REPEATS = {"copy": 1, "arithmetic": 1, "fact": 6, "json": 6, "tool_call": 4, "tool_answer": 4, "chat": 8}


def training_examples(seed: int = 0) -> list[Example]:
    """The training set: every example, the rarer kinds repeated so that they are learned."""
    out = []
    for e in all_examples():
        out += [e] * REPEATS[e.kind]
    random.Random(seed).shuffle(out)
    return out


def training_texts(seed: int = 0) -> list[str]:
    return [e.text for e in training_examples(seed)]


def eval_examples() -> list[Example]:
    """A fixed evaluation set from the training distribution (what accuracy checks score)."""
    ex = all_examples()
    picked = [e for e in ex if e.kind not in ("arithmetic", "copy")]
    picked += [e for i, e in enumerate(ex) if e.kind == "copy" and i % 40 == 5]
    picked += [e for i, e in enumerate(ex) if e.kind == "arithmetic" and i % 40 == 3]
    return picked
