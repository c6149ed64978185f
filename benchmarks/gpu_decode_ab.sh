#!/usr/bin/env bash
# A/B timing of prebuilt CUDA decode libraries on the GPU box (one process per library, SDPA fp16
# re-measured in each): the GPU tests of tests/test_cuda_attention.py run against the first library,
# then benchmarks/bench_decode_cuda.py against each. Build the libraries beforehand, e.g.
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared -o .carry/new.so src/million/ops/cuda/pq_attention.cu
# and carry them. Usage (repo root on the GPU box):
#   OUT=$OUT BENCH_ARGS="--batches 1 --contexts 4096,32768" bash benchmarks/gpu_decode_ab.sh .carry/new.so .carry/base.so
# An entry NAME@ENV=VALUE[,ENV=VALUE...]@LIB runs LIB with those environment variables set, e.g.
#   mma16@MILLION_CUDA_KERNEL=mma,MILLION_CUDA_MMA_WARPS=16@.carry/new.so
#   base@PYTHONPATH=.carry/old_src@.carry/base.so     (an older library with the Python package of its commit)
set -uo pipefail
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader | tee -a "$OUT/machine.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/machine.txt"
first=${1##*@}
if [ "${SKIP_TESTS:-0}" != 1 ]; then
  MILLION_CUDA_LIB=$first timeout "${TEST_TIME:-240}" python3 -m pytest -q -m gpu tests/test_cuda_attention.py 2>&1 | tail -20 | tee "$OUT/tests.txt"
fi
for entry in "$@"; do
  lib=${entry##*@}; name=$(basename "$lib" .so); envs=()
  if [[ "$entry" == *@*@* ]]; then name=${entry%%@*}; rest=${entry#*@}; IFS=, read -r -a envs <<< "${rest%@*}"; fi
  echo "== $name ($lib ${envs[*]:-})" | tee -a "$OUT/bench.txt"
  env "${envs[@]}" MILLION_CUDA_LIB="$lib" timeout "${BENCH_TIME:-150}" python3 benchmarks/bench_decode_cuda.py --skip-check \
    --no-triton ${BENCH_ARGS:---batches 1 --contexts 4096,16384,32768} --out "$OUT/$name.json" 2>&1 | grep -v Warning | tail -30 | tee -a "$OUT/bench.txt"
done
