"""The package boundaries of DESIGN.md, checked on the source: converters never imports sdk_tools or
on_device; on_device knows nothing of the host tooling; gemma4_common depends on none of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from support import REPO

FORBIDDEN = {
    "converters": {"sdk_tools", "on_device"},
    "on_device": {"sdk_tools", "converters"},
    "gemma4_common": {"sdk_tools", "converters", "on_device"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a file, lazy ones inside functions too."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {(a.name.split(".")[0], node.lineno) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add((node.module.split(".")[0], node.lineno))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_its_boundary(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    bad = [f"{f.relative_to(REPO)}:{line} imports {top}"
           for f in files for top, line in sorted(imported_packages(f)) if top in FORBIDDEN[package]]
    assert not bad, "; ".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from on_device.agent import loop\n    import sdk_tools.cli\n")
    assert imported_packages(src) == {("on_device", 2), ("sdk_tools", 3)}
