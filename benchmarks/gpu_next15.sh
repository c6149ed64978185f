#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 10:40 UTC): two arms against the library in the tensor-core kernel's K gathers,
# from docs/logs/mp8_1207/mk.patch (both macros 0: PTX byte-identical to the library's, nvcc 13.0, whole file):
# - mp8 (-DPQ_MP8=1): at d = 128 (unpadded 256-byte K rows at dsub 2 and 4) the K table at a 64 KB-aligned shared
#   address, so that a gather's address is one byte permute (code byte into byte 1 of a per-lane word holding the entry
#   offset and the table base), as the FFMA kernel's P8 does, instead of a permute and an IMAD. SASS of the chunk loop
#   (fp16, GB 4, 8 warps): 1,038 -> 982 instructions at 4 bits, 811 -> 772 at 2; 0 spills at 8 warps. The allocation
#   grows from 137 KB to 200 KB.
# - mk (-DPQ_MP8=1 -DPQ_KCLS=1): mp8, and the rotated K registers turned back by gid & 3 only (two select stages of
#   three); rows gid >= 4 keep a 4-group shift that the score mma's unused q columns 4..7 absorb (the same heads' q,
#   shifted alike), the other class's scores masked, the softmax reductions crossing tig (xor 2).
# Prediction: the GQA B=1 32K 4-bit loop (16.4 us, 2 warps per scheduler, issue ~57% busy) shortens with its
# instruction count: mp8 -0.3 to -0.8 us, mk a further -0.3 to -0.8 us.
# Decision (written before the run; ab_adopt.py through adopt_arm, margin and guard 1%, two rounds), only for arms
# whose kernel tests pass: an arm is taken if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or
# SmolLM2 cell is more than 1% slower in both; of those taken, the lowest total (ab_take.py). Then the sweep and the
# MillionCache tests on it, and a timeline of it. Adopt: MACRO=... PATCH=../mp8_1207/mk.patch adopt.sh (PTX check).
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git apply docs/logs/mp8_1207/mk.patch
#   nvcc $F -DPQ_MP8=1 -o .carry/attn_mp8.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_MP8=1 -DPQ_KCLS=1 -o .carry/attn_mk.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_MP8=1 -DPQ_KCLS=1 -DPQ_TRACE -o .carry/attn_mk_trace.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   (attn_lib12.so, attn_trace12.so, enc_wg.so as in gpu_next14.sh)
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next15.sh   (carry .carry/attn_lib12.so, attn_mp8.so, attn_mk.so,
#        attn_mk_trace.so, attn_mp8_trace.so, enc_wg.so; about 300 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next15 "${DEADLINE:-330}" .carry/attn_lib12.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|^take|^total|FAIL|gqa:1:"; }
env_txt
ARMS=${ARMS:-mp8 mk}
arms_call $ARMS
finish_call
