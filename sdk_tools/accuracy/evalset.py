"""Evaluation sets for `verify` and `sweep`: JSONL files of {"prompt": ..., "target": ...} lines.
The default set ships with the project (data/default_eval.jsonl, drawn from the tiny models'
corpus); `--eval FILE.jsonl` loads the user's own."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_write_text

DEFAULT_EVAL = Path(__file__).parent / "data" / "default_eval.jsonl"
FORMAT_HINT = 'one JSON object per line: {"prompt": "...", "target": "..."} (optional "kind")'


@dataclass(frozen=True)
class EvalItem:
    prompt: str  # sent as is (no chat template): render it into the file if the model needs one
    target: str  # the continuation that is scored token by token
    kind: str = ""


def load_eval(path: Path | str | None = None, limit: int | None = None) -> list[EvalItem]:
    """The items of `path` (the default set when None), the first `limit` of them if given."""
    path = Path(path) if path is not None else DEFAULT_EVAL
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be at least 1 (got {limit})", "pass --limit 1 or more, or omit it")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"evaluation file {path} does not exist", f"pass a JSONL file with {FORMAT_HINT}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"evaluation file {path} is not UTF-8 text (byte {e.start})",
                        f"save it as UTF-8 JSONL with {FORMAT_HINT}") from None
    except OSError as e:
        raise UserError(f"cannot read evaluation file {path} ({e.strerror})", "check the path") from None
    items: list[EvalItem] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path} line {n} is not valid JSON ({e.msg} at column {e.colno})",
                            f"fix that line; the file needs {FORMAT_HINT}") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path} line {n} is a JSON {type(obj).__name__}, not an object",
                            f"the file needs {FORMAT_HINT}")
        for key in ("prompt", "target"):
            if not isinstance(obj.get(key), str):
                what = "is missing" if key not in obj else f"is a {type(obj[key]).__name__}, not a string"
                raise UserError(f"{path} line {n}: \"{key}\" {what}", f"the file needs {FORMAT_HINT}")
        if not obj["target"]:
            raise UserError(f"{path} line {n}: \"target\" is empty", "give every line a non-empty target to score")
        items.append(EvalItem(obj["prompt"], obj["target"], str(obj.get("kind", ""))))
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise UserError(f"evaluation file {path} has no items", f"add lines with {FORMAT_HINT}")
    return items


def write_eval(items: list[EvalItem], path: Path | str) -> Path:
    path = Path(path)
    atomic_write_text(path, "".join(json.dumps(asdict(i), ensure_ascii=False) + "\n" for i in items))
    return path


def default_items_from_corpus() -> list[EvalItem]:
    """What data/default_eval.jsonl holds: the tiny models' fixed evaluation examples, kinds
    interleaved so that the first N items of the file (`--limit N`) cover every kind."""
    from sdk_tools.tinymodels.corpus import eval_examples

    by_kind: dict[str, list[EvalItem]] = {}
    for e in eval_examples():
        by_kind.setdefault(e.kind, []).append(EvalItem(e.prompt, e.target, e.kind))
    out: list[EvalItem] = []
    queues = list(by_kind.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


if __name__ == "__main__":  # regenerate the shipped default set: python -m sdk_tools.accuracy.evalset
    print(write_eval(default_items_from_corpus(), DEFAULT_EVAL))
