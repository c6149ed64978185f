#!/usr/bin/env bash
# One device call, two A/Bs against the library (attn_p8w.so, the kernels of 9b7ca04 = the library's now) in the same
# call, each with its decision rule written here before any run:
# 1. PIPE: the MHA (FFMA) kernel's chunk loop pipelined by one chunk per warp (-DPQ_PIPE=6, both widths,
#    docs/logs/pipe_1206/pipe.patch, attn_pipe.so). The lookups of chunk c's values and of chunk c + NW's scores (its
#    butterfly and the warp's max with them) share one straight-line block; the running max and p follow.
#    Why: Nsight (H100, 2026-12-06 18:55 UTC): the 2-bit loop is latency-bound, 40% of cycles with no eligible warp at 4
#    warps per scheduler; within a warp each chunk's values wait behind its scores' shuffle chain (butterfly, max, p).
#    Predicted: MHA B=1 32K 2-bit 31.1 -> 29.5-30.5 us, 4-bit within +-2% (more live registers).
#    Decision, per width w in {2, 4}: faster at MHA B=1 32K w-bit by more than 1% in both rounds and no MHA cell of that
#    width more than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01 --guard-bits). Taken: PQ_PIPE's
#    default becomes the mask of the widths taken (4 = 2-bit, 2 = 4-bit), provided the FFMA tests pass on the build.
# 2. TALIGN: the tensor-core and packed-LUT kernels' tables at a 1024-byte aligned shared address (-DPQ_TALIGN=1024,
#    docs/logs/ta_1206/ta.patch, attn_ta.so); its rule as in gpu_ta.sh: faster at GQA B=1 4K 4-bit by more than 1% in
#    both rounds and no GQA / SmolLM2 cell more than 1% slower in both rounds.
# Build here (nvcc 13.0) and carry .carry (attn_pipe.so d31ff2068bb13e40: the source of 70d9c06 plus pipe.patch; at PQ_PIPE=0 the
# patched source's PTX is the library's, 219 of 219 functions):
#   git apply docs/logs/pipe_1206/pipe.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_PIPE=6 -o .carry/attn_pipe.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# (attn_ta.so: gpu_ta.sh's header.)
# Usage: OUT=$OUT DEADLINE=420 bash benchmarks/gpu_pipe.sh      (carry .carry: attn_p8w.so, attn_pipe.so, attn_ta.so, enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/pipe "${DEADLINE:-420}" .carry/attn_p8w.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (mha|gqa) B=1 ctx=(4096|32768)|^adopt|^slower|FAIL"; }
env_txt
lib() { case $1 in lib) echo .carry/attn_p8w.so;; *) echo .carry/attn_$1.so;; esac; }
BM="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes mha --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib pipe; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib $e) $BM --out "$W/ab_$e$r.json"
  done
done
run adopt_pipe2 10 python3 benchmarks/ab_adopt.py "$W" lib pipe --cell mha:1:32768:2 --margin 0.01 --guard 0.01 --guard-bits
cp "$W/adopt" "$W/adopt_pipe2"
run adopt_pipe4 10 python3 benchmarks/ab_adopt.py "$W" lib pipe --cell mha:1:32768:4 --margin 0.01 --guard 0.01 --guard-bits
cp "$W/adopt" "$W/adopt_pipe4"
run t_pipe 60 env MILLION_CUDA_LIB=.carry/attn_pipe.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py -k "ffma or test_matches_naive or back_to_back or graph_replay or window"
BG="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in libg ta; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib ${e%g}) $BG --out "$W/ab_$e$r.json"
  done
done
run adopt_ta 10 python3 benchmarks/ab_adopt.py "$W" libg ta --cell gqa:1:4096:4 --margin 0.01 --guard 0.01
run t_ta 70 env MILLION_CUDA_LIB=.carry/attn_ta.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py -k "mma or lut or test_matches_naive or back_to_back or graph_replay"
finish_call
