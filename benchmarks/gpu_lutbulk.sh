#!/usr/bin/env bash
# Device calls for the packed-LUT kernel with host-laid tables copied before its wait (MILLION_CUDA_LUT_BULK=1, kind 3)
# and for the MHA LUT built with 16-byte loads and stores (-DPQ_LUT_VEC4). Stages, each packed to $OUT as it ends
# (deadline $DEADLINE s):
#   tests   the GPU attention tests against attn_lb.so (this commit) with LUT_BULK=1 (every LUT-kernel test then takes
#           the bulk path; the new test compares both paths bit for bit)
#   ab      bench_decode_cuda.py, GQA and SmolLM2 shapes, B=1 and 8, 4K-32K, 4 and 2 bits, one process each: the
#           default dispatch, the LUT kernel (MILLION_CUDA_KERNEL=lut) with LUT_BULK 0 and 1; twice
#   trace   trace_decode.py --graph (attn_lb_trace.so), the LUT kernel at GQA B=1 4K and 32K, LUT_BULK 0 and 1
#   vec4    attn_vec4.so (-DPQ_LUT_VEC4 of 5acfcaf) against attn_v4.so (afd6a02: the same kernels without it), MHA B=1
#           and 8, 4K-32K, two rounds; then the attention tests against attn_vec4.so
#   tests0  the GPU attention tests against attn_lb.so with LUT_BULK=0
#   vtests  (call 3) the GPU attention tests against $LIB (default attn_lv.so: 2c3fb74, the bulk LUT kernel waits for
#           its V table at each warp's first value step; call 4: attn_lb.so, the final kernels) with this commit's defaults
#   vab     attn_lb.so (V table waited for before the loop) against attn_lv.so, the LUT kernel at GQA B=1 and 8,
#           4K-32K, 4 and 2 bits, and the default dispatch of attn_lv.so; twice
#   vtrace  trace_decode.py --graph (attn_lv_trace.so), the LUT kernel at GQA B=1 4K and 32K
#   cache   the MillionCache, decode-loop and eviction GPU tests against $LIB
#   sweep   the default dispatch of $LIB over 4K-128K, every shape, B=1 and 8, plain and --q-op
#   ab128   the LUT kernel with LUT_BULK 0 and 1 at GQA B=1 and 8, 128K, 4 and 2 bits; twice
#   lsplits the bulk LUT kernel at GQA B=1 32K over 8-32 splits (--sweep-splits)
#   refactor  attn_lr.so (the per-thread LUT path written with the bulk path's helpers): tests and an A/B against attn_lb.so
#           (run 08:32 UTC on 2c18b49; not kept: 0.5-1% slower at 128K B=8)
#   ncu     an Nsight Compute summary of the bulk LUT kernel at GQA B=1 32K 4-bit (launch statistics, warp states)
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared
# [-DPQ_TRACE] -o .carry/attn_lb[_trace].so src/million/ops/cuda/pq_attention.cu) and carried in .carry:
#   OUT=$OUT bash benchmarks/gpu_lutbulk.sh     ($STAGES: a subset of "tests ab trace vec4 tests0", call 2 (07:58 UTC),
#                                                or of "vtests vab vtrace cache sweep")
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/lutbulk "${DEADLINE:-540}" .carry/attn_lb.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^ +[a-z0-9]+:[0-9]+:[0-9]+:[0-9]+ "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
T="tests/test_cuda_attention.py"
L=${LIB:-.carry/attn_lv.so}
for s in ${STAGES:-tests ab trace vec4 tests0}; do
  case $s in
  tests)
    run t_lb1 150 env MILLION_CUDA_LUT_BULK=1 python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  ab)
    for r in "" _b; do
      run "ab_auto$r" 50 $B --shapes gqa,smollm2 --contexts 4096,16384,32768 --batches 1,8 --out "$W/ab_auto$r.json"
      for m in 0 1; do
        run "ab_lut$m$r" 50 env MILLION_CUDA_KERNEL=lut MILLION_CUDA_LUT_BULK=$m $B --shapes gqa --contexts 4096,16384,32768 \
          --batches 1,8 --out "$W/ab_lut$m$r.json"
      done
    done ;;
  trace)
    for m in 0 1; do
      run "tr_lut$m" 30 env MILLION_CUDA_KERNEL=lut MILLION_CUDA_LUT_BULK=$m MILLION_CUDA_LIB=.carry/attn_lb_trace.so \
        python3 benchmarks/trace_decode.py --graph --reps 5 --case gqa:1:4:32768 --case gqa:1:2:32768 \
        --case gqa:1:4:4096 --out "$W/tr_lut$m.json"
    done ;;
  vec4)
    for r in "" _b; do
      for e in v4 vec4; do
        run "vec4ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,16384,32768 \
          --batches 1,8 --out "$W/vec4ab_$e$r.json"
      done
    done
    run t_vec4 150 env MILLION_CUDA_LIB=.carry/attn_vec4.so python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  tests0)
    run t_lb0 150 env MILLION_CUDA_LUT_BULK=0 python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  vtests)
    run t_lv 150 env MILLION_CUDA_LIB=$L python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  vab)
    for r in "" _b; do
      for e in lb lv; do
        run "vab_$e$r" 50 env MILLION_CUDA_LIB=.carry/attn_$e.so MILLION_CUDA_KERNEL=lut $B --shapes gqa \
          --contexts 4096,16384,32768 --batches 1,8 --out "$W/vab_$e$r.json"
      done
      run "vab_auto$r" 50 env MILLION_CUDA_LIB=.carry/attn_lv.so $B --shapes gqa --contexts 4096,16384,32768 \
        --batches 1,8 --out "$W/vab_auto$r.json"
    done ;;
  vtrace)
    run tr_lv 30 env MILLION_CUDA_KERNEL=lut MILLION_CUDA_LIB=.carry/attn_lv_trace.so python3 benchmarks/trace_decode.py \
      --graph --reps 5 --case gqa:1:4:32768 --case gqa:1:2:32768 --case gqa:1:4:4096 --out "$W/tr_lv.json" ;;
  cache)
    run t_cache 150 env MILLION_CUDA_LIB=$L python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_gpu_cache.py tests/test_gpu_decode.py tests/test_gpu_eviction.py ;;
  sweep)
    run sweep 90 env MILLION_CUDA_LIB=$L $B --shapes mha,gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8 \
      --out "$W/sweep.json"
    run sweep_qop 90 env MILLION_CUDA_LIB=$L $B --shapes mha,gqa,smollm2 --contexts 4096,16384,32768,131072 \
      --batches 1,8 --q-op --out "$W/sweep_qop.json" ;;
  ab128)
    for r in "" _b; do
      for m in 0 1; do
        run "ab128_lut$m$r" 60 env MILLION_CUDA_LIB=$L MILLION_CUDA_KERNEL=lut MILLION_CUDA_LUT_BULK=$m $B --shapes gqa \
          --contexts 131072 --batches 1,8 --out "$W/ab128_lut$m$r.json"
      done
    done ;;
  lsplits)  # the bulk LUT kernel's split count at GQA B=1 32K (the default rule gives 16)
    run lsplits 90 env MILLION_CUDA_LIB=$L MILLION_CUDA_KERNEL=lut $B --shapes gqa --contexts 32768 --batches 1 \
      --sweep-splits --sweep-spec "gqa:32768:4:8,12,16,20,24,32;gqa:32768:2:8,12,16,24,32" --out "$W/lsplits.json" ;;
  refactor)  # attn_lr.so (the per-thread LUT path through the bulk path's helpers): the attention suite with LUT_BULK 1
    # and 0, then the LUT kernel with LUT_BULK 0 and 1 against attn_lb.so at GQA B=1 and 8, 32K and 128K
    run t_lr1 150 env MILLION_CUDA_LIB=.carry/attn_lr.so MILLION_CUDA_LUT_BULK=1 python3 -m pytest -q -p no:cacheprovider -m gpu $T
    run t_lr0 150 env MILLION_CUDA_LIB=.carry/attn_lr.so MILLION_CUDA_LUT_BULK=0 python3 -m pytest -q -p no:cacheprovider -m gpu $T
    for e in lb lr; do
      for m in 0 1; do
        run "rf_${e}$m" 60 env MILLION_CUDA_LIB=.carry/attn_$e.so MILLION_CUDA_KERNEL=lut MILLION_CUDA_LUT_BULK=$m $B \
          --shapes gqa --contexts 32768,131072 --batches 1,8 --out "$W/rf_${e}$m.json"
      done
    done ;;
  ncu)
    run ncu_lut 90 env MILLION_CUDA_LIB=$L MILLION_CUDA_KERNEL=lut MILLION_CUDA_PDL=0 ncu --clock-control none \
      -k regex:pq_partial_lut --launch-skip 1 --launch-count 1 --section SpeedOfLight --section SchedulerStats \
      --section WarpStateStats --section Occupancy --section LaunchStats --section InstructionStats \
      --section MemoryWorkloadAnalysis python3 benchmarks/ncu_decode.py gqa:32768 ;;
  esac
done
finish_call
