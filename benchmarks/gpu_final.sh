#!/usr/bin/env bash
# The decode-attention and MillionCache GPU tests (every test of test_cuda_attention.py, test_gpu_cache.py,
# test_gpu_decode.py, test_gpu_eviction.py) against the library with its defaults, for the session's close
# (2026-12-07): the tensor-core kernel at every 4-bit GQA cell, both K rotations, MILLION_CUDA_MERGE8=1 and
# MILLION_CUDA_MMA_WARPS=auto by default.
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_final.sh   (carry .carry/attn_lib12.so, enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/final "${DEADLINE:-330}" .carry/attn_lib12.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|FAILED|Error"; }
env_txt
run t_attn 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py -rfEs
cache_tests 110
finish_call
