#!/usr/bin/env bash
# Rebuilds sample-data/clipart and sample-data/clipart-objects from Debian's
# openclipart-png (public domain) and tuxpaint-stamps-default (GPL-2). The packages are
# fetched with `apt-get download` into a scratch folder; the versions used are pinned
# below so a rebuild writes the same bytes (check with `git status sample-data`).
set -euo pipefail
cd "$(dirname "$0")/.."
OPENCLIPART=openclipart-png=1:0.18+dfsg-19
TUXPAINT=tuxpaint-stamps-default=2022.06.04-1
work=$(mktemp -d)
chmod 755 "$work"  # apt-get download runs as _apt
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "$OPENCLIPART" "$TUXPAINT")
dpkg-deb -x "$work"/openclipart-png_*.deb "$work/oc"
dpkg-deb -x "$work"/tuxpaint-stamps-default_*.deb "$work/tp"
cargo run --release --quiet --bin make-clipart -- \
    "$work/oc/usr/share/openclipart/png" "$work/tp/usr/share/tuxpaint/stamps" sample-data
du -sh sample-data/clipart sample-data/clipart-objects
