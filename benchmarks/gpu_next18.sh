#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 10:50 UTC), on the library of fe450f5 (PQ_MP8, PQ_KCLS, PQ_VCLS; its build is
# gpu_next16.sh's attn_mkv.so, whose PTX the source reproduces byte for byte): one arm against it,
# win (docs/logs/mp8_1207/win.patch, -DPQ_WIN=1; PTX at 0 byte-identical to the library's): the tensor-core kernel
# loads a chunk's K and V codes as a 32-token window from one per-lane pointer with constant offsets, instead of a
# clamped token index and a 64-bit address per token (12 tokens per lane and chunk: about 48 of the loop's 893
# instructions at d = 128 4-bit). Where a chunk is partial the window moves back to end at the split's last token and
# its tokens before the chunk are masked; code tensors shorter than 32 tokens per head are padded by the Python side
# (million_pq_mma_window; test_mma_kernel_short_code_tensors covers it).
# Prediction: the loop's time follows its instruction count (mk, mkv): about -4% of the 14.3 us loop, GQA B=1 32K
# 4-bit 20.7 -> ~20.1 us.
# Decision (written before the run; ab_adopt.py through adopt_arm, margin and guard 1%, two rounds), only if its
# kernel tests pass: taken if faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more
# than 1% slower in both. Then the sweep and the MillionCache tests on it.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git apply docs/logs/mp8_1207/win.patch
#   nvcc $F -DPQ_WIN=1 -o .carry/attn_win.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next18.sh   (the working tree with win.patch's Python and test parts
#        applied; carry .carry/attn_mkv.so, attn_win.so, enc_wg.so; about 250 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next18 "${DEADLINE:-330}" .carry/attn_mkv.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|FAIL|gqa:1:"; }
env_txt
# the Python and test halves of the patch (a no-op where applied)
git apply --include='src/million/ops/cuda_attention.py' --include='tests/test_cuda_attention.py' \
  docs/logs/mp8_1207/win.patch 2>/dev/null || true
run t_lib 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py -k short_code
arm_call win
finish_call
