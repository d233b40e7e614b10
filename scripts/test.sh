#!/usr/bin/env bash
# Set up and run every test: the Python suite (real tiny models, real LiteRT-LM, the reference
# emulator over real ADB) and the Android sample's Kotlin checks (kotlinc, JUnit, ktlint, aapt).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
bash android_sample/ci_check.sh
