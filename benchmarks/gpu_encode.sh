#!/usr/bin/env bash
# One device call: build the CUDA encode library, GPU tests, encode benchmark (and optionally the prefill).
#   bash benchmarks/gpu_encode.sh [--prefill]
set -o pipefail
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
t0=$(date +%s)
nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared -Xptxas -v \
  -o /tmp/million_pq_encode.so src/million/ops/cuda/pq_encode.cu > "$OUT/ptxas.txt" 2>&1 || { cat "$OUT/ptxas.txt"; exit 1; }
export MILLION_CUDA_ENCODE_LIB=/tmp/million_pq_encode.so
echo "build $(( $(date +%s) - t0 )) s"
grep -E "registers|spill" "$OUT/ptxas.txt" | sort | uniq -c | head -20
timeout ${TEST_TIMEOUT:-120} python3 -m pytest tests/test_cuda_encode.py -m gpu -q --maxfail=30 -p no:cacheprovider > "$OUT/tests.txt" 2>&1; tail -40 "$OUT/tests.txt"
PRE=--no-prefill; [ "$1" = "--prefill" ] && PRE=""
DEFAULT_VARIANTS='[{"kernel":"cuda","kind":"brute"},{"kernel":"v2"}]'
VARIANTS=${VARIANTS:-$DEFAULT_VARIANTS}
timeout ${BENCH_TIMEOUT:-150} python3 benchmarks/bench_encode.py $PRE --out "$OUT/bench_encode.json" \
  --variants "$VARIANTS" 2>&1 | tee "$OUT/bench.txt"
