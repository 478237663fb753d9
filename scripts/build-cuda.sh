#!/usr/bin/env bash
# Build the `cgfed` binary with the CUDA backend on a machine without a GPU or a system CUDA.
#
#   scripts/build-cuda.sh            # install the toolkit (once), then build
#   scripts/build-cuda.sh --env      # install, then print the `export` lines and stop
#   CGFED_CUDA_DIR=/opt/cu13 scripts/build-cuda.sh
#
# What it does (see docs in /work/shared/PLATFORM.md, "CUDA"):
#
# 1. Installs the CUDA 13.0 compiler and libraries from PyPI `nvidia-*` wheels (≈675 MB of
#    downloads, files only: `pip install --no-deps --target`) into `$CGFED_CUDA_DIR`
#    (default `.cuda/` in the repository root, which is git-ignored). 13.0 and not newer, so
#    the PTX loads on a 580-series (CUDA 13.0) driver; the cu12 wheels have no nvcc.
# 2. Fix-ups that turn the wheels' `nvidia/cu13` folder into something cudarc and
#    candle-kernels can build against: `libX.so -> libX.so.NN` symlinks, `lib64 -> lib`, and a
#    stub `lib/stubs/libcuda.so` (SONAME `libcuda.so.1`) exporting every driver function
#    cudarc binds. The stub is for LINKING ONLY: never put `lib/stubs` on the run-time
#    library path of a machine that has a real driver.
# 3. Builds `cargo build --release -p cgfed-cli --features cuda` into `target/cuda` (so the
#    normal CPU builds in `target/` are not invalidated), for compute capability 9.0
#    (H100/H200; override with `CUDA_COMPUTE_CAP=80` etc.).
#
# Every step is skipped when already done, so re-running only rebuilds what changed.
#
# Running the result on a GPU machine: it needs libcuda.so.1 (the driver), libcudart.so.13,
# libcublas.so.13 + libcublasLt.so.13, libcurand.so.10 and libnvrtc.so.13. Carry the binary
# and point `LD_LIBRARY_PATH` at that machine's CUDA 13 libraries (or at `<cu13>/lib` from
# this script's folder, which holds all but the driver).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CUDA_DIR="${CGFED_CUDA_DIR:-$REPO_ROOT/.cuda}"
PY="${PYTHON:-python3}"

# Pinned wheels: CUDA 13.0 (see the header). Changing this list reinstalls.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)

log() { printf '[build-cuda] %s\n' "$*" >&2; }

# ---------------------------------------------------------------------------------------------
# 1. Install the wheels.
PKG_DIR="$CUDA_DIR/pkgs"
STAMP="$CUDA_DIR/installed.txt"
WANT="$(printf '%s\n' "${WHEELS[@]}")"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" && -x "$PKG_DIR/nvidia/cu13/bin/nvcc" ]]; then
  log "CUDA 13.0 wheels already installed in $PKG_DIR"
else
  log "installing ${#WHEELS[@]} CUDA 13.0 wheels into $PKG_DIR (≈675 MB of downloads)"
  mkdir -p "$CUDA_DIR"
  rm -rf "$PKG_DIR" "$PKG_DIR.partial" "$STAMP"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$PKG_DIR.partial" "${WHEELS[@]}"
  mv "$PKG_DIR.partial" "$PKG_DIR"
  printf '%s\n' "$WANT" >"$STAMP"
fi

CU="$PKG_DIR/nvidia/cu13"
[[ -x "$CU/bin/nvcc" ]] || { log "error: $CU/bin/nvcc missing after install"; exit 1; }

# ---------------------------------------------------------------------------------------------
# 2. Fix-ups.

# 2a. Unversioned `libX.so` symlinks for the libraries cudarc and candle-kernels link with.
for name in cudart cublas cublasLt curand nvrtc; do
  if [[ ! -e "$CU/lib/lib$name.so" ]]; then
    # the highest plain `libX.so.NN` (not libX.so.NN.M.K, not libnvrtc-builtins)
    target="$(cd "$CU/lib" && ls "lib$name.so."* 2>/dev/null | grep -E "^lib$name\.so\.[0-9]+$" \
      | sort -V | tail -n1 || true)"
    [[ -n "$target" ]] || { log "error: no $CU/lib/lib$name.so.NN"; exit 1; }
    ln -sfn "$target" "$CU/lib/lib$name.so"
    log "symlink lib/lib$name.so -> $target"
  fi
done

# 2b. lib64 -> lib (some build scripts only look in lib64).
[[ -e "$CU/lib64" ]] || ln -sfn lib "$CU/lib64"

# 2c. The libcuda.so link stub: one function per driver entry point cudarc declares. The
#     names come from cudarc's generated driver bindings (`src/driver/sys/mod.rs`) when its
#     sources are in the cargo registry (after `cargo fetch`), else from the pinned list below.
STUB_DIR="$CU/lib/stubs"
if [[ ! -f "$STUB_DIR/libcuda.so" ]]; then
  mkdir -p "$STUB_DIR"
  (cd "$REPO_ROOT" && cargo fetch --quiet) || log "warning: cargo fetch failed; using the built-in list"
  CARGO_HOME_DIR="${CARGO_HOME:-$HOME/.cargo}"
  SYS="$(ls -d "$CARGO_HOME_DIR"/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null \
    | sort -V | tail -n1 || true)"
  names="$STUB_DIR/names.txt"
  if [[ -n "$SYS" ]]; then
    log "libcuda stub: driver symbols from $SYS"
    # the `extern "C" { fn cuXxx(...) }` declarations used with dynamic linking
    grep -oE '^\s+fn cu[A-Za-z0-9_]+\(' "$SYS" | sed -E 's/^\s+fn (cu[A-Za-z0-9_]+)\(/\1/' \
      | sort -u >"$names"
  else
    : >"$names"
  fi
  # A floor of the entry points candle's CUDA backend calls, in case the grep finds nothing.
  cat >>"$names" <<'EOF'
cuInit
cuDriverGetVersion
cuDeviceGet
cuDeviceGetCount
cuDeviceGetName
cuDeviceGetAttribute
cuDeviceTotalMem_v2
cuDevicePrimaryCtxRetain
cuDevicePrimaryCtxRelease_v2
cuCtxSetCurrent
cuCtxGetCurrent
cuCtxSynchronize
cuCtxPushCurrent_v2
cuCtxPopCurrent_v2
cuGetErrorName
cuGetErrorString
cuStreamCreate
cuStreamDestroy_v2
cuStreamSynchronize
cuStreamWaitEvent
cuEventCreate
cuEventDestroy_v2
cuEventRecord
cuEventSynchronize
cuEventElapsedTime
cuMemAlloc_v2
cuMemAllocAsync
cuMemFree_v2
cuMemFreeAsync
cuMemcpyHtoD_v2
cuMemcpyDtoH_v2
cuMemcpyDtoD_v2
cuMemcpyHtoDAsync_v2
cuMemcpyDtoHAsync_v2
cuMemcpyDtoDAsync_v2
cuMemsetD8_v2
cuMemsetD8Async
cuMemsetD32Async
cuMemGetInfo_v2
cuMemHostAlloc
cuMemFreeHost
cuModuleLoadData
cuModuleGetFunction
cuModuleUnload
cuLaunchKernel
cuFuncGetAttribute
cuFuncSetAttribute
cuOccupancyMaxPotentialBlockSize
EOF
  sort -u -o "$names" "$names"
  {
    echo '/* Link-time stub of the CUDA driver API (generated by scripts/build-cuda.sh). */'
    echo '/* Every function returns CUDA_ERROR_STUB_LIBRARY (34); never load it at run time. */'
    while read -r fn; do echo "int $fn(void) { return 34; }"; done <"$names"
  } >"$STUB_DIR/libcuda_stub.c"
  gcc -O1 -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$STUB_DIR/libcuda.so" "$STUB_DIR/libcuda_stub.c"
  log "libcuda stub: $(wc -l <"$names") symbols -> $STUB_DIR/libcuda.so"
fi

# ---------------------------------------------------------------------------------------------
# 3. Environment and build.
export CUDA_ROOT="$CU" CUDA_HOME="$CU" CUDA_PATH="$CU"
export NVCC="$CU/bin/nvcc"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export PATH="$CU/bin:$PATH"
# link time only: the stub and the wheel libraries
export LIBRARY_PATH="$CU/lib:$STUB_DIR${LIBRARY_PATH:+:$LIBRARY_PATH}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$CU/lib -L native=$STUB_DIR"
export CARGO_TARGET_DIR="${CGFED_CUDA_TARGET_DIR:-$REPO_ROOT/target/cuda}"

if [[ "${1:-}" == "--env" ]]; then
  for v in CUDA_ROOT CUDA_HOME CUDA_PATH NVCC CUDA_COMPUTE_CAP PATH LIBRARY_PATH RUSTFLAGS \
    CARGO_TARGET_DIR; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi

log "nvcc: $("$NVCC" --version | tail -n2 | head -n1)"
log "building cgfed-cli --features cuda (release, sm_$CUDA_COMPUTE_CAP) into $CARGO_TARGET_DIR"
start=$(date +%s)
(cd "$REPO_ROOT" && cargo build --release -p cgfed-cli --features cuda "$@")
bin="$CARGO_TARGET_DIR/release/cgfed"
log "built $bin ($(du -h "$bin" | cut -f1)) in $(($(date +%s) - start)) s"
log "run it on a GPU machine with LD_LIBRARY_PATH pointing at CUDA 13 libraries (not lib/stubs)"
