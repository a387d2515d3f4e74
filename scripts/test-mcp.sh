#!/usr/bin/env bash
# The MCP server tests: the official MCP Python SDK (tests/mcp/requirements.txt) as a client of
# `screenpilot mcp`, over stdio and streamable HTTP (tests/mcp/README.md).
# Needs an X display of 1920x1080 in $DISPLAY (the caller starts Xvfb), xdotool and ImageMagick.
# The binary: $SCREENPILOT_BIN, default ${CARGO_TARGET_DIR:-target}/debug/screenpilot; the model:
# $SCREENPILOT_MODEL, default tests/fixtures/tiny (its tokenizer.json comes from scripts/setup.sh). Arguments go to pytest (e.g. -k http). Ends with one line
# `mcp tests: N passed, M failed` and exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

fail() {
  echo "test-mcp: $*" >&2
  echo "mcp tests: 0 passed, 1 failed"
  exit 1
}

bin="${SCREENPILOT_BIN:-${CARGO_TARGET_DIR:-target}/debug/screenpilot}"
case "$bin" in /*) ;; *) bin="$PWD/$bin" ;; esac
[ -x "$bin" ] || fail "no binary at $bin (cargo build, or set SCREENPILOT_BIN)"
[ -n "${DISPLAY:-}" ] || fail "no DISPLAY (start Xvfb :N -screen 0 1920x1080x24 first)"
model="${SCREENPILOT_MODEL:-$PWD/tests/fixtures/tiny}"
[ -f "$model/tokenizer.json" ] || fail "no $model/tokenizer.json (scripts/setup.sh fetches it)"
command -v xdotool >/dev/null || fail "xdotool is not installed"
command -v display >/dev/null || fail "ImageMagick (display) is not installed"
xdotool getmouselocation >/dev/null 2>&1 || fail "cannot reach the X display $DISPLAY"

# The virtual environment: created once, reinstalled only when the requirements change.
venv=.venv-mcp
requirements=tests/mcp/requirements.txt
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || fail "python3 -m venv $venv failed (install python3-venv)"
fi
want=$(sha256sum "$requirements" | cut -d' ' -f1)
have=$(cat "$venv/.requirements.sha256" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
  echo "test-mcp: installing $requirements into $venv" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" \
    || fail "pip install -r $requirements failed"
  echo "$want" >"$venv/.requirements.sha256"
fi

export SCREENPILOT_BIN="$bin"
export SCREENPILOT_MODEL="$model"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
"$venv/bin/python" -m pytest tests/mcp -p no:cacheprovider -rfE --junitxml="$report" "$@" || status=$?

counts=$("$venv/bin/python" - "$report" <<'PY' 2>/dev/null
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
total = sum(int(s.get("tests", 0)) for s in suites)
failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(total - failed - skipped, failed)
PY
) || counts=""
read -r passed failed <<<"${counts:-0 0}"
# pytest failed without reporting a failed test (collection error, no tests, interrupted).
if [ "$status" -ne 0 ] && [ "${failed:-0}" -eq 0 ]; then failed=1; fi
echo "mcp tests: ${passed:-0} passed, ${failed:-0} failed"
exit "$status"
