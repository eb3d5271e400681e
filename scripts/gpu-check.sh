#!/usr/bin/env bash
# The `cuda` feature on a GPU machine without Rust: runs the bundle `cargo xtask gpu-bundle`
# built elsewhere (default target/gpu-bundle), from the repository root.
#
#   scripts/gpu-check.sh [BUNDLE]              # all three parts
#   PARTS="tests train" scripts/gpu-check.sh   # a subset of: tests train bench
#   ITERS=50 WARMUP=10 ROUNDS=2 scripts/gpu-check.sh   # benchmark steps, warm-up, rounds
#   GPU_CHECK_DEVICE=cpu scripts/gpu-check.sh BUNDLE   # rehearsal on a CPU machine, with a
#                                  # bundle from `cargo xtask gpu-bundle --cpu`
#
# 1. tests: the trainer's `cuda` test binary (PyTorch fixtures on CUDA: model, loss, SGD;
#    `device: auto` picks the GPU; training on CUDA stops, resumes and agrees with the CPU).
# 2. train: the real binary end to end on `--device cuda` and `--device auto`: configs/smoke.yaml
#    on a synthetic CIFAR-10 (written here with numpy: no dataset travels), then `eval` of
#    its best checkpoint on CUDA. Checks the run says cuda:0.
# 3. bench: ResNet-20 training (batch 128) and inference (batch 512) throughput on the GPU:
#    ours (candle, `throughput --device cuda`) against PyTorch eager and torch.compile, the
#    same shapes and optimizer (bench/pytorch/bench_resnet.py --device cuda), alternating.
#
# Needs: the NVIDIA driver (libcuda.so.1, driver >= 580 for CUDA 13.0), the CUDA 13 runtime
# libraries (taken from the nvidia-* wheels of the python3 that holds PyTorch when they are
# not on the loader path), python3 with numpy and torch. Logs go to stdout; the exit status
# is non-zero when a part fails (every part runs anyway).
set -uo pipefail
cd "$(dirname "$0")/.."
bundle=${1:-target/gpu-bundle}
parts=${PARTS:-tests train bench}
iters=${ITERS:-50}
warmup=${WARMUP:-10}
work=${GPU_CHECK_DIR:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
dev=${GPU_CHECK_DEVICE:-cuda}                 # cpu: rehearse the script without a GPU
want=cuda:0; [ "$dev" = cpu ] && want="cpu ("
failed=()
say() { printf '\n==> [%s] %s\n' "$(date -u +%T)" "$*"; }

[ -f "$bundle/MANIFEST" ] || { echo "gpu-check: no bundle at $bundle (cargo xtask gpu-bundle)" >&2; exit 2; }
cat "$bundle/MANIFEST"
if [ "$dev" = cuda ]; then
    nvidia-smi -L || { echo "gpu-check: nvidia-smi finds no GPU" >&2; exit 2; }
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
fi

mkdir -p "$work/bin"
for f in "$bundle"/bin/*.xz; do
    n=$(basename "$f" .xz)
    if command -v xz >/dev/null; then xz -dc "$f" > "$work/bin/$n"
    else python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$f" > "$work/bin/$n"
    fi
    chmod +x "$work/bin/$n"
done

# The CUDA 13 libraries: from PyTorch's nvidia-* wheels when the loader does not find them.
if ldd "$work/bin/resnet-cli" | grep -q 'not found'; then
    nv=$(python3 -c 'import nvidia, os; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
    for d in "$nv"/cu13/lib "$nv"/cudnn/lib "$nv"/*/lib; do
        [ -d "$d" ] && LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    done
    export LD_LIBRARY_PATH
fi
if ldd "$work/bin/resnet-cli" | grep 'not found'; then
    echo "gpu-check: libraries missing (above); LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" >&2
    exit 2
fi

part() { case " $parts " in *" $1 "*) return 0;; *) return 1;; esac; }

if part tests; then
    say "tests: the trainer's cuda tests (fixtures on CUDA, device auto, training vs CPU)"
    RESNET_FIXTURES="$bundle/fixtures" RUST_BACKTRACE=1 "$work/bin/cuda-tests" --test-threads 1 --nocapture \
        || failed+=(tests)
fi

if part train; then
    say "train: resnet-cli train configs/smoke.yaml --device cuda on a synthetic CIFAR-10"
    python3 - "$work/data" <<'PY' || failed+=(train-data)
import os, sys
import numpy as np
root = os.path.join(sys.argv[1], "cifar-10-batches-bin")
os.makedirs(root, exist_ok=True)
rng = np.random.default_rng(7)
# Learnable: each class has its own mean colour, plus noise.
means = rng.integers(40, 216, size=(10, 3), dtype=np.int64)
def batch(path, n=10000):
    labels = rng.integers(0, 10, size=n)
    pix = means[labels][:, :, None] + rng.normal(0, 40, size=(n, 3, 1024))
    pix = np.clip(pix, 0, 255).astype(np.uint8).reshape(n, 3072)
    rec = np.concatenate([labels.astype(np.uint8)[:, None], pix], axis=1)
    rec.tofile(path)
for k in range(1, 6):
    batch(os.path.join(root, f"data_batch_{k}.bin"))
batch(os.path.join(root, "test_batch.bin"))
with open(os.path.join(root, "batches.meta.txt"), "w") as f:
    f.write("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n")
PY
    for choice in "$dev" auto; do
        out=$("$work/bin/resnet-cli" train configs/smoke.yaml --no-progress --device "$choice" \
            --data-dir "$work/data" --set "output.runs_dir=$work/runs-$choice" 2> "$work/train-$choice.log")
        rc=$?
        cat "$work/train-$choice.log"
        run=$(printf '%s\n' "$out" | tail -1)
        if [ $rc -ne 0 ] || ! grep -qF "\"device\":\"$want" "$run/stretches.jsonl" 2>/dev/null; then
            echo "gpu-check: train --device $choice failed or did not run on $want (rc $rc)"
            failed+=("train-$choice")
            continue
        fi
        echo "run directory: $run"
        "$work/bin/resnet-cli" eval "$run/checkpoints/best.safetensors" --device "$dev" \
            --data-dir "$work/data" || failed+=("eval-$choice")
    done
fi

if part bench; then
    say "bench: ResNet-20 on the GPU, ours vs PyTorch eager and torch.compile (iters $iters, warm-up $warmup)"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'
    logged() { "$@" 2>&1 | tee -a "$work/bench.txt"; return "${PIPESTATUS[0]}"; }
    for round in $(seq 1 "${ROUNDS:-2}"); do
        for mode in train infer; do
            logged "$work/bin/throughput" --device "$dev" --mode "$mode" --iters "$iters" \
                --warmup "$warmup" || failed+=("bench-ours-$mode")
            for extra in "" "--compile"; do
                logged python3 bench/pytorch/bench_resnet.py --device "$dev" --mode "$mode" \
                    --threads "$(nproc)" --iters "$iters" --warmup "$warmup" $extra \
                    || failed+=("bench-torch-$mode$extra")
            done
        done
    done
    # Median images/s per implementation and mode, and ours / theirs.
    python3 - "$work/bench.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if line.startswith("RESULT "):
        kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
        runs.setdefault((kv["impl"], kv["mode"]), []).append(float(kv["images_per_s"]))
for mode in ("train", "infer"):
    ours = [v for (i, m), v in runs.items() if m == mode and i.startswith("candle")]
    ours = statistics.median(ours[0]) if ours else float("nan")
    for (impl, m), v in sorted(runs.items()):
        if m == mode:
            med = statistics.median(v)
            print(f"{mode:5} {impl:45} median {med:9.1f} images/s over {len(v)} rounds; ours / this = {ours / med:.2f}")
PY
fi

say "done"
if [ ${#failed[@]} -gt 0 ]; then
    echo "gpu-check: FAILED: ${failed[*]}"
    exit 1
fi
echo "gpu-check: all parts passed ($parts)"
