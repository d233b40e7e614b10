"""Helpers the tests share (fixtures stay in the conftest files). tests/ is on sys.path through
pytest's `pythonpath` setting, so tests import these as `from support.cli import cli`."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
