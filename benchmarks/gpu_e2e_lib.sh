#!/usr/bin/env bash
# Prepared 2026-12-06 for one device call, after gpu_pair.sh: the MillionCache GPU tests and the end-to-end decode of
# the 7B-shaped model with every step replayed from a CUDA graph (StaticCache fp16 vs MillionCache, docs/e2e.md, last
# measured on an H200 on 2026-12-04), both on the library that gpu_pair.sh's decisions leave (ATTN_LIB, default
# .carry/attn_new.so = 2ce4295's kernels). 128K does not fit StaticCache beside the 13.5 GB of weights on an 80 GB card,
# so B=1 runs 4K, 32K and 64K; B=8 4K and 16K.
# Usage: OUT=$OUT ATTN_LIB=.carry/attn_pair.so DEADLINE=420 bash benchmarks/gpu_e2e_lib.sh   (stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/e2elib "${DEADLINE:-420}" .carry/attn_new.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^ctx |^wrote"; }
env_txt
export MILLION_ENCODE_PRUNE_MIN=1000000000  # as gpu_e2e.sh: the prefill takes the brute encode (no grid-list build)
run graph 150 python3 benchmarks/bench_e2e.py --graph --contexts 4096,32768,65536 --steps 128 --json "$W/e2e_graph.json"
run graph_b8 100 python3 benchmarks/bench_e2e.py --graph --batch 8 --contexts 4096,16384 --steps 128 \
  --json "$W/e2e_graph_b8.json"
unset MILLION_ENCODE_PRUNE_MIN
cache_tests 150
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
