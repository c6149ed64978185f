#!/usr/bin/env bash
# One device call: the MHA (FFMA) kernel accumulating each chunk's values in half2 (-DPQ_VH2=1, fp16 inputs, one query
# head per block), against the library in the same call.
# Why: the SASS of the chunk loop (nvdisasm of sm_90 cubins built here by nvcc 13.0) has 693 instructions per 32-token
# chunk at 2 bits (d=128, M=32) and 1052 at 4 bits; at the timelines' loop times (2-bit 24.3 us, 4-bit 40.5 us for 256
# chunks of 16 warps per block) that is ~3.7 and ~3.4 warp instructions per cycle per SM, against the 4 the schedulers
# issue: the 2-bit loop is issue-bound (0.5 MB per block in 24.3 us, 2.8 TB/s over the grid, while the 4-bit loop moves
# 3.3 TB/s). In half2 the values cost one HFMA2 per centroid pair instead of two conversions and two FFMAs, flushed into
# the float32 accumulators once per chunk: 693 -> 541 instructions at 2 bits, 1052 -> 892 at 4 bits.
# Predicted: MHA B=1 32K 2-bit loop 24.3 -> ~20.5 us (the byte rate of the 4-bit loop), the call 34.0 -> ~30.5 us;
# 4-bit unchanged or slightly faster (its loop already moves 3.3 TB/s).
# Decision (written before the run): adopt where faster at MHA B=1 32K 2-bit by more than 1% in all three rounds and no
# cell more than 1% slower in all three rounds (ab_adopt.py --margin 0.01 --guard 0.01 --rounds ,_b,_c).
# Build here (nvcc 13.0) and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_new.so src/million/ops/cuda/pq_attention.cu                      # the library
#   nvcc $F -DPQ_VH2=1 -o .carry/attn_vh2.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_VH2=1 -DPQ_TRACE -o .carry/attn_trace_vh2.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_new.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=400 bash benchmarks/gpu_vh2.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/vh2 "${DEADLINE:-400}" .carry/attn_vh2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote|^ctx |FAIL|check B=(4|5) "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --shapes mha"
run t_vh2 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for e in new vh2; do
  run "chk_$e" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --contexts 4096 --batches 1 --out "$W/chk_$e.json"
done
for r in "" _b _c; do
  for e in new vh2; do
    run "ab_$e$r" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --skip-check --contexts 4096,16384,32768,131072 \
      --batches 1,8 --out "$W/ab_$e$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" new vh2 --cell mha:1:32768:2 --margin 0.01 --guard 0.01 --rounds ,_b,_c
for e in vh2 new; do
  run "trace_$e" 30 env MILLION_CUDA_LIB=.carry/attn_trace_$e.so python3 benchmarks/trace_decode.py --graph --reps 5 \
    --out "$W/trace_$e.json"
done
finish_call
