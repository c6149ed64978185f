#!/usr/bin/env bash
# One device call (run 08:45 UTC on an H100, results in docs/benchmarks.md;
# prepared 2026-12-07 after gpu_next11.sh's call of 08:38 UTC): MILLION_CUDA_MMA_WARPS=auto (12 warps
# per tensor-core block at d = 64, 16 at d = 128 2-bit, fp16, from 2^15 tokens of batch x context; at d = 128 below the
# LUT's 2^17) against 8 warps everywhere (MILLION_CUDA_MMA_WARPS=8, the library's default), GQA and SmolLM2 cells at
# 4K-128K, B=1 and 8, both widths, two rounds interleaved. The rule comes from gpu_next11.sh's call, where 12 and 16
# warps everywhere were refused (GQA 4-bit 14-20% slower) but 12 warps made the SmolLM2 cells from 2^15 tokens 0.5-10.9%
# faster and 16 warps GQA B=1 32K 2-bit 4.6% faster.
# Decisions (written before the run; ab_adopt.py, margin and guard 1%), one per part of the rule, each part touching
# one shape only:
# - d64: the d = 64 part is taken if faster at smollm2:8:32768:2 by more than 1% in both rounds and no SmolLM2 cell is
#   more than 1% slower in both;
# - d128: the d = 128 part is taken if faster at gqa:1:32768:2 by more than 1% in both rounds and no GQA cell is more
#   than 1% slower in both.
# `auto` becomes the default with the parts taken (a part refused leaves the rule). Where both are taken the sweep runs
# with auto; where either is, the MillionCache, decode and eviction GPU tests run with it.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib12.so src/million/ops/cuda/pq_attention.cu   (this commit's source: MILLION_CUDA_MERGE8=1
#     by default; the kernels' PTX is gpu_next10.sh's library's)
#   enc_wg.so as in gpu_next9.sh
# Usage: OUT=$OUT DEADLINE=300 bash benchmarks/gpu_next12.sh   (carry .carry/attn_lib12.so, enc_wg.so; about 200 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next12 "${DEADLINE:-300}" .carry/attn_lib12.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|FAIL"; }
env_txt
run t_kern 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py \
  -k "mma or test_matches_naive or back_to_back or graph_replay or merge8"
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8"
for r in "" _b; do
  run "ab_lib$r" 40 env MILLION_CUDA_MMA_WARPS=8 $B --out "$W/ab_lib$r.json"
  run "ab_auto$r" 40 env MILLION_CUDA_MMA_WARPS=auto $B --out "$W/ab_auto$r.json"
done
rm -f "$W/adopt"
run adopt_d64 10 python3 benchmarks/ab_adopt.py "$W" lib auto --cell smollm2:8:32768:2 --margin 0.01 --guard 0.01 \
  --shapes smollm2
cp "$W/adopt" "$W/adopt_d64" 2>/dev/null
rm -f "$W/adopt"
run adopt_d128 10 python3 benchmarks/ab_adopt.py "$W" lib auto --cell gqa:1:32768:2 --margin 0.01 --guard 0.01 \
  --shapes gqa
cp "$W/adopt" "$W/adopt_d128" 2>/dev/null
a64=$(cat "$W/adopt_d64" 2>/dev/null); a128=$(cat "$W/adopt_d128" 2>/dev/null)
if [ "$a64" = 1 ] && [ "$a128" = 1 ]; then
  run sweep 60 env MILLION_CUDA_MMA_WARPS=auto python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton \
    --bits 4,2 --shapes mha,gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
fi
if [ "$a64" = 1 ] || [ "$a128" = 1 ]; then
  export MILLION_CUDA_MMA_WARPS=auto
  cache_tests 100
fi
finish_call
