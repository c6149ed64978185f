#!/usr/bin/env bash
# One device call (prepared 2026-12-07, not yet run): the tensor-core kernel's chunk loop software-pipelined by one
# phase (docs/logs/swp_1207/swp.patch, -DPQ_SWP=1; the 8- and 12-warp instances): iteration c runs the K side of chunk
# c + NW (64 gathers, their rotation, 16 mma, the scores) beside the V side of chunk c (64 gathers, 16 mma), two
# independent chains in one basic block, then chunk c + NW's softmax. The GQA B=1 32K 4-bit loop moves its codes at 2.05
# TB/s with 2 warps per scheduler and waits on latency (docs/kernel_notes.md, "Where GQA B=1 32K 4-bit spends its 22.5
# us now"); more warps did not help it (the 09:07 UTC probe), so this gives each warp two chains instead. Prediction:
# GQA B=1 32K 4-bit 22.2 -> ~20 us if the loop's 16.4 us falls by a seventh; no change at the cells the packed LUT or
# 16 warps serve.
# Decision (written before the run; ab_adopt.py, margin and guard 1%), only if the kernel tests pass on the build:
# swp is taken if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell is more than 1%
# slower in both; then the sweep and the MillionCache tests run on it. Adopt: git apply docs/logs/swp_1207/swp.patch,
# #define PQ_SWP 1, and check the PTX against nvcc -ptx -DPQ_SWP=1 of the patched source
# (MACRO=PQ_SWP PATCH=../swp_1207/swp.patch bash docs/logs/rot_1207/adopt.sh 1).
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib12.so src/million/ops/cuda/pq_attention.cu     (the library)
#   git apply docs/logs/swp_1207/swp.patch
#   nvcc $F -DPQ_SWP=1 -o .carry/attn_swp.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_SWP=1 -DPQ_TRACE -o .carry/attn_swp_trace.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace12.so src/million/ops/cuda/pq_attention.cu   (the library's trace build)
#   enc_wg.so as in gpu_next9.sh
#   (swp.patch at PQ_SWP=0: PTX byte-identical to the library's, nvcc 13.0, whole file)
# Usage: OUT=$OUT DEADLINE=300 bash benchmarks/gpu_next14.sh   (carry .carry/attn_lib12.so, attn_swp.so,
#        attn_swp_trace.so, attn_trace12.so, enc_wg.so; about 230 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next14 "${DEADLINE:-300}" .carry/attn_lib12.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|FAIL|gqa:1:"; }
env_txt
K="-k mma or test_matches_naive or back_to_back or graph_replay"
run t_swp 60 env MILLION_CUDA_LIB=.carry/attn_swp.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py "$K"
if passed t_swp; then
  B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8"
  for r in "" _b; do
    run "ab_lib$r" 40 $B --out "$W/ab_lib$r.json"
    run "ab_swp$r" 40 env MILLION_CUDA_LIB=.carry/attn_swp.so $B --out "$W/ab_swp$r.json"
  done
  # timelines of both (trace builds, graph replay), whatever the decision: the loop's median and per-chunk time
  C="--case gqa:1:4:32768 --case gqa:1:2:32768"
  run trace_lib 30 env MILLION_CUDA_LIB=.carry/attn_trace12.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
    --out "$W/trace_lib.json"
  run trace_swp 30 env MILLION_CUDA_LIB=.carry/attn_swp_trace.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
    --out "$W/trace_swp.json"
  rm -f "$W/adopt"
  run adopt_swp 10 python3 benchmarks/ab_adopt.py "$W" lib swp --cell gqa:1:32768:4 --margin 0.01 --guard 0.01 \
    --shapes gqa,smollm2
  if [ "$(cat "$W/adopt" 2>/dev/null)" = 1 ]; then
    export MILLION_CUDA_LIB=.carry/attn_swp.so
    run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
      --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
    cache_tests 100
  fi
fi
finish_call
