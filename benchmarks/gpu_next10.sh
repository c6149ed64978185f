#!/usr/bin/env bash
# One device call (run 08:30 UTC on an H100, results in docs/benchmarks.md;
# prepared 2026-12-07 after gpu_next9.sh's call of 08:20 UTC), on the library with both K rotations
# (PQ_ROT=1, PQ_ROT4=1) and the tensor-core kernel at every 4-bit GQA cell (choose_kernel):
# 1. Kernel tests of the library; its sweep; the MillionCache, decode and eviction GPU tests.
# 2. merge8: the merge kernel at 64 registers (MILLION_CUDA_MERGE8=2, every launch) against the library (0). The
#    timeline of GQA B=1 32K 4-bit (gpu_trace7.sh, 08:22 UTC, graph replay) has 20 of its 32 merge blocks on the 4 SMs
#    the 128 partial blocks leave free, 5 per SM, and 12 waiting for partial blocks to exit: those attend their
#    residual windows only at 23.8 us and end the call at 29.2 instead of ~27.4. At 64 registers 8 fit per SM, so all
#    32 would start at once. Prediction: GQA B=1 32K 4-bit about -1.8 us.
#    Decisions (written before the run; ab_adopt.py, two rounds, margin and guard 1%):
#    - grouped heads (GQA and SmolLM2 cells guarded): merge8 on every launch where a KV head serves several query heads
#      if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more than 1% slower in both;
#    - MHA (MHA cells guarded): merge8 on every MHA launch if faster at mha:1:32768:2 by more than 1% in both rounds and
#      no MHA cell more than 1% slower in both.
#    Adopting is a host-side change of the launcher's rule (the kernels' PTX unchanged), made by hand.
# 3. Timelines (trace build of the same source) of GQA B=1 32K 4- and 2-bit and MHA B=1 32K 2-bit, graph replay, with
#    merge8 off and on.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   .carry/attn_lib10.so: the library source of this commit; its PTX (whole file) is byte-identical to that of
#     .carry/attn_r4.so, measured in gpu_next9.sh's call (docs/logs/rot_1207/adopt.sh with MACRO=PQ_ROT4), and the
#     file is that build
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace10.so src/million/ops/cuda/pq_attention.cu
#   enc_wg.so as in gpu_next9.sh
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next10.sh   (carry .carry/attn_lib10.so, attn_trace10.so, enc_wg.so;
#        about 250 s; M8=0 skips part 2, TRACE=0 part 3, SWEEP=0 the sweep and the cache tests)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next10 "${DEADLINE:-330}" .carry/attn_lib10.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (mha|gqa|smollm2) B=1 ctx=(4096|32768)|^adopt|^slower|FAIL|gqa:1|mha:1"; }
env_txt
run t_kern 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py \
  -k "mma or lut or test_matches_naive or back_to_back or graph_replay or merge8"
if [ "${M8:-1}" = 1 ]; then
  B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes mha,gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
  for r in "" _b; do
    run "ab_lib$r" 45 $B --out "$W/ab_lib$r.json"
    run "ab_m8$r" 45 env MILLION_CUDA_MERGE8=2 $B --out "$W/ab_m8$r.json"
  done
  run adopt_m8g 10 python3 benchmarks/ab_adopt.py "$W" lib m8 --cell gqa:1:32768:4 --margin 0.01 --guard 0.01 \
    --shapes gqa,smollm2
  cp "$W/adopt" "$W/adopt_m8g" 2>/dev/null
  run adopt_m8m 10 python3 benchmarks/ab_adopt.py "$W" lib m8 --cell mha:1:32768:2 --margin 0.01 --guard 0.01 \
    --shapes mha
  cp "$W/adopt" "$W/adopt_m8m" 2>/dev/null
fi
if [ "${TRACE:-1}" = 1 ]; then
  C="--case gqa:1:4:32768 --case gqa:1:2:32768 --case mha:1:2:32768"
  run trace_off 40 env MILLION_CUDA_LIB=.carry/attn_trace10.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
    --out "$W/trace_off.json"
  run trace_m8 40 env MILLION_CUDA_LIB=.carry/attn_trace10.so MILLION_CUDA_MERGE8=2 python3 benchmarks/trace_decode.py \
    --graph --reps 5 $C --out "$W/trace_m8.json"
fi
if [ "${SWEEP:-1}" = 1 ]; then
  run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
    --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
  cache_tests 100
fi
finish_call
