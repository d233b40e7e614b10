"""The tree stays clean under the ruff configuration in pyproject.toml ([tool.ruff])."""

from __future__ import annotations

import subprocess
import sys

from support import REPO


def test_ruff_is_clean():
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(REPO)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
