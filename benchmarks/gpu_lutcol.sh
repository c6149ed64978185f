#!/usr/bin/env bash
# One device call (2026-12-06): the FFMA kernel's LUT build at M = 64 (MHA 4-bit) with a thread per row position
# instead of per subspace (no 2-way bank conflicts in its loads and stores), against the library before it; the
# benchmark's calls per replay (20 against 100); the final library's sweep and its MillionCache tests.
# Libraries prebuilt here (nvcc 13.0) and carried in .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_col.so src/million/ops/cuda/pq_attention.cu          # this commit's source
#   git show 2b47f89:src/million/ops/cuda/pq_attention.cu > /tmp/fin.cu; nvcc $F -o .carry/attn_fin.so /tmp/fin.cu
# Stages ($STAGES, default "tests ab calls sweep cache"), each packed to $OUT as it ends (deadline $DEADLINE s):
#   tests  the GPU attention suite against attn_col.so
#   ab     MHA, 4 and 2 bits, B=1 and 8, 4K / 32K / 128K: fin, col, fin, col; then --q-op B=1 4K / 32K
#   calls  attn_fin.so, every shape, B=1, 4K and 32K: --calls 20 and --calls 100 (SDPA likewise)
#   sweep  $SWEEP_LIB (default col) over 4K-128K, every shape, B=1 and 8, plain and --q-op
#   cache  the MillionCache, decode-loop and eviction GPU tests against $SWEEP_LIB
# Usage: OUT=$OUT DEADLINE=480 bash benchmarks/gpu_lutcol.sh
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
SL=${SWEEP_LIB:-col}
gpu_setup /tmp/lutcol "${DEADLINE:-480}" .carry/attn_$SL.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
for s in ${STAGES:-tests ab calls sweep cache}; do
  case $s in
  tests)
    run t_col 90 env MILLION_CUDA_LIB=.carry/attn_col.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py ;;
  ab)
    for r in "" _b; do
      for e in fin col; do
        run "ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768,131072 \
          --batches 1,8 --out "$W/ab_$e$r.json"
      done
    done
    for e in fin col; do
      run "qop_$e" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768 --batches 1 \
        --q-op --out "$W/qop_$e.json"
    done ;;
  calls)
    for c in 20 100; do
      run "calls$c" 60 env MILLION_CUDA_LIB=.carry/attn_fin.so $B --shapes mha,gqa,smollm2 --contexts 4096,32768 \
        --batches 1 --calls $c --out "$W/calls$c.json"
    done ;;
  sweep)
    sweep_all 90 ;;
  cache)
    cache_tests 150 ;;
  esac
done
finish_call
