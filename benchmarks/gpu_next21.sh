#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 13:02 UTC; ran 13:12 UTC: kt2 not taken, 20.29 -> 25.48 us, docs/logs/kt_1207/call_next21/; after gpu_next20.sh at 12:57 UTC on an H100): there kt passed its
# kernel tests (193 passed) but took GQA B=1 32K 4-bit from 20.3 to 54.6 us (both rounds; other cells unchanged). Its
# q loads were `ld.volatile.global.u16`, 64 a lane, which ptxas emits as LDG.E.U16.STRONG.SYS: they bypass the L1, so
# every warp of every block sent its 64 loads to the same few L2 lines of q.
# kt2 (docs/logs/kt_1207/kt2.patch, which contains kt.patch; -DPQ_KT=1; PTX at 0 byte-identical to the library's):
# the block's 4 heads of q are loaded once by plain loads (2 a thread), stored to 1 KB of static shared memory after
# the lengths' load is issued, and each A register is read by its own `ld.volatile.shared.u16` (64 LDS.U16 a lane).
# SASS of the chunk loop unchanged from kt (796 instructions), 213 registers, no spill, static shared memory 1040 ->
# 2064 bytes.
# Prediction: as kt's: -4 to -7% of the loop, GQA B=1 32K 4-bit 20.3 -> ~19.5 us; the prologue's barrier and shared
# loads cost about 0.1 us.
# Decision (written before the run; the rule of gpu_next20.sh unchanged): only if its kernel tests pass, taken if
# faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more than 1% slower in both. Then
# the sweep and the MillionCache tests on it. Adopt: git apply kt2.patch, #define PQ_KT 1, check the PTX against
# nvcc -ptx -DPQ_KT=1 of the patched source.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib14.so src/million/ops/cuda/pq_attention.cu     (the library, 818b53b8f68540dd)
#   git apply docs/logs/kt_1207/kt2.patch
#   nvcc $F -DPQ_KT=1 -o .carry/attn_kt2.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   (enc_wg.so as in gpu_next9.sh)
# Usage: OUT=$OUT DEADLINE=280 bash benchmarks/gpu_next21.sh   (carry .carry/attn_lib14.so, attn_kt2.so, enc_wg.so;
#        about 230 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
lib_arm_call /tmp/next21 "${DEADLINE:-280}" kt2
