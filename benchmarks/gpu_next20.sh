#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 11:35 UTC; ran 12:57 UTC on an H100: kt not taken, 20.3 -> 54.6 us, docs/logs/kt_1207/call_next20/): one arm against the library of ec246d3 (PQ_MP8,
# PQ_KCLS, PQ_VCLS, PQ_WIN; its build .carry/attn_lib14.so is gpu_next18.sh's attn_win.so, whose PTX the source
# reproduces byte for byte, e53a3a8339dd7b3d):
# kt (docs/logs/kt_1207/kt.patch, -DPQ_KT=1; PTX at 0 byte-identical to the library's): the tensor-core kernel's score
# mma transposed where PQ_VCLS applies (d = 128 4-bit, 8 warps). q is the A operand, its 16 rows 4 heads x 4 classes
# (each class's copy of q rotated alike); the K entries are the B operand, two mma per k-tile and 16 tokens. The K
# registers are rotated back by gid & 1 only, one select stage instead of two. Each lane holds one head's scores, and
# the value mma's probabilities arrive in one shuffle per register instead of two and a permute. The lane algebra is
# checked on the CPU (python docs/logs/kt_1207/emulate.py). SASS of the chunk loop (fp16, GB 4, 8 warps): 861 -> 796
# instructions (SEL 178 -> 116, HMMA 32 -> 48, IMAD 21 -> 16), 213 registers, no spill.
# Prediction: the loop follows its instruction count (mk, mkv, win): -4 to -7% of its 14.3 us, GQA B=1 32K 4-bit 20.2
# -> ~19.5 us; the other GQA 4-bit cells alike; 2-bit and SmolLM2 cells unchanged (not compiled in).
# Decision (written before the run; ab_adopt.py through adopt_arm, margin and guard 1%, two rounds), only if its
# kernel tests pass: taken if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more
# than 1% slower in both. Then the sweep and the MillionCache tests on it. Adopt: git apply kt.patch, #define PQ_KT 1,
# and check the PTX against nvcc -ptx -DPQ_KT=1 of the patched source.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib14.so src/million/ops/cuda/pq_attention.cu     (the library)
#   git apply docs/logs/kt_1207/kt.patch
#   nvcc $F -DPQ_KT=1 -o .carry/attn_kt.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   (enc_wg.so as in gpu_next9.sh)
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next20.sh   (carry .carry/attn_lib14.so, attn_kt.so, enc_wg.so;
#        about 220 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
lib_arm_call /tmp/next20 "${DEADLINE:-330}" kt
