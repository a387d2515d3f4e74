#!/usr/bin/env bash
# The run command: installs what is needed (scripts/setup.sh), builds the release binary and runs
# `screenpilot` with your arguments. With no arguments it asks the bundled tiny test model (random
# weights: the answer is gibberish, the pipeline is real) about a bundled screenshot.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
features=()
[ "${SCREENPILOT_CUDA:-0}" = 1 ] && features=(--features cuda)
cargo build --release --quiet -p screenpilot-cli "${features[@]}"
if [ $# -eq 0 ]; then
  set -- ask --model tests/fixtures/tiny --image tests/fixtures/images/trap_656x208.png --max-tokens 24 \
    "What is on this screen?"
fi
exec target/release/screenpilot "$@"
