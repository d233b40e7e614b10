"""The one JSON Schema checker (draft 2020-12, the pinned jsonschema library): whether a schema is
valid, and what in a JSON value breaks one. Callers turn the findings into their own errors."""

from __future__ import annotations

from typing import Any


def _jsonschema():
    import jsonschema  # 1-1.5 s to import: only when something is checked, not at every CLI start

    return jsonschema


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a valid JSON Schema 2020-12 document (the library's message), or None."""
    js = _jsonschema()
    try:
        js.Draft202012Validator.check_schema(schema)
    except js.SchemaError as e:
        return e.message
    return None


def _path_key(path) -> list[tuple[int, int, str]]:
    # Array indexes in order and before keys (a plain sort fails on a mix of int and str).
    return [(0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in path]


def value_errors(schema: Any, value: Any) -> list:
    """Every jsonschema.ValidationError of `value` against a valid `schema`, by path in the value
    (errors at one path in the library's order); empty when it is valid."""
    errors = _jsonschema().Draft202012Validator(schema).iter_errors(value)
    return sorted(errors, key=lambda e: _path_key(e.absolute_path))
