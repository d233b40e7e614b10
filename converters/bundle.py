"""Bundle directories: `model.litertlm` (+ NPU variants) and `manifest.json`, the only hand-off
between conversion and deployment. Writing, reading, verification and `.litertlm` sections."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path
from typing import Any

from gemma4_common.errors import UserError
from gemma4_common.fsutil import atomic_write_text, read_json, sha256_file

MANIFEST = "manifest.json"
FORMAT = "gemma4-mobile-bundle/1"
MAIN_MODEL = "model.litertlm"


def file_entries(bundle_dir: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file in the bundle except the manifest (posix relative paths)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(bundle_dir.rglob("*")):
        if p.is_file() and p.name != MANIFEST and not p.name.startswith("."):
            rel = p.relative_to(bundle_dir).as_posix()
            out[rel] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    return out


def write_manifest(bundle_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    manifest = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "main_model": MAIN_MODEL, **fields, "files": file_entries(bundle_dir)}
    atomic_write_text(bundle_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    return manifest


def is_bundle(path: Path) -> bool:
    return (path / MANIFEST).is_file()


_FIX = "re-run `gemma4-mobile convert`, or copy the bundle again"
_HEX = frozenset("0123456789abcdef")
# Fields other code reads, with the type each must have when present.
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "variant": (str, type(None)), "model_type": (str, type(None)), "created": (str,),
    "recipe": (dict, str), "source": (dict,), "export": (dict,), "text_config": (dict,), "sections": (list,),
    "npu": (dict,), "tool_versions": (dict,),
}


def _bad(mp: Path, what: str) -> UserError:
    return UserError(f"{mp} is not a valid bundle manifest ({what})", _FIX)


def check_bundle_name(bundle_dir: Path, name: Any, mp: Path, field: str) -> str:
    """A file name from the manifest, refused unless it stays inside the bundle: relative, no `..`,
    no backslash or NUL, and (following any symlink in the bundle) resolving below the bundle."""
    if not isinstance(name, str) or not name:
        raise _bad(mp, f"{field} must be a non-empty string, not {type(name).__name__} {str(name)[:40]!r}")
    shown = repr(name[:80])
    if "\0" in name or "\\" in name or any(ord(c) < 32 for c in name):
        raise _bad(mp, f"{field} {shown} has a backslash or control character")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _bad(mp, f"{field} {shown} is an absolute path; bundle files are named relative to the bundle")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise _bad(mp, f"{field} {shown} has an empty, '.' or '..' component")
    root = bundle_dir.resolve()
    real = (bundle_dir / name).resolve()
    if real != root and root not in real.parents:
        raise _bad(mp, f"{field} {shown} resolves outside the bundle directory (a symlink in the bundle?)")
    return name


def validate_manifest(m: Any, bundle_dir: Path, mp: Path) -> dict[str, Any]:
    """Refuse a manifest whose structure or file names cannot be trusted, before anything reads a file."""
    if not isinstance(m, dict):
        raise _bad(mp, f"a JSON {type(m).__name__}, expected an object")
    if m.get("format") != FORMAT:
        raise UserError(f"{mp} has format {str(m.get('format'))[:60]!r}, expected {FORMAT!r}",
                        "re-run `gemma4-mobile convert` with this version")
    for key, types in _FIELD_TYPES.items():
        if key in m and not isinstance(m[key], types):
            raise _bad(mp, f"{key} is a {type(m[key]).__name__}")
    if isinstance(m.get("recipe"), dict) and not isinstance(m["recipe"].get("name"), str):
        raise _bad(mp, "recipe.name must be a string")
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        raise _bad(mp, "no files to verify" if not files else f"files is a {type(files).__name__}")
    for rel, meta in files.items():
        check_bundle_name(bundle_dir, rel, mp, "a files entry")
        if rel == MANIFEST:
            raise _bad(mp, "files lists the manifest itself")
        if not isinstance(meta, dict):
            raise _bad(mp, f"files[{rel!r}] is a {type(meta).__name__}")
        sha, size = meta.get("sha256"), meta.get("size")
        if not isinstance(sha, str) or len(sha) != 64 or not set(sha) <= _HEX:
            raise _bad(mp, f"files[{rel!r}].sha256 is not a sha256 hex digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _bad(mp, f"files[{rel!r}].size is not a byte count")
    main = check_bundle_name(bundle_dir, m.get("main_model"), mp, "main_model")
    if main not in files:
        raise _bad(mp, f"main_model {main!r} is not among its files")
    npu = m.get("npu") or {}
    targets = npu.get("targets", [])
    if not isinstance(targets, list):
        raise _bad(mp, "npu.targets is not a list")
    for t in targets:
        if not isinstance(t, dict):
            raise _bad(mp, "an npu target is not an object")
        for field in ("model", "config"):
            if t.get(field) is not None:
                check_bundle_name(bundle_dir, t[field], mp, f"npu target {field}")
    return m


def read_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    bundle_dir = Path(bundle_dir)
    mp = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise UserError(f"bundle directory {bundle_dir} does not exist",
                        "pass a directory made by `gemma4-mobile convert`")
    if not mp.is_file():
        raise UserError(f"{bundle_dir} is not a bundle (no {MANIFEST})",
                        "pass a directory made by `gemma4-mobile convert`")
    return validate_manifest(read_json(mp, _FIX), bundle_dir, mp)


def manifest_hash(bundle_dir: Path | str) -> str:
    return sha256_file(Path(bundle_dir) / MANIFEST)


def verify_bundle(bundle_dir: Path | str) -> list[dict[str, Any]]:
    """Check every file against the manifest. Returns one row per file (ok / mismatch / missing).
    The names were checked by read_manifest: nothing outside the bundle is read or described."""
    bundle_dir = Path(bundle_dir)
    m = read_manifest(bundle_dir)
    rows = []
    for rel, meta in m["files"].items():
        p = bundle_dir / rel
        if not p.is_file():
            rows.append({"file": rel, "status": "missing", "expected": meta["sha256"]})
            continue
        size = p.stat().st_size
        digest = sha256_file(p)
        ok = digest == meta["sha256"] and size == meta["size"]
        rows.append({"file": rel, "status": "ok" if ok else "mismatch", "size": size,
                     "sha256": digest, "expected": meta["sha256"]})
    return rows


def require_verified(bundle_dir: Path | str) -> dict[str, Any]:
    rows = verify_bundle(bundle_dir)
    bad = [r for r in rows if r["status"] != "ok"]
    if bad:
        r = bad[0]
        raise UserError(f"bundle file {r['file']} is {r['status']} (sha256 does not match the manifest)",
                        "re-run `gemma4-mobile convert` or copy the bundle again")
    return read_manifest(bundle_dir)


def litertlm_sections(path: Path | str) -> dict[str, Any]:
    """Version, system metadata and sections (type, model_type, size) of a .litertlm file."""
    from litert_lm_builder import litertlm_core, litertlm_peek

    try:
        meta = litertlm_peek.read_litertlm_header(str(path), io.StringIO())
    except (ValueError, OSError, IndexError) as e:
        detail = re.sub(r"b'[^']*'|b\"[^\"]*\"", "b'...'", " ".join(str(e).split()))[:120]  # no file bytes
        raise UserError(f"{path} is not a readable .litertlm file ({type(e).__name__}: {detail})",
                        "re-run `gemma4-mobile convert`") from None
    with open(path, "rb") as f:
        f.seek(8)
        import struct

        version = ".".join(str(v) for v in struct.unpack("<III", f.read(12)))
    sysmeta = {}
    sm = meta.SystemMetadata()
    if sm:
        for i in range(sm.EntriesLength()):
            d = litertlm_peek.kvp_to_dict(sm.Entries(i))
            sysmeta[d["key"]] = d["value"]
    sections = []
    sec = meta.SectionMetadata()
    for i in range(sec.ObjectsLength() if sec else 0):
        o = sec.Objects(i)
        items = {}
        for j in range(o.ItemsLength()):
            d = litertlm_peek.kvp_to_dict(o.Items(j))
            items[d["key"]] = d["value"]
        sections.append({
            "index": i,
            "data_type": litertlm_core.any_section_data_type_to_string(o.DataType()),
            "model_type": items.get("model_type"),
            "items": items,
            "begin": o.BeginOffset(),
            "end": o.EndOffset(),
            "size": o.EndOffset() - o.BeginOffset(),
        })
    return {"version": version, "system_metadata": sysmeta, "sections": sections}
