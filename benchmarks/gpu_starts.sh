#!/usr/bin/env bash
# Device calls for the decode kernels taking starts=None as a null pointer (no zero-filled tensor, and no fill kernel,
# in front of every call). Stages, each packed to $OUT as it ends (deadline $DEADLINE s):
#   tests   the GPU attention tests against the library of this commit (.carry/attn_new.so)
#   ab      bench_decode_cuda.py B=1 and 8, 4K and 32K, every shape, 4 and 2 bits, one process each: --zero-starts (a
#           zero tensor made in every call: the library's behaviour before), without, and the -DPQ_FFMA_EARLY build
#           (attn_early.so: the FFMA kernel's host-laid tables copied before the wait); the three again at B=1;
#           this library and attn_early.so at B=1 with --q-op
#   early_tests  the GPU attention tests against attn_early.so
#   gap     trace_decode.py --graph (trace builds attn_trace_new.so, attn_trace_early.so): the steady-state timelines
#           with gap_from_prev; attn_trace_new.so with --zero-starts
#   cache   the MillionCache, decode-loop and eviction GPU tests against this library
#   headcb  bench_decode_cuda.py --head-codebooks (one table per KV head, as MillionCache serves) B=1 and 8, 4K and 32K
#   sweep   bench_decode_cuda.py over 4K-128K, B=1 and 8, plain and --q-op
#   v2tests, v2ab, v2gap, v2sweep, v2cache: the same for attn_v2.so (attn_trace_v2.so), the FFMA kernel's tables
#           copied before the wait and early partial grids at one block per SM (MILLION_CUDA_SOLO=1), against
#           attn_new.so and SOLO=0, and with SOLO=0 / PDL=1 for the back-to-back, graph and no-starts tests
#   v3      attn_v3.so (the 3/4-of-the-SMs rule for SOLO=1): the tests (and SOLO=2 back to back), SOLO 0 / 1 / 2 at the
#           SmolLM2 shape B = 1, 2, 4, 8, 4K-32K, twice; the sweeps; the MillionCache, decode-loop and eviction tests
#   multi   (nvidia-h100-x2) the every-device test against attn_v3.so and attn_v4.so (kernel attributes per device),
#           the attention suite against attn_v4.so
#   triton  the Triton decode kernel's GPU tests
#   vec4    (not yet run) the -DPQ_LUT_VEC4 build (attn_vec4.so) against attn_v4.so: tests, then MHA and SmolLM2 shapes
#           B=1 and 8, 4K-32K, two rounds
#   short   attn_v3.so at 1K and 2K, B=1 and 8, every shape, plain and --q-op
#   b32     attn_v3.so at B=32 (every shape, 4K-32K, plain and --q-op); SOLO 1 / 2 at the SmolLM2 shape, B=16 and 32
# Libraries prebuilt here (nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared
# [-DPQ_TRACE] src/million/ops/cuda/pq_attention.cu; the encode library with ops/_nvcc.py's FLAGS_SM90A as enc_wg.so)
# and carried in .carry:
#   OUT=$OUT bash benchmarks/gpu_starts.sh     ($STAGES: a subset of "tests ab early_tests gap cache headcb sweep"
#                                               or of "v2tests v2ab v2gap v2sweep v2cache", or of "v3 b32 short multi triton vec4")
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/starts "${DEADLINE:-540}" .carry/attn_new.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^ +[a-z0-9]+:[0-9]+:[0-9]+:[0-9]+ "; }
env_txt
BENCH="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2"
T="tests/test_cuda_attention.py"
for s in ${STAGES:-tests ab early_tests gap cache headcb sweep}; do
  case $s in
  tests)
    run t_new 110 python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  ab)
    run ab_zs 60 $BENCH --contexts 4096,32768 --batches 1,8 --zero-starts --out "$W/ab_zs.json"
    run ab_new 60 $BENCH --contexts 4096,32768 --batches 1,8 --out "$W/ab_new.json"
    run ab_early 60 env MILLION_CUDA_LIB=.carry/attn_early.so $BENCH --contexts 4096,32768 --batches 1,8 \
      --out "$W/ab_early.json"
    run ab_zs_b 40 $BENCH --contexts 4096,32768 --batches 1 --zero-starts --out "$W/ab_zs_b.json"
    run ab_new_b 40 $BENCH --contexts 4096,32768 --batches 1 --out "$W/ab_new_b.json"
    run ab_early_b 40 env MILLION_CUDA_LIB=.carry/attn_early.so $BENCH --contexts 4096,32768 --batches 1 \
      --out "$W/ab_early_b.json"
    run ab_new_qop 40 $BENCH --contexts 4096,32768 --batches 1 --q-op --out "$W/ab_new_qop.json"
    run ab_early_qop 40 env MILLION_CUDA_LIB=.carry/attn_early.so $BENCH --contexts 4096,32768 --batches 1 --q-op \
      --out "$W/ab_early_qop.json" ;;
  early_tests)
    run t_early 110 env MILLION_CUDA_LIB=.carry/attn_early.so python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  gap)
    for v in new early; do
      run "gap_$v" 40 env MILLION_CUDA_LIB=.carry/attn_trace_$v.so python3 benchmarks/trace_decode.py --graph --reps 5 \
        --out "$W/gap_$v.json"
    done
    run gap_zs 40 env MILLION_CUDA_LIB=.carry/attn_trace_new.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --zero-starts --out "$W/gap_zs.json" ;;
  cache)
    run t_cache 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py tests/test_gpu_decode.py \
      tests/test_gpu_eviction.py ;;
  headcb)
    run headcb 60 $BENCH --contexts 4096,32768 --batches 1,8 --head-codebooks --out "$W/headcb.json" ;;
  sweep)
    run sweep 90 $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
    run sweep_qop 90 $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 --q-op --out "$W/sweep_qop.json" ;;
  v2tests)  # attn_v2.so: the FFMA kernel's tables before the wait, one block per SM for early grids (SOLO)
    run t_v2 110 env MILLION_CUDA_LIB=.carry/attn_v2.so python3 -m pytest -q -p no:cacheprovider -m gpu $T
    run t_v2_solo0 60 env MILLION_CUDA_SOLO=0 MILLION_CUDA_LIB=.carry/attn_v2.so python3 -m pytest -q \
      -p no:cacheprovider -m gpu $T -k "back_to_back or graph or no_starts"
    run t_v2_pdl1 60 env MILLION_CUDA_PDL=1 MILLION_CUDA_LIB=.carry/attn_v2.so python3 -m pytest -q \
      -p no:cacheprovider -m gpu $T -k "back_to_back or graph or no_starts" ;;
  v2ab)  # call 1's library (attn_new.so), attn_v2.so, attn_v2.so with SOLO=0; twice; 4K-32K
    for r in "" _b; do
      for e in new v2 v2solo0; do
        case $e in
          new) envs="MILLION_CUDA_LIB=.carry/attn_new.so" ;;
          v2) envs="MILLION_CUDA_LIB=.carry/attn_v2.so" ;;
          v2solo0) envs="MILLION_CUDA_SOLO=0 MILLION_CUDA_LIB=.carry/attn_v2.so" ;;
        esac
        run "v2ab_$e$r" 50 env $envs $BENCH --contexts 4096,16384,32768 --batches 1,8 --out "$W/v2ab_$e$r.json"
      done
    done ;;
  v2gap)
    run gap_v2 40 env MILLION_CUDA_LIB=.carry/attn_trace_v2.so python3 benchmarks/trace_decode.py --graph --reps 5 \
      --case mha:1:4:32768 --case mha:1:4:4096 --case mha:1:2:32768 --case gqa:1:4:32768 --case smollm2:1:4:4096 \
      --case smollm2:8:4:32768 --case mha:8:4:32768 --out "$W/gap_v2.json" ;;
  v2sweep)
    run v2sweep 90 env MILLION_CUDA_LIB=.carry/attn_v2.so $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --out "$W/v2sweep.json"
    run v2sweep_qop 90 env MILLION_CUDA_LIB=.carry/attn_v2.so $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --q-op --out "$W/v2sweep_qop.json" ;;
  v2cache)
    run t_v2_cache 150 env MILLION_CUDA_LIB=.carry/attn_v2.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_gpu_cache.py tests/test_gpu_decode.py tests/test_gpu_eviction.py ;;
  v3)  # attn_v3.so (MILLION_CUDA_SOLO=1 now the 3/4-of-the-SMs rule): tests, SOLO 0 / 1 / 2 at the SmolLM2 shape
    # (B = 1, 2, 4, 8), twice; the sweeps; the MillionCache, decode-loop and eviction tests
    run t_v3 110 env MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q -p no:cacheprovider -m gpu $T
    run t_v3_solo2 60 env MILLION_CUDA_SOLO=2 MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q \
      -p no:cacheprovider -m gpu $T -k "back_to_back or graph or no_starts"
    for r in "" _b; do
      for m in 0 1 2; do
        run "solo$m$r" 40 env MILLION_CUDA_SOLO=$m MILLION_CUDA_LIB=.carry/attn_v3.so python3 benchmarks/bench_decode_cuda.py \
          --skip-check --no-triton --bits 4,2 --shapes smollm2 --contexts 4096,16384,32768 --batches 1,2,4,8 \
          --out "$W/solo$m$r.json"
      done
    done
    run v3sweep 90 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --out "$W/v3sweep.json"
    run v3sweep_qop 90 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 4096,16384,32768,131072 --batches 1,8 \
      --q-op --out "$W/v3sweep_qop.json"
    run t_v3_cache 150 env MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/test_gpu_cache.py tests/test_gpu_decode.py tests/test_gpu_eviction.py ;;
  b32)  # attn_v3.so at B=32 (every shape, 4K-32K, plain and --q-op), and SOLO 1 / 2 at the SmolLM2 shape, B=16 and 32
    run b32 60 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 4096,16384,32768 --batches 32 --out "$W/b32.json"
    run b32_qop 60 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 4096,16384,32768 --batches 32 --q-op \
      --out "$W/b32_qop.json"
    for m in 1 2; do
      run "b32_solo$m" 40 env MILLION_CUDA_SOLO=$m MILLION_CUDA_LIB=.carry/attn_v3.so python3 benchmarks/bench_decode_cuda.py \
        --skip-check --no-triton --bits 4,2 --shapes smollm2 --contexts 4096,16384,32768 --batches 16,32 \
        --out "$W/b32_solo$m.json"
    done ;;
  short)  # attn_v3.so below 4K: 1K and 2K, B=1 and 8, every shape, plain and --q-op
    run short 40 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 1024,2048 --batches 1,8 --out "$W/short.json"
    run short_qop 40 env MILLION_CUDA_LIB=.carry/attn_v3.so $BENCH --contexts 1024,2048 --batches 1,8 --q-op \
      --out "$W/short_qop.json" ;;
  multi)  # two GPUs: the every-device test against attn_v3.so (kernel attributes set once per process) and attn_v4.so
    # (once per device), then the attention suite against attn_v4.so
    run t_multi_v3 60 env MILLION_CUDA_LIB=.carry/attn_v3.so python3 -m pytest -q -p no:cacheprovider -m gpu $T \
      -k every_device
    run t_multi_v4 60 env MILLION_CUDA_LIB=.carry/attn_v4.so python3 -m pytest -q -p no:cacheprovider -m gpu $T \
      -k every_device
    run t_v4 110 env MILLION_CUDA_LIB=.carry/attn_v4.so python3 -m pytest -q -p no:cacheprovider -m gpu $T ;;
  triton)  # the Triton decode kernel's GPU tests (starts=None read as 0 in the kernel)
    run t_triton 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_triton_attention.py ;;
  vec4)  # the -DPQ_LUT_VEC4 build (the FFMA kernel's LUT built 4 entries per 16-byte load and store) against this
    # commit's library (attn_v4.so): the attention tests, then MHA B=1 and 8, 4K-32K, two rounds, one process each
    run t_vec4 110 env MILLION_CUDA_LIB=.carry/attn_vec4.so python3 -m pytest -q -p no:cacheprovider -m gpu $T
    for r in "" _b; do
      for e in v4 vec4; do
        run "vec4ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so python3 benchmarks/bench_decode_cuda.py --skip-check \
          --no-triton --bits 4,2 --shapes mha,smollm2 --contexts 4096,16384,32768 --batches 1,8 --out "$W/vec4ab_$e$r.json"
      done
    done ;;
  esac
done
finish_call
