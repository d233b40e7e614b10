"""Gemma 4 chat/tool-calling text format: render prompts and model turns, parse model output.

Pure stdlib. The rendering follows the public Gemma 4 chat template
(``chat_template.jinja`` of google/gemma-4-E2B-it / -E4B-it) byte for byte for the cases it
defines; the test suite checks this against a Jinja rendering of that template where jinja2 is
available. Facts taken from that template:

* the prompt starts with ``<bos>``; turns are ``<|turn>ROLE\\n ... <turn|>\\n``, roles ``system``,
  ``user``, ``model``; user/system text and model text are stripped of surrounding whitespace.
* the system turn holds ``<|think|>\\n`` (thinking enabled), the system instruction, then every
  tool declaration as ``<|tool>declaration:NAME{description:<|"|>..<|"|>,parameters:{...}}<tool|>``
  with no separator; parameter schemas are rewritten by the template's ``format_parameters`` macro
  (keys sorted case-insensitively, types upper-cased, ``description``/``type``/``properties``/
  ``required``/``nullable`` property names skipped) — reproduced here including its quirks.
* a model tool call is ``<|tool_call>call:NAME{k:v,...}<tool_call|>``: keys sorted
  case-insensitively (Jinja ``dictsort``) and bare, strings wrapped in ``<|"|>``, booleans
  ``true``/``false``, numbers as Python prints them, lists ``[..]``, nested objects ``{k:v}``.
* tool results are rendered inside the same model turn, right after the calls:
  ``<|tool_response>response:NAME{k:v,...}<tool_response|>``; a non-object result becomes
  ``{value:...}``. A model turn that ends in tool responses is left open and no generation prompt
  is added: the model continues the same turn. A tool call with no response yet is followed by
  ``<|tool_response>`` — which is also what the model emits after its calls (a stop sequence).
* thinking is ``<|channel>thought\\n...\\n<channel|>``; in a prompt it is kept only for model
  messages after the last user message that carry tool calls (otherwise stripped, as in the
  template).

Assumptions and deviations (where the template is silent or degenerate):

* ``None`` is written ``null`` (Jinja would print ``None``); both are accepted when parsing.
* keys that are not plain identifiers (``[A-Za-z0-9_.$-]+``) are written quoted (``<|"|>k<|"|>:``)
  instead of bare, so that they parse back; the parser accepts quoted and bare keys.
* NaN/Infinity and strings containing ``<|"|>`` cannot be written: ``ToolCallEncodeError``.
* a parameters schema without ``type`` is declared as ``OBJECT`` (the template would leave an
  unbalanced brace); a ``tool`` message not preceded by a model message with tool calls raises
  ``ValueError`` (the template silently drops it).
* parsing is lenient about whitespace between value tokens and stops at the first ``<turn|>``,
  ``<|tool_response>`` or ``<eos>`` (the engine's stop sequences). Malformed tool calls raise
  ``ToolCallParseError(message, position)``; ``position`` counts code points (Python ``str``
  indexes) into the parsed text.

Canonical strings (what this module renders) round-trip exactly: ``parse(render(x)) == x`` and
``render(parse(s)) == s``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "QUOTE",
    "SPECIAL_TOKENS",
    "STOP_SEQUENCES",
    "cut_at_stop",
    "ToolSpec",
    "ToolCall",
    "ToolResponse",
    "Message",
    "ParsedOutput",
    "ToolCallParseError",
    "ToolCallEncodeError",
    "encode_value",
    "decode_value",
    "render_tool_declaration",
    "render_tool_call",
    "render_tool_response",
    "render_prompt",
    "render_model_turn",
    "parse_model_output",
    "parse_tool_call",
    "is_valid_tool_name",
]

BOS = "<bos>"
EOS = "<eos>"
PAD = "<pad>"
QUOTE = '<|"|>'
TURN_OPEN = "<|turn>"
TURN_CLOSE = "<turn|>"
TOOL_OPEN = "<|tool>"
TOOL_CLOSE = "<tool|>"
CALL_OPEN = "<|tool_call>"
CALL_CLOSE = "<tool_call|>"
RESPONSE_OPEN = "<|tool_response>"
RESPONSE_CLOSE = "<tool_response|>"
CHANNEL_OPEN = "<|channel>"
CHANNEL_CLOSE = "<channel|>"
THINK = "<|think|>"

# Order matters for a tokenizer built from this list: pad/eos/bos first, as in Gemma's vocab.
SPECIAL_TOKENS: list[str] = [
    PAD,
    EOS,
    BOS,
    TURN_OPEN,
    TURN_CLOSE,
    TOOL_OPEN,
    TOOL_CLOSE,
    CALL_OPEN,
    CALL_CLOSE,
    RESPONSE_OPEN,
    RESPONSE_CLOSE,
    CHANNEL_OPEN,
    CHANNEL_CLOSE,
    QUOTE,
    THINK,
]

# Where generation stops: end of turn, or the model handing over to the tool runner.
STOP_SEQUENCES: list[str] = [TURN_CLOSE, RESPONSE_OPEN, EOS]


def cut_at_stop(text: str, stop: Sequence[str] = STOP_SEQUENCES, *, keep: bool = False) -> tuple[str, str | None]:
    """``text`` up to its earliest stop sequence (the sequence itself kept when ``keep``), and that
    sequence (None when there is none). Every engine and comparison cuts generations here."""
    best: tuple[int, str] | None = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return text, None
    i, s = best
    return (text[: i + len(s)] if keep else text[:i]), s

MAX_DEPTH = 64
_WS = " \t\r\n"
# Characters that end a bare key / tool name when parsing (lenient).
_NOT_BARE = set(_WS + ':,{}[]<>"|')
# Keys written bare when rendering (anything else is quoted so it parses back).
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_.$\-]+\Z")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_NUMBER_RE = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_LITERALS = (("true", True), ("false", False), ("null", None), ("None", None))
_ROLES = ("system", "user", "model", "tool")


class ToolCallParseError(ValueError):
    """Malformed tool call or value text; ``position`` is the code-point offset of the fault."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} at position {position}")
        self.message = message
        self.position = position


class ToolCallEncodeError(ValueError):
    """A value that the Gemma 4 value syntax cannot carry (NaN, a string holding <|"|>, ...)."""


# --------------------------------------------------------------------------- data types


@dataclass
class ToolSpec:
    name: str
    description: str
    parameters: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, d: dict) -> "ToolSpec":
        return cls(d["name"], d.get("description", ""), d.get("parameters") or {})


@dataclass
class ToolCall:
    name: str
    arguments: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, d: dict) -> "ToolCall":
        return cls(d["name"], d.get("arguments") or {})


@dataclass
class ToolResponse:
    name: str
    response: Any  # dict, or a str (rendered as {value:...}); any JSON value is accepted

    def to_dict(self) -> dict:
        return {"name": self.name, "response": self.response}

    @classmethod
    def from_dict(cls, d: dict) -> "ToolResponse":
        return cls(d["name"], d.get("response"))


@dataclass
class Message:
    role: str  # "system" | "user" | "model" | "tool"
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_responses: list[ToolResponse] = field(default_factory=list)
    thinking: str | None = None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_responses:
            d["tool_responses"] = [r.to_dict() for r in self.tool_responses]
        if self.thinking is not None:
            d["thinking"] = self.thinking
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Message":
        return cls(
            role=d["role"],
            content=d.get("content") or "",
            tool_calls=[ToolCall.from_dict(c) for c in d.get("tool_calls") or []],
            tool_responses=[ToolResponse.from_dict(r) for r in d.get("tool_responses") or []],
            thinking=d.get("thinking"),
        )


@dataclass
class ParsedOutput:
    text: str
    thinking: str | None
    tool_calls: list[ToolCall]


# --------------------------------------------------------------------------- value encoding


def _sorted_items(d: dict) -> list[tuple[str, Any]]:
    # Jinja's dictsort: case-insensitive, stable.
    for k in d:
        if not isinstance(k, str):
            raise ToolCallEncodeError(f"object keys must be strings, got {k!r}")
    return sorted(d.items(), key=lambda kv: kv[0].lower())


def _quote(s: str) -> str:
    if QUOTE in s:
        raise ToolCallEncodeError(f"a string cannot contain {QUOTE}: {s!r}")
    return QUOTE + s + QUOTE


def _fmt(v: Any, escape_keys: bool) -> str:
    """The template's ``format_argument`` macro (plus the assumptions in the module docstring)."""
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ToolCallEncodeError(f"cannot encode non-finite number {v!r}")
        return repr(v)
    if isinstance(v, dict):
        parts = []
        for k, item in _sorted_items(v):
            key = _quote(k) if escape_keys or not _BARE_KEY_RE.match(k) else k
            parts.append(key + ":" + _fmt(item, escape_keys))
        return "{" + ",".join(parts) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt(item, escape_keys) for item in v) + "]"
    raise ToolCallEncodeError(f"cannot encode value of type {type(v).__name__}")


def encode_value(v: Any) -> str:
    """Encode a JSON-like value in Gemma 4's call syntax (bare keys, as in tool-call arguments)."""
    return _fmt(v, escape_keys=False)


class _Reader:
    """Recursive-descent reader of the value syntax over ``s`` (positions are absolute)."""

    def __init__(self, s: str) -> None:
        self.s = s
        self.n = len(s)

    def err(self, message: str, pos: int) -> ToolCallParseError:
        return ToolCallParseError(message, pos)

    def ws(self, p: int) -> int:
        while p < self.n and self.s[p] in _WS:
            p += 1
        return p

    def bare(self, p: int) -> int:
        while p < self.n and self.s[p] not in _NOT_BARE:
            p += 1
        return p

    def string(self, p: int) -> tuple[str, int]:
        start = p + len(QUOTE)
        end = self.s.find(QUOTE, start)
        if end < 0:
            raise self.err("unterminated string", p)
        return self.s[start:end], end + len(QUOTE)

    def value(self, p: int, depth: int) -> tuple[Any, int]:
        p = self.ws(p)
        if p >= self.n:
            raise self.err("unexpected end of input, expected a value", p)
        if depth > MAX_DEPTH:
            raise self.err("values nested too deeply", p)
        s = self.s
        if s.startswith(QUOTE, p):
            return self.string(p)
        c = s[p]
        if c == "{":
            return self.obj(p, depth)
        if c == "[":
            return self.array(p, depth)
        if c == "-" or "0" <= c <= "9":
            m = _NUMBER_RE.match(s, p)
            if not m:
                raise self.err("invalid number", p)
            text = m.group(0)
            if m.group(1) is None and m.group(2) is None:
                return int(text), m.end()
            f = float(text)
            if not math.isfinite(f):
                raise self.err("number out of range", p)
            return f, m.end()
        for word, val in _LITERALS:
            if s.startswith(word, p):
                return val, p + len(word)
        raise self.err(f"unexpected character {c!r}, expected a value", p)

    def key(self, p: int) -> tuple[str, int]:
        if p >= self.n:
            raise self.err("unexpected end of input, expected a key", p)
        if self.s.startswith(QUOTE, p):
            return self.string(p)
        end = self.bare(p)
        if end == p:
            raise self.err(f"unexpected character {self.s[p]!r}, expected a key", p)
        return self.s[p:end], end

    def obj(self, p: int, depth: int) -> tuple[dict, int]:
        out: dict[str, Any] = {}
        p = self.ws(p + 1)
        if p < self.n and self.s[p] == "}":
            return out, p + 1
        while True:
            p = self.ws(p)
            key_pos = p
            k, p = self.key(p)
            p = self.ws(p)
            if p >= self.n:
                raise self.err("unexpected end of input, expected ':'", p)
            if self.s[p] != ":":
                raise self.err(f"unexpected character {self.s[p]!r}, expected ':'", p)
            v, p = self.value(p + 1, depth + 1)
            if k in out:
                raise self.err(f"duplicate key {k!r}", key_pos)
            out[k] = v
            p = self.ws(p)
            if p >= self.n:
                raise self.err("unexpected end of input, expected ',' or '}'", p)
            c = self.s[p]
            if c == ",":
                p += 1
            elif c == "}":
                return out, p + 1
            else:
                raise self.err(f"unexpected character {c!r}, expected ',' or '}}'", p)

    def array(self, p: int, depth: int) -> tuple[list, int]:
        out: list[Any] = []
        p = self.ws(p + 1)
        if p < self.n and self.s[p] == "]":
            return out, p + 1
        while True:
            v, p = self.value(p, depth + 1)
            out.append(v)
            p = self.ws(p)
            if p >= self.n:
                raise self.err("unexpected end of input, expected ',' or ']'", p)
            c = self.s[p]
            if c == ",":
                p += 1
            elif c == "]":
                return out, p + 1
            else:
                raise self.err(f"unexpected character {c!r}, expected ',' or ']'", p)

    def call(self, p: int) -> tuple[ToolCall, int]:
        """Parse ``call:NAME{...}<tool_call|>`` starting right after ``<|tool_call>``."""
        p = self.ws(p)
        if not self.s.startswith("call:", p):
            raise self.err("expected 'call:' after <|tool_call>", p)
        p += len("call:")
        end = self.bare(p)
        if end == p:
            raise self.err("expected a tool name", p)
        name = self.s[p:end]
        p = end
        if p >= self.n or self.s[p] != "{":
            raise self.err("expected '{' after the tool name", p)
        args, p = self.obj(p, 1)
        p = self.ws(p)
        if not self.s.startswith(CALL_CLOSE, p):
            raise self.err(f"expected {CALL_CLOSE}", p)
        return ToolCall(name, args), p + len(CALL_CLOSE)


def decode_value(s: str) -> Any:
    """Decode one value in Gemma 4's call syntax; raises ToolCallParseError on malformed text."""
    if not isinstance(s, str):
        raise TypeError("decode_value expects a str")
    r = _Reader(s)
    v, p = r.value(0, 0)
    p = r.ws(p)
    if p != r.n:
        raise ToolCallParseError("unexpected trailing characters", p)
    return v


# --------------------------------------------------------------------------- rendering


def _jget(d: Any, key: str) -> Any:
    # Jinja's ``value['key']`` on a non-mapping or a missing key is undefined (falsy).
    return d.get(key) if isinstance(d, dict) else None


def _upper(v: Any) -> str:
    # Jinja's ``| upper`` on undefined is '' and on anything else str(v).upper().
    return "" if v is None else str(v).upper()


def _format_parameters(properties: dict) -> str:
    """The template's ``format_parameters`` macro, quirks included."""
    standard_keys = ("description", "type", "properties", "required", "nullable")
    out: list[str] = []
    first = True
    for key, value in _sorted_items(properties):
        if key in standard_keys:
            continue
        if not first:
            out.append(",")
        first = False
        out.append(key + ":{")
        add_comma = False

        def comma() -> None:
            nonlocal add_comma
            if add_comma:
                out.append(",")
            add_comma = True

        desc = _jget(value, "description")
        if desc:
            out.append("description:" + QUOTE + str(desc) + QUOTE)
            add_comma = True
        vtype = _upper(_jget(value, "type"))
        if vtype == "STRING":
            enum = _jget(value, "enum")
            if enum:
                comma()
                out.append("enum:" + _fmt(enum, True))
        elif vtype == "ARRAY":
            items = _jget(value, "items")
            if isinstance(items, dict) and items:
                comma()
                out.append("items:{")
                first_item = True
                for ik, iv in _sorted_items(items):
                    if iv is None:
                        continue
                    if not first_item:
                        out.append(",")
                    first_item = False
                    if ik == "properties":
                        inner = _format_parameters(iv) if isinstance(iv, dict) else ""
                        out.append("properties:{" + inner + "}")
                    elif ik == "required":
                        out.append("required:[" + ",".join(QUOTE + str(r) + QUOTE for r in iv) + "]")
                    elif ik == "type":
                        if isinstance(iv, str):
                            out.append("type:" + _fmt(iv.upper(), True))
                        else:
                            out.append("type:" + _fmt([_upper(t) for t in iv], True))
                    else:
                        out.append(ik + ":" + _fmt(iv, True))
                out.append("}")
        if _jget(value, "nullable"):
            comma()
            out.append("nullable:true")
        if vtype == "OBJECT":
            props = _jget(value, "properties")
            if isinstance(props, dict):
                comma()
                out.append("properties:{" + _format_parameters(props) + "}")
            elif isinstance(value, dict):
                comma()
                out.append("properties:{" + _format_parameters(value) + "}")
            required = _jget(value, "required")
            if required:
                comma()
                out.append("required:[" + ",".join(QUOTE + str(r) + QUOTE for r in required) + "]")
        comma()
        out.append("type:" + QUOTE + vtype + QUOTE + "}")
    return "".join(out)


def render_tool_declaration(spec: ToolSpec) -> str:
    """``<|tool>declaration:NAME{...}<tool|>`` as the template's format_function_declaration."""
    out = ["declaration:", spec.name, "{description:", QUOTE, spec.description or "", QUOTE]
    params = spec.parameters
    if params:
        out.append(",parameters:{")
        if params.get("properties"):
            out.append("properties:{" + _format_parameters(params["properties"]) + "},")
        if params.get("required"):
            out.append("required:[" + ",".join(QUOTE + str(r) + QUOTE for r in params["required"]) + "],")
        out.append("type:" + QUOTE + (_upper(params.get("type")) or "OBJECT") + QUOTE + "}")
    out.append("}")
    return TOOL_OPEN + "".join(out).strip() + TOOL_CLOSE


def _check_name(name: str) -> None:
    # Anything the parser reads back as a name is accepted (tool specs should stick to
    # letters, digits, '_', '.', '-'; see is_valid_tool_name).
    if not isinstance(name, str) or not name or any(c in _NOT_BARE for c in name):
        raise ToolCallEncodeError(f"invalid tool name {name!r}: use letters, digits, '_', '.', '-'")


def is_valid_tool_name(name: str) -> bool:
    """Names a tool declaration should use: ``[A-Za-z_][A-Za-z0-9_.-]*``."""
    return isinstance(name, str) and bool(_NAME_RE.match(name))


def _fmt_fields(d: dict) -> str:
    return ",".join(
        (k if _BARE_KEY_RE.match(k) else _quote(k)) + ":" + _fmt(v, False) for k, v in _sorted_items(d)
    )


def render_tool_call(call: ToolCall) -> str:
    """``<|tool_call>call:NAME{k:v,...}<tool_call|>`` (keys sorted, as the template does)."""
    _check_name(call.name)
    if not isinstance(call.arguments, dict):
        raise ToolCallEncodeError("tool call arguments must be a dict")
    return CALL_OPEN + "call:" + call.name + "{" + _fmt_fields(call.arguments) + "}" + CALL_CLOSE


def render_tool_response(resp: ToolResponse) -> str:
    """``<|tool_response>response:NAME{...}<tool_response|>``; non-dicts become ``{value:...}``."""
    _check_name(resp.name)
    if isinstance(resp.response, dict):
        body = _fmt_fields(resp.response)
    else:
        body = "value:" + _fmt(resp.response, False)
    return RESPONSE_OPEN + "response:" + resp.name + "{" + body + "}" + RESPONSE_CLOSE


def _strip_thinking(text: str) -> str:
    # The template's strip_thinking macro: drop <|channel>...<channel|> spans, then trim.
    result = ""
    for part in text.split(CHANNEL_CLOSE):
        result += part.split(CHANNEL_OPEN)[0] if CHANNEL_OPEN in part else part
    return result.strip()


def _render_thinking(thinking: str) -> str:
    return CHANNEL_OPEN + "thought\n" + thinking + "\n" + CHANNEL_CLOSE


def render_model_turn(msg: Message, *, with_terminator: bool = False) -> str:
    """The text a model emits for ``msg``: thinking channel, tool calls, then text.

    No turn wrapper. With ``with_terminator`` the stop sequence the model should emit next is
    appended: ``<|tool_response>`` after tool calls (hand-over to the tool runner), else
    ``<turn|>`` — what a training target needs.
    """
    out = []
    if msg.thinking:
        out.append(_render_thinking(msg.thinking))
    out.extend(render_tool_call(c) for c in msg.tool_calls)
    out.append(_strip_thinking(msg.content or ""))
    if with_terminator:
        out.append(RESPONSE_OPEN if msg.tool_calls else TURN_CLOSE)
    return "".join(out)


def render_prompt(
    messages: Sequence[Message],
    tools: Iterable[ToolSpec] = (),
    system: str | None = None,
    add_generation_prompt: bool = True,
    *,
    enable_thinking: bool = False,
    add_bos: bool = True,
) -> str:
    """Render a conversation as the Gemma 4 chat template does.

    ``system`` (or a leading ``system`` message) and ``tools`` go into the system turn.
    ``tool`` messages are rendered inside the preceding model turn. The prompt ends with
    ``<|turn>model\\n`` when ``add_generation_prompt`` and the last model turn is closed; after
    tool responses it ends with ``<tool_response|>`` (the model continues the same turn).
    """
    messages = list(messages)
    tools = list(tools)
    for m in messages:
        if m.role not in _ROLES:
            raise ValueError(f"unknown role {m.role!r}; expected one of {', '.join(_ROLES)}")
    if messages and messages[0].role == "system":
        if system is not None:
            raise ValueError("give the system instruction either as `system` or as a first system message")
        system = messages[0].content
        messages = messages[1:]
    out = [BOS] if add_bos else []
    prev_type: str | None = None
    if enable_thinking or tools or system is not None:
        out.append(TURN_OPEN + "system\n")
        if enable_thinking:
            out.append(THINK + "\n")
            prev_type = "think"
        if system is not None:
            out.append(system.strip())
        for t in tools:
            out.append(render_tool_declaration(t))
        if tools:
            prev_type = "tool"
        out.append(TURN_CLOSE + "\n")

    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    prev_non_tool: str | None = None
    for i, m in enumerate(messages):
        if m.role == "tool":
            if prev_non_tool != "model" or not _prev_has_calls(messages, i):
                raise ValueError(f"message {i}: a tool message must follow a model message with tool calls")
            continue
        prev_type = None
        continue_turn = m.role == "model" and prev_non_tool == "model"
        prev_non_tool = m.role
        if not continue_turn:
            out.append(TURN_OPEN + m.role + "\n")
        if m.thinking and i > last_user and m.tool_calls:
            out.append(_render_thinking(m.thinking))
        for c in m.tool_calls:
            out.append(render_tool_call(c))
        if m.tool_calls:
            prev_type = "tool_call"
        responses_out = False
        responses = list(m.tool_responses)
        if not responses and m.tool_calls:
            for follow in messages[i + 1 :]:
                if follow.role != "tool":
                    break
                responses.extend(follow.tool_responses)
        for r in responses:
            out.append(render_tool_response(r))
            responses_out = True
            prev_type = "tool_response"
        if m.role == "model":
            out.append(_strip_thinking(m.content or ""))
        else:
            out.append((m.content or "").strip())
        if prev_type == "tool_call" and not responses_out:
            out.append(RESPONSE_OPEN)
        elif not (responses_out and not m.content):
            out.append(TURN_CLOSE + "\n")
    if add_generation_prompt and prev_type not in ("tool_response", "tool_call"):
        out.append(TURN_OPEN + "model\n")
    return "".join(out)


def _prev_has_calls(messages: Sequence[Message], i: int) -> bool:
    """True when the nearest non-tool message before index ``i`` is a model message with calls."""
    for m in reversed(messages[:i]):
        if m.role != "tool":
            return m.role == "model" and bool(m.tool_calls)
    return False


# --------------------------------------------------------------------------- parsing

_MARKERS = (CALL_OPEN, CALL_CLOSE, CHANNEL_OPEN, CHANNEL_CLOSE, TURN_CLOSE, RESPONSE_OPEN, EOS)
_MARKER_RE = re.compile("|".join(re.escape(m) for m in _MARKERS))


def parse_tool_call(text: str) -> ToolCall:
    """Parse exactly one ``<|tool_call>call:NAME{...}<tool_call|>``."""
    if not isinstance(text, str):
        raise TypeError("parse_tool_call expects a str")
    r = _Reader(text)
    if not text.startswith(CALL_OPEN):
        raise ToolCallParseError(f"expected {CALL_OPEN}", 0)
    call, p = r.call(len(CALL_OPEN))
    if p != len(text):
        raise ToolCallParseError("unexpected trailing characters", p)
    return call


def parse_model_output(text: str) -> ParsedOutput:
    """Split model output into text, thinking and tool calls.

    Stops at the first stop sequence (``<turn|>``, ``<|tool_response>``, ``<eos>``). A thinking
    channel left open (generation cut off) takes the rest of the text. Raises
    ``ToolCallParseError`` for a malformed or unterminated tool call or a stray ``<tool_call|>``.
    """
    if not isinstance(text, str):
        raise TypeError("parse_model_output expects a str")
    r = _Reader(text)
    pos = 0
    parts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    while pos < len(text):
        m = _MARKER_RE.search(text, pos)
        if m is None:
            parts.append(text[pos:])
            break
        parts.append(text[pos : m.start()])
        marker = m.group(0)
        if marker == CALL_OPEN:
            call, pos = r.call(m.end())
            calls.append(call)
        elif marker == CALL_CLOSE:
            raise ToolCallParseError(f"{CALL_CLOSE} without {CALL_OPEN}", m.start())
        elif marker == CHANNEL_OPEN:
            end = text.find(CHANNEL_CLOSE, m.end())
            body = text[m.end() :] if end < 0 else text[m.end() : end]
            if body.startswith("thought\n"):
                body = body[len("thought\n") :]
            elif body.startswith("thought"):
                body = body[len("thought") :]
            if body.endswith("\n"):
                body = body[:-1]
            thoughts.append(body)
            pos = len(text) if end < 0 else end + len(CHANNEL_CLOSE)
        elif marker == CHANNEL_CLOSE:
            pos = m.end()  # a stray channel close carries nothing
        else:  # a stop sequence: the rest is not part of this turn
            break
    return ParsedOutput(
        text="".join(parts).strip(),
        thinking="\n".join(thoughts) if thoughts else None,
        tool_calls=calls,
    )
