"""Bundle directories: `model.litertlm` (+ NPU variants) and `manifest.json`, the only hand-off
between conversion and deployment. Writing, reading, verification and `.litertlm` sections."""

from __future__ import annotations

import io
import json
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


def read_manifest(bundle_dir: Path | str) -> dict[str, Any]:
    bundle_dir = Path(bundle_dir)
    mp = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise UserError(f"bundle directory {bundle_dir} does not exist",
                        "pass a directory made by `gemma4-mobile convert`")
    if not mp.is_file():
        raise UserError(f"{bundle_dir} is not a bundle (no {MANIFEST})",
                        "pass a directory made by `gemma4-mobile convert`")
    m = read_json(mp, "re-run `gemma4-mobile convert`")
    if m.get("format") != FORMAT:
        raise UserError(f"{mp} has format {m.get('format')!r}, expected {FORMAT!r}",
                        "re-run `gemma4-mobile convert` with this version")
    return m


def manifest_hash(bundle_dir: Path | str) -> str:
    return sha256_file(Path(bundle_dir) / MANIFEST)


def verify_bundle(bundle_dir: Path | str) -> list[dict[str, Any]]:
    """Check every file against the manifest. Returns one row per file (ok / mismatch / missing)."""
    bundle_dir = Path(bundle_dir)
    m = read_manifest(bundle_dir)
    rows = []
    for rel, meta in m.get("files", {}).items():
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
        raise UserError(f"{path} is not a readable .litertlm file ({e})",
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
