"""JSON-schema-constrained generation that works with any engine that can continue text.

The schema is walked as a grammar. Structure the schema fixes (braces, required keys, separators)
is written directly; where the schema leaves a choice (which key next, end of an array, an enum
value, true/false, a branch of anyOf) the model's greedy draft decides when it names an allowed
option, and otherwise the allowed options are scored by the engine (log-likelihood of each option
after the text so far) — or, on an engine that cannot score, the first allowed option is taken.
Free values (strings, numbers) come from the model's draft, cut at the first character that would
break the grammar and escaped as JSON. So the output always parses, and validates against every
keyword the walk enforces (type, properties, required, additionalProperties: false, enum, const,
items, minItems/maxItems, maxLength, minimum/maximum, anyOf/oneOf, $ref); ``pattern``/``format``
are checked at the end only (ConstrainedDecodingError).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

from gemma4_common.errors import UserError

from gemma4_common.gemma4_format import STOP_SEQUENCES
from gemma4_common.json_schema import schema_problem, value_errors
from .schema import normalize_schema

__all__ = ["Scorer", "ConstrainedDecodingError", "JsonGeneration", "generate_json", "check_json_schema",
           "json_instruction"]

# Whitespace-free JSON output, but with the separators json.dumps uses by default: what models
# (ours included) saw most in training.
ITEM_SEP = ", "
KEY_SEP = ": "
DEFAULT_MAX_STRING = 256
DEFAULT_MAX_ITEMS = 16
DEFAULT_MAX_KEYS = 16
MAX_DEPTH = 24
FREE_DEPTH = 8
_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUM_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_DIGITS = [str(d) for d in range(10)]


class Scorer(Protocol):
    """What constrained generation needs from an engine (``text`` is the whole prompt so far)."""

    def continue_text(self, text: str, max_new_tokens: int, stop: list[str]) -> str:
        """Greedy continuation of ``text`` (without the stop sequence that ended it)."""
        ...

    def choose(self, text: str, options: list[str]) -> int | None:
        """Index of the most likely option after ``text``; None when this engine cannot score."""
        ...


class ConstrainedDecodingError(ValueError):
    """The walk produced JSON that breaks a keyword it does not enforce (pattern, format, ...)."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


@dataclass
class JsonGeneration:
    value: Any
    text: str
    drafts: int = 0  # model continuations requested
    scored: int = 0  # choices the engine scored
    forced: int = 0  # choices taken without the model (draft disagreed and no scorer)
    draft_agreed: int = 0  # choices where the model's own draft named an allowed option
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"value": self.value, "text": self.text, "drafts": self.drafts, "scored": self.scored,
                "forced": self.forced, "draft_agreed": self.draft_agreed}


def check_json_schema(schema: Any) -> dict:
    """Normalised copy of ``schema``; UserError when it is not a JSON schema object."""
    if schema is True or schema == {}:
        return {}
    if not isinstance(schema, dict):
        raise UserError("the JSON schema must be an object", "pass a JSON Schema document such as "
                        '{"type": "object", "properties": {...}}')
    norm = normalize_schema(schema)
    problem = schema_problem(norm)
    if problem is not None:
        raise UserError(f"invalid JSON schema: {problem}", "fix the schema file")
    return norm


def json_instruction(schema: dict) -> str:
    """A short system-instruction line asking for JSON of this schema (helps real models)."""
    return "Answer only with a JSON value that matches this JSON schema: " + json.dumps(schema, sort_keys=True)


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in " \t\r\n":
        i += 1
    return i


def _lenient_match(draft: str, pos: int, want: str) -> int | None:
    """If ``draft[pos:]`` starts with ``want`` up to whitespace outside string literals, return the
    draft position after it; else None."""
    i = pos
    in_str = False
    esc = False
    for c in want:
        if not in_str and c in " \t\r\n":
            continue
        if not in_str:
            i = _skip_ws(draft, i)
        if i >= len(draft) or draft[i] != c:
            return None
        i += 1
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
    return i


class _Walker:
    def __init__(self, scorer: Scorer, prompt: str, root: dict, max_new_tokens: int,
                 max_string: int, stop: Sequence[str]) -> None:
        self.scorer = scorer
        self.prompt = prompt
        self.root = root
        self.max_new_tokens = max_new_tokens
        self.max_string = max_string
        self.stop = list(stop)
        self.out = ""
        self.draft: str | None = None
        self.dpos = 0
        self.empty_at: int | None = None
        self.emit_missed = False
        self.res = JsonGeneration(None, "")

    # ---- the model's draft

    def _draft(self) -> tuple[str, int]:
        """The model's continuation from where the output stands (drafted again once used up)."""
        exhausted = self.draft is not None and self.dpos >= len(self.draft)
        if self.draft is None or (exhausted and self.empty_at != len(self.out)):
            self.res.drafts += 1
            self.draft = self.scorer.continue_text(self.prompt + self.out, self.max_new_tokens, self.stop)
            self.dpos = 0
            self.emit_missed = False
            # The model stops here (a stop sequence right away): do not ask again at this point.
            self.empty_at = len(self.out) if not self.draft.strip() else None
        return self.draft, self.dpos

    def _drop_draft(self) -> None:
        self.draft = None
        self.dpos = 0

    # ---- primitives

    def emit(self, s: str) -> None:
        """Write text the grammar fixes; keep the draft if it said the same.

        Without a draft, one is asked for *before* the fixed text: the model then writes that text
        in its own tokenization (``{"`` as one token, say) instead of continuing after a split
        that it never saw in training. After a mismatch here the next draft waits for a choice."""
        if self.draft is None and not self.emit_missed:
            self._draft()
        if self.draft is not None:
            end = _lenient_match(self.draft, self.dpos, s)
            if end is None:
                self._drop_draft()
                self.emit_missed = True
            else:
                self.dpos = end
        self.out += s

    def pick(self, options: list[str], *, emit: bool = True, default: int = 0) -> int:
        """Choose one of ``options`` (the draft's, else the engine's best, else ``default``)."""
        if len(options) == 1:
            if emit:
                self.emit(options[0])
            return 0
        draft, pos = self._draft()
        best, best_end = None, -1
        for k, o in enumerate(options):
            end = _lenient_match(draft, pos, o)
            if end is not None and (best is None or len(o) > len(options[best])):
                best, best_end = k, end
        if best is not None:
            self.res.draft_agreed += 1
            if emit:
                self.dpos = best_end
                self.out += options[best]
            return best
        k = self.scorer.choose(self.prompt + self.out, options)
        if k is None:
            self.res.forced += 1
            k = default
        else:
            self.res.scored += 1
        self._drop_draft()
        if emit:
            self.out += options[k]
        return k

    # ---- schema helpers

    def resolve(self, s: Any, depth: int = 0) -> dict:
        if s is True or s is None:
            return {}
        if s is False:
            raise UserError("the JSON schema forbids every value here (false)", "fix the schema file")
        s = dict(s)
        ref = s.pop("$ref", None)
        if isinstance(ref, str):
            if depth > MAX_DEPTH:
                raise UserError(f"JSON schema $ref {ref} nests too deep", "simplify the schema")
            target = self._lookup(ref)
            merged = dict(self.resolve(target, depth + 1))
            merged.update(s)
            s = merged
        if "allOf" in s:
            parts = [self.resolve(p, depth + 1) for p in s.pop("allOf")]
            for p in parts:
                for k, v in p.items():
                    if k == "properties":
                        s["properties"] = {**s.get("properties", {}), **v}
                    elif k == "required":
                        s["required"] = list(dict.fromkeys([*s.get("required", []), *v]))
                    else:
                        s.setdefault(k, v)
        return s

    def _lookup(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise UserError(f"JSON schema $ref {ref!r} points outside the document", "inline the referenced schema")
        node: Any = self.root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise UserError(f"JSON schema $ref {ref!r} does not resolve", "fix the schema file")
        return node

    def types_of(self, s: dict) -> list[str]:
        if "const" in s:
            return [_json_type(s["const"])]
        if "enum" in s:
            return list(dict.fromkeys(_json_type(v) for v in s["enum"]))
        t = s.get("type")
        if isinstance(t, str):
            return [t]
        if isinstance(t, list) and t:
            return list(t)
        if "properties" in s or "required" in s or "additionalProperties" in s:
            return ["object"]
        if "items" in s or "prefixItems" in s:
            return ["array"]
        return ["object", "array", "string", "number", "boolean", "null"]

    def openers(self, s: dict) -> list[tuple[str, str]]:
        """(first text, type) pairs a value of ``s`` can start with."""
        if "const" in s:
            return [(_dumps(s["const"])[:1], _json_type(s["const"]))]
        if "enum" in s:
            return list(dict.fromkeys((_dumps(v)[:1], _json_type(v)) for v in s["enum"]))
        out: list[tuple[str, str]] = []
        for t in self.types_of(s):
            if t == "object":
                out.append(("{", t))
            elif t == "array":
                out.append(("[", t))
            elif t == "string":
                out.append(('"', t))
            elif t == "boolean":
                out += [("true", t), ("false", t)]
            elif t == "null":
                out.append(("null", t))
            elif t in ("integer", "number"):
                out += [(d, t) for d in ["-", *_DIGITS]]
        return list(dict.fromkeys(out))

    # ---- values

    def value(self, s: Any, depth: int = 0) -> None:
        s = self.resolve(s)
        if depth > MAX_DEPTH:
            raise UserError("the JSON schema nests deeper than constrained decoding supports",
                            f"keep it under {MAX_DEPTH} levels")
        if "const" in s:
            self.emit(_dumps(s["const"]))
            return
        if "enum" in s:
            if not s["enum"]:
                raise UserError("the JSON schema has an empty enum", "fix the schema file")
            self.pick([_dumps(v) for v in s["enum"]])
            return
        for key in ("anyOf", "oneOf"):
            if key in s:
                branches = [self.resolve(b) for b in s[key]]
                base = {k: v for k, v in s.items() if k != key}
                opts: list[str] = []
                owner: list[int] = []
                for bi, b in enumerate(branches):
                    for o, _ in self.openers({**base, **b}):
                        if o not in opts:
                            opts.append(o)
                            owner.append(bi)
                k = self.pick(opts, emit=False)
                self.value({**base, **branches[owner[k]]}, depth + 1)
                return
        types = self.types_of(s)
        if depth >= FREE_DEPTH and len(types) > 1:
            # deep inside free-form values, keep to scalars so that a rambling model cannot nest forever
            types = [t for t in types if t not in ("object", "array")] or types
        if len(types) == 1:
            t = types[0]
        else:
            ops = self.openers({"type": types})
            t = ops[self.pick([o for o, _ in ops], emit=False)][1]
        getattr(self, "v_" + t)(s, depth)

    def v_null(self, s: dict, depth: int) -> None:
        self.emit("null")

    def v_boolean(self, s: dict, depth: int) -> None:
        self.pick(["true", "false"])

    def v_string(self, s: dict, depth: int) -> None:
        self.emit('"')
        limit = min(int(s.get("maxLength", self.max_string)), self.max_string)
        min_len = int(s.get("minLength", 0))
        if min_len > limit:
            raise UserError(f"the JSON schema asks for strings of at least {min_len} characters",
                            f"constrained decoding writes at most {limit}")
        content = self._free_string(limit)
        if len(content) < min_len:
            # The model closed the string too early: pad it (noted), so that the value validates.
            self.res.notes.append(f"string padded to minLength {min_len}")
            self.out = self.out[:-1] + " " * (min_len - len(content)) + '"'
            self._drop_draft()

    def _free_string(self, limit: int) -> str:
        """Write the draft's string content (escaped) up to its closing quote, drafting again when
        the draft ends inside the string, then the closing quote; return the content."""
        text = ""
        for _ in range(8):
            draft, pos = self._draft()
            raw, i, closed = "", pos, False
            while i < len(draft) and len(_unescape(raw)) < limit - len(text):
                c = draft[i]
                if c == '"' or ord(c) < 0x20:  # a raw control character cannot be in a JSON string
                    closed = True
                    break
                step = 2 if c == "\\" and i + 1 < len(draft) else 1
                raw += draft[i : i + step]
                i += step
            piece = _unescape(raw)[: limit - len(text)]
            self.out += _escape(piece)
            text += piece
            if _escape(piece) == raw:
                self.dpos = i
            else:
                self._drop_draft()
            if closed or len(text) >= limit or not raw:
                break
            self._drop_draft()  # the draft ended inside the string: continue from here
        self.emit('"')
        return text

    def _number(self, s: dict, integer: bool) -> None:
        lo, hi = s.get("minimum"), s.get("maximum")
        xlo, xhi = s.get("exclusiveMinimum"), s.get("exclusiveMaximum")
        if integer:
            if isinstance(xlo, (int, float)):
                lo = max(lo, math.floor(xlo) + 1) if lo is not None else math.floor(xlo) + 1
            if isinstance(xhi, (int, float)):
                hi = min(hi, math.ceil(xhi) - 1) if hi is not None else math.ceil(xhi) - 1
            if lo is not None:
                lo = math.ceil(lo)
            if hi is not None:
                hi = math.floor(hi)
            if lo is not None and hi is not None and lo > hi:
                raise UserError(f"the JSON schema allows no integer in [{lo}, {hi}]", "fix the schema file")

        def ok(v: float) -> bool:
            if lo is not None and v < lo or hi is not None and v > hi:
                return False
            if isinstance(xlo, (int, float)) and v <= xlo or isinstance(xhi, (int, float)) and v >= xhi:
                return False
            mult = s.get("multipleOf")
            if mult and (v / mult) != int(v / mult):
                return False
            return True

        draft, pos = self._draft()
        p = _skip_ws(draft, pos)
        m = (_INT_RE if integer else _NUM_RE).match(draft, p)
        if m:
            text = m.group(0)
            v = int(text) if integer else float(text)
            if (integer or math.isfinite(v)) and ok(v):
                self.res.draft_agreed += 1
                self.dpos = m.end()
                self.out += text
                return
        # the draft has no acceptable number here: let the engine choose among allowed ones
        if integer and lo is not None and hi is not None and hi - lo <= 64:
            cands = [str(v) for v in range(lo, hi + 1)]
        else:
            pool = list(range(-1, 11)) + [12, 15, 20, 24, 30, 50, 60, 100, 1000]
            if lo is not None:
                pool += [lo]
            if hi is not None:
                pool += [hi]
            vals = [v for v in dict.fromkeys(pool) if ok(v)]
            if not vals:
                # bounds far from the pool: the bound itself (or its neighbour) is allowed
                base = lo if lo is not None else hi
                vals = [v for v in (base, base + 1, base - 1) if v is not None and ok(v)] or [base]
            cands = [_dumps(int(v)) if integer or float(v).is_integer() else _dumps(v) for v in vals]
        self.pick(cands, default=0)

    def v_integer(self, s: dict, depth: int) -> None:
        self._number(s, True)

    def v_number(self, s: dict, depth: int) -> None:
        self._number(s, False)

    def v_object(self, s: dict, depth: int) -> None:
        props: dict = s.get("properties") or {}
        required = [r for r in s.get("required", []) if isinstance(r, str)]
        addl = s.get("additionalProperties", True)
        free_keys = not props and addl is not False
        max_props = int(s.get("maxProperties", DEFAULT_MAX_KEYS))
        self.emit("{")
        done: list[str] = []
        names = list(dict.fromkeys([*props, *[r for r in required if r not in props]]))
        while len(done) < max_props:
            sep = ITEM_SEP if done else ""
            todo_req = [r for r in required if r not in done]
            remaining = [n for n in names if n not in done]
            options = [sep + _dumps(n) for n in remaining]
            can_close = not todo_req
            if free_keys:
                options.append(sep + '"')  # a key of the model's choosing
            if can_close:
                options.append("}")
            if not options:
                break
            # default: next required key in schema order, else close
            default = (options.index(sep + _dumps(todo_req[0])) if todo_req and sep + _dumps(todo_req[0]) in options
                       else len(options) - 1)
            k = self.pick(options, emit=False, default=default)
            chosen = options[k]
            if chosen == "}":
                self.emit("}")
                return
            if free_keys and k == len(options) - (2 if can_close else 1):
                self.emit(sep + '"')
                key_at = len(self.out) - 1
                key = self._free_string(64)
                if not key or key in done:
                    # an empty or repeated key would not round-trip: make it unique
                    key = (key or "key") + f"_{len(done)}"
                    self.out = self.out[:key_at] + _dumps(key)
                    self._drop_draft()
                sub = addl if isinstance(addl, dict) else {}
            else:
                key = remaining[k]
                self.emit(chosen)
                sub = props.get(key, addl if isinstance(addl, dict) else {})
            self.emit(KEY_SEP)
            self.value(sub, depth + 1)
            done.append(key)
        missing = [r for r in required if r not in done]
        if missing:
            raise UserError(f"the JSON schema requires more properties than maxProperties allows: {missing}",
                            "fix the schema file")
        self.emit("}")

    def v_array(self, s: dict, depth: int) -> None:
        prefix = list(s.get("prefixItems") or [])
        items = s.get("items", {})
        lo = int(s.get("minItems", 0))
        hi = int(s.get("maxItems", max(DEFAULT_MAX_ITEMS, lo)))
        self.emit("[")
        n = 0
        while True:
            item_schema = self.resolve(prefix[n] if n < len(prefix) else (items if items is not False else {}))
            if n >= hi or (items is False and n >= len(prefix)):
                break
            if n >= lo:
                if n == 0:
                    opts = ["]"] + [o for o, _ in self.openers(item_schema)]
                    if self.pick(opts, emit=False, default=0) == 0:
                        break
                elif self.pick(["]", ITEM_SEP], emit=False, default=0) == 0:
                    break
            if n:
                self.emit(ITEM_SEP)
            self.value(item_schema, depth + 1)
            n += 1
        self.emit("]")


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _dumps(v: Any) -> str:
    return json.dumps(v, ensure_ascii=False)


def _escape(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _unescape(raw: str) -> str:
    """String content as the model wrote it: JSON escapes decoded, anything else taken literally."""
    try:
        return json.loads('"' + raw + '"')
    except json.JSONDecodeError:
        out, i = [], 0
        while i < len(raw):
            if raw[i] == "\\" and i + 1 < len(raw):
                try:
                    piece = json.loads('"' + raw[i : i + 2] + '"')
                    out.append(piece)
                    i += 2
                    continue
                except json.JSONDecodeError:
                    pass
            out.append(raw[i])
            i += 1
        return "".join(out)


def generate_json(engine: Scorer, prompt: str, schema: Any, max_new_tokens: int = 128, *,
                  max_string: int = DEFAULT_MAX_STRING, stop: Sequence[str] = STOP_SEQUENCES,
                  details: bool = False) -> tuple[Any, str] | JsonGeneration:
    """Continue ``prompt`` with one JSON value valid for ``schema``.

    ``engine`` is a Scorer (see host.py: HostScorer over the host engine, RunnerScorer over a
    device). ``max_new_tokens`` bounds each draft the model is asked for. Returns ``(value, text)``,
    or the full JsonGeneration with ``details=True``.
    """
    norm = check_json_schema(schema)
    w = _Walker(engine, prompt, norm, max_new_tokens, max_string, stop)
    w.value(norm)
    text = w.out
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:  # the walk only writes JSON: this is a bug
        raise AssertionError(f"constrained decoding wrote invalid JSON {text!r}: {e}") from None
    errors = value_errors(norm, value)
    if errors:
        raise ConstrainedDecodingError(f"generated JSON breaks the schema: {errors[0].message}", text)
    w.res.value, w.res.text = value, text
    return w.res if details else (value, text)
