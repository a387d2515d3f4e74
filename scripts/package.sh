#!/usr/bin/env bash
# Builds the Debian package of the desktop app with the Tauri CLI (ui/'s devDependency
# @tauri-apps/cli) from the configuration in src-tauri/tauri.conf.json, and prints its path as
# the last line on stdout (the build's own output goes to stderr). Extra arguments go to
# `tauri build` (e.g. `--verbose`). Windows and macOS installers: see "Install / packages" in
# README.md (the same configuration, built on those systems).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(uname -s)" != Linux ]; then
  echo "package: this script builds the Linux .deb; on Windows run \`npx --prefix ui tauri build --bundles nsis,msi\`," \
    "on macOS \`npx --prefix ui tauri build --bundles dmg\` (README.md, Install / packages)" >&2
  exit 1
fi

setup_log=$(mktemp)
if ! ./scripts/setup.sh >"$setup_log" 2>&1; then
  cat "$setup_log" >&2; rm -f "$setup_log"
  echo "package: scripts/setup.sh failed" >&2; exit 1
fi
rm -f "$setup_log"

# The CLI runs from ui/node_modules: install it here the way src-tauri/build.rs does (`npm ci`,
# remembering which package-lock.json it came from), so that build.rs does not reinstall
# node_modules under the running CLI.
lock_stamp=ui/node_modules/.screenpilot-package-lock.json
if ! cmp -s ui/package-lock.json "$lock_stamp"; then
  (cd ui && npm ci --no-audit --no-fund) >&2
  cp ui/package-lock.json "$lock_stamp"
fi

version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' src-tauri/tauri.conf.json)
out="${CARGO_TARGET_DIR:-target}/release/bundle/deb"
rm -f "$out"/*.deb
start=$SECONDS
ui/node_modules/.bin/tauri build --ci --bundles deb "$@" >&2
deb=$(ls "$out"/*_"${version}"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "package: no .deb for version $version in $out" >&2; exit 1; }
echo "package: built $deb ($(du -k "$deb" | cut -f1) KiB) in $((SECONDS - start)) s" >&2
echo "$deb"
