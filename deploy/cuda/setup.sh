#!/usr/bin/env bash
# Build-time CUDA 13.0 toolchain from PyPI wheels (no GPU, no system CUDA needed).
#   setup.sh        create/refresh the venv ($CUDA_VENV) and assemble the root ($CUDA_ROOT)
#   setup.sh root   only (re)assemble the root from an existing venv
# Idempotent. Then: `source deploy/cuda/env.sh` and build with `--features cuda`.
set -euo pipefail

CUDA_VENV=${CUDA_VENV:-/work/cuda-venv}
CUDA_ROOT=${CUDA_ROOT:-$(dirname "$CUDA_VENV")/cuda-root}

# Pinned to the 13.0 series: cudarc 0.19 parses `nvcc --version` and rejects
# unknown releases; unpinned deps (crt, nvvm) would drift to the newest 13.x.
WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35
)

if [[ ${1:-} != root ]]; then
  [[ -x $CUDA_VENV/bin/python ]] || python3 -m venv "$CUDA_VENV"
  "$CUDA_VENV/bin/pip" install -q --disable-pip-version-check "${WHEELS[@]}"
fi

# All 13.x wheels unpack into one tree: site-packages/nvidia/cu13/{bin,include,lib,nvvm}.
CU=$("$CUDA_VENV/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')
[[ -x $CU/bin/nvcc ]] || { echo "setup.sh: no nvcc under $CU" >&2; exit 1; }

mkdir -p "$CUDA_ROOT/lib64/stubs"
for d in bin include nvvm; do ln -sfn "$CU/$d" "$CUDA_ROOT/$d"; done
ln -sfn lib64 "$CUDA_ROOT/lib"
# The linker needs unversioned names (candle links cudart; cudarc links
# cuda, nvrtc, curand, cublas, cublasLt at link time: feature dynamic-linking).
for f in "$CU"/lib/*.so.* "$CU"/lib/*.a; do ln -sfn "$f" "$CUDA_ROOT/lib64/"; done
for l in cudart cublas cublasLt curand nvrtc; do
  so=$(cd "$CUDA_ROOT/lib64" && ls "lib$l.so."[0-9]* | head -1)
  ln -sfn "$so" "$CUDA_ROOT/lib64/lib$l.so"
done

# libcuda comes with the driver, not with any wheel: build a link-only stub
# (SONAME libcuda.so.1, every entry point returns CUDA_ERROR_STUB_LIBRARY=34).
# It lives in lib64/stubs as libcuda.so only, so the loader never picks it up.
stub=$CUDA_ROOT/lib64/stubs/libcuda.so
if [[ ! -e $stub ]]; then
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  {
    # names from cuda.h (plain and per-thread-stream variants) ...
    for d in "" -DCUDA_API_PER_THREAD_DEFAULT_STREAM; do
      echo '#include <cuda.h>' | cc -E $d -I"$CUDA_ROOT/include" -x c - \
        | grep -oP '\bCUresult\s+\Kcu\w+(?=\s*\()' || true
    done
    # ... plus every name cudarc's bindings may reference, if its source is fetched
    cat "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs 2>/dev/null \
      | grep -oP '^pub unsafe fn \Kcu\w+' || true
  } | sort -u | sed 's/.*/int &(void) { return 34; }/' > "$tmp/stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$tmp/stub.c"
fi
echo "CUDA root ready: $CUDA_ROOT ($("$CUDA_ROOT/bin/nvcc" --version | grep -o 'release [0-9.]*'))"
