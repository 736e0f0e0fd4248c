#!/usr/bin/env bash
# Regenerates docs/screen-160x48.txt and docs/screen-80x24.txt: the workbench on the quick
# experiment, captured with tmux once stage 2 of TDMR runs, with the Teacher vs target
# tab in front (the same terminal resized in between, which also shows the redraw on
# resize). Needs tmux and a release build.
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
# Four tabs from the Schedule pane (focused at start) bring the Teacher vs target tab of the Runs/Log area.
for _ in 1 2 3 4; do tmux -L "$sock" send-keys -t cap Tab; done
sleep 2
tmux -L "$sock" capture-pane -p -t cap > docs/screen-160x48.txt
tmux -L "$sock" resize-window -t cap -x 80 -y 24
sleep 1
tmux -L "$sock" capture-pane -p -t cap > docs/screen-80x24.txt
echo "wrote docs/screen-160x48.txt and docs/screen-80x24.txt"
# Refresh the copy embedded in README.md.
python3 - <<'PY'
import re
readme = open("README.md").read()
screen = open("docs/screen-80x24.txt").read().rstrip("\n")
block = "<!-- screen-80x24 -->\n```text\n" + screen + "\n```\n<!-- /screen-80x24 -->"
open("README.md", "w").write(re.sub(r"<!-- screen-80x24 -->.*?<!-- /screen-80x24 -->", lambda _: block, readme, flags=re.S))
PY
