#!/usr/bin/env bash
# One device call (2026-12-06): steady-state and cold timelines of the final library's trace build (the LUT build at
# M = 64 by row position, q fragments by vector loads at d = 128), to compare with gpu_mcast.sh's (23cc55a).
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace3.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT bash benchmarks/gpu_trace3.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/trace3 "${DEADLINE:-200}" .carry/attn_trace3.so .carry/enc_wg.so
pack() { pack_tgz "$1" "Error|^wrote"; }
env_txt
run trace_graph 60 python3 benchmarks/trace_decode.py --graph --reps 5 --out "$W/trace_graph.json"
run trace_cold 60 python3 benchmarks/trace_decode.py --reps 5 --out "$W/trace_cold.json"
finish_call
