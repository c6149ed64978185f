#!/usr/bin/env bash
# One short device call (prepared 2026-12-08, 00:20 UTC): the head map in eager decoding (model(...) per step, as
# model.generate runs it). The graph-replayed decode gained 1.1-1.9 ms per step from it (a39cba1, docs/e2e.md); in
# eager decoding the host launches every op, and a Triton launch costs the host more than a torch op, so four launches
# per layer could cost as much host time as the fourteen torch ops they replace. No decision rule: a measurement of
# the library as committed, beside the code before the change (6723265's src, .carry/src_6723265.tar = git archive
# 6723265 src, run with PYTHONPATH on it) and beside the library's reference path (MILLION_HEAD_MAP=torch; since
# 2026-12-08 00:30 UTC it launches what 6723265 launched at a decode step, no arange and add for the row index).
# MHA shape (LLaMA-2-7B geometry, random fp16 weights, random 4-bit codebooks), B=1, 32K, median of 64 eager steps.
# Added 2026-12-08 01:57 UTC: a9ae9eb's src too (.carry/src_a9ae9eb.tar), the library before the stacked step counters
# and the one-launch key/value map (25d625d), which the working tree's arm ("triton") now includes.
# Usage: OUT=$OUT DEADLINE=300 bash benchmarks/gpu_next32.sh   (carry .carry/attn_bfh.so, .carry/enc_wg.so,
#        .carry/src_6723265.tar, .carry/src_a9ae9eb.tar)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next32 /tmp/old32 /tmp/head32
gpu_setup /tmp/next32 "${DEADLINE:-300}" .carry/attn_bfh.so .carry/enc_wg.so
mkdir -p /tmp/old32 /tmp/head32 && tar -xf .carry/src_6723265.tar -C /tmp/old32 && tar -xf .carry/src_a9ae9eb.tar -C /tmp/head32
pack() { pack_tgz "$1" "^ctx |^\\| [0-9]|Error|error"; }
env_txt
export MILLION_ENCODE_PRUNE_MIN=1000000000
E="python3 benchmarks/bench_e2e.py --contexts 32768 --steps 64 --warmup 4"
run eager_before 60 env PYTHONPATH=/tmp/old32/src $E --caches pq-tr --json "$W/eager_before.json"
run eager_a9ae9eb 60 env PYTHONPATH=/tmp/head32/src $E --caches pq-tr --json "$W/eager_a9ae9eb.json"
run eager_torch 60 env MILLION_HEAD_MAP=torch $E --caches pq-tr --json "$W/eager_torch.json"
run eager_triton 90 env MILLION_HEAD_MAP=triton $E --caches fp16,fp16static,pq,pq-tr --json "$W/eager_triton.json"
finish_call
