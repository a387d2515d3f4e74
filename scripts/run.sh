#!/usr/bin/env bash
# The run command: installs what is needed (scripts/setup.sh), then
#   - with no arguments, builds and starts the desktop app (on a machine without a display it asks
#     the bundled tiny test model about a bundled screenshot instead: random weights, gibberish
#     answer, real pipeline);
#   - with arguments, builds and runs the `screenpilot` command line with them.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
features=()
[ "${SCREENPILOT_CUDA:-0}" = 1 ] && features=(--features cuda)
if [ $# -eq 0 ] && [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  cargo build --release --quiet -p screenpilot-app
  exec target/release/screenpilot-app
fi
cargo build --release --quiet -p screenpilot-cli "${features[@]}"
if [ $# -eq 0 ]; then
  echo "run: no display found; asking the tiny test model from the command line instead" >&2
  set -- ask --model tests/fixtures/tiny --image tests/fixtures/images/trap_656x208.png --max-tokens 24 \
    "What is on this screen?"
fi
exec target/release/screenpilot "$@"
