#!/usr/bin/env bash
# Set up and run the main job end to end on the built-in tiny model: train it, convert it,
# run it on the host, then on the reference emulator over ADB (deploy, benchmark, verify).
# Progress goes to stderr: rich bars at a terminal, plain lines with a heartbeat in a pipe or CI log;
# third-party log output only with --verbose.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/gemma4-mobile demo "$@"
