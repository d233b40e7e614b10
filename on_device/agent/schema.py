"""Validate tool-call arguments against the tool's JSON schema before the tool runs.

Schemas may be written JSON-Schema style (``"type": "string"``) or Gemini/OpenAPI style
(``"type": "STRING"``, ``"nullable": true``); both are normalised to JSON Schema 2020-12.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from gemma4_common.gemma4_format import ToolSpec
from gemma4_common.json_schema import schema_problem, value_errors

__all__ = ["FieldError", "ToolArgumentError", "SchemaDefinitionError", "normalize_schema",
           "check_schema", "validate_arguments"]


@dataclass(frozen=True)
class FieldError:
    """One bad field: ``path`` is dotted (``options.snooze``, ``days[2]``; empty for the whole object)."""

    path: str
    message: str

    def to_dict(self) -> dict:
        return {"path": self.path, "message": self.message}


class ToolArgumentError(ValueError):
    """The arguments of a call do not satisfy the tool's schema."""

    def __init__(self, tool: str, errors: list[FieldError]) -> None:
        self.tool = tool
        self.errors = errors
        detail = "; ".join(f"{e.path or '<arguments>'}: {e.message}" for e in errors)
        super().__init__(f"invalid arguments for tool {tool!r}: {detail}")

    @property
    def fields(self) -> list[str]:
        return [e.path for e in self.errors]

    def to_dict(self) -> dict:
        return {"error": "invalid arguments", "tool": self.tool, "fields": [e.to_dict() for e in self.errors]}


class SchemaDefinitionError(ValueError):
    """A tool's parameters schema is itself not a valid JSON schema."""


_SCHEMA_KEYS_WITH_SUBSCHEMA = ("items", "additionalProperties", "not", "contains", "propertyNames")
_SCHEMA_KEYS_WITH_SUBSCHEMA_LIST = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_KEYS_WITH_SUBSCHEMA_MAP = ("properties", "patternProperties", "$defs", "definitions")


def normalize_schema(schema: Any) -> Any:
    """Lower-case type names and turn ``nullable: true`` into a ``null`` alternative (a copy)."""
    if not isinstance(schema, dict):
        return schema
    out = copy.copy(schema)
    t = out.get("type")
    if isinstance(t, str):
        t = t.lower()
    elif isinstance(t, list):
        t = [x.lower() if isinstance(x, str) else x for x in t]
    if t is not None:
        out["type"] = t
    if out.pop("nullable", False) and t is not None:
        types = t if isinstance(t, list) else [t]
        if "null" not in types:
            out["type"] = types + ["null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = list(out["enum"]) + [None]
    for key in _SCHEMA_KEYS_WITH_SUBSCHEMA:
        if isinstance(out.get(key), dict):
            out[key] = normalize_schema(out[key])
    for key in _SCHEMA_KEYS_WITH_SUBSCHEMA_LIST:
        if isinstance(out.get(key), list):
            out[key] = [normalize_schema(s) for s in out[key]]
    for key in _SCHEMA_KEYS_WITH_SUBSCHEMA_MAP:
        if isinstance(out.get(key), dict):
            out[key] = {k: normalize_schema(v) for k, v in out[key].items()}
    return out


def check_schema(schema: dict, tool: str = "?") -> dict:
    """Return the normalised schema; raise SchemaDefinitionError when it is not a valid schema."""
    norm = normalize_schema(schema or {"type": "object"})
    problem = schema_problem(norm)
    if problem is not None:
        raise SchemaDefinitionError(f"tool {tool!r}: invalid parameters schema: {problem}")
    return norm


def _path(parts) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out


def _field_errors(error) -> list[FieldError]:  # error: jsonschema.ValidationError
    base = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [r for r in error.validator_value if r not in error.instance]
        return [FieldError(_path(base + [m]), "required field is missing") for m in missing]
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema.get("properties") or {}).keys())
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            return [FieldError(_path(base + [k]), "unexpected field") for k in extra]
    return [FieldError(_path(base), error.message)]


def validate_arguments(spec: ToolSpec | dict, arguments: Any, tool: str | None = None) -> None:
    """Raise ToolArgumentError listing every bad field when ``arguments`` break the schema."""
    if isinstance(spec, ToolSpec):
        schema, tool = spec.parameters, tool or spec.name
    else:
        schema = spec
    tool = tool or "?"
    norm = check_schema(schema, tool)
    errors: list[FieldError] = []
    for err in value_errors(norm, arguments):
        errors.extend(_field_errors(err))
    if errors:
        raise ToolArgumentError(tool, errors)
