#!/usr/bin/env bash
# Ran 2026-12-06 12:04 UTC (refuted; docs/kernel_notes.md, "Eight merge blocks per SM"): the merge kernel limited to 64 registers (__launch_bounds__(128, 8), from
# docs/logs/pfgqa_1206/next_merge_minb.patch as -DPQ_MERGE_MINB=8), so that 8 merge blocks fit on an SM instead of 5.
# Why: at B=1 32K (MHA and GQA) the partial grid takes 128 of the 132 SMs with all their registers; the 4 free SMs hold
# 20 of the 32 merge blocks (96 registers x 128 threads each), the other 12 enter only when partial blocks exit and then
# attend the residual window (3-4.6 us) after the last partial: the graph timeline of 11:38 UTC puts their ends 2-3.5 us
# after the early blocks' at MHA 2-bit, 1.5 us at GQA 4-bit, 0.5 us at MHA 4-bit. Predicted: MHA B=1 32K 2-bit
# 33.8 -> ~30.5 us, GQA 28.6 -> ~27.1, MHA 4-bit 50.9 -> ~50.4; other cells unchanged (d = 64 merges already use 64).
# Build here and carry .carry (at 620239d):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_new.so src/million/ops/cuda/pq_attention.cu                  # the library
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_new.so src/million/ops/cuda/pq_attention.cu
#   git apply docs/logs/pfgqa_1206/next_merge_minb.patch
#   nvcc $F -DPQ_MERGE_MINB=8 -o .carry/attn_mg8.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -DPQ_MERGE_MINB=8 -o .carry/attn_trace_mg8.so src/million/ops/cuda/pq_attention.cu
# Decision (written before the run): adopt where mg8 is faster at MHA B=1 32K 2-bit by more than 0.5% in both rounds and
# no cell is more than 2% slower in both rounds; then the sweep and the MillionCache tests in the same call.
# Usage: OUT=$OUT DEADLINE=420 bash benchmarks/gpu_merge_minb.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/mg8 "${DEADLINE:-420}" .carry/attn_mg8.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote"; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
run t_mg8 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for r in "" _b; do
  for e in new mg8; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha,gqa,smollm2 --contexts 4096,32768 \
      --batches 1,8 --out "$W/ab_$e$r.json"
  done
done
for e in new mg8; do
  run "qop_$e" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha,gqa,smollm2 --contexts 4096,32768 --batches 1 \
    --q-op --out "$W/qop_$e.json"
  run "trace_$e" 40 env MILLION_CUDA_LIB=.carry/attn_trace_$e.so python3 benchmarks/trace_decode.py --graph --reps 5 \
    --out "$W/trace_$e.json"
done
GUARD=0.02 adopt_then_sweep new mg8 mha:1:32768:2 50 120
finish_call
