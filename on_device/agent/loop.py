"""The agent loop: render -> generate -> parse -> validate -> execute -> respond, with a transcript.

Model-agnostic: anything with ``generate(prompt, max_new_tokens, stop) -> str`` drives it (the host
LiteRT-LM engine, the device runner, a scripted fake in tests).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import sys
import threading
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from gemma4_common.errors import UserError
from gemma4_common.fsutil import read_json

from gemma4_common.gemma4_format import (
    QUOTE,
    STOP_SEQUENCES,
    Message,
    ToolCall,
    ToolCallParseError,
    ToolResponse,
    ToolSpec,
    is_valid_tool_name,
    parse_model_output,
    render_prompt,
)
from .schema import SchemaDefinitionError, ToolArgumentError, check_schema, validate_arguments

__all__ = ["TextEngine", "tool", "ToolRegistry", "ToolTimeoutError", "CallRecord", "Step",
           "Transcript", "AgentLoop"]


class TextEngine(Protocol):
    def generate(self, prompt: str, max_new_tokens: int, stop: list[str]) -> str:
        """Continue ``prompt``; stop before (or right after) any string in ``stop``."""
        ...


class ToolTimeoutError(TimeoutError):
    """A tool did not return within the step timeout."""


# --------------------------------------------------------------------------- tools

_PY_TO_JSON = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array", dict: "object"}
_TOOL_ATTR = "__gemma_tool__"


def _schema_from_signature(fn: Callable) -> dict:
    """A parameters schema from type hints: str/int/float/bool/list/dict; no default = required."""
    hints = typing.get_type_hints(fn)
    props: dict[str, dict] = {}
    required: list[str] = []
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        hint = hints.get(name)
        origin = typing.get_origin(hint) or hint
        prop: dict[str, Any] = {}
        if origin in _PY_TO_JSON:
            prop["type"] = _PY_TO_JSON[origin]
        props[name] = prop
        if p.default is p.empty:
            required.append(name)
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return schema


def tool(name: str | Callable | None = None, *, description: str | None = None,
         parameters: dict | None = None):
    """Mark a function in a ``tools.py`` as a tool: ``@tool`` or ``@tool("name", description=...)``.

    Without ``parameters`` the schema comes from the type hints; without ``description``, from the
    docstring's first line.
    """

    def wrap(fn: Callable) -> Callable:
        doc = (inspect.getdoc(fn) or "").strip().splitlines()
        spec = ToolSpec(
            name=tool_name or fn.__name__,
            description=description if description is not None else (doc[0] if doc else ""),
            parameters=parameters if parameters is not None else _schema_from_signature(fn),
        )
        setattr(fn, _TOOL_ATTR, spec)
        return fn

    if callable(name):  # bare @tool
        tool_name = None
        return wrap(name)
    tool_name = name
    return wrap


@dataclass
class _Entry:
    spec: ToolSpec
    fn: Callable[..., Any] | None


class ToolExit(Exception):
    """A tool raised SystemExit (sys.exit) or another BaseException: reported as that tool's error."""


def _describe(e: BaseException) -> str:
    """`SystemExit(7)` as the user would read it: 'sys.exit(7) (SystemExit)'; others as `Type: message`."""
    if isinstance(e, SystemExit):
        return f"sys.exit({e.code!r}) (SystemExit)"
    return f"{type(e).__name__}: {e}"


class ToolRegistry:
    """Tools by name: their specs (for the prompt and validation) and, when bound, their functions."""

    def __init__(self) -> None:
        self._tools: dict[str, _Entry] = {}

    def register(self, spec: ToolSpec, fn: Callable[..., Any] | None = None) -> None:
        if not is_valid_tool_name(spec.name):
            raise UserError(f"invalid tool name {spec.name!r}", "use letters, digits, '_', '.', '-'")
        try:
            check_schema(spec.parameters, spec.name)
        except SchemaDefinitionError as e:
            raise UserError(str(e), "fix the tool's parameters schema") from None
        self._tools[spec.name] = _Entry(spec, fn)

    def bind(self, name: str, fn: Callable[..., Any]) -> None:
        if name not in self._tools:
            raise UserError(f"cannot bind function to unknown tool {name!r}", "declare it in tools.json")
        self._tools[name].fn = fn

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [e.spec for e in self._tools.values()]

    def spec(self, name: str) -> ToolSpec:
        return self._tools[name].spec

    # ---- loading

    @classmethod
    def from_specs(cls, specs: list[ToolSpec | dict]) -> "ToolRegistry":
        reg = cls()
        for s in specs:
            reg.register(s if isinstance(s, ToolSpec) else ToolSpec.from_dict(s))
        return reg

    @classmethod
    def from_json(cls, path: str | Path, module: str | Path | None = None) -> "ToolRegistry":
        """Specs from a tools.json (a list of {name, description, parameters}, or {"tools": [...]});
        functions from ``module`` or, if present, the ``.py`` file of the same stem next to it."""
        path = Path(path)
        data = read_json(path, "fix the tools file", what="tools file",
                         missing_fix="pass an existing tools.json or tools.py")
        if isinstance(data, dict):
            data = data.get("tools")
        if isinstance(data, list):
            # accept OpenAI-style {"type": "function", "function": {...}} entries too
            data = [d["function"] if isinstance(d, dict) and d.get("type") == "function"
                    and isinstance(d.get("function"), dict) else d for d in data]
        if not isinstance(data, list) or not all(isinstance(d, dict) and "name" in d for d in data):
            raise UserError(f"{path}: expected a list of {{name, description, parameters}} objects",
                            "fix the tools file")
        reg = cls.from_specs(data)
        module = Path(module) if module else path.with_suffix(".py")
        if module.exists():
            reg._bind_module(module, declare=False)
        return reg

    @classmethod
    def from_module(cls, path: str | Path) -> "ToolRegistry":
        """Tools from a tools.py: functions marked with ``@tool``, or listed in a ``TOOLS`` dict
        (name -> function) whose specs come from a tools.json of the same stem."""
        path = Path(path)
        sibling = path.with_suffix(".json")
        if sibling.exists():
            return cls.from_json(sibling, module=path)
        reg = cls()
        reg._bind_module(path, declare=True)
        if not len(reg):
            raise UserError(f"{path}: no tools found", "mark functions with @tool (on_device.agent.loop.tool)")
        return reg

    @classmethod
    def load(cls, path: str | Path) -> "ToolRegistry":
        path = Path(path)
        if path.suffix == ".py":
            return cls.from_module(path)
        return cls.from_json(path)

    def _bind_module(self, path: Path, declare: bool) -> None:
        if not path.exists():
            raise UserError(f"tools module not found: {path}", "pass an existing tools.py")
        mod_name = f"_gemma4_tools_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UserError(f"cannot import {path}", "pass a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except KeyboardInterrupt:  # Ctrl-C while it imports: the user's interrupt, not the module's error
            sys.modules.pop(mod_name, None)
            raise
        except BaseException as e:  # the user's module failed to import (sys.exit() too): their error
            sys.modules.pop(mod_name, None)
            raise UserError(f"importing {path} failed: {_describe(e)}",
                            "fix the tools module (it must define tools, not exit)"
                            if isinstance(e, SystemExit) else "fix the tools module") from None
        functions: dict[str, Callable] = {}
        for obj in vars(module).values():
            tool_spec = getattr(obj, _TOOL_ATTR, None)
            if callable(obj) and isinstance(tool_spec, ToolSpec):
                functions[tool_spec.name] = obj
                if declare or tool_spec.name not in self:
                    self.register(tool_spec, obj)
        for name, fn in (getattr(module, "TOOLS", None) or {}).items():
            functions[name] = fn
        for name in self.names:
            fn = functions.get(name) or getattr(module, name, None)
            if callable(fn):
                self._tools[name].fn = fn

    # ---- execution

    def execute(self, call: ToolCall, timeout_s: float) -> Any:
        """Validate and run one call; raises KeyError (unknown tool), ToolArgumentError,
        ToolTimeoutError, LookupError (no function bound) or whatever the tool raised."""
        entry = self._tools[call.name]
        validate_arguments(entry.spec, call.arguments)
        if entry.fn is None:
            raise LookupError(f"tool {call.name!r} has no implementation bound")
        result: dict[str, Any] = {}

        def target() -> None:
            try:
                result["value"] = entry.fn(**call.arguments)
            except Exception as e:  # handed to the caller's thread below
                result["error"] = e
            except BaseException as e:  # sys.exit() in a tool must not end the agent: a tool error
                result["error"] = ToolExit(f"the tool ended with {_describe(e)}")

        # A daemon thread: Python cannot kill a stuck tool, but the loop need not wait for it.
        t = threading.Thread(target=target, name=f"tool-{call.name}", daemon=True)
        t.start()
        t.join(timeout_s)
        if t.is_alive():
            raise ToolTimeoutError(f"tool {call.name!r} did not return within {timeout_s:g} s")
        if "error" in result:
            raise result["error"]
        return result.get("value")


# --------------------------------------------------------------------------- transcript


def _to_wire(v: Any, depth: int = 0) -> Any:
    """Make a tool result renderable and JSON-serialisable (tuples, NaN, odd keys, objects)."""
    if depth > 32:
        return str(v)
    if isinstance(v, str):
        return v.replace(QUOTE, '"')
    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, dict):
        return {str(k): _to_wire(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_to_wire(x, depth + 1) for x in v]
    return str(v)


@dataclass
class CallRecord:
    name: str
    arguments: dict
    response: Any = None
    error: str | None = None  # "unknown_tool" | "invalid_arguments" | "timeout" | "no_implementation" | "exception"
    duration_s: float = 0.0

    def to_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments, "response": self.response,
                "error": self.error, "duration_s": round(self.duration_s, 6)}


@dataclass
class Step:
    index: int
    prompt: str
    output: str
    generate_s: float
    text: str = ""
    thinking: str | None = None
    calls: list[CallRecord] = field(default_factory=list)
    parse_error: dict | None = None

    def to_dict(self) -> dict:
        return {"index": self.index, "prompt": self.prompt, "output": self.output,
                "generate_s": round(self.generate_s, 6), "text": self.text, "thinking": self.thinking,
                "calls": [c.to_dict() for c in self.calls], "parse_error": self.parse_error}


@dataclass
class Transcript:
    status: str  # "answered" | "max_steps" | "parse_error"
    answer: str | None
    steps: list[Step]
    messages: list[Message]
    system: str | None = None
    tools: list[str] = field(default_factory=list)

    @property
    def tool_calls(self) -> list[CallRecord]:
        return [c for s in self.steps for c in s.calls]

    def to_dict(self) -> dict:
        return {"status": self.status, "answer": self.answer, "system": self.system, "tools": self.tools,
                "steps": [s.to_dict() for s in self.steps], "messages": [m.to_dict() for m in self.messages]}

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


# --------------------------------------------------------------------------- the loop


class AgentLoop:
    """Run a conversation against ``engine`` until the model answers without a tool call or
    ``max_steps`` generations have run. Tool failures go back to the model as
    ``{error: ..., ...}`` responses so it can recover; a malformed call ends the run."""

    def __init__(self, engine: TextEngine, registry: ToolRegistry, system: str | None = None,
                 max_steps: int = 8, step_timeout_s: float = 30, max_new_tokens: int = 512,
                 enable_thinking: bool = False) -> None:
        if max_steps < 1:
            raise UserError(f"max_steps must be at least 1, got {max_steps}")
        self.engine = engine
        self.registry = registry
        self.system = system
        self.max_steps = max_steps
        self.step_timeout_s = step_timeout_s
        self.max_new_tokens = max_new_tokens
        self.enable_thinking = enable_thinking

    def _call(self, call: ToolCall) -> CallRecord:
        rec = CallRecord(call.name, call.arguments)
        t0 = time.monotonic()
        try:
            if call.name not in self.registry:
                rec.error = "unknown_tool"
                rec.response = {"error": f"unknown tool {call.name}",
                                "available": ",".join(self.registry.names)}
            else:
                rec.response = _to_wire(self.registry.execute(call, self.step_timeout_s))
        except ToolArgumentError as e:
            rec.error = "invalid_arguments"
            rec.response = {"error": "invalid arguments",
                            "fields": {fe.path or "arguments": fe.message for fe in e.errors}}
        except ToolTimeoutError as e:
            rec.error = "timeout"
            rec.response = {"error": str(e)}
        except LookupError as e:
            rec.error = "no_implementation"
            rec.response = {"error": str(e)}
        except Exception as e:  # the tool's own failure is data for the model, not a crash
            rec.error = "exception"
            rec.response = {"error": f"{type(e).__name__}: {e}"}
        rec.duration_s = time.monotonic() - t0
        return rec

    def run(self, user: str | list[Message]) -> Transcript:
        messages: list[Message] = [Message("user", user)] if isinstance(user, str) else list(user)
        specs = self.registry.specs()
        steps: list[Step] = []
        for index in range(self.max_steps):
            prompt = render_prompt(messages, specs, self.system, enable_thinking=self.enable_thinking)
            t0 = time.monotonic()
            output = self.engine.generate(prompt, self.max_new_tokens, list(STOP_SEQUENCES))
            step = Step(index, prompt, output, time.monotonic() - t0)
            steps.append(step)
            try:
                parsed = parse_model_output(output)
            except ToolCallParseError as e:
                step.parse_error = {"message": e.message, "position": e.position}
                return self._done("parse_error", None, steps, messages)
            step.text, step.thinking = parsed.text, parsed.thinking
            if not parsed.tool_calls:
                messages.append(Message("model", parsed.text, thinking=parsed.thinking))
                return self._done("answered", parsed.text, steps, messages)
            # Text before the calls stays in the transcript only: in the Gemma 4 template, content
            # on a calling message would close the turn after the tool responses.
            messages.append(Message("model", "", list(parsed.tool_calls), thinking=parsed.thinking))
            step.calls = [self._call(c) for c in parsed.tool_calls]
            messages.append(Message("tool", tool_responses=[ToolResponse(c.name, c.response) for c in step.calls]))
        return self._done("max_steps", None, steps, messages)

    def _done(self, status: str, answer: str | None, steps: list[Step], messages: list[Message]) -> Transcript:
        return Transcript(status, answer, steps, messages, self.system, self.registry.names)
