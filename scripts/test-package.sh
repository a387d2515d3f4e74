#!/usr/bin/env bash
# The package check (run by scripts/test.sh with no arguments): builds the .deb (scripts/package.sh)
# or takes the one given as $1, installs it with apt (as root, else with sudo), starts the INSTALLED
# app from /usr/bin on $DISPLAY with a throw-away HOME and XDG folders, waits (at most
# $PACKAGE_WINDOW_TIMEOUT seconds, default 60) for its "ScreenPilot" window to be mapped and to show
# more than one colour, saves a screenshot, then stops the app and removes the package.
# Every failure exits non-zero; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
[ -n "${DISPLAY:-}" ] || fail "no DISPLAY (scripts/test.sh starts an Xvfb)"
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || fail "need root or sudo to install the package"
  sudo="sudo"
fi
timeout_s=${PACKAGE_WINDOW_TIMEOUT:-60}
[ "$timeout_s" -ge 1 ] 2>/dev/null || fail "PACKAGE_WINDOW_TIMEOUT must be a whole number of seconds >= 1"
shots="${CARGO_TARGET_DIR:-target}/package-test"
mkdir -p "$shots"

if [ $# -ge 1 ]; then deb=$1; else deb=$(./scripts/package.sh | tail -n 1); fi
[ -f "$deb" ] || fail "no package at '$deb'"
deb=$(realpath "$deb")
pkg=$(dpkg-deb -f "$deb" Package) || fail "$deb is not a Debian package"
files=$(dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./||; s|^|/|')
bin=$(grep -m1 '^/usr/bin/.' <<<"$files" || true)
desktop=$(grep -m1 '^/usr/share/applications/.*\.desktop$' <<<"$files" || true)
[ -n "$bin" ] || fail "$deb installs nothing in /usr/bin"
[ -n "$desktop" ] || fail "$deb has no .desktop file"
echo "test-package: $deb: package $pkg, binary $bin, desktop entry $desktop"

was_installed=0
dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" && was_installed=1
tmp=$(mktemp -d)
app_pid=""
cleanup() {
  if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then
    kill "$app_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$app_pid" 2>/dev/null || true
  fi
  # A package that was installed before this check stays (upgraded to this build).
  if [ "$was_installed" = 0 ] && dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    $sudo dpkg -r "$pkg" >/dev/null || echo "test-package: could not remove $pkg" >&2
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# apt resolves the Depends of the package (already present after scripts/setup.sh, so this also
# works offline); a missing dependency fails here.
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$deb" >"$tmp/install.log" 2>&1; then
  cat "$tmp/install.log" >&2
  fail "apt-get install $deb"
fi
dpkg-query -W -f='${Status}' "$pkg" | grep -q "install ok installed" || fail "$pkg is not installed after apt-get install"
[ -x "$bin" ] || fail "$bin is missing after the install"
[ -f "$desktop" ] || fail "$desktop is missing after the install"
grep -q "^Exec=$(basename "$bin")" "$desktop" || fail "$desktop does not start $(basename "$bin"): $(grep ^Exec= "$desktop")"
icon=$(sed -n 's/^Icon=//p' "$desktop")
ls /usr/share/icons/hicolor/*/apps/"$icon".png >/dev/null 2>&1 || fail "no hicolor icon '$icon' installed"
if ldd "$bin" | grep -q 'not found'; then ldd "$bin" | grep 'not found' >&2; fail "$bin misses shared libraries"; fi
# The FFmpeg libraries come from the -dev packages here; on a user's machine only the package's
# Depends bring them, so each one the binary links must be held by a package it depends on.
depends=$(dpkg-deb -f "$deb" Depends)
for so in $(ldd "$bin" | awk '$1 ~ /^lib(avcodec|avformat|avutil|swscale)\./ {print $3}'); do
  owner=$(dpkg -S "$(readlink -f "$so")" | head -n 1 | cut -d: -f1)
  grep -Eq "(^|[ ,])$owner([ ,(]|$)" <<<"$depends" || fail "$bin links $so (package $owner), not in the package's Depends: $depends"
done
echo "test-package: installed $pkg $(dpkg-query -W -f='${Version}' "$pkg")"

# The installed app, with settings and data in a throw-away home.
mkdir -p "$tmp/home" "$tmp/config" "$tmp/data" "$tmp/cache"
HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/config" XDG_DATA_HOME="$tmp/data" XDG_CACHE_HOME="$tmp/cache" \
  "$bin" >"$tmp/app.log" 2>&1 &
app_pid=$!
start=$SECONDS
win=$(timeout "$timeout_s" xdotool search --sync --onlyvisible --name '^ScreenPilot$' 2>/dev/null | head -n 1) || true
if [ -z "$win" ]; then
  kill -0 "$app_pid" 2>/dev/null && state="still running" || state="exited"
  cat "$tmp/app.log" >&2
  fail "no visible 'ScreenPilot' window within $timeout_s s ($bin $state)"
fi
[ "$(readlink "/proc/$app_pid/exe")" = "$bin" ] || fail "the running app is $(readlink "/proc/$app_pid/exe"), not $bin"
echo "test-package: window $win mapped after $((SECONDS - start)) s"

# The web view has drawn the UI once the window shows more than one colour.
eval "$(xdotool getwindowgeometry --shell "$win")"
shot="$shots/window.png"
drawn=0
while [ $((SECONDS - start)) -lt "$timeout_s" ]; do
  import -silent -window root -crop "${WIDTH}x${HEIGHT}+${X}+${Y}" +repage "$shot" 2>/dev/null || true
  if [ -f "$shot" ] && [ "$(convert "$shot" -format '%k' info: 2>/dev/null || echo 0)" -gt 8 ]; then drawn=1; break; fi
  sleep 1
done
[ "$drawn" = 1 ] || { cat "$tmp/app.log" >&2; fail "the window stayed blank for $timeout_s s (screenshot: $shot)"; }
kill -0 "$app_pid" 2>/dev/null || { cat "$tmp/app.log" >&2; fail "the app exited after showing its window"; }
echo "test-package: window drawn after $((SECONDS - start)) s, ${WIDTH}x${HEIGHT}, $(convert "$shot" -format '%k' info:) colours (screenshot: $shot)"

kill "$app_pid"
for _ in $(seq 100); do kill -0 "$app_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$app_pid" 2>/dev/null && fail "the app did not stop within 10 s of SIGTERM"
app_pid=""
if [ "$was_installed" = 0 ]; then
  $sudo dpkg -r "$pkg" >/dev/null || fail "dpkg -r $pkg"
  [ ! -e "$bin" ] || fail "$bin is still there after dpkg -r"
  echo "test-package: removed $pkg"
fi
echo "test-package: ok"
