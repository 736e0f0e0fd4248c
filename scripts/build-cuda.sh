#!/usr/bin/env bash
# Builds target-cuda/release/tdmr with CUDA on a machine without a GPU or a CUDA install.
#
# CUDA 13.0's compiler (nvcc, cicc), headers and libraries come from PyPI into a local
# virtualenv (.cuda-venv/, git-ignored); nothing is installed system-wide. CUDA 13.0
# because the GPU machines run driver 580 (CUDA 13) and carry CUDA 13 libraries with
# their PyTorch; candle 0.11's cudarc 0.19 supports it.
#
# Linking needs the driver library libcuda.so, which only a driver install provides. As
# NVIDIA's toolkits do with lib64/stubs/libcuda.so, this script builds a stub that
# defines every driver entry point cudarc declares (empty bodies, never called): the
# binary records `libcuda.so.1` and uses the real driver wherever it runs.
#
# Usage: scripts/build-cuda.sh [cargo build args...]   (env: CUDA_COMPUTE_CAP, default 90)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TDMR_CUDA_VENV:-.cuda-venv}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
started=$(date +%s)

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" "nvidia-cuda-runtime==13.0.*" \
    "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" \
    "nvidia-curand==10.4.*"
ROOT=$("$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')

# The wheels ship versioned libraries only; the linker wants the plain names.
for lib in "$ROOT"/lib/lib*.so.*; do
    base=$(basename "$lib")
    plain="${base%%.so.*}.so"
    [ -e "$ROOT/lib/$plain" ] || ln -s "$base" "$ROOT/lib/$plain"
done

# The libcuda stub, from the driver API names in cudarc's bindings. Every entry point
# returns CUDA_ERROR_NO_DEVICE (100), so with the stub on LD_LIBRARY_PATH the binary
# also runs here, on the CPU (`device = "auto"` falls back to it).
mkdir -p "$ROOT/lib/stubs"
if ! grep -qs "return 100" "$ROOT/lib/stubs/libcuda_stub.c"; then
    cargo fetch --quiet
    bindings=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -1)
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*\b' "$bindings" | sort -u |
        awk '{ print "int " $1 "(void) { return 100; }" }' > "$ROOT/lib/stubs/libcuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$ROOT/lib/stubs/libcuda.so" "$ROOT/lib/stubs/libcuda_stub.c"
    ln -sf libcuda.so "$ROOT/lib/stubs/libcuda.so.1"
fi

export CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT" PATH="$ROOT/bin:$PATH"
export NVCC_PREPEND_FLAGS="${NVCC_PREPEND_FLAGS:-} -I$ROOT/include"
nvcc --version | tail -1
cargo build --release --features cuda --target-dir target-cuda "$@"

bin=target-cuda/release/tdmr
# Compressed to travel: the binary (mostly PTX text) is ~57 MB, ~7 MB as xz.
xz -9 -T0 -c "$bin" > target-cuda/tdmr-cuda.xz
echo "built $bin: $(du -h "$bin" | cut -f1) in $(( $(date +%s) - started )) s; target-cuda/tdmr-cuda.xz: $(du -h target-cuda/tdmr-cuda.xz | cut -f1)"
echo "to try it here on the CPU: LD_LIBRARY_PATH=$ROOT/lib/stubs:$ROOT/lib $bin run --device cpu"
echo "it needs, where it runs: the NVIDIA driver (libcuda.so.1) and CUDA 13 libraries:"
readelf -d "$bin" | grep NEEDED | grep -E "cu|nvrtc" || true
