#!/usr/bin/env bash
# Side-by-side ResNet-20 CPU benchmark: this project (candle + resnet-model's fast ops)
# against PyTorch eager, same machine, same number of threads.
#
#   bench/compare.sh                    # threads = RAYON_NUM_THREADS or nproc, 3 rounds
#   THREADS=1 ROUNDS=5 ITERS=20 bench/compare.sh
#
# Each round runs both implementations back to back (each mode in its own process, so that
# peak memory is per workload), alternating which goes first. The summary takes, per
# implementation and mode, the best round (highest images/s): on a shared machine other
# processes only ever slow a run down, so the best round is the closest to the machine's
# real speed. It then prints the ratios ours / PyTorch for training images/s (batch 128),
# inference images/s (batch 512), peak resident memory and CPU time per step (lower is
# better; CPU time is less disturbed by other processes than wall time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${THREADS:-${RAYON_NUM_THREADS:-$(nproc)}}"
iters="${ITERS:-10}"
rounds="${ROUNDS:-3}"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), threads: $threads"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
(cd "$root" && cargo bench --quiet -p resnet-model --bench throughput --no-run)
ours() { (cd "$root" && RAYON_NUM_THREADS="$threads" cargo bench --quiet -p resnet-model --bench throughput -- --iters "$iters"); }
theirs() { THREADS="$threads" "$root/bench/pytorch/run.sh" --iters "$iters"; }
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ $((r % 2)) -eq 1 ]; then ours | tee -a "$out"; theirs | tee -a "$out"
    else theirs | tee -a "$out"; ours | tee -a "$out"; fi
done
python3 - "$out" <<'PY'
import sys
best = {}
for line in open(sys.argv[1]):
    if not line.startswith("RESULT "):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    key = (kv["impl"].split("-")[0], kv["mode"])
    if key not in best or float(kv["images_per_s"]) > float(best[key]["images_per_s"]):
        best[key] = kv
for mode in ("train", "infer"):
    ours, ref = best.get(("candle", mode)), best.get(("pytorch", mode))
    if not ours or not ref:
        print(f"RATIO mode={mode}: missing result")
        continue
    ips = float(ours["images_per_s"]) / float(ref["images_per_s"])
    mem = float(ours["peak_rss_mib"]) / float(ref["peak_rss_mib"])
    # CPU time per step (all threads): less sensitive to other processes than wall time
    cpu = float(ours.get("cpu_ms_per_step", "nan")) / float(ref.get("cpu_ms_per_step", "nan"))
    print(f"RATIO mode={mode} batch={ours['batch']} threads={ours['threads']} "
          f"ours={ours['images_per_s']} pytorch={ref['images_per_s']} speed_ratio={ips:.2f} "
          f"peak_rss_mib ours={ours['peak_rss_mib']} pytorch={ref['peak_rss_mib']} memory_ratio={mem:.2f} "
          f"cpu_ms_per_step ours={ours.get('cpu_ms_per_step')} pytorch={ref.get('cpu_ms_per_step')} cpu_ratio={cpu:.2f}")
PY
