#!/usr/bin/env bash
# Everything the GPU box runs for the kernels: gpu-marked tests, then the benchmarks.
# Usage (from the repo root, on the GPU machine): bash benchmarks/gpu_run.sh [quick|full]
# Logs and JSON go to $OUT (default ./gpu_out).
set -uo pipefail
MODE=${1:-full}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ date; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } 2>&1 | tee "$OUT/env.txt"
python3 -m pytest -m gpu -x -q tests/test_triton_encode.py tests/test_triton_attention.py 2>&1 | tee "$OUT/tests.log"
if [ "$MODE" = quick ]; then
  python3 benchmarks/bench_decode.py --contexts 4096,32768 --batches 1,8 --shapes mha,gqa,smollm2 --bits 4,2 \
    --out "$OUT/decode.json" 2>&1 | tee "$OUT/decode.log"
  python3 benchmarks/bench_encode.py --out "$OUT/encode.json" 2>&1 | tee "$OUT/encode.log"
else
  python3 benchmarks/bench_decode.py --out "$OUT/decode.json" 2>&1 | tee "$OUT/decode.log"
  python3 benchmarks/bench_encode.py --out "$OUT/encode.json" 2>&1 | tee "$OUT/encode.log"
fi
