#!/usr/bin/env bash
# One device call (prepared 2026-12-07, not yet run): phase timelines of the library's tensor-core kernel at GQA B=1
# 32K and 4K, 4 and 2 bits, cold (L2 flushed) and in the benchmark's steady state (CUDA-graph replay).
# Why: Nsight Compute (H100, 2026-12-07 01:51 UTC, docs/kernel_notes.md) puts long-scoreboard stalls first (1.92 per
# issued instruction) in that kernel at GQA B=1 32K 4-bit, yet an L2 prefetch four chunks ahead was slower and the
# register lookahead is a whole chunk of loop work ahead of its use. The trace build stamps each warp's first chunk end
# (trace_decode.py: first_chunk_med against per_chunk_med): if the first chunk takes several times a steady chunk,
# the codes' arrival after the wait is on the path (then: load the first chunk's codes before the wait into shared
# memory by bulk copy, as the tables are); if not, the stalls are in the loop (then: the gathers).
# Build (nvcc 13.0, here; the source of this commit; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace7.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT bash benchmarks/gpu_trace7.sh      (carry .carry/attn_trace7.so, enc_wg.so; about 60 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/trace7 "${DEADLINE:-150}" .carry/attn_trace7.so .carry/enc_wg.so
pack() { pack_tgz "$1" "Error|^wrote|case|gqa"; }
env_txt
C="--case gqa:1:4:32768 --case gqa:1:2:32768 --case gqa:1:4:4096 --case gqa:8:4:4096"
run trace_graph 60 python3 benchmarks/trace_decode.py --graph --reps 5 $C --out "$W/trace_graph.json"
run trace_cold 60 python3 benchmarks/trace_decode.py --reps 5 $C --out "$W/trace_cold.json"
finish_call
