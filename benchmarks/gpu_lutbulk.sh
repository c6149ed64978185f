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
#   sweep   the default dispatch and the bulk LUT kernel over 4K-128K, GQA, B=1 and 8, plain and --q-op
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared
# [-DPQ_TRACE] -o .carry/attn_lb[_trace].so src/million/ops/cuda/pq_attention.cu) and carried in .carry:
#   OUT=$OUT bash benchmarks/gpu_lutbulk.sh     ($STAGES: a subset of "tests ab trace vec4 tests0 sweep")
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/lutbulk "${DEADLINE:-540}" .carry/attn_lb.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^ +[a-z0-9]+:[0-9]+:[0-9]+:[0-9]+ "; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
T="tests/test_cuda_attention.py"
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
  sweep)
    run sweep_auto 90 $B --shapes gqa --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep_auto.json"
    run sweep_lut1 90 env MILLION_CUDA_KERNEL=lut MILLION_CUDA_LUT_BULK=1 $B --shapes gqa --contexts 4096,16384,32768,131072 \
      --batches 1,8 --out "$W/sweep_lut1.json"
    run sweep_lut1_qop 90 env MILLION_CUDA_KERNEL=lut MILLION_CUDA_LUT_BULK=1 $B --shapes gqa \
      --contexts 4096,16384,32768,131072 --batches 1,8 --q-op --out "$W/sweep_lut1_qop.json" ;;
  esac
done
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
