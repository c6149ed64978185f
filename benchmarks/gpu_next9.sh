#!/usr/bin/env bash
# One device call (prepared 2026-12-07; run 08:20 UTC on an H100, results in docs/benchmarks.md, "The dsub-4 K
# rotation, ..."), two questions after the conflict-free K gathers (PQ_ROT=1) were taken at dsub 2:
# 1. rot4: the same rotation for the tensor-core kernel's K gathers at dsub 4 (2 bits; docs/logs/rot_1207/rot4.patch,
#    -DPQ_ROT4=1): unpadded K rows, lane gid reading k-tile (u + gid) mod M/4 at step u, so that each half-warp of a 64-bit
#    gather touches 32 distinct banks (2 wavefronts, the least a 64-bit load takes; the padded rows of now conflict in
#    every half-warp: docs/logs/rot_1207/emulate.py). Prediction: GQA B=1 32K 2-bit faster (K at dsub 2 gained 15% at
#    4 bits), the 4-bit cells unchanged (their PTX is the library's).
#    Decision (written before the run): against the library over the GQA and SmolLM2 cells of both widths, two rounds;
#    rot4 is taken if its kernel tests pass, it is faster at GQA B=1 32K 2-bit by more than 1% in both rounds, and no cell
#    is more than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01); then swept and the MillionCache
#    tests run on it. Adopt: git apply docs/logs/rot_1207/rot4.patch, #define PQ_ROT4 1, and check the PTX against
#    nvcc -ptx -DPQ_ROT4=1 of the patched source (as docs/logs/rot_1207/adopt.sh does for PQ_ROT).
# 2. kmma (benchmarks/gpu_kmma.sh's question, on the same machine): the tensor-core kernel (MILLION_CUDA_KERNEL=mma)
#    against `auto` at the cells choose_kernel gives to the packed-LUT kernel; a cell moves to the tensor-core kernel only
#    if it is faster there by more than 1% in both rounds ("slower:" lines of the `cells` stage); the dispatch change is
#    made by hand, in Python.
# Builds (nvcc 13.0, here; not committed, in .carry; about 2 min each on 2 cores):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_rot.so src/million/ops/cuda/pq_attention.cu          (the library: PQ_ROT=1 is its default)
#   git apply docs/logs/rot_1207/rot4.patch
#   nvcc $F -DPQ_ROT4=1 -o .carry/attn_r4.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90 -Xcompiler -fPIC \
#        -shared -o .carry/enc_wg.so src/million/ops/cuda/pq_encode.cu
#   (rot4.patch at PQ_ROT4=0: PTX byte-identical to the library's, nvcc 13.0, whole file)
# Usage: OUT=$OUT DEADLINE=420 bash benchmarks/gpu_next9.sh   (carry .carry/attn_rot.so, attn_r4.so, enc_wg.so; about
#        330 s; KMMA=0 skips question 2, R4=0 question 1)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next9 "${DEADLINE:-420}" .carry/attn_rot.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=(4096|32768)|^adopt|^slower|^take|FAIL"; }
env_txt
# rot4.patch's Python side is none: mma_tables reads the K row padding at dsub 4 from the library (million_pq_mma_kpad)
if [ "${R4:-1}" = 1 ]; then
  run t_r4 60 env MILLION_CUDA_LIB=.carry/attn_r4.so python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_attention.py -k "mma or test_matches_naive or back_to_back or graph_replay"
  if [ "$(grep -c ' failed\|error' "$W/t_r4.txt")" = 0 ] && grep -q ' passed' "$W/t_r4.txt"; then
    B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
    for r in "" _b; do
      run "ab_lib$r" 45 $B --out "$W/ab_lib$r.json"
      run "ab_r4$r" 45 env MILLION_CUDA_LIB=.carry/attn_r4.so $B --out "$W/ab_r4$r.json"
    done
    adopt_arm r4 gqa:1:32768:2
    if [ "$(cat "$W/adopt_r4" 2>/dev/null)" = 1 ]; then
      export MILLION_CUDA_LIB=.carry/attn_r4.so
      run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton \
        --bits 4,2 --shapes mha,gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
      cache_tests 100
      export MILLION_CUDA_LIB=.carry/attn_rot.so  # question 2 asks it of the library
    fi
  fi
fi
if [ "${KMMA:-1}" = 1 ]; then
  kmma_cells
fi
finish_call
