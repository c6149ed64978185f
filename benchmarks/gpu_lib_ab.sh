#!/usr/bin/env bash
# One device call: the GPU tests of the CUDA decode kernels with a new library, then an A/B of an old and a new
# library (each with its own Python package: the argument struct may differ) on B=1 decode rows, interleaved
# twice, SDPA fp16 measured in every process. Prebuilt libraries and the old package are carried:
#   OLD_SRC=.carry/old_src/src OLD_LIB=.carry/attn_h200.so NEW_LIB=.carry/attn_cm2.so bash benchmarks/gpu_lib_ab.sh
set -uo pipefail
OUT=${OUT:-gpu_out}
W=${W:-/tmp/ab}
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1
SHAPES=${SHAPES:-smollm2,gqa,mha}
CONTEXTS=${CONTEXTS:-4096,16384,32768}
{ date -u '+%Y-%m-%d %H:%M:%S UTC'; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv;
  sha256sum "$OLD_LIB" "$NEW_LIB" | cut -c1-16; } > "$W/env.txt" 2>&1
PYTHONPATH=$PWD/src MILLION_CUDA_LIB=$NEW_LIB timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider \
  tests/test_cuda_attention.py > "$W/tests.txt" 2>&1; echo "tests rc=$?" >> "$W/tests.txt"; tail -2 "$W/tests.txt"
cp "$W"/* "$OUT"/
for rep in 1 2; do
  for v in old new; do
    if [ $v = old ]; then src=$OLD_SRC; lib=$OLD_LIB; else src=$PWD/src; lib=$NEW_LIB; fi
    PYTHONPATH=$src MILLION_CUDA_LIB=$lib timeout 100 python3 benchmarks/bench_decode_cuda.py --no-triton --skip-check \
      --shapes "$SHAPES" --batches 1 --contexts "$CONTEXTS" --bits 4 --out "$W/${v}_$rep.json" > "$W/${v}_$rep.txt" 2>&1
    echo "$v $rep rc=$?"; grep "^bench" "$W/${v}_$rep.txt" | sed 's/triton nan us//'
    cp "$W"/* "$OUT"/
  done
done
