#!/usr/bin/env bash
# One device call: more warps per block in the MHA (FFMA) kernel at 2 bits (dsub 4), -DPQ_NW4=20 and 24 (the library:
# 16), against the library in the same call.
# Why: Nsight Compute (docs/kernel_notes.md, "What the 2-bit loop waits on", H100 2026-12-06 18:55 UTC) finds the 2-bit
# chunk loop latency-bound at 4 warps per scheduler (128 registers, one block of 16 warps per SM): 40% of cycles have no
# eligible warp; shared-memory, global and fixed latencies each cost about a cycle per instruction. 20 warps fit in 96
# registers, 24 in 80; ptxas (nvcc 13.0, here) then gives the fp16 half2 loop 615 instructions per chunk instead of
# 541, with 2 (20 warps) or 6 (24 warps) local loads from spills in it. Whether 25-50% more warps per scheduler hide
# more than the 14% more instructions cost is what this call measures.
# Predicted: uncertain; MHA B=1 32K 2-bit 31.5 -> 29-33 us. 4-bit kernels are unchanged (the macro picks dsub 4 only;
# at PQ_NW4=16 the source's PTX is the library's).
# Decision (written before the run), per build (nw20, nw24) against lib over the MHA 2-bit cells (the only kernels that
# differ), two rounds: faster at MHA B=1 32K 2-bit by more than 1% in both rounds and no cell more than 1% slower in both
# rounds (ab_adopt.py --margin 0.01 --guard 0.01); both pass: the faster at that cell in the mean of the rounds. Taken:
# PQ_NW4's default becomes that count (the kernels of dsub 4 then those of the measured build).
# Build here (nvcc 13.0) and carry .carry:
#   git apply docs/logs/nw4_1206/nw4.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_NW4=20 -o .carry/attn_nw20.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_NW4=24 -o .carry/attn_nw24.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=200 bash benchmarks/gpu_nw4.sh      (carry .carry: attn_fin2.so, attn_nw20.so, attn_nw24.so, enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/nw4 "${DEADLINE:-200}" .carry/attn_fin2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench mha B=1 ctx=32768|^adopt|^slower|^wrote|FAIL"; }
env_txt
lib() { case $1 in lib) echo .carry/attn_fin2.so;; *) echo .carry/attn_$1.so;; esac; }
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 2 --skip-check --shapes mha --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib nw20 nw24; do
    run "ab_$e$r" 25 env MILLION_CUDA_LIB=$(lib $e) $B --out "$W/ab_$e$r.json"
  done
done
for e in nw20 nw24; do
  run "adopt_$e" 10 python3 benchmarks/ab_adopt.py "$W" lib "$e" --cell mha:1:32768:2 --margin 0.01 --guard 0.01
  cp "$W/adopt" "$W/adopt_$e" 2>/dev/null
done
# the FFMA kernel's tests on each build (the 2-bit MHA cases: matching, host tables, half2 values, graph, back to back)
for e in nw20 nw24; do
  run "t_$e" 45 env MILLION_CUDA_LIB=$(lib $e) python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_attention.py -k "ffma or test_matches_naive or back_to_back or graph_replay"
done
finish_call
