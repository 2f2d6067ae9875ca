#!/usr/bin/env bash
# Adds painmon to the desktop menu of the current user, pointing at an unpacked bundle.
#   bash packaging/linux/install_desktop.sh [BUNDLE_DIR]   (default: packaging/dist/painmon)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bundle=$(cd "${1:-$here/../dist/painmon}" && pwd)
[[ -x "$bundle/painmon" ]] || { echo "no painmon executable in $bundle" >&2; exit 1; }
icon="$bundle/_internal/painmon/assets/icon.png"
apps="${XDG_DATA_HOME:-$HOME/.local/share}/applications"
mkdir -p "$apps"
sed -e "s|^Exec=.*|Exec=\"$bundle/painmon\" app|" -e "s|^Icon=.*|Icon=$icon|" \
    "$here/painmon.desktop" > "$apps/painmon.desktop"
if command -v desktop-file-validate >/dev/null; then desktop-file-validate "$apps/painmon.desktop"; fi
echo "installed $apps/painmon.desktop -> $bundle/painmon app"
