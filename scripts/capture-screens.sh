#!/usr/bin/env bash
# Regenerates docs/screen-160x48.txt and docs/screen-80x24.txt: the workbench on the quick
# experiment, captured with tmux once stage 2 of TDMR runs (the same terminal resized
# in between, which also shows the redraw on resize). Needs tmux and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
sock="tdmr-capture-$$"
out=$(mktemp -d)
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$out"' EXIT
tmux -L "$sock" new-session -d -s cap -x 160 -y 48 \
    "exec ./target/release/tdmr tui sample-data/experiments/quick.toml --out $out/run --start"
for _ in $(seq 1 600); do
    if tmux -L "$sock" capture-pane -p -t cap | grep -q "▶ tdmr/align+kd"; then break; fi
    sleep 0.5
done
sleep 2
tmux -L "$sock" capture-pane -p -t cap > docs/screen-160x48.txt
tmux -L "$sock" resize-window -t cap -x 80 -y 24
sleep 1
tmux -L "$sock" capture-pane -p -t cap > docs/screen-80x24.txt
echo "wrote docs/screen-160x48.txt and docs/screen-80x24.txt"
