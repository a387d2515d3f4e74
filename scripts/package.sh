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

# The app links the system's FFmpeg libraries (video files, crates/engine/src/video_file.rs), and
# Tauri's bundler does not look up shared-library dependencies: the package depends on the
# packages that hold the exact libraries this build links (libavcodec59 ... on Debian 12), added
# to the `depends` of tauri.conf.json.
ffmpeg_deps=()
for lib in libavcodec libavformat libavutil libswscale; do
  so=$(readlink -f "$(pkg-config --variable=libdir "$lib")/$lib.so")
  owner=$(dpkg -S "$so" 2>/dev/null | head -n 1 | cut -d: -f1)
  [ -n "$owner" ] || { echo "package: no Debian package holds $so (scripts/setup.sh installs $lib-dev)" >&2; exit 1; }
  ffmpeg_deps+=("$owner")
done
deb_config=$(node -e '
  const conf = require("./src-tauri/tauri.conf.json");
  const depends = conf.bundle.linux.deb.depends.concat(process.argv.slice(1));
  console.log(JSON.stringify({ bundle: { linux: { deb: { depends } } } }));
' "${ffmpeg_deps[@]}")

version=$(sed -n 's/^  "version": "\(.*\)",$/\1/p' src-tauri/tauri.conf.json)
out="${CARGO_TARGET_DIR:-target}/release/bundle/deb"
rm -f "$out"/*.deb
start=$SECONDS
ui/node_modules/.bin/tauri build --ci --bundles deb --config "$deb_config" "$@" >&2
deb=$(ls "$out"/*_"${version}"_*.deb 2>/dev/null | head -n 1)
[ -n "$deb" ] || { echo "package: no .deb for version $version in $out" >&2; exit 1; }
echo "package: built $deb ($(du -k "$deb" | cut -f1) KiB) in $((SECONDS - start)) s" >&2
echo "$deb"
