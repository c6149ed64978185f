#!/usr/bin/env bash
# A probe, not a decision (2026-12-07, the session's last 288 s of device time): gpu_next13.sh's kernel tests and its
# three arms (lib, cst, cst12) at GQA B=1 and 8, 32K, both widths only, two rounds. Its numbers say whether
# gpu_next13.sh's full A/B (every GQA and SmolLM2 cell, the rule in its header) is worth a call; nothing is adopted
# from them.
# Usage: OUT=$OUT DEADLINE=150 bash benchmarks/gpu_probe13.sh   (carry .carry/attn_lib12.so (the library),
#        .carry/attn_cst.so (cst.patch, -DPQ_CSTAGE=1), .carry/enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/probe13 "${DEADLINE:-150}" .carry/attn_lib12.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench|FAIL"; }
env_txt
K="-k mma or test_matches_naive or back_to_back or graph_replay"
run t_cst 50 env MILLION_CUDA_LIB=.carry/attn_cst.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py "$K"
run t_cst12 50 env MILLION_CUDA_LIB=.carry/attn_cst.so MILLION_CUDA_MMA_WARPS=12 python3 -m pytest -q -p no:cacheprovider \
  -m gpu tests/test_cuda_attention.py "$K"
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa --contexts 32768 --batches 1,8"
for r in "" _b; do
  run "ab_lib$r" 20 $B --out "$W/ab_lib$r.json"
  run "ab_cst$r" 20 env MILLION_CUDA_LIB=.carry/attn_cst.so $B --out "$W/ab_cst$r.json"
  run "ab_cst12$r" 20 env MILLION_CUDA_LIB=.carry/attn_cst.so MILLION_CUDA_MMA_WARPS=12 $B --out "$W/ab_cst12$r.json"
done
finish_call
