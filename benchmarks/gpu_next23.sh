#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 13:58 UTC, not yet run): the library (.carry/attn_lib14.so, 818b53b8f68540dd,
# the build of src/million/ops/cuda/pq_attention.cu as committed) in bfloat16: the sweep of gpu_stages.sh's SWEEP_CMD
# with --dtype bfloat16 (q, centroids, residual window and SDPA all bf16; ratios against bf16 SDPA in the same process),
# then the same sweep in float16 in the same call so the two dtypes compare on one machine.
# Then split sweeps at MHA B=1 32K, 2 and 4 bits (the FFMA kernel; the rule's S = 4 on 132 SMs) and GQA B=1 32K 4-bit.
# No decision: a measurement of what bf16 users get with today's defaults, and whether another split count is faster
# where the targets are not met (a rule change would be a later, separate A/B).
# Usage: OUT=$OUT DEADLINE=200 bash benchmarks/gpu_next23.sh   (carry .carry/attn_lib14.so, .carry/enc_wg.so; ~100 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next23 "${DEADLINE:-200}" .carry/attn_lib14.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench (mha|gqa|smollm2) B=1 ctx=32768|^splits|passed|failed|Error"; }
env_txt
run sweep_bf16 70 $SWEEP_CMD --dtype bfloat16 --out "$W/sweep_bf16.json"
run sweep_fp16 70 $SWEEP_CMD --out "$W/sweep_fp16.json"
run splits 60 python3 benchmarks/bench_decode_cuda.py --skip-check --skip-bench --sweep-splits \
  --sweep-spec "mha:32768:2:2,3,4,5,6,8;mha:32768:4:2,3,4,5,6,8;gqa:32768:4:8,12,14,16,24,32" --out "$W/splits.json"
finish_call
