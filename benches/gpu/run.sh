#!/usr/bin/env bash
# GPU checks of uno-rs on one CUDA machine: the cross-backend test suites on `cuda`
# (blockwise attention vs the dense fallback, forward and gradients; bf16 RoPE; bf16 parity)
# and the BAGEL-7B-shaped decoder step (tokens/s, MFU, peak memory). See README.md beside
# this file.
#
# Usage (repository root): benches/gpu/run.sh [BIN_DIR] [OUT_DIR]
#   BIN_DIR holds the test binaries `mot` and `core` and the example `step_bench`, built
#   with `--features cuda` (default: target/debug, with the cargo commands of README.md).
set -u
BIN=${1:-target/debug}
OUT=${2:-gpu-results}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

# Peak device memory of one command: nvidia-smi sampled every 100 ms while it runs.
peak() {
    local log; log=$(mktemp)
    (while :; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits >>"$log"; sleep 0.1; done) &
    local sampler=$!
    "$@"; local rc=$?
    kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
    echo "peak device memory: $(sort -n "$log" | tail -1) MiB (rc $rc)"
    rm -f "$log"
}

echo "=== cuda test suites"
"$BIN"/mot cuda:: 2>&1 | tail -n 40 | tee "$OUT/mot_cuda.txt"
"$BIN"/core cuda 2>&1 | tail -n 40 | tee "$OUT/core_cuda.txt"

echo "=== BAGEL-7B-shaped step, 2 layers, bf16 (one process per attention: its peak is the"
echo "=== 4k-token step's, the largest)"
for attention in blockwise dense; do
    peak "$BIN"/examples/step_bench --backend cuda --precision bf16 --layers 2 \
        --tokens 1024,2048,4096 --attention "$attention" --iters 3 2>&1
done | tee "$OUT/step.txt"

echo "=== the same step as UNO trains it: und frozen, f32 vs bf16 mixed precision (blockwise)"
for precision in f32 bf16-mixed; do
    peak "$BIN"/examples/step_bench --backend cuda --precision "$precision" --freeze-und \
        --layers 2 --tokens 1024,2048,4096 --attention blockwise --iters 3 2>&1
done | tee "$OUT/step_mixed.txt"

echo "=== BAGEL-7B's depth (28 layers) on the paper's 4k-token sample with per-layer activation"
echo "=== checkpointing, und frozen: bf16 everywhere, then bf16 mixed precision (f32 masters)"
for precision in bf16 bf16-mixed; do
    peak "$BIN"/examples/step_bench --backend cuda --precision "$precision" --freeze-und \
        --checkpoint --layers 28 --tokens 4096 --attention blockwise --iters 2 2>&1
done | tee "$OUT/step_28_layers.txt"
