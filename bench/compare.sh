#!/usr/bin/env bash
# Side-by-side ResNet-20 CPU benchmark: this project (candle + resnet-model's fast ops)
# against PyTorch eager on the same machine and the same number of threads.
#
#   bench/compare.sh                  # threads = RAYON_NUM_THREADS or nproc
#   THREADS=1 bench/compare.sh
#   ITERS=20 bench/compare.sh
#
# Prints each implementation's RESULT lines, then the ratios (ours / PyTorch) for training
# images/s (batch 128), inference images/s (batch 512) and peak resident memory.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${THREADS:-${RAYON_NUM_THREADS:-$(nproc)}}"
iters="${ITERS:-10}"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), threads: $threads, load: $(cut -d' ' -f1-3 /proc/loadavg)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
(cd "$root" && RAYON_NUM_THREADS="$threads" cargo bench --quiet -p resnet-model --bench throughput -- --iters "$iters") | tee -a "$out"
THREADS="$threads" "$root/bench/pytorch/run.sh" --iters "$iters" | tee -a "$out"
python3 - "$out" <<'PY'
import re, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        kv = dict(f.split("=", 1) for f in line.split()[1:])
        rows[(kv["impl"].split("-")[0], kv["mode"])] = kv
for mode in ("train", "infer"):
    ours, ref = rows.get(("candle", mode)), rows.get(("pytorch", mode))
    if not ours or not ref:
        print(f"ratio {mode}: missing result"); continue
    ips = float(ours["images_per_s"]) / float(ref["images_per_s"])
    mem = float(ours["peak_rss_mib"]) / float(ref["peak_rss_mib"])
    print(f"RATIO mode={mode} batch={ours['batch']} threads={ours['threads']} "
          f"ours={ours['images_per_s']} pytorch={ref['images_per_s']} speed_ratio={ips:.2f} "
          f"peak_rss_mib ours={ours['peak_rss_mib']} pytorch={ref['peak_rss_mib']} memory_ratio={mem:.2f}")
PY
