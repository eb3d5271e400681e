#!/usr/bin/env bash
# PyTorch reference for the ResNet-20 CPU benchmark: creates bench/pytorch/.venv on first
# use (pip install -r requirements.txt from PyPI; the default Linux torch wheel pulls the
# CUDA runtime wheels, a few GB, so the first run takes a while), then measures training
# (batch 128) and inference (batch 512) in two separate processes.
#
#   bench/pytorch/run.sh                      # threads = RAYON_NUM_THREADS or nproc
#   THREADS=1 bench/pytorch/run.sh --iters 20
#   bench/pytorch/run.sh --channels-last      # extra arguments go to bench_resnet.py
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    echo "bench/pytorch: creating $venv and installing torch (first run only)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet -r "$here/requirements.txt" >&2
fi
threads="${THREADS:-${RAYON_NUM_THREADS:-$(nproc)}}"
for mode in train infer; do
    OMP_NUM_THREADS="$threads" "$venv/bin/python" "$here/bench_resnet.py" \
        --mode "$mode" --threads "$threads" "$@"
done
