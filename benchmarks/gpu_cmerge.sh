#!/usr/bin/env bash
# One device call for the tensor-core kernel's cluster merge (docs/kernel_notes.md, "Cluster merge"): the GPU
# tests of the CUDA kernels (the cluster-merge tests force it on), then an A/B in one process per row (merge
# kernel vs cluster merge, same graph method, SDPA fp16 of the same run) at GQA and SmolLM2 shapes, B=1 and 8,
# 1K-32K, and a split sweep with the cluster merge on. Library prebuilt here and carried (nvcc flags as in
# src/million/ops/_nvcc.py):
#   LIB=.carry/attn_cm.so bash benchmarks/gpu_cmerge.sh      # device `run` with carry [".carry"]
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-gpu_out}
W=${W:-/tmp/cm}
LIB=${LIB:-.carry/attn_cm.so}
DEADLINE=${DEADLINE:-440}
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 MILLION_CUDA_LIB=$LIB
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
step() {  # name, timeout cap, command...
  local name=$1 cap=$2; shift 2
  local t; t=$(left); (( t > cap )) && t=$cap
  if (( t < 15 )); then echo "== $name skipped ($(left) s left)" | tee -a "$W/summary.txt"; return; fi
  echo "== $name (timeout $t s, t=$(( $(date +%s) - T0 )) s)" | tee -a "$W/summary.txt"
  timeout "$t" "$@" > "$W/$name.txt" 2>&1
  echo "   $name rc=$?" | tee -a "$W/summary.txt"
  tail -3 "$W/$name.txt" | sed 's/^/   /' >> "$W/summary.txt"
  cp -r "$W"/. "$OUT"/ 2>/dev/null
}
{ date -u '+%Y-%m-%d %H:%M:%S UTC'; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv;
  git rev-parse HEAD 2>/dev/null; sha256sum "$LIB" | cut -c1-16; } > "$W/env.txt" 2>&1
step tests 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_attention.py
step ab1 110 python3 benchmarks/bench_decode_cuda.py --no-triton --skip-check --cmerge-ab --shapes smollm2,gqa \
  --batches 1,8 --contexts 1024,4096,16384,32768 --out "$W/ab1.json"
step sweep 80 env MILLION_CUDA_CMERGE=1 python3 benchmarks/bench_decode_cuda.py --no-triton --skip-check --skip-bench \
  --sweep-splits --sweep-spec 'smollm2:4096:4:4,7,11,15;smollm2:4096:2:4,7,11,15;gqa:4096:4:4,7,11,14,15;gqa:4096:2:7,11,15;smollm2:16384:4:7,11,15;gqa:16384:4:7,11,15' \
  --out "$W/sweep.json"
step ab2 110 python3 benchmarks/bench_decode_cuda.py --no-triton --skip-check --cmerge-ab --shapes smollm2,gqa \
  --batches 1,32 --contexts 4096,16384 --out "$W/ab2.json"
step gpu_cache 90 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_cache.py
cat "$W/summary.txt"
