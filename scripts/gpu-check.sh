#!/usr/bin/env bash
# The CUDA check, for the GPU machine (well under 5 minutes on one H200):
#   scripts/gpu-check.sh OUT_DIR
# from the repository root, with the binary from scripts/build-cuda.sh at
# target-cuda/release/tdmr (or $TDMR_BIN). It prints the device, runs `tdmr bench` on
# the GPU and on the CPU, runs the default experiment headless on CUDA (k = 10, seed 0)
# and compares its accuracies with the CPU run of the same seed
# (sample-data/reference/cpu-k10-seed0-summary.json). Everything lands in OUT_DIR.
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR}
mkdir -p "$out"
bin=${TDMR_BIN:-target-cuda/release/tdmr}
exec > >(tee "$out/gpu-check.log") 2>&1
# What travels is target-cuda/tdmr-cuda.xz (the tree's size limit); unpack it once.
if [ ! -x "$bin" ] && [ -f target-cuda/tdmr-cuda.xz ]; then
    mkdir -p "$(dirname "$bin")"
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        target-cuda/tdmr-cuda.xz "$bin" && chmod +x "$bin"
fi

# The binary links CUDA 13's cuBLAS, cuRAND and NVRTC: take them from the machine's
# PyTorch wheels (nvidia-*), unless LD_LIBRARY_PATH already provides them.
libs=$(python3 - <<'PY' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
dirs = set()
for r in roots:
    for pat in ("nvidia/*/lib", "nvidia/cu13/lib"):
        for d in glob.glob(os.path.join(r, pat)):
            if glob.glob(os.path.join(d, "lib*.so*")):
                dirs.add(d)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi failed"
missing=$(ldd "$bin" | grep "not found" || true)
if [ -n "$missing" ]; then
    echo "libraries not found (set LD_LIBRARY_PATH):"
    echo "$missing"
    exit 1
fi

echo "== bench (cuda, f32)"
"$bin" bench --device cuda --json > "$out/bench-cuda.json" && "$bin" bench --device cuda || echo "bench on cuda failed"
echo "== bench (cuda, bf16 foundation)"
"$bin" bench --device cuda --precision bf16 --json > "$out/bench-cuda-bf16.json" || echo "bench bf16 failed"
echo "== bench (cpu)"
"$bin" bench --device cpu --no-before --json > "$out/bench-cpu.json" || echo "bench on cpu failed"

echo "== default experiment on cuda (k = 10, seed 0)"
start=$(date +%s)
"$bin" run sample-data/experiments/digits.toml --device cuda --seed 0 --out "$out/run-cuda" | tail -15
echo "wall: $(( $(date +%s) - start )) s"

python3 - "$out" <<'PY'
import json, sys, os
out = sys.argv[1]
def load(p):
    try:
        return json.load(open(p))
    except Exception as e:
        return None
rows = ["| workload | batch | size | CPU img/s | GPU f32 img/s | GPU bf16 img/s |", "|---|---|---|---|---|---|"]
cpu, gpu, bf = (load(os.path.join(out, f)) for f in ("bench-cpu.json", "bench-cuda.json", "bench-cuda-bf16.json"))
if gpu:
    for i, f in enumerate(gpu["figures"]):
        c = cpu["figures"][i]["images_per_s"] if cpu else float("nan")
        b = bf["figures"][i]["images_per_s"] if bf else float("nan")
        rows.append(f"| {f['workload']} | {f['batch']} | {f['size']}² | {c:.1f} | {f['images_per_s']:.1f} | {b:.1f} |")
ref = load("sample-data/reference/cpu-k10-seed0-summary.json") or {}
run = load(os.path.join(out, "run-cuda", "summary.json")) or {}
rows += ["", "| method | CPU test acc | CUDA test acc | difference (points) |", "|---|---|---|---|"]
worst = 0.0
for m in ["scratch", "linear-probe", "vp", "kd", "tdmr-teacher", "tdmr"]:
    if m in ref and m in run:
        d = 100 * (run[m]["test_acc"] - ref[m]["test_acc"])
        worst = max(worst, abs(d))
        rows.append(f"| {m} | {100*ref[m]['test_acc']:.2f}% | {100*run[m]['test_acc']:.2f}% | {d:+.2f} |")
    else:
        rows.append(f"| {m} | {'-' if m not in ref else '%.2f%%' % (100*ref[m]['test_acc'])} | missing | |")
rows.append("")
rows.append(f"largest difference: {worst:.2f} points ({'within' if worst <= 1.0 else 'NOT within'} 1 point)")
text = "\n".join(rows)
open(os.path.join(out, "gpu-check.md"), "w").write(text + "\n")
print(text)
PY
