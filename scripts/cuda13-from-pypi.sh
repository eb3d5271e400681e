#!/usr/bin/env bash
# Run a command (typically a cargo build with `--features cuda` or `cudnn`) with a CUDA 13.0
# toolkit made from NVIDIA's PyPI wheels, on a machine with no GPU and no CUDA install.
# Checked on candle 0.11.1 / cudarc 0.19.10 / cudaforge 0.1.6: a cold
# `cargo build --release -p resnet-cli --features cuda` takes ~21 min on 2 cores, most of it
# nvcc compiling candle-kernels (PTX + the quantized/MoE static library).
# (The project's copy of the reference recipe in ../shared/cuda/; only the cache location
# differs: the toolkit is kept under ~/.cache so that CI and later builds reuse it.)
#
# Usage: scripts/cuda13-from-pypi.sh COMMAND [ARGS...]
#   e.g. scripts/cuda13-from-pypi.sh cargo build --release -p resnet-cli --features cuda
#        scripts/cuda13-from-pypi.sh env | grep CUDA        # see what it sets
#        cargo xtask gpu-bundle                             # the binaries for a GPU machine
# The cudnn wheel is fetched too when any argument mentions "cudnn".
# Env knobs: CUDA_COMPUTE_CAP (default 90 = sm_90a/compute_90a: H100/H200 only; 80 = A100),
#            CUDA_SCRATCH (default ~/.cache/resnet-cifar/cuda13: wheels + unpacked toolkit, ~2 GiB).
#
# Why each step:
# - candle-kernels' build.rs (via cudaforge) runs nvcc twice: .cu -> PTX (embedded in the
#   binary) and moe/mmq .cu -> sm_XXa SASS static lib (libmoe.a, linked in). It finds nvcc
#   via $NVCC or PATH and takes the arch from CUDA_COMPUTE_CAP (else runs nvidia-smi: fails
#   without a GPU).
# - candle-core turns on cudarc's `dynamic-linking` + `cuda-version-from-build-system`, so
#   the binary gets DT_NEEDED on libcuda.so.1, libcublas.so.13, libcublasLt.so.13,
#   libcurand.so.10, libnvrtc.so.13, libcudart.so.13 (+ libcudnn.so.9 with cudnn), and the
#   linker needs the unversioned libX.so names, which the wheels lack (symlinks are added).
#   libcuda comes with the driver, not with any wheel: the link uses a generated stub.
# - cudarc 0.19.10 knows CUDA up to 13.4 only, and PTX from a newer nvcc is not loadable by
#   an older driver (580 = CUDA 13.0). So the toolkit is pinned to 13.0.
#
# On the GPU machine the binary needs the driver's libcuda.so.1 and the CUDA 13 libraries;
# in a PyTorch venv whose torch came with nvidia-* wheels:
#   NV=$(python -c 'import nvidia; print(list(nvidia.__path__)[0])')
#   export LD_LIBRARY_PATH=$NV/cu13/lib:$NV/cudnn/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
#   ldd ./BINARY | grep 'not found'    # must print nothing
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2; }
FEAT=cuda
case " $* " in *cudnn*) FEAT=cudnn;; esac
SCRATCH=${CUDA_SCRATCH:-${XDG_CACHE_HOME:-$HOME/.cache}/resnet-cifar/cuda13}
WHEELS=$SCRATCH/wheels
ROOT=$SCRATCH/root
CU=$ROOT/nvidia/cu13            # every CUDA 13 wheel unpacks under nvidia/cu13/{bin,include,lib,nvvm}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

PINS=(
  nvidia-cuda-nvcc==13.0.88      # nvcc, ptxas, fatbinary, nvlink
  nvidia-cuda-crt==13.0.88       # crt/ headers nvcc needs
  nvidia-nvvm==13.0.88           # cicc + libdevice
  nvidia-cuda-cccl==13.0.85      # include/cccl (nv/target, cuda/std) used by cuda_fp16.h
  nvidia-cuda-runtime==13.0.96   # cuda_runtime.h, cuda.h, libcudart.so.13
  nvidia-cuda-nvrtc==13.0.88     # libnvrtc.so.13
  nvidia-cublas==13.0.2.14       # libcublas.so.13, libcublasLt.so.13
  nvidia-curand==10.4.0.35       # libcurand.so.10
)
[ "$FEAT" = cudnn ] && PINS+=(nvidia-cudnn-cu13==9.13.1.26)   # libcudnn.so.9 (only the 125 KB shim is unpacked)

mkdir -p "$WHEELS" "$ROOT"
for p in "${PINS[@]}"; do
  n=${p%%==*}; v=${p##*==}
  ls "$WHEELS/${n//-/_}-$v-"*.whl >/dev/null 2>&1 ||
    timeout 900 python3 -m pip download -q --no-deps -d "$WHEELS" "$p"
  w=$(ls "$WHEELS/${n//-/_}-$v-"*.whl)
  stamp=$ROOT/.unpacked-$n-$v
  [ -e "$stamp" ] && continue
  if [ "$n" = nvidia-cudnn-cu13 ]; then
    unzip -qo "$w" 'nvidia/cudnn/lib/libcudnn.so.9' -d "$ROOT"
    cp -f "$ROOT/nvidia/cudnn/lib/libcudnn.so.9" "$CU/lib/"
  else
    unzip -qo "$w" -x '*.dist-info/*' -d "$ROOT"
  fi
  touch "$stamp"
done
chmod +x "$CU"/bin/* "$CU"/nvvm/bin/*

# Unversioned names for the linker (-lcublas etc.).
for so in "$CU"/lib/lib*.so.[0-9]*; do
  b=$(basename "$so"); base=${b%%.so.*}.so
  case "$b" in *builtins*|*.alt.*|libnvblas*|libnvvm*) continue;; esac
  ln -sfn "$b" "$CU/lib/$base"
done

# Link-time stub for the driver library: every cu* entry point named by cuda.h (plain and
# per-thread-stream spellings) plus every one cudarc declares, as empty functions, soname
# libcuda.so.1. At run time the driver's real libcuda.so.1 is used.
mkdir -p "$CU/lib/stubs"
# cudarc's declared driver entry points go into the stub too: fetch its source if needed.
if [ -f Cargo.toml ] && ! ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs >/dev/null 2>&1; then
  cargo fetch --quiet >&2 || true
fi
if [ ! -e "$CU/lib/stubs/libcuda.so" ]; then
  tmp=$(mktemp -d)
  { for d in "" -DCUDA_API_PER_THREAD_DEFAULT_STREAM; do
      gcc -E -P $d -I"$CU/include" "$CU/include/cuda.h"
    done | grep -oE '\bCUresult +cu[A-Za-z0-9_]+ *\(' | sed -E 's/^CUresult +//; s/ *\($//'
    for f in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-*/src/driver/sys/mod.rs; do
      if [ -e "$f" ]; then grep -oE '\bfn cu[A-Za-z0-9_]+\(' "$f" | sed -E 's/^fn //; s/\($//'; fi
    done
  } | sort -u | sed 's/.*/void &(void) {}/' > "$tmp/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$CU/lib/stubs/libcuda.so" "$tmp/libcuda_stub.c"
  rm -rf "$tmp"
fi

export CUDA_ROOT=$CU CUDA_HOME=$CU CUDA_PATH=$CU    # cudarc link search: $X/lib, $X/lib/stubs
export NVCC=$CU/bin/nvcc PATH=$CU/bin:$PATH         # cudaforge + cudarc run `nvcc`
export CUDARC_CUDA_VERSION=13000                    # bindings for CUDA 13.0 (= driver 580)
export LD_LIBRARY_PATH=$CU/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}   # nvcc's own helpers
nvcc --version | tail -1 >&2
exec "$@"
