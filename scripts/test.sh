#!/usr/bin/env bash
# The test command: installs what the tests need (scripts/setup.sh), starts a virtual X display
# when there is none (the capture and input tests need one), and runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

if [ -z "${DISPLAY:-}" ]; then
  display=":$((90 + RANDOM % 9))"
  # -noreset: without it Xvfb resets when its last client leaves and captures fail intermittently.
  # No window manager: the input tests rely on exact window placement and focus following the
  # pointer; the window-capture test (crates/desktop/tests/window_capture.rs) starts openbox itself.
  Xvfb "$display" -screen 0 1920x1080x24 -nolisten tcp -noreset >/dev/null 2>&1 &
  xvfb_pid=$!
  trap 'kill $xvfb_pid 2>/dev/null || true' EXIT
  export DISPLAY="$display"
  for _ in $(seq 50); do xdotool getmouselocation >/dev/null 2>&1 && break; sleep 0.1; done
  xdotool getmouselocation >/dev/null 2>&1 || { echo "test: Xvfb did not start" >&2; exit 1; }
fi

# A CI build starts from nothing and runs once: incremental caches would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

log=$(mktemp)
set -o pipefail
status=0
cargo test --workspace --locked "$@" 2>&1 | tee "$log" || status=$?

# With no test filter: the server's 60-second soak (bench/soak.py; the 30-minute run is in
# docs/SECURITY.md), the .deb install check, then the fuzz smoke check: every cargo-fuzz target for 30 s from its
# committed corpus (scripts/fuzz.sh; the corpora are also replayed by cargo test,
# tests/fuzz_regressions.rs). The fuzz build takes 10-20 min on two cores (docs/FUZZING.md).
if [ $# -eq 0 ]; then
  soak_csv=$(mktemp)
  if python3 bench/soak.py --binary "${CARGO_TARGET_DIR:-target}/debug/screenpilot" --duration 60 --check --csv "$soak_csv"; then
    echo "test soak (60 s) ... ok" | tee -a "$log"; echo "extra: 1 passed" >>"$log"
  else
    echo "test soak (60 s) ... FAILED" | tee -a "$log"; echo "extra: 1 failed" >>"$log"; status=1
  fi
  rm -f "$soak_csv"
  # The MCP server with the official MCP Python SDK as its client, stdio and HTTP
  # (scripts/test-mcp.sh: tests/mcp/, a venv in .venv-mcp; ~2 min).
  mcp_log=$(mktemp)
  if SCREENPILOT_BIN="${CARGO_TARGET_DIR:-target}/debug/screenpilot" scripts/test-mcp.sh 2>&1 | tee "$mcp_log"; then :; else status=1; fi
  # Its closing line counts every test: "mcp tests: N passed, M failed".
  awk '/^mcp tests: [0-9]+ passed, [0-9]+ failed$/ { print "extra: " $3 " passed"; print "extra: " $5 " failed" }' "$mcp_log" >>"$log"
  grep -qE '^mcp tests: [0-9]+ passed, [0-9]+ failed$' "$mcp_log" || { echo "extra: 1 failed" >>"$log"; status=1; }
  rm -f "$mcp_log"
  # The Debian package: build it, install it, start the installed app and wait for its window,
  # remove it (scripts/test-package.sh; a release build of the app: 13 min cold in a clean-clone
  # CI run on two cores, 27 min on two busy ones, ~2 min after a change to src-tauri).
  if scripts/test-package.sh; then
    echo "test package (.deb install) ... ok" | tee -a "$log"; echo "extra: 1 passed" >>"$log"
  else
    echo "test package (.deb install) ... FAILED" | tee -a "$log"; echo "extra: 1 failed" >>"$log"; status=1
  fi
  fuzz_log=$(mktemp)
  if scripts/fuzz.sh 30 2>&1 | tee "$fuzz_log"; then
    echo "test fuzz smoke (30 s a target) ... ok" | tee -a "$log"
  else
    echo "test fuzz smoke (30 s a target) ... FAILED" | tee -a "$log"; status=1
  fi
  # One result per target: "fuzz: <target> ok" or "fuzz: <target> FAILED" (scripts/fuzz.sh).
  awk '/^fuzz: [a-z_]+ ok$/ { p++ } /^fuzz: [a-z_]+ FAILED$/ { f++ }
       END { if (p) print "extra: " p " passed"; if (f) print "extra: " f " failed" }' "$fuzz_log" >>"$log"
  if ! grep -qE '^fuzz: [a-z_]+ (ok|FAILED)$' "$fuzz_log"; then echo "extra: 1 failed" >>"$log"; status=1; fi
  rm -f "$fuzz_log"
fi
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     /^extra: [0-9]+ passed$/ { p += $2 } /^extra: [0-9]+ failed$/ { f += $2 }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
