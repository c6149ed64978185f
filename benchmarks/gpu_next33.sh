#!/usr/bin/env bash
# One device call (prepared 2026-12-08, 01:55 UTC; not run in that session: no machine could be started, then loans
# were paused): fewer tiny launches per decode step.
# Why: each layer of a static decode step advanced its own device counters (window row, window lengths, and the
# sinks-and-window lengths with folded sinks: 2-3 in-place adds per layer, 64-96 launches per step at 32 layers), and
# with transforms mapped its new key and value rows in two launches. Now (working tree, since 25d625d) the layers'
# counters are rows of one tensor each, advanced by the first layer for all (2-3 launches per step; on by default),
# and million.ops.head_map_kv can map keys and values in one launch (opt-in, MILLION_HEAD_MAP=pair, until this call
# times it). The base: a9ae9eb's src (.carry/src_a9ae9eb.tar = git archive a9ae9eb src).
# 1. GPU tests: the head maps (pair included) against their twin; the MillionCache, decode and eviction GPU tests with
#    MILLION_HEAD_MAP=pair (eviction reads the step's window row).
# 2. Graph-replayed decode, two rounds of three arms: old (a9ae9eb), ctr (the working tree: the stacked counters, the
#    key and value maps in two launches) and new (the working tree with MILLION_HEAD_MAP=pair); LLaMA-3-8B shape, B=1
#    4K and 32K (pq, pq-tr) and B=8 4K (pq-tr).
#    Rules, written before the run (benchmarks/e2e_adopt.py), only if the tests pass:
#    - the stacked counters stay if ctr is faster than old at LLaMA-3-8B B=1 4K pq (no transforms: only the counters
#      differ) by more than 0.3% in both rounds and no cell is slower by more than 1% in both rounds; otherwise they
#      go back to a9ae9eb's per-layer adds;
#    - the pair map becomes the default if new is faster than ctr at LLaMA-3-8B B=1 4K pq-tr by more than 0.2% in both
#      rounds and no cell is slower by more than 1% in both rounds; otherwise it stays opt-in.
# Usage: OUT=$OUT DEADLINE=580 bash benchmarks/gpu_next33.sh   (carry .carry/attn_bfh.so, .carry/enc_wg.so,
#        .carry/src_a9ae9eb.tar)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next33 /tmp/old33
gpu_setup /tmp/next33 "${DEADLINE:-580}" .carry/attn_bfh.so .carry/enc_wg.so
mkdir -p /tmp/old33 && tar -xf .carry/src_a9ae9eb.tar -C /tmp/old33
pack() { pack_tgz "$1" "passed|failed|Error|error|^ctx .*(pq|pq-tr):|^llama|^slower|^missing|^adopt"; }
env_txt
export MILLION_ENCODE_PRUNE_MIN=1000000000
run t_map 90 python3 -m pytest -q -p no:cacheprovider tests/test_triton_transform.py tests/test_transforms.py
run t_cache 170 env MILLION_HEAD_MAP=pair python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py \
  tests/test_gpu_decode.py tests/test_gpu_eviction.py
E="python3 benchmarks/bench_e2e.py --graph --steps 128 --shape llama3-8b"
arm() {  # arm NAME ROUND PYTHONPATH HEAD_MAP
  run "$1$2_l1" 70 env PYTHONPATH="$3" MILLION_HEAD_MAP="$4" $E --caches pq,pq-tr --contexts 4096,32768 \
    --json "$W/e2e_$1$2_l1.json"
  run "$1$2_l8" 45 env PYTHONPATH="$3" MILLION_HEAD_MAP="$4" $E --batch 8 --caches pq-tr --contexts 4096 \
    --json "$W/e2e_$1$2_l8.json"
}
for r in "" _b; do
  arm old "$r" /tmp/old33/src triton
  arm ctr "$r" "$PWD/src" triton
  arm new "$r" "$PWD/src" pair
done
if passed t_map && passed t_cache; then
  rm -f "$W/adopt"
  run adopt_ctr 10 python3 benchmarks/e2e_adopt.py "$W" old ctr --cell llama3-8b:1:4096:pq --margin 0.003
  cp "$W/adopt" "$W/adopt_ctr" 2>/dev/null
  rm -f "$W/adopt"
  run adopt_pair 10 python3 benchmarks/e2e_adopt.py "$W" ctr new --cell llama3-8b:1:4096:pq-tr --margin 0.002
  cp "$W/adopt" "$W/adopt_pair" 2>/dev/null
else
  echo "adopt False (the tests did not pass)" | tee -a "$W/stages.txt"
fi
finish_call
