# Source me (bash): `source deploy/cuda/env.sh` before `cargo build --features cuda`.
# Uses the venv made by setup.sh ($CUDA_VENV, default /work/cuda-venv) and assembles
# the CUDA root ($CUDA_ROOT, default: cuda-root beside the venv) if it is missing.
# No `set -e` here: this file is sourced into your shell.

export CUDA_VENV=${CUDA_VENV:-/work/cuda-venv}
export CUDA_ROOT=${CUDA_ROOT:-$(dirname "$CUDA_VENV")/cuda-root}
if [[ ! -x $CUDA_ROOT/bin/nvcc || ! -e $CUDA_ROOT/lib64/stubs/libcuda.so ]]; then
  if [[ -x $CUDA_VENV/bin/python ]]; then
    bash "$(dirname "${BASH_SOURCE[0]}")/setup.sh" root
  else
    echo "env.sh: no venv at $CUDA_VENV; run deploy/cuda/setup.sh first" >&2
  fi
fi

# cudarc's build.rs reads CUDA_HOME/CUDA_PATH/CUDA_ROOT (link search: lib64, lib64/stubs)
# and runs `nvcc --version` from PATH; cudaforge (candle-kernels) finds nvcc via NVCC/PATH
# and takes include/ next to it.
export CUDA_HOME=$CUDA_ROOT CUDA_PATH=$CUDA_ROOT
export NVCC=$CUDA_ROOT/bin/nvcc
case ":$PATH:" in *":$CUDA_ROOT/bin:"*) ;; *) export PATH=$CUDA_ROOT/bin:$PATH ;; esac
# No nvidia-smi at build time: target H100/H200 (sm_90 -> cudaforge emits sm_90a).
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# Cap nvcc parallelism in candle-kernels' build (it otherwise uses every core).
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-${CARGO_BUILD_JOBS:-1}}
