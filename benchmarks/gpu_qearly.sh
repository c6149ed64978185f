#!/usr/bin/env bash
# Device call for q loaded right after griddepcontrol.wait, before the lengths (attn_qe.so: the FFMA kernel's q element,
# the tensor-core kernel's q fragments and the bulk LUT kernel's q pairs no longer wait for the lengths' round trip),
# against attn_lb.so (the kernels before). Stages, each packed to $OUT as it ends (deadline $DEADLINE s):
#   tests   the GPU attention tests against attn_qe.so
#   ab      bench_decode_cuda.py every shape, B=1 and 8, 4K and 32K, 4 and 2 bits, one process each: attn_lb.so and
#           attn_qe.so, twice; then both at B=1 with --q-op
#   ab2     (second call) --q-op at B=1 again, and MHA / GQA B=8 128K, both libraries
#   mix     attn_mx.so (q loaded early at 4 bits only, after the lengths at 2 bits as before) against attn_lb.so
#   cache   the MillionCache, decode-loop and eviction GPU tests against attn_qe.so
#   sweep   attn_qe.so over 4K-128K, every shape, B=1 and 8, plain and --q-op
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared
# -o .carry/attn_qe.so src/million/ops/cuda/pq_attention.cu; attn_lb.so from 91a3d41) and carried in .carry:
#   OUT=$OUT bash benchmarks/gpu_qearly.sh     ($STAGES: a subset of "tests ab cache sweep ab2 mix")
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/qearly "${DEADLINE:-540}" .carry/attn_qe.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2"
for s in ${STAGES:-tests ab cache sweep}; do
  case $s in
  tests)
    run t_qe 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py ;;
  ab)
    for r in "" _b; do
      for e in lb qe; do
        run "ab_$e$r" 60 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --contexts 4096,32768 --batches 1,8 --out "$W/ab_$e$r.json"
      done
    done
    for e in lb qe; do
      run "qop_$e" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --contexts 4096,32768 --batches 1 --q-op --out "$W/qop_$e.json"
    done ;;
  ab2)  # the second round of --q-op at B=1, and B=8 128K, both libraries in the same call
    for e in lb qe; do
      run "qop2_$e" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --contexts 4096,32768 --batches 1 --q-op --out "$W/qop2_$e.json"
      run "b128_$e" 60 env MILLION_CUDA_LIB=.carry/attn_$e.so python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton \
        --bits 4,2 --shapes mha,gqa --contexts 131072 --batches 8 --out "$W/b128_$e.json"
    done ;;
  mix)  # attn_mx.so (q early at 4 bits only) against attn_lb.so: its attention tests, then B=1 plain and --q-op and
    # B=8 plain at 4K and 32K, every shape, one process each
    run t_mx 150 env MILLION_CUDA_LIB=.carry/attn_mx.so python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
    for e in lb mx; do
      run "mx_$e" 60 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --contexts 4096,32768 --batches 1,8 --out "$W/mx_$e.json"
      run "mxq_$e" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --contexts 4096,32768 --batches 1 --q-op --out "$W/mxq_$e.json"
    done ;;
  cache)
    run t_cache 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py tests/test_gpu_decode.py \
      tests/test_gpu_eviction.py ;;
  sweep)
    run sweep 90 $B --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
    run sweep_qop 90 $B --contexts 4096,16384,32768,131072 --batches 1,8 --q-op --out "$W/sweep_qop.json" ;;
  esac
done
finish_call
