#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 10:35 UTC), on the library with the byte-permute addressing and two-class
# gathers adopted (PQ_MP8, PQ_KCLS, PQ_VCLS = 1; its build is gpu_next16.sh's attn_mkv.so, whose PTX the adopted
# source reproduces byte for byte, 864f13438dd1487b):
# 1. the whole tensor-core/attention GPU test file on the library (the 10:24 UTC call ran the kernel subset, 187
#    passed, and the MillionCache tests, 91 passed);
# 2. one arm against it, lazy (docs/logs/mp8_1207/lazy.patch, -DPQ_LAZY=1; PTX at 0 byte-identical to the library's):
#    the tensor-core kernel's online softmax rescales l and the accumulators only in chunks where a lane's running max
#    grew (a warp vote), as the FFMA kernel does; the values are unchanged (alpha is exactly 1 where it is skipped).
#    Prediction: -1 to -2% at GQA B=1 32K 4-bit (33 of 893 instructions per chunk skipped in most chunks).
# Decision (written before the run; ab_adopt.py through adopt_arm, margin and guard 1%, two rounds), only if its
# kernel tests pass: taken if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more
# than 1% slower in both. Then the sweep and the MillionCache tests on it.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib13.so src/million/ops/cuda/pq_attention.cu   (or gpu_next16.sh's attn_mkv.so: same PTX)
#   git apply docs/logs/mp8_1207/lazy.patch
#   nvcc $F -DPQ_LAZY=1 -o .carry/attn_lazy.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=400 bash benchmarks/gpu_next17.sh   (carry .carry/attn_mkv.so, attn_lazy.so, enc_wg.so;
#        about 330 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next17 "${DEADLINE:-400}" .carry/attn_mkv.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|FAIL|gqa:1:"; }
env_txt
run t_lib 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
arm_call lazy
finish_call
