#!/usr/bin/env bash
# What the GPU box runs for the kernels: gpu-marked tests, then the benchmarks.
#   bash benchmarks/gpu_run.sh [all|tests|encode|decode|quick]     (from the repo root)
# Logs and JSON go to $OUT (default ./gpu_out). million is not installed there: PYTHONPATH=src.
set -uo pipefail
STAGE=${1:-all}
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ date; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  > "$OUT/env.txt" 2>&1
case $STAGE in all|tests)
  python3 -m pytest -m gpu -x -q -p no:cacheprovider tests/test_triton_encode.py tests/test_triton_attention.py \
    2>&1 | tee "$OUT/tests.log" | tail -5 ;;
esac
case $STAGE in all|encode)
  python3 benchmarks/bench_encode.py --variants '[{"tc": false}]' --out "$OUT/encode.json" > "$OUT/encode.log" 2>&1
  grep -v Warn "$OUT/encode.log" | tail -12 ;;
esac
case $STAGE in all|decode)
  python3 benchmarks/bench_decode.py --out "$OUT/decode.json" > "$OUT/decode.log" 2>&1
  grep -E "^(#|shape|mha|gqa|smollm2) " "$OUT/decode.log" ;;
esac
case $STAGE in quick)
  python3 benchmarks/bench_decode.py --contexts 4096,32768 --batches 1,8 --out "$OUT/decode.json" \
    > "$OUT/decode.log" 2>&1
  grep -E "^(#|shape|mha|gqa|smollm2) " "$OUT/decode.log" ;;
esac
