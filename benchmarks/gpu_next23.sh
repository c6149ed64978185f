#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 13:58 UTC, not yet run): the library (.carry/attn_lib14.so, 818b53b8f68540dd,
# the build of src/million/ops/cuda/pq_attention.cu as committed) in bfloat16: the sweep of gpu_stages.sh's SWEEP_CMD
# with --dtype bfloat16 (q, centroids, residual window and SDPA all bf16; ratios against bf16 SDPA in the same process),
# then the same sweep in float16 in the same call so the two dtypes compare on one machine.
# No decision: a measurement of what bf16 users get with today's defaults.
# Usage: OUT=$OUT DEADLINE=150 bash benchmarks/gpu_next23.sh   (carry .carry/attn_lib14.so, .carry/enc_wg.so; ~80 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next23 "${DEADLINE:-150}" .carry/attn_lib14.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench (mha|gqa|smollm2) B=1 ctx=32768|passed|failed|Error"; }
env_txt
run sweep_bf16 70 $SWEEP_CMD --dtype bfloat16 --out "$W/sweep_bf16.json"
run sweep_fp16 70 $SWEEP_CMD --out "$W/sweep_fp16.json"
finish_call
