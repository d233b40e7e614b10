"""Session fixtures: trained tiny Gemma 4 checkpoints and their bundles (built once, cached by
content hash under $GEMMA4_MOBILE_HOME or ~/.cache/gemma4-mobile), plus the emulator fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# tests/ is on sys.path through pyproject's [tool.pytest.ini_options] pythonpath
pytest_plugins = ["conftest_emulator"]

# The recipes the accuracy/size tests compare; converted together (one float export).
# int4 is channelwise here: the tiny models have 16-wide per-layer inputs, which 32-wide int4 blocks
# cannot tile (convert says so in one line); blockwise int4 is for real-size checkpoints.
TEST_RECIPES = ["fp32", "dynamic_wi8_afp32", "dynamic_wi4c_afp32"]


@pytest.fixture(scope="session")
def tiny_e2b() -> Path:
    from sdk_tools.tinymodels.build import build_tiny

    return build_tiny("e2b-tiny")


@pytest.fixture(scope="session")
def tiny_e4b() -> Path:
    from sdk_tools.tinymodels.build import build_tiny

    return build_tiny("e4b-tiny")


@pytest.fixture(scope="session")
def e2b_bundles(tiny_e2b) -> dict[str, Path]:
    """{recipe: bundle dir} for the e2b-tiny checkpoint: fp32, int8, int4 blockwise."""
    from sdk_tools.tinymodels.build import cached_bundles

    return cached_bundles(tiny_e2b, TEST_RECIPES)


@pytest.fixture(scope="session")
def e2b_int8_bundle(e2b_bundles) -> Path:
    return e2b_bundles["dynamic_wi8_afp32"]


@pytest.fixture(scope="session")
def e2b_fp32_bundle(e2b_bundles) -> Path:
    return e2b_bundles["fp32"]


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
