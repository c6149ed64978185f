#!/usr/bin/env bash
# One device call for the two decode-attention patches of docs/logs/trace_1206 (steal_lut.patch, respart.patch) and the
# graph-replay timelines at this commit. Stages, each packed to $OUT as it ends (a deadline keeps the call inside 600 s):
#   pf       the GPU attention tests against the -DPQ_L2PF=262144 build, then the production library against
#            -DPQ_L2PF=32768 / 98304 / 262144 builds (B=1 and 8), the production library and 98304 once more
#   main     trace_decode.py --graph with the -DPQ_TRACE build of this commit, and the production library's timings;
#            the timelines of the -DPQ_TRACE -DPQ_L2PF=98304 build (attn_trace_pf96k.so)
#   steal    the patch applied to the device's copy; the GPU attention tests against its library; stealing off / on
#            for the LUT build (attn_lut.so) and the chained-LUT build (attn_steal.so), one process each, SDPA in each;
#            the timelines with stealing on (attn_trace_steal.so); the patch reverted
#   respart  likewise for respart.patch: the tests, then RESPART=0 / 1 twice over, B=1 and 8
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared, plus
# -DPQ_TRACE / -DPQ_LUT_CHAIN as named; the encode library with ops/_nvcc.py's FLAGS_SM90A) and carried in .carry:
#   attn.so attn_trace.so enc_wg.so attn_lut.so attn_steal.so attn_trace_steal.so attn_respart.so
#   attn_pf32k.so attn_pf96k.so attn_pf256k.so (-DPQ_L2PF=32768 / 98304 / 262144)
# Usage: OUT=$OUT bash benchmarks/gpu_trace_ab.sh   ($STAGES: a subset of "pf main steal respart")
# Writes to $OUT: stages.txt (each stage's exit status and summary lines), env.txt, w.tgz (every output and JSON).
# Ran once, 2026-12-06 03:51 UTC, at 1c326db (docs/logs/pdl_1206/trace_ab/). The -DPQ_L2PF switch was removed after
# it (cd899bd) and both patches apply to 9452687: to rerun, check out 1c326db.
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/trab "${DEADLINE:-560}" .carry/attn.so .carry/enc_wg.so
pack() {
  pack_lines "$1" "passed|failed|Error|^bench |^ +[a-z0-9]+:[0-9]+:[0-9]+:[0-9]+ "
  tar czf "$OUT/w.tgz" -C "$W" . 2>/dev/null
}
env_txt
BENCH="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2"
for s in ${STAGES:-pf main steal respart}; do
  case $s in
  pf)  # L2 prefetch of each split's first code bytes during the prologue (-DPQ_L2PF=N builds) against attn.so
    run pf_tests 100 env MILLION_CUDA_LIB=.carry/attn_pf256k.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py
    for n in attn attn_pf32k attn_pf96k attn_pf256k attn_b attn_pf96k_b; do
      run "pf_$n" 80 env MILLION_CUDA_LIB=.carry/${n%_b}.so $BENCH --contexts 4096,32768 --batches 1,8 --out "$W/pf_$n.json"
    done ;;
  main)
    run main_trace 120 env MILLION_CUDA_LIB=.carry/attn_trace.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --out "$W/main_trace.json"
    run main_bench 100 $BENCH --contexts 4096,32768 --batches 1 --out "$W/main_bench.json"
    run pf_trace 120 env MILLION_CUDA_LIB=.carry/attn_trace_pf96k.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --out "$W/pf_trace.json" ;;
  steal)
    git apply docs/logs/trace_1206/steal_lut.patch || { echo "steal patch did not apply" >> "$W/stages.txt"; continue; }
    run steal_tests 100 env MILLION_CUDA_LIB=.carry/attn_lut.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py
    for e in b0:0:attn_lut b1:1:attn_lut a0:0:attn_steal a1:1:attn_steal; do
      IFS=: read -r n v l <<< "$e"
      run "steal_$n" 70 env MILLION_CUDA_STEAL=$v MILLION_CUDA_LIB=.carry/$l.so $BENCH --contexts 4096,32768 --batches 1 \
        --out "$W/steal_$n.json"
    done
    run steal_trace 100 env MILLION_CUDA_STEAL=1 MILLION_CUDA_LIB=.carry/attn_trace_steal.so python3 \
      benchmarks/trace_decode.py --graph --reps 5 --out "$W/steal_trace.json"
    git apply -R docs/logs/trace_1206/steal_lut.patch ;;
  respart)
    git apply docs/logs/trace_1206/respart.patch || { echo "respart patch did not apply" >> "$W/stages.txt"; continue; }
    run rp_tests 100 env MILLION_CUDA_LIB=.carry/attn_respart.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_cuda_attention.py
    for n in rp0 rp1 rp0b rp1b; do
      v=${n:2:1}
      run "$n" 80 env MILLION_CUDA_RESPART=$v MILLION_CUDA_LIB=.carry/attn_respart.so $BENCH --contexts 4096,32768 \
        --batches 1,8 --out "$W/$n.json"
    done
    git apply -R docs/logs/trace_1206/respart.patch ;;
  esac
done
finish_call
