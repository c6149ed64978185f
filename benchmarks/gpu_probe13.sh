#!/usr/bin/env bash
# A probe, not a decision (2026-12-07, run 09:07 UTC with the session's last 288 s of device time; results in
# docs/kernel_notes.md, "Probed: the next chunk's codes staged in shared memory"): the kernel tests of the staged build
# (docs/logs/cst_1207/cst.patch, -DPQ_CSTAGE=1) with the library's warps and with 12 warps, then three arms (lib: the
# library; cst: the staged build, the library's warps; cst12: the staged build, MILLION_CUDA_MMA_WARPS=12) at GQA B=1 and
# 8, 32K, both widths, two rounds. It said whether a full A/B (every GQA and SmolLM2 cell) was worth a call: it was not
# (12 staged warps 4% slower at GQA B=1 32K 4-bit); nothing was adopted from it.
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
