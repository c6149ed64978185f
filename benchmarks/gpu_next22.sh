#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 13:18 UTC, not yet run): one arm against the library of ec246d3 (its build
# .carry/attn_lib14.so, 818b53b8f68540dd, whose PTX the source reproduces byte for byte):
# sch (docs/logs/sch_1207/sch.patch, -DPQ_SCH=1; PTX at 0 byte-identical to the library's): in the tensor-core
# kernel's 8-warp d = 128 4-bit instances, the score mma of each 16-token tile accumulates in 4 chains of 2 k-tiles
# instead of 2 chains of 4, and the four are summed at the end. kt and kt2 (gpu_next20.sh, gpu_next21.sh) were 20-26%
# slower with 8% fewer loop instructions and score chains twice as long, so the chain's depth may be what binds.
# SASS of the chunk loop (fp16, GB 4, 8 warps): 861 -> 879 instructions (FADD 24 -> 40, IMAD 21 -> 23), 221-223
# registers (library 214), no spill.
# Prediction: unknown in sign. If the score chains bind, a few percent off the loop (GQA B=1 32K 4-bit 20.3 -> ~19.8
# us); if they do not, about +1% from the 18 added instructions.
# Decision (written before the run; the rule of gpu_next20.sh and gpu_next21.sh): only if its kernel tests pass, taken
# if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more than 1% slower in both.
# Then the sweep and the MillionCache tests on it. Adopt: git apply sch.patch, #define PQ_SCH 1, and check the PTX
# against nvcc -ptx -DPQ_SCH=1 of the patched source.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib14.so src/million/ops/cuda/pq_attention.cu     (the library)
#   git apply docs/logs/sch_1207/sch.patch
#   nvcc $F -DPQ_SCH=1 -o .carry/attn_sch.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   (enc_wg.so as in gpu_next9.sh)
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next22.sh   (carry .carry/attn_lib14.so, attn_sch.so, enc_wg.so;
#        about 230 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
lib_arm_call /tmp/next22 "${DEADLINE:-330}" sch
