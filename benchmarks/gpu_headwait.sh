#!/usr/bin/env bash
# (Refuted and reverted: runs against 8d96c75, the commit of the change, which docs/logs/headwait_1206/headwait.patch holds; run
# 2026-12-06 07:51 UTC, docs/kernel_notes.md "The merge waiting for its own head".)
# Device calls for the merge that waits for its own head's partials (MILLION_CUDA_HEADWAIT=1: a counter per (batch,
# query head) that the partial blocks count up) instead of the end of the whole partial grid (0, the default). Stages,
# each packed to $OUT as it ends (deadline $DEADLINE s):
#   ab      bench_decode_cuda.py B=1 and 8, 4K and 32K, every shape, 4 and 2 bits, one process each: HEADWAIT 0 and 1,
#           twice (B=1 in the second round)
#   qop     the same at B=1 with --q-op (a torch kernel writes q before every call, as in a model)
#   tests1  the GPU attention tests with HEADWAIT=1 (the whole suite: every kernel's merge takes the counters)
#   trace   trace_decode.py --graph with the trace build (attn_hw_trace.so), HEADWAIT 0 and 1: MHA, GQA, SmolLM2;
#           and the packed-LUT kernel's timeline at GQA 32K (MILLION_CUDA_KERNEL=lut)
#   vec4    the -DPQ_LUT_VEC4 build (attn_hw_vec4.so: the FFMA kernel's LUT built with 16-byte loads and stores)
#           against attn_hw.so, MHA B=1 and 8, 4K-32K, two rounds; its attention tests
#   tests0  the GPU attention tests with HEADWAIT=0 (this library as it is by default)
#   cache   the MillionCache, decode-loop and eviction GPU tests, HEADWAIT=1
#   sweep   4K-128K, B=1 and 8, plain and --q-op, with HEADWAIT=1
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared
# [-DPQ_TRACE | -DPQ_LUT_VEC4] -o .carry/attn_hw[_trace|_vec4].so src/million/ops/cuda/pq_attention.cu; the encode
# library with ops/_nvcc.py's FLAGS_SM90A as enc_wg.so) and carried in .carry:
#   OUT=$OUT bash benchmarks/gpu_headwait.sh     ($STAGES: a subset of "ab qop tests1 trace vec4 tests0 cache sweep")
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/headwait "${DEADLINE:-540}" .carry/attn_hw.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^ +[a-z0-9]+:[0-9]+:[0-9]+:[0-9]+ "; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
BENCH="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2"
T="tests/test_cuda_attention.py"
for s in ${STAGES:-ab qop tests1 trace vec4 tests0 cache sweep}; do
  case $s in
  ab)
    for m in 0 1; do
      run "ab_hw$m" 60 env MILLION_CUDA_HEADWAIT=$m $BENCH --contexts 4096,32768 --batches 1,8 --out "$W/ab_hw$m.json"
    done
    for m in 0 1; do
      run "ab_hw${m}_b" 40 env MILLION_CUDA_HEADWAIT=$m $BENCH --contexts 4096,32768 --batches 1 --out "$W/ab_hw${m}_b.json"
    done ;;
  qop)
    for m in 0 1; do
      run "qop_hw$m" 40 env MILLION_CUDA_HEADWAIT=$m $BENCH --contexts 4096,32768 --batches 1 --q-op \
        --out "$W/qop_hw$m.json"
    done ;;
  tests1)
    run t_hw1 130 env MILLION_CUDA_HEADWAIT=1 python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  trace)
    for m in 0 1; do
      run "tr_hw$m" 40 env MILLION_CUDA_HEADWAIT=$m MILLION_CUDA_LIB=.carry/attn_hw_trace.so \
        python3 benchmarks/trace_decode.py --graph --reps 5 --case mha:1:4:32768 --case mha:1:2:32768 \
        --case gqa:1:4:32768 --case smollm2:1:4:4096 --case mha:1:4:4096 --out "$W/tr_hw$m.json"
    done
    run tr_lut 30 env MILLION_CUDA_KERNEL=lut MILLION_CUDA_LIB=.carry/attn_hw_trace.so \
      python3 benchmarks/trace_decode.py --graph --reps 5 --case gqa:1:4:32768 --out "$W/tr_lut.json" ;;
  vec4)
    for r in "" _b; do
      for e in hw hw_vec4; do
        run "vec4ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so python3 benchmarks/bench_decode_cuda.py --skip-check \
          --no-triton --bits 4,2 --shapes mha --contexts 4096,16384,32768 --batches 1,8 --out "$W/vec4ab_$e$r.json"
      done
    done
    run t_vec4 130 env MILLION_CUDA_LIB=.carry/attn_hw_vec4.so python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  tests0)
    run t_hw0 130 env MILLION_CUDA_HEADWAIT=0 python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  cache)
    run t_cache 150 env MILLION_CUDA_HEADWAIT=1 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py \
      tests/test_gpu_decode.py tests/test_gpu_eviction.py ;;
  sweep)
    run sweep 90 env MILLION_CUDA_HEADWAIT=1 $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --out "$W/sweep.json"
    run sweep_qop 90 env MILLION_CUDA_HEADWAIT=1 $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 --q-op \
      --out "$W/sweep_qop.json" ;;
  esac
done
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
