#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 23:45 UTC): the end-to-end rows the head_map change (a39cba1, taken at
# 23:30 UTC) left stale or unmeasured. No decision rule: these are measurements of the library as committed.
# 1. The LLaMA-2-7B shape (MHA), StaticCache fp16 / pq / pq-tr, B=1 4K/32K/64K and B=8 4K/8K: the README's "with the
#    default recipe's transforms and sink 0.92x / 1.25x / 1.55x and 1.19x / 1.49x" predates the change.
# 2. The LLaMA-3-8B shape at B=8 4K/16K against StaticCache with SDPA's own GQA (not run at 23:30 UTC).
# Usage: OUT=$OUT DEADLINE=420 bash benchmarks/gpu_next30.sh   (carry .carry/attn_bfh.so, .carry/enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next30
gpu_setup /tmp/next30 "${DEADLINE:-420}" .carry/attn_bfh.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|error|^ctx |^\\| [0-9]"; }
env_txt
export MILLION_ENCODE_PRUNE_MIN=1000000000
E="python3 benchmarks/bench_e2e.py --graph --steps 128"
run e2e_mha 130 $E --caches fp16static,pq,pq-tr --contexts 4096,32768,65536 --json "$W/e2e_mha.json"
run e2e_mha_b8 110 $E --batch 8 --caches fp16static,pq,pq-tr --contexts 4096,8192 --json "$W/e2e_mha_b8.json"
run e2e_l3_b8 110 $E --shape llama3-8b --batch 8 --caches fp16static-gqa,pq,pq-tr --contexts 4096,16384 \
  --json "$W/e2e_l3_b8.json"
finish_call
