"""Host file helpers: copies of checkpoints to damage, and what atomic writers leave behind."""

from __future__ import annotations

import shutil
from pathlib import Path


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def leftovers(parent: Path) -> list[str]:
    """Temporary files or dirs our atomic writers would leave behind."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else []
