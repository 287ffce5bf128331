#!/usr/bin/env bash
# Register a built bundle with the current user's desktop (no root needed):
#   ~/.local/bin/condiff-viewer, ~/.local/bin/condiff-engine   links to the bundle's programs
#   ~/.local/share/icons/hicolor/256x256/apps/condiff.png      the icon
#   ~/.local/share/applications/condiff.desktop                the menu entry
# Usage: packaging/install-desktop.sh [BUNDLE_DIR]   (default: <repo>/dist/condiff)
#        packaging/install-desktop.sh --uninstall
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="${XDG_DATA_HOME:-$HOME/.local/share}"
BIN="$HOME/.local/bin"
ICON_DIR="$DATA/icons/hicolor/256x256/apps"
APPS="$DATA/applications"

if [[ "${1:-}" == "--uninstall" ]]; then
    rm -f "$BIN/condiff-viewer" "$BIN/condiff-engine" "$ICON_DIR/condiff.png" "$APPS/condiff.desktop"
    echo "install-desktop.sh: removed condiff's links, icon and menu entry"
    exit 0
fi

BUNDLE="$(cd "${1:-$ROOT/dist/condiff}" && pwd)"
if [[ ! -x "$BUNDLE/condiff-viewer" ]]; then
    echo "install-desktop.sh: $BUNDLE/condiff-viewer not found; build first (packaging/build.sh)" >&2
    exit 1
fi
mkdir -p "$BIN" "$ICON_DIR" "$APPS"
ln -sf "$BUNDLE/condiff-viewer" "$BIN/condiff-viewer"
ln -sf "$BUNDLE/condiff-engine" "$BIN/condiff-engine"
install -m 644 "$ROOT/resources/icons/condiff.png" "$ICON_DIR/condiff.png"
# Point Exec at the bundle itself, so the menu entry works even when ~/.local/bin is not on PATH.
sed -e "s|^Exec=condiff-viewer|Exec=\"$BUNDLE/condiff-viewer\"|" -e "s|^TryExec=.*|TryExec=$BUNDLE/condiff-viewer|" \
    "$ROOT/resources/condiff.desktop" > "$APPS/condiff.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$APPS" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q "$DATA/icons/hicolor" 2>/dev/null || true
echo "install-desktop.sh: installed condiff for ${USER:-$(id -un)} from $BUNDLE"
