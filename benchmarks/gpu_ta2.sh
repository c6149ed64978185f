#!/usr/bin/env bash
# Ran as the tb arm of gpu_gqa7.sh (H100, 2026-12-07 01:51 UTC): tb taken, now the library's defaults (PQ_TALIGN=1024,
# PQ_TALIGN_DMIN=128); tc not measured. Kept as the record of the prepared call.
# One device call: the tensor-core and packed-LUT kernels' tables at an aligned shared address, in the two forms the
# first A/B (gpu_pipe.sh, H100 2026-12-06 22:46 UTC) points at, against the library (attn_p8w.so) in the same call.
# That A/B (-DPQ_TALIGN=1024 at every head dim, attn_ta.so): GQA B=1 4K 4-bit 10.7 -> 8.7 us and 2-bit 10.1 -> 8.0 in
# both rounds, SmolLM2 B=1 4K 5.8 -> 5.2, but SmolLM2 (d = 64) 8-31% slower from 32K and at B=8: refuted by its rule. At
# d = 64 three blocks of the tensor-core kernel share an SM; 1 KB more per block plausibly leaves room for two.
#   tb: -DPQ_TALIGN=1024 -DPQ_TALIGN_DMIN=128: aligned at d = 128 only (one block per SM there); the d = 64 kernels are
#       the library's.
#   tc: -DPQ_TALIGN=128 at every head dim: 128 bytes more per block instead of 1024.
# Predicted: tb = ta's GQA gains, SmolLM2 as the library; tc: the GQA and SmolLM2 4K gains if 128-byte alignment is what
# the copies need, and no SmolLM2 loss if 128 bytes more keep three blocks per SM.
# Decision (written before the run), for each of tb and tc against lib over the GQA and SmolLM2 cells of both widths,
# two rounds: faster at GQA B=1 4K 4-bit by more than 1% in both rounds and no cell more than 1% slower in both rounds
# (ab_adopt.py --margin 0.01 --guard 0.01). If both pass, the one with the lower total time over every cell and both
# rounds is taken. Taken: the source gets its defaults (PQ_TALIGN, PQ_TALIGN_DMIN), provided its tests pass (run on the taken build
# only); the call then sweeps it (plain, no --q-op) and runs the MillionCache tests on it.
# Build here (nvcc 13.0) and carry .carry (attn_tb.so, attn_tc.so: the source of 06bd3d5 plus ta2.patch; at PQ_TALIGN=0
# the patched source's PTX is the library's):
#   git apply docs/logs/ta_1206/ta2.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_TALIGN=1024 -DPQ_TALIGN_DMIN=128 -o .carry/attn_tb.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TALIGN=128 -o .carry/attn_tc.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_ta2.sh      (carry .carry: attn_p8w.so, attn_tb.so, attn_tc.so, enc_wg.so)
#        ARMS=tb OUT=$OUT DEADLINE=150 bash benchmarks/gpu_ta2.sh  (tb alone, about 100 s: where little device time is left)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/ta2 "${DEADLINE:-330}" .carry/attn_p8w.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=(4096|32768)|^adopt|^slower|^take|FAIL"; }
env_txt
lib() { case $1 in lib) echo .carry/attn_p8w.so;; *) echo .carry/attn_$1.so;; esac; }
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib ${ARMS:-tb tc}; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib $e) $B --out "$W/ab_$e$r.json"
  done
done
for e in ${ARMS:-tb tc}; do adopt_arm $e gqa:1:4096:4; done
run take 10 python3 benchmarks/ab_take.py "$W" ${ARMS:-tb tc}
take=$(cat "$W/take" 2>/dev/null || echo none)
if [ "$take" != none ]; then
  export MILLION_CUDA_LIB=$(lib "$take")
  run "t_$take" 40 python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_attention.py -k "mma or lut or test_matches_naive or back_to_back or graph_replay"
  run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
    --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
  cache_tests 100
fi
finish_call
