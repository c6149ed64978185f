#!/usr/bin/env bash
# One device call: the library with the byte-permute lookups (PQ_P8, adopted 2026-12-06 20:08 UTC) and the residual
# window as a separate 2-bit kernel instance (MILLION_CUDA_WINP, docs/logs/winp_1206/winp2.patch, merged into the source;
# default 0), built as one library (attn_p8w.so): the window instance now also takes the byte-permute lookups.
# Why: both were measured faster than the library of the time at MHA B=1 32K 2-bit in one call on an H100 (20:08 UTC),
# each alone: P8 31.5 -> 30.7 us, WINP=1 31.5 -> 30.5 us; together they are unmeasured.
# Arms (two rounds): p8 (attn_p8.so, the measured P8 build), w0 (attn_p8w.so, MILLION_CUDA_WINP=0: the same kernels as
# p8 but for the new template argument), w1 (attn_p8w.so, MILLION_CUDA_WINP=1), over the MHA cells of both widths.
# Decision (written before the run): w1 against w0: faster at MHA B=1 32K 2-bit by more than 1% in both rounds and no
# cell more than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01). Taken: MILLION_CUDA_WINP's default
# becomes 1 (a host-side default; the kernels are those of this build).
# Fourth arm, lx (attn_lx.so: this source with -DPQ_LOOPX=1, MILLION_CUDA_WINP=1): in the fp16 half2 loop of the FFMA
# kernel (MHA), exponentials by one ex2.approx.ftz instead of exp2f's range test and scalings, and each lane's p rounded
# to fp16 once and shuffled packed instead of rounded after every step's shuffle (SASS: 2-bit chunk loop 477 -> ~460
# instructions). Decision (written before the run): lx against w1, faster at MHA B=1 32K 2-bit by more than 0.5% in both
# rounds and no cell more than 1% slower in both rounds, and w1 taken (lx ran with the window instance only). Taken:
# PQ_LOOPX's default becomes 1.
# Then, whatever the decisions: every GPU test of the attention kernels on this build (test_cuda_attention.py, which runs
# the window tests again under MILLION_CUDA_WINP=1 and 2 in subprocesses), the MillionCache / decode / eviction GPU tests,
# and the full sweep of every shape, with MILLION_CUDA_WINP set to the decision.
# Build here (nvcc 13.0) and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_p8w.so src/million/ops/cuda/pq_attention.cu        (at 9b7ca04)
#   nvcc $F -DPQ_LOOPX=1 -o .carry/attn_lx.so src/million/ops/cuda/pq_attention.cu   (the source of this commit)
# Usage: OUT=$OUT DEADLINE=480 bash benchmarks/gpu_p8w.sh      (carry .carry: attn_p8.so, attn_p8w.so, attn_lx.so, enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/p8w "${DEADLINE:-480}" .carry/attn_p8w.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench mha B=1 ctx=32768|^bench gqa B=1 ctx=32768|^adopt|^slower|^wrote|FAIL"; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes mha --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  run "ab_p8$r" 45 env MILLION_CUDA_LIB=.carry/attn_p8.so $B --out "$W/ab_p8$r.json"
  run "ab_w0$r" 45 env MILLION_CUDA_WINP=0 $B --out "$W/ab_w0$r.json"
  run "ab_w1$r" 45 env MILLION_CUDA_WINP=1 $B --out "$W/ab_w1$r.json"
  run "ab_lx$r" 45 env MILLION_CUDA_LIB=.carry/attn_lx.so MILLION_CUDA_WINP=1 $B --out "$W/ab_lx$r.json"
done
run adopt_lx 10 python3 benchmarks/ab_adopt.py "$W" w1 lx --cell mha:1:32768:2 --margin 0.005 --guard 0.01
cp "$W/adopt" "$W/adopt_lx" 2>/dev/null
run adopt 10 python3 benchmarks/ab_adopt.py "$W" w0 w1 --cell mha:1:32768:2 --margin 0.01 --guard 0.01
run t_lx 60 env MILLION_CUDA_LIB=.carry/attn_lx.so MILLION_CUDA_WINP=1 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py -k "ffma or test_matches_naive or window_cases or back_to_back or graph_replay"
WP=0; [ "$(cat "$W/adopt" 2>/dev/null)" = 1 ] && WP=1
echo "MILLION_CUDA_WINP=$WP for the tests and the sweep" | tee -a "$W/stages.txt"
run t_attn 150 env MILLION_CUDA_WINP=$WP python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
run t_cache 150 env MILLION_CUDA_WINP=$WP python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py \
  tests/test_gpu_decode.py tests/test_gpu_eviction.py
run sweep 90 env MILLION_CUDA_WINP=$WP python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 \
  --shapes mha,gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
finish_call
