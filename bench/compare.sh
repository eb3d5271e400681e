#!/usr/bin/env bash
# Side-by-side ResNet-20 CPU benchmark: this project (candle + resnet-model's fast ops)
# against PyTorch — eager NCHW, eager channels_last and torch.compile (inductor, default
# mode, compile time excluded as warm-up) — same machine, same number of threads.
#
#   bench/compare.sh                    # threads = RAYON_NUM_THREADS or nproc, 3 rounds
#   THREADS=1 ROUNDS=5 ITERS=20 bench/compare.sh
#   PEERS="eager compile" bench/compare.sh   # a subset of: eager channels_last compile
#   OURS_FLAGS=--no-default-features bench/compare.sh   # ours with the AVX2 kernels only
#   RESNET_WINOGRAD=1 bench/compare.sh       # ours with the Winograd convolutions
#   ISA=avx2 bench/compare.sh   # both sides capped at AVX2+FMA: an AVX2 machine, emulated
#   TORCH_SUB_BATCH=64 bench/compare.sh   # PyTorch inference in sub-batches of 64, like ours
#
# ISA=avx2 on an AVX-512 machine builds ours with --no-default-features (the `gemm` crate's
# AVX2+FMA kernels, and our AVX2 convolution kernels instead of the AVX-512 ones) and runs
# PyTorch with ATEN_CPU_CAPABILITY=avx2 (ATen's vectorised kernels and the code inductor
# generates), ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN's JIT convolutions: `jit:avx2` instead of
# `jit:avx512_core` with ONEDNN_VERBOSE=1) and MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL's GEMMs).
# glibc's memcpy/memset keep their AVX-512 variants on both sides. The cache sizes, clock and
# memory stay this machine's, so it approximates an AVX2 machine of the same core, no more.
#
# Each round runs ours and every PyTorch configuration once (each mode in its own process,
# so that peak memory is per workload), in an order that rotates from round to round. For
# every PyTorch configuration and mode it prints the ratio ours / theirs of every round
# (training images/s at batch 128, inference images/s at batch 512), their median — the
# figure to quote on a noisy machine — and the best-of ratio (best round against best
# round: other processes only ever slow a run down), then peak resident memory and CPU time
# per step (less disturbed by other processes than wall time).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads="${THREADS:-${RAYON_NUM_THREADS:-$(nproc)}}"
iters="${ITERS:-10}"
rounds="${ROUNDS:-3}"
peers="${PEERS:-eager channels_last compile}"
read -r -a ours_flags <<< "${OURS_FLAGS:-}"
isa_cap="${ISA:-native}"
case "$isa_cap" in
    native) ;;
    avx2)
        ours_flags+=(--no-default-features)
        export ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
        ;;
    *) echo "ISA must be 'native' or 'avx2', not '$isa_cap'" >&2; exit 2 ;;
esac
isa="$(grep -o -w 'avx2\|fma\|avx512f\|avx512_bf16\|avx512_vnni\|amx_tile' /proc/cpuinfo | sort -u | xargs)"
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); ${isa:-no AVX2}), threads: $threads, ISA cap: $isa_cap"
scratch="$(mktemp -d)"
out="$scratch/results"
trap 'rm -rf "$scratch"' EXIT
# Build ours once and run a copy of that binary in every round, so that an edit or a build
# during the run cannot swap binaries between rounds (`cargo bench` would rebuild).
built="$(cd "$root" && cargo bench --quiet -p resnet-model "${ours_flags[@]}" --bench throughput --no-run --message-format=json |
    python3 -c 'import json, sys
exes = [m["executable"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "throughput" and m.get("executable")]
print(exes[-1] if exes else "")')"
if [ -z "$built" ]; then echo "could not find the throughput benchmark's binary" >&2; exit 1; fi
cp "$built" "$scratch/throughput"
ours() { RAYON_NUM_THREADS="$threads" "$scratch/throughput" --iters "$iters"; }
theirs() {
    local extra=()
    case "$1" in
        eager) ;;
        channels_last) extra=(--channels-last) ;;
        compile) extra=(--compile) ;;
        *) echo "unknown PyTorch configuration '$1'" >&2; exit 2 ;;
    esac
    if [ -n "${TORCH_SUB_BATCH:-}" ]; then extra+=(--infer-sub-batch "$TORCH_SUB_BATCH"); fi
    THREADS="$threads" "$root/bench/pytorch/run.sh" --iters "$iters" "${extra[@]}"
}
read -r -a runners <<< "ours $peers"
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "ROUND $r" >> "$out"
    n=${#runners[@]}
    for k in $(seq 0 $((n - 1))); do
        who="${runners[$(((k + r - 1) % n))]}"
        if [ "$who" = ours ]; then ours | tee -a "$out"; else theirs "$who" | tee -a "$out"; fi
    done
done
ISA_CAP="$isa_cap" python3 - "$out" <<'PY'
import os
import statistics
import sys

rounds = {}  # round -> {(impl, mode): fields}
current = None
for line in open(sys.argv[1]):
    if line.startswith("ROUND "):
        current = int(line.split()[1])
        rounds[current] = {}
    elif line.startswith("RESULT ") and current is not None:
        kv = dict(f.split("=", 1) for f in line.split()[1:])
        impl = kv["impl"]
        if impl.startswith("pytorch"):
            # pytorch-<version>-<layout>-<eager|compile>
            _, version, layout, how = impl.split("-", 3)
            impl = {"nchw-eager": "eager", "channels_last-eager": "channels_last",
                    "nchw-compile": "compile"}.get(f"{layout}-{how}", f"{layout}-{how}")
            kv["version"] = version
        else:
            impl = "ours"
        rounds[current][(impl, kv["mode"])] = kv

def f(kv, key):
    try:
        return float(kv[key])
    except (KeyError, ValueError):
        return float("nan")

peers = sorted({impl for r in rounds.values() for impl, _ in r if impl != "ours"})
for mode in ("train", "infer"):
    for peer in peers:
        pairs = [(r[("ours", mode)], r[(peer, mode)]) for r in rounds.values()
                 if ("ours", mode) in r and (peer, mode) in r]
        if not pairs:
            print(f"RATIO mode={mode} peer={peer}: missing result")
            continue
        ratios = [f(o, "images_per_s") / f(t, "images_per_s") for o, t in pairs]
        best_o = max((o for o, _ in pairs), key=lambda kv: f(kv, "images_per_s"))
        best_t = max((t for _, t in pairs), key=lambda kv: f(kv, "images_per_s"))
        print(f"RATIO mode={mode} batch={best_o['batch']} threads={best_o['threads']} "
              f"isa_cap={os.environ.get('ISA_CAP', 'native')} "
              f"gemm={best_o.get('gemm', '?')} winograd={best_o.get('winograd', '?')} "
              f"conv3x3={best_o.get('conv3x3', '?')} wgrad={best_o.get('wgrad', '?')} "
              f"peer=pytorch-{best_t.get('version', '?')}-{peer} "
              f"rounds=[{' '.join(f'{x:.2f}' for x in ratios)}] "
              f"median_ratio={statistics.median(ratios):.2f} "
              f"best_of_ratio={f(best_o, 'images_per_s') / f(best_t, 'images_per_s'):.2f} "
              f"best_images_per_s ours={best_o['images_per_s']} peer={best_t['images_per_s']} "
              f"ours_gflops={best_o.get('gflops', '?')} "
              f"peak_rss_mib ours={best_o['peak_rss_mib']} peer={best_t['peak_rss_mib']} "
              f"cpu_ms_per_step ours={best_o.get('cpu_ms_per_step')} "
              f"peer={best_t.get('cpu_ms_per_step')} "
              f"peer_cpu_capability={best_t.get('cpu_capability', '?')} "
              f"peer_sub_batch={best_t.get('sub_batch', 'none')}")
PY
