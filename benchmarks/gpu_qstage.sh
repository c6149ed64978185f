#!/usr/bin/env bash
# One device call (2026-12-06): what the steady-state timelines of gpu_mcast.sh pointed at,
#   - tensor-core kernel: a lane's q fragments as D/32 vector loads (contiguous, aligned rows) instead of D/4 scalar
#     (attn_q2.so);
#   - FFMA kernel at GB = 1 (MHA) without the LUT build (2.5 us from the K table to the loop at MHA 32K): scores from the
#     K centroids as at GB > 1 (attn_nl.so, -DPQ_MHA_NOLUT, an A/B build);
# against the library before them, and clusters of splits (MILLION_CUDA_CLUSTER=2, 4) at the SmolLM2 shape, where
# gpu_mcast.sh measured C=2 6-7% faster at B=1 4K. Libraries prebuilt here (nvcc 13.0) and carried in .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_q2.so src/million/ops/cuda/pq_attention.cu                 # this commit's source
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace2.so src/million/ops/cuda/pq_attention.cu  # its trace build
#   nvcc $F -DPQ_MHA_NOLUT -o .carry/attn_nl.so src/million/ops/cuda/pq_attention.cu   # no LUT at GB = 1
#   git show 23cc55a:src/million/ops/cuda/pq_attention.cu > /tmp/qe.cu; nvcc $F -o .carry/attn_qe.so /tmp/qe.cu
# Stages ($STAGES, default "tests ab trace cl cache"), each packed to $OUT as it ends (deadline $DEADLINE s):
#   tests  the GPU attention suite against attn_q2.so (the new q-layout tests included), then against attn_nl.so
#   ab     bench_decode_cuda.py, every shape, 4 and 2 bits, B=1 and 8, 4K and 32K: qe, q2, nl, twice; then --q-op B=1
#   long   MHA 128K, B=1 and 8: qe and nl
#   trace  trace_decode.py --graph with attn_trace2.so
#   cl     attn_q2.so at the SmolLM2 shape, B=1 and 8, 4K-32K: MILLION_CUDA_CLUSTER=1, 2, 4, 1, 2
#   cache  the MillionCache, decode-loop and eviction GPU tests against attn_q2.so
# Usage: OUT=$OUT DEADLINE=480 bash benchmarks/gpu_qstage.sh
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
# The A/B macros (-DPQ_CLUSTER_EARLY, -DPQ_MHA_NOLUT, -DPQ_LOAD_AFTER_LUT, -DPQ_STAGE_FIRST) left the source once measured:
# apply docs/logs/mcast_1206/ab_variants.patch before building a variant (or build from f762721, which has them all).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/qstage "${DEADLINE:-480}" .carry/attn_q2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
for s in ${STAGES:-tests ab long trace cl cache}; do
  case $s in
  tests)
    run t_q2 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
    run t_nl 90 env MILLION_CUDA_LIB=.carry/attn_nl.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py ;;
  ab)
    for r in "" _b; do
      for e in qe q2 nl; do
        run "ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha,gqa,smollm2 --contexts 4096,32768 \
          --batches 1,8 --out "$W/ab_$e$r.json"
      done
    done
    for e in qe q2 nl; do
      run "qop_$e" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha,gqa,smollm2 --contexts 4096,32768 \
        --batches 1 --q-op --out "$W/qop_$e.json"
    done ;;
  long)  # MHA at 128K, where the loop's rate, not the prologue, decides
    for e in qe nl; do
      run "long_$e" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 131072 --batches 1,8 \
        --out "$W/long_$e.json"
    done ;;
  trace)
    run trace_graph 60 env MILLION_CUDA_LIB=.carry/attn_trace2.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --out "$W/trace_graph.json" ;;
  cl)
    for c in 1 2 4 1_b 2_b; do
      run "cl$c" 40 env MILLION_CUDA_CLUSTER=${c%_b} $B --shapes smollm2 --contexts 4096,16384,32768 --batches 1,8 \
        --out "$W/cl$c.json"
    done ;;
  cache)
    cache_tests 150 ;;
  esac
done
finish_call
