#!/usr/bin/env bash
# (Not run as such: its A/B ran as the second half of gpu_pipe.sh, H100 2026-12-06 22:46 UTC; next: gpu_ta2.sh.)
# One device call: the tensor-core (GQA, SmolLM2 shape) and packed-LUT kernels with their tables at a 1024-byte aligned
# shared address (-DPQ_TALIGN=1024, attn_ta.so), against the library (attn_p8w.so, the source of 9b7ca04) in the same call.
# Why: the byte-permute lookups of 2026-12-06 (docs/kernel_notes.md) put the MHA kernel's tables at 64 KB-aligned
# addresses, and its B=1 4K cells got 10-13% faster, more than its shorter loop accounts for at 2 chunks per warp. One
# candidate is the tables' bulk copies: before, they landed at the dynamic allocation's start, 16-byte aligned behind
# the static shared memory (528 bytes in the MHA kernel, 16 in the other two). The tensor-core and packed-LUT kernels
# still copy their tables there. Lookups are unchanged (shifting a table by a multiple of 16 bytes keeps its banks'
# relative pattern; here the shift makes the base a multiple of 1024).
# Predicted: GQA / SmolLM2 B=1 4K -3% to -10% if the copies are slowed by the alignment; nothing if not.
# Decision (written before the run): ta against lib over the GQA and SmolLM2 cells of both widths, two rounds: faster at
# GQA B=1 4K 4-bit by more than 1% in both rounds and no cell more than 1% slower in both rounds (ab_adopt.py --margin
# 0.01 --guard 0.01). Taken: PQ_TALIGN's default becomes 1024, provided the attention tests pass on the build.
# Build here (nvcc 13.0) and carry .carry (attn_ta.so ac7e54f2cc3ab472: the source of 62460b1 plus the patch;
# at PQ_TALIGN=0 the patched source's PTX is the library's, 219 of 219 functions):
#   git apply docs/logs/ta_1206/ta.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_TALIGN=1024 -o .carry/attn_ta.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=200 bash benchmarks/gpu_ta.sh      (carry .carry: attn_p8w.so, attn_ta.so, enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/ta "${DEADLINE:-200}" .carry/attn_p8w.so .carry/enc_wg.so
pack() { pack_lines "$1" "passed|failed|Error|^bench gqa B=1 ctx=4096|^bench gqa B=1 ctx=32768|^adopt|^slower|FAIL"; }
env_txt
lib() { case $1 in lib) echo .carry/attn_p8w.so;; *) echo .carry/attn_$1.so;; esac; }
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib ta; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib $e) $B --out "$W/ab_$e$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" lib ta --cell gqa:1:4096:4 --margin 0.01 --guard 0.01
run t_ta 100 env MILLION_CUDA_LIB=.carry/attn_ta.so python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
finish_call
