#!/usr/bin/env bash
# Ran 2026-12-06 14:29 UTC (docs/e2e.md, "The graph decode on an H100"). Prepared for one short device call: bench_e2e.py --graph at B=8 with a context whose fp16
# StaticCache does not fit an 80 GB card (16K), to check on the GPU that the benchmark now leaves that cache out of its
# row and keeps the JSON of every row (the 14:13 UTC run lost its 4K row's JSON there), and the B=8 8K row between.
# Library: .carry/attn_new.so (2ce4295's kernels, the library's). Usage: OUT=$OUT bash benchmarks/gpu_e2e_b8.sh
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/e2eb8 "${DEADLINE:-200}" .carry/attn_new.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^ctx |^\| "; }
env_txt
MILLION_ENCODE_PRUNE_MIN=1000000000 run graph_b8 170 python3 benchmarks/bench_e2e.py --graph --batch 8 \
  --contexts 8192,16384 --steps 128 --json "$W/e2e_graph_b8.json"
finish_call
