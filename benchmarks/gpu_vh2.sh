#!/usr/bin/env bash
# One device call: the MHA (FFMA) kernel accumulating each chunk's values in half2 (kind 4: fp16 inputs, one query head
# per block, V centroids within +-2048), against float32 accumulation (kind 2, the library before) in the same call.
# Why: the SASS of the chunk loop (nvdisasm of sm_90 cubins built here by nvcc 13.0) has 693 instructions per 32-token
# chunk at 2 bits (d=128, M=32) and 1052 at 4 bits; at the timelines' loop times (2-bit 24.3 us, 4-bit 40.5 us for 256
# chunks of 16 warps per block) that is ~3.7 and ~3.4 warp instructions per cycle per SM, against the 4 the schedulers
# issue: the 2-bit loop is issue-bound (0.5 MB per block in 24.3 us, 2.8 TB/s over the grid, while the 4-bit loop moves
# 3.3 TB/s). In half2 the values cost one HFMA2 per centroid pair instead of two conversions and two FFMAs, flushed into
# the float32 accumulators once per chunk: 693 -> 541 instructions at 2 bits, 1052 -> 892 at 4 bits.
# Predicted: MHA B=1 32K 2-bit loop 24.3 -> ~20.5 us (the byte rate of the 4-bit loop), the call 34.0 -> ~30.5 us;
# 4-bit unchanged or slightly faster (its loop already moves 3.3 TB/s).
# Decision (written before the run): take the half2 path as the default (kind 4) where MHA B=1 32K 2-bit is faster by
# more than 1% in all three rounds and no cell is more than 1% slower in all three rounds (ab_adopt.py --margin 0.01
# --guard 0.01 --rounds ,_b,_c); the A/B runs one library, the final source, with MILLION_CUDA_HALF_V=0 (kind 2:
# every kernel's PTX byte-identical to the library before, per-function nvcc -ptx comparison) and =1 (kind 4: the
# half2 kernels, PTX identical to the -DPQ_VH2=1 build of df435af).
# Build here (nvcc 13.0) and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_fin.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_fin.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=540 bash benchmarks/gpu_vh2.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/vh2 "${DEADLINE:-540}" .carry/attn_fin.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote|^ctx |FAIL|check B=(4|5) |check B=1 Hq=32"; }
env_txt
# every stage but the A/B's float32 rounds and trace_0 runs the half2 path (the default it would become)
export MILLION_CUDA_HALF_V=1
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --shapes mha"
run t_attn 100 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for v in 0 1; do
  run "chk_$v" 40 env MILLION_CUDA_HALF_V=$v $B --contexts 4096 --batches 1 --out "$W/chk_$v.json"
done
for r in "" _b _c; do
  for v in f32 h2; do
    run "ab_$v$r" 30 env MILLION_CUDA_HALF_V=$([ $v = h2 ] && echo 1 || echo 0) $B --skip-check \
      --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/ab_$v$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" f32 h2 --cell mha:1:32768:2 --margin 0.01 --guard 0.01 --rounds ,_b,_c
for v in 1 0; do
  run "trace_$v" 30 env MILLION_CUDA_HALF_V=$v MILLION_CUDA_LIB=.carry/attn_trace_fin.so python3 \
    benchmarks/trace_decode.py --graph --reps 5 --out "$W/trace_$v.json"
done
sweep_all 50
cache_tests 150
MILLION_ENCODE_PRUNE_MIN=1000000000 run graph 100 python3 benchmarks/bench_e2e.py --graph --contexts 32768,65536 \
  --steps 128 --json "$W/e2e_graph.json"
finish_call
