#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 10:50 UTC), after gpu_next15.sh (10:20 UTC, H100: neither arm taken; mk was
# 1.3% faster at GQA B=1 32K 4-bit in both rounds but 2.7% slower at GQA B=8 4K 2-bit, the 16-warp dsub-4 instance,
# whose spills went from 32 to 68 bytes). Two arms against the library, from docs/logs/mp8_1207/mkv.patch (all three
# macros 0: PTX byte-identical to the library's, nvcc 13.0, whole file):
# - mk2 (-DPQ_MP8=1 -DPQ_KCLS=1): next15's mk with the two-stage rotation left out of the 16-warp dsub-4 instances.
# - mkv (-DPQ_MP8=1 -DPQ_KCLS=1 -DPQ_VCLS=1): mk2, and at d = 128 dsub 2 the V table unpadded, 64 KB after the K
#   table (192 KB in all), each V gather one byte permute; the tig lanes of class tig >> 1 read output tile
#   (r + 2 class) mod 8 at step r, so that the two classes hit disjoint banks (2 wavefronts instead of ~2.34); the value
#   mma's unused B columns 4..7 carry class 1's probabilities and its accumulators are added two tiles on at the end.
#   The library reports the unpadded V rows (million_pq_mma_vpad) and ops.cuda_attention.mma_tables lays them out.
# Prediction: mk2 as mk at GQA 4-bit (-1.3% at B=1 32K) without the B=8 4K 2-bit loss; mkv a further -2 to -4%.
# Decision (written before the run; ab_adopt.py through adopt_arm, margin and guard 1%, two rounds), only for arms
# whose kernel tests pass: an arm is taken if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or
# SmolLM2 cell is more than 1% slower in both; of those taken, the lowest total (ab_take.py). Then the sweep and the
# MillionCache tests on it, and timelines. Adopt: set the taken arm's macros to 1 in the patched source and check the
# PTX against the measured build's (nvcc -ptx with the -D flags).
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git apply docs/logs/mp8_1207/mkv.patch
#   nvcc $F -DPQ_MP8=1 -DPQ_KCLS=1 -o .carry/attn_mk2.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_MP8=1 -DPQ_KCLS=1 -DPQ_VCLS=1 -o .carry/attn_mkv.so src/million/ops/cuda/pq_attention.cu
#   the same two with -DPQ_TRACE: .carry/attn_mk2_trace.so, .carry/attn_mkv_trace.so
#   (attn_lib12.so, attn_trace12.so, enc_wg.so as in gpu_next14.sh)
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next16.sh   (the working tree with mkv.patch's cuda_attention.py
#        part applied; carry .carry/attn_lib12.so, attn_mk2.so, attn_mkv.so, their _trace builds, attn_trace12.so,
#        enc_wg.so; about 300 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next16 "${DEADLINE:-330}" .carry/attn_lib12.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|^take|^total|FAIL|gqa:1:"; }
env_txt
# the Python half of the patch (mma_tables: unpadded V rows where the library reports them); a no-op where applied
git apply --include='src/million/ops/cuda_attention.py' docs/logs/mp8_1207/mkv.patch 2>/dev/null || true
ARMS=${ARMS:-mk2 mkv}
arms_call $ARMS
finish_call
