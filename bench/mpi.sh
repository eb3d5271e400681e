#!/usr/bin/env bash
# Data-parallel training on one machine: ResNet-20 (the paper's recipe) as 1 process with
# all cores' threads against K MPI ranks with 1 thread each (K = number of cores), on the
# real CIFAR-10, one epoch of 100 steps (12,800 training images, batch 128) each, ROUNDS
# rounds alternating which goes first. Prints each run's epoch line: training images/s
# (data loading included, validation excluded) and, for the ranks, the time per step spent
# in the all-reduces of the gradients and running statistics.
#
#   bench/mpi.sh                          # needs the data (cargo xtask fetch-cifar) and mpirun
#   ROUNDS=3 ITERS=100 bench/mpi.sh
#
# Builds `resnet-cli --features mpi` in release first. Nothing else may run on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cores="$(nproc)"
rounds="${ROUNDS:-2}"
iters="${ITERS:-100}"
echo "machine: $cores CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs);" \
    "$(grep -o -w 'avx2\|avx512f' /proc/cpuinfo | sort -u | xargs)), $(mpirun --version | head -1)"
(cd "$root" && cargo build --quiet --release --locked -p resnet-cli --features mpi)
exe="$root/target/release/resnet-cli"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
args=(train configs/resnet20.yaml --no-progress
    --set "data.train_limit=$((iters * 128))" --set data.val_limit=1000 --set data.test_limit=1000
    --set "training.max_iterations=$iters")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
one() {
    echo "1 process x $cores threads:"
    (cd "$root" && "$exe" "${args[@]}" --run-dir "$tmp/one-$1" --set "training.threads=$cores" 2>&1 \
        | grep 'epoch 1.00' | sed 's/^.*INFO /  /')
}
ranks() {
    echo "$cores MPI ranks x 1 thread:"
    (cd "$root" && mpirun --oversubscribe -np "$cores" "$exe" "${args[@]}" --run-dir "$tmp/ranks-$1" \
        --set training.threads=1 2>&1 | grep 'epoch 1.00' | sed 's/^.*INFO /  /')
}
for r in $(seq 1 "$rounds"); do
    echo "round $r/$rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    if [ $((r % 2)) -eq 1 ]; then one "$r"; ranks "$r"; else ranks "$r"; one "$r"; fi
done
