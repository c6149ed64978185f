#!/usr/bin/env bash
# One device call: the residual window attended by the MHA kernel's partial blocks (MILLION_CUDA_WINP), against the
# library before (c67c5d5's kernels, attn_fin2.so) in the same call.
# Why: in the graph timelines of 2026-12-06 15:49 UTC (docs/logs/vh2_1206/call1/trace_taken.json), MHA B=1 32K 2-bit
# ends 4.6 us after its last partial block (33.02 -> 37.63 us): 12 of the 32 merge blocks do not fit beside the partial
# grid, enter only as partial blocks exit (31.74) and then attend their 128-token windows (done at 36.35), three
# dependent global round trips. Packing the merge blocks (64 registers, two heads per block) was measured and refuted
# (the merge after the wait got slower where they crowd 4 SMs). This build takes the window off that path instead: each
# FFMA partial block (GB 1, host-laid tables) stages its share of the window's rows (a.winp rows per split) into shared
# memory behind the tables by cp.async right after the lengths, while the LUT is built, and attends them in its own
# softmax before its chunk loop (a few 2-4-token steps per warp); the merge kernel then only merges.
# Predicted: MHA B=1 32K 2-bit 31.5 -> ~29 us (the merge's tail after the last partial ~1.8 us instead of 4.6, the
# partial blocks ~0.2 us longer); 4-bit 32K within ~0.5 us (its window ended with the partials); 128K and B=8 unknown.
# Arms (one build, attn_wp.so, by environment; the library before as attn_fin2.so): lib, wp0 (MILLION_CUDA_WINP=0:
# the new build as the library before), wp1 (=1: where some merge blocks would not fit beside a one-wave partial grid),
# wp2 (=2: wherever the rows fit in shared memory).
# Decision (written before the run): a candidate (wp1, wp2) passes where MHA B=1 32K 2-bit is faster than lib by more
# than 1% in both rounds and no cell of the sweep is more than 1% slower than lib in both rounds (ab_adopt.py --margin
# 0.01 --guard 0.01); both pass: the faster at that cell in the mean of the rounds. Taken: the library's default
# MILLION_CUDA_WINP becomes that arm's value (device code identical to the measured build: only the host default moves).
# Build here (nvcc 13.0) and carry .carry; the change is docs/logs/winp_1206/winp.patch (source, Python side, tests):
#   git apply docs/logs/winp_1206/winp.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_wp.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_wp.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=550 bash benchmarks/gpu_winp.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/wp "${DEADLINE:-550}" .carry/attn_wp.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench mha B=1 ctx=32768|^adopt|^slower|^wrote|FAIL"; }
env_txt
# the library before with the Python side it was built for (ABI 9): the committed tree's src
mkdir -p /tmp/libsrc && git archive HEAD src | tar -x -C /tmp/libsrc
arm() {  # the environment of an arm
  case $1 in lib) echo "MILLION_CUDA_LIB=.carry/attn_fin2.so PYTHONPATH=/tmp/libsrc/src";; wp0) echo "MILLION_CUDA_WINP=0";;
    wp1) echo "MILLION_CUDA_WINP=1";; wp2) echo "MILLION_CUDA_WINP=2";; esac
}
T="python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py"
# correctness first, briefly: the window and FFMA cases with the partial blocks' window wherever it fits
run t_win2 60 env MILLION_CUDA_WINP=2 $T -k "window_cases or ffma or test_matches_naive"
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes mha,gqa,smollm2"
for r in "" _b; do
  for v in lib wp0 wp1 wp2; do
    run "ab_$v$r" 40 env $(arm $v) $B --contexts 4096,32768,131072 --batches 1,8 --out "$W/ab_$v$r.json"
  done
done
for v in wp1 wp2 wp0; do
  run "adopt_$v" 10 python3 benchmarks/ab_adopt.py "$W" lib "$v" --cell mha:1:32768:2 --margin 0.01 --guard 0.01
  cp "$W/adopt" "$W/adopt_$v" 2>/dev/null
done
run trace_wp1 30 env MILLION_CUDA_WINP=1 MILLION_CUDA_LIB=.carry/attn_trace_wp.so python3 benchmarks/trace_decode.py \
  --graph --reps 5 --out "$W/trace_wp1.json"
run trace_wp0 30 env MILLION_CUDA_WINP=0 MILLION_CUDA_LIB=.carry/attn_trace_wp.so python3 benchmarks/trace_decode.py \
  --graph --reps 5 --out "$W/trace_wp0.json"
# every attention test on the new build (the two WINP subprocess re-runs among them), then the cache tests with WINP=1
run t_attn 200 $T
MILLION_CUDA_WINP=1 cache_tests 120
finish_call
