#!/usr/bin/env bash
# One device call for the partial grid's programmatic dependent launch (MILLION_CUDA_PDL=2: tables copied before the
# wait for the previous kernel) and the batched LUT build. Stages, each packed to $OUT as it ends (deadline $DEADLINE s):
#   tests   the GPU attention tests against attn_pdl.so and attn_pdl_lut.so (PDL 2, the default), the back-to-back and
#           graph tests with PDL 0 and 1; MillionCache and decode-loop GPU tests against attn_pdl_lut.so
#   ab      bench_decode_cuda.py (B=1 and 8, 4K and 32K, every shape, 4 and 2 bits), one process each: the previous
#           commit (attn.so with its Python package, .carry/old_src), attn_pdl.so with PDL 1 and 2, attn_pdl_lut.so,
#           then the previous commit and attn_pdl_lut.so again; and both with --q-op (a torch kernel writes q before
#           every call, SDPA and PQ alike)
#   trace   trace_decode.py --graph with attn_trace_pdl.so (PDL 2)
#   sweep   attn_pdl_lut.so over 4K-128K, B=1 and 8, plain and --q-op
#   e2e     bench_e2e.py --graph (7B shape, fp16 StaticCache vs MillionCache) with PDL 1 and 2
#   v3      (run alone, STAGES=v3) attn_v3.so, the FFMA kernel copying its tables after the wait: the GPU attention
#           tests (PDL 2; back-to-back and graph with PDL 1), the A/B against the previous commit and attn_pdl_lut.so,
#           the sweep plain and --q-op, and the MillionCache / decode-loop / eviction GPU tests
#   gap     trace_decode.py --graph with a -DPQ_TRACE build of this commit (.carry/attn_trace.so), PDL 1 and 2: the
#           timelines with gap_from_prev, the previous call's last output to this call's first partial entry
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared [-DPQ_TRACE];
# the encode library with ops/_nvcc.py's FLAGS_SM90A) and carried in .carry with old_src:
#   OUT=$OUT bash benchmarks/gpu_pdl_ab.sh      ($STAGES: a subset of "tests ab trace sweep e2e v3 gap")
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/pdl "${DEADLINE:-560}" .carry/attn_pdl_lut.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^ +[a-z0-9]+:[0-9]+:[0-9]+:[0-9]+ |^ *(fp16static|pq)"; }
env_txt
BENCH="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2"
T="tests/test_cuda_attention.py"
for s in ${STAGES:-tests ab trace sweep e2e}; do
  case $s in
  tests)
    run t_pdl 90 env MILLION_CUDA_LIB=.carry/attn_pdl.so python3 -m pytest -q -p no:cacheprovider -m gpu $T
    run t_lut 90 python3 -m pytest -q -p no:cacheprovider -m gpu $T
    for p in 0 1; do
      run "t_lut_pdl$p" 60 env MILLION_CUDA_PDL=$p python3 -m pytest -q -p no:cacheprovider -m gpu $T -k "back_to_back or graph"
    done
    run t_cache 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py tests/test_gpu_decode.py ;;
  ab)
    for e in old pdl1 pdl2 lut old_b lut_b old_qop lut_qop; do
      case $e in
        old*) envs="PYTHONPATH=$PWD/.carry/old_src MILLION_CUDA_LIB=.carry/attn.so" ;;
        pdl1) envs="MILLION_CUDA_PDL=1 MILLION_CUDA_LIB=.carry/attn_pdl.so" ;;
        pdl2) envs="MILLION_CUDA_LIB=.carry/attn_pdl.so" ;;
        lut*) envs="MILLION_CUDA_LIB=.carry/attn_pdl_lut.so" ;;
      esac
      q=""; [[ $e == *qop ]] && q="--q-op"
      run "ab_$e" 60 env $envs $BENCH --contexts 4096,32768 --batches 1,8 $q --out "$W/ab_$e.json"
    done ;;
  trace)
    run trace 60 env MILLION_CUDA_LIB=.carry/attn_trace_pdl.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --out "$W/trace_pdl.json" ;;
  sweep)
    run sweep 90 $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
    run sweep_qop 90 $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 --q-op --out "$W/sweep_qop.json" ;;
  v3)  # the FFMA kernel with its tables copied after the wait (attn_v3.so), against the previous commit and attn_pdl_lut.so
    run t_v3 90 env MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q -p no:cacheprovider -m gpu $T
    run t_v3_pdl1 60 env MILLION_CUDA_PDL=1 MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q -p no:cacheprovider \
      -m gpu $T -k "back_to_back or graph"
    for e in old v3 old_b v3_b; do
      case $e in
        old*) envs="PYTHONPATH=$PWD/.carry/old_src MILLION_CUDA_LIB=.carry/attn.so" ;;
        v3*) envs="MILLION_CUDA_LIB=.carry/attn_v3.so" ;;
        lut) envs="MILLION_CUDA_LIB=.carry/attn_pdl_lut.so" ;;
      esac
      run "v3_$e" 60 env $envs $BENCH --contexts 4096,32768 --batches 1,8 --out "$W/v3_$e.json"
    done
    run v3_sweep 90 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --out "$W/v3_sweep.json"
    run v3_sweep_qop 90 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --q-op --out "$W/v3_sweep_qop.json"
    run v3_lut 60 env MILLION_CUDA_LIB=.carry/attn_pdl_lut.so $BENCH --contexts 4096,32768 --batches 1,8 --out "$W/v3_lut.json"
    run t_v3_cache 120 env MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_gpu_cache.py tests/test_gpu_decode.py tests/test_gpu_eviction.py ;;
  gap)  # graph timelines with the previous call's end (gap_from_prev), PDL 1 and 2: trace build of this commit
    for p in 1 2; do
      run "gap_pdl$p" 60 env MILLION_CUDA_PDL=$p MILLION_CUDA_LIB=.carry/attn_trace.so python3 benchmarks/trace_decode.py \
        --graph --reps 5 --out "$W/gap_pdl$p.json"
    done ;;
  e2e)
    for p in 1 2; do
      run "e2e_pdl$p" 100 env MILLION_CUDA_PDL=$p MILLION_ENCODE_PRUNE_MIN=1000000000 python3 benchmarks/bench_e2e.py \
        --graph --caches fp16static,pq --contexts 4096,32768 --steps 64 --json "$W/e2e_pdl$p.json"
    done ;;
  esac
done
finish_call
