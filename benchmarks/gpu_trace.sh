#!/usr/bin/env bash
# One device call: the phase timeline of the decode-attention kernels (benchmarks/trace_decode.py, a -DPQ_TRACE build
# of ops/cuda/pq_attention.cu) and, for scale, the graph-replay timings of the production library at the same shapes
# (bench_decode_cuda.py, SDPA in the same run). Libraries prebuilt here and carried:
#   TRACE_LIB=.carry/attn_trace.so ATTN_LIB=.carry/attn.so OUT=$OUT bash benchmarks/gpu_trace.sh   # carry .carry
# $CASES (optional): trace_decode.py --case items separated by spaces.
set -uo pipefail
source "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/trace 420 .carry/attn.so .carry/enc_wg.so
TRACE_LIB=${TRACE_LIB:-.carry/attn_trace.so}
pack() { pack_lines "$1" ""; }
env_txt
sha256sum "$TRACE_LIB" | cut -c1-16 >> "$W/env.txt"
CARGS=""; for c in ${CASES:-}; do CARGS="$CARGS --case $c"; done
run trace 200 env MILLION_CUDA_LIB="$TRACE_LIB" python3 benchmarks/trace_decode.py --reps 5 --out "$W/trace.json" $CARGS
run trace_graph 200 env MILLION_CUDA_LIB="$TRACE_LIB" python3 benchmarks/trace_decode.py --graph --reps 5 --out "$W/trace_graph.json" $CARGS
cp "$W/trace_graph.txt" "$OUT/" 2>/dev/null
cp "$W/trace.txt" "$OUT/" 2>/dev/null
run bench 200 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --contexts 4096,32768 --batches 1 \
  --bits 4,2 --shapes mha,gqa,smollm2 --out "$W/bench.json"
cp "$W/bench.txt" "$OUT/" 2>/dev/null
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"
