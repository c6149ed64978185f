#!/usr/bin/env bash
# One device call (2026-12-06, second session): steady-state timelines with the wait's return and the lengths' arrival
# stamped; the 2-bit variant of "q before the lengths" owed from the session before; clusters of splits whose FFMA
# multicast copies are issued before the wait. Libraries prebuilt here by nvcc 13.0 and carried in .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_qe.so src/million/ops/cuda/pq_attention.cu                       # the library
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace.so src/million/ops/cuda/pq_attention.cu         # its trace build
#   nvcc $F -DPQ_CLUSTER_EARLY -o .carry/attn_ce.so src/million/ops/cuda/pq_attention.cu    # early cluster copies
#   git show 88cfd9c:src/million/ops/cuda/pq_attention.cu > /tmp/mx.cu; nvcc $F -o .carry/attn_mx.so /tmp/mx.cu
#   git show 91a3d41:src/million/ops/cuda/pq_attention.cu > /tmp/lb.cu; nvcc $F -o .carry/attn_lb.so /tmp/lb.cu
# Stages ($STAGES, default "trace mix ce"), each packed to $OUT as it ends (deadline $DEADLINE s):
#   trace  trace_decode.py --graph (the default cases) with attn_trace.so, then single cold calls
#   mix    attn_mx.so (q before the lengths at 4 bits only) against attn_qe.so (every width) and attn_lb.so (none):
#          its attention tests, then B=1 and 8 plain and B=1 --q-op, 4K and 32K, every shape, one process each
#   ce     attn_ce.so with MILLION_CUDA_CLUSTER=2 and =1 (same build), B=1, 4K and 32K, interleaved twice
# Usage: OUT=$OUT DEADLINE=400 bash benchmarks/gpu_mcast.sh
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
# The A/B macros (-DPQ_CLUSTER_EARLY, -DPQ_MHA_NOLUT, -DPQ_LOAD_AFTER_LUT, -DPQ_STAGE_FIRST) left the source once measured:
# apply docs/logs/mcast_1206/ab_variants.patch before building a variant (or build from f762721, which has them all).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/mcast "${DEADLINE:-400}" .carry/attn_qe.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 --contexts 4096,32768"
for s in ${STAGES:-trace mix ce}; do
  case $s in
  trace)
    run trace_graph 60 env MILLION_CUDA_LIB=.carry/attn_trace.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --out "$W/trace_graph.json"
    run trace_cold 60 env MILLION_CUDA_LIB=.carry/attn_trace.so python3 benchmarks/trace_decode.py --reps 5 \
      --out "$W/trace_cold.json" ;;
  mix)
    run t_mx 90 env MILLION_CUDA_LIB=.carry/attn_mx.so python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
    for r in "" _b; do
      for e in qe mx lb; do
        run "mx_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --batches 1,8 --out "$W/mx_$e$r.json"
      done
    done
    for e in qe mx; do
      run "mxq_$e" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --batches 1 --q-op --out "$W/mxq_$e.json"
    done ;;
  ce)
    run tc_ce 60 env MILLION_CUDA_LIB=.carry/attn_ce.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py -k cluster_multicast
    for r in "" _b; do
      for c in 1 2; do
        run "ce$c$r" 30 env MILLION_CUDA_LIB=.carry/attn_ce.so MILLION_CUDA_CLUSTER=$c $B --batches 1 --out "$W/ce$c$r.json"
      done
    done ;;
  esac
done
finish_call
