#!/usr/bin/env bash
# Renders the app icon set in assets/icons from assets/icon.svg with the Tauri CLI (ui/'s devDependency):
# the PNG sizes (Linux .deb: 32, 64, 128, 256, 512; the window and tray icons), icon.ico (Windows) and icon.icns (macOS).
# The mobile and Windows Store images the CLI also makes are not used and are dropped.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x ui/node_modules/.bin/tauri ] || (cd ui && npm ci --no-audit --no-fund)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ui/node_modules/.bin/tauri icon assets/icon.svg -o "$tmp/out" >"$tmp/log" 2>&1 || { cat "$tmp/log" >&2; exit 1; }
mkdir -p assets/icons
for f in 32x32.png 64x64.png 128x128.png icon.png icon.ico icon.icns; do
  cp "$tmp/out/$f" assets/icons/
done
# The CLI's 256-pixel image is 128x128@2x.png, which the .deb would install in a "256x256@2" hicolor
# folder that icon themes ignore: it is kept as 256x256.png.
cp "$tmp/out/128x128@2x.png" assets/icons/256x256.png
echo "assets/icons: $(ls assets/icons | tr '\n' ' ')"
