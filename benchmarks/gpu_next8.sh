#!/usr/bin/env bash
# One device call (prepared 2026-12-07, not yet run): the tensor-core kernel's timeline (gpu_trace7.sh), then the
# conflict-free K gathers (docs/logs/rot_1207/rot.patch, -DPQ_ROT=1) tested and timed against the library.
# Why (docs/kernel_notes.md, 2026-12-07): at GQA B=1 32K 4-bit that kernel issues in 30% of cycles at two warps per
# scheduler, its shared loads take 3.35 wavefronts each (8 tokens per instruction collide on banks at random), and
# short-scoreboard stalls are the second largest. With PQ_ROT the K table rows are unpadded and lane gid reads subspace
# (u + gid) mod M/4 at step u: every K gather instruction is one wavefront (checked on the CPU by
# docs/logs/rot_1207/emulate.py, which also checks every gathered entry); the cost is about 5 more instructions per
# K lookup (the code bytes rotated once per token, 3 selects per register to rotate back). Prediction: GQA B=1 32K 4-bit
# faster if the gathers' latency is on the path (up to ~3 us), slower if the extra instructions are.
# Second arm (added 2026-12-07, 03:50 UTC, before any run): rot2 (-DPQ_ROT=2, docs/logs/rot_1207/rot2.patch, a superset of
# rot.patch) also makes the V gathers conflict-free: V rows unpadded, the 4 token lanes (tig) of a gather read 4
# different output tiles, (u + tig) mod VR at step u, the registers rotated back in two select stages (the CPU
# emulation checks both sides). Its V gathers averaged about the same 3.35 wavefronts.
# Decision (written before the run): each arm against lib over the GQA and SmolLM2 cells of both widths, two rounds; an
# arm passes if its kernel tests pass, it is faster at GQA B=1 32K 4-bit by more than 1% in both rounds, and no cell is
# more than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01); of the arms that pass, the lowest total
# time is taken (ab_take.py); then swept and the MillionCache tests run on it.
# The library here is .carry/attn_tb.so (its PTX is this commit's source's). rot2.patch's Python part (mma_tables reads
# the K and V row padding from the loaded library) is applied first; against the library it changes nothing (the
# library exports neither million_pq_mma_kpad nor million_pq_mma_vpad: 16 bytes, as before); against attn_rot.so (K only)
# V keeps 16 bytes.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git apply docs/logs/rot_1207/rot2.patch
#   nvcc $F -DPQ_ROT=1 -o .carry/attn_rot.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_ROT=2 -o .carry/attn_rot2.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu src/million/ops/cuda_attention.py
#   (attn_rot.so was built from rot.patch; rot2.patch at PQ_ROT=1 is the same source, checked by PTX)
#   (attn_trace7.so: see gpu_trace7.sh)
# Usage: OUT=$OUT DEADLINE=480 bash benchmarks/gpu_next8.sh
#        (carry .carry/attn_tb.so, attn_rot.so, attn_rot2.so, attn_trace7.so, enc_wg.so; TRACE=0 skips the timeline,
#        ARMS="rot" runs one arm)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next8 "${DEADLINE:-480}" .carry/attn_tb.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^wrote|gqa|^bench (gqa|smollm2) B=1 ctx=(4096|32768)|^adopt|^slower|^take|^total|FAIL"; }
env_txt
git apply --include='src/million/ops/cuda_attention.py' docs/logs/rot_1207/rot2.patch 2>&1 | tee -a "$W/stages.txt"
# the timeline: gpu_trace7.sh as it stands, its files under $OUT/trace
[ "${TRACE:-1}" = 1 ] && run trace 130 env OUT="$OUT/trace" W=/tmp/trace7 DEADLINE=120 bash benchmarks/gpu_trace7.sh
ARMS=${ARMS:-rot rot2}
ok=""
for e in $ARMS; do
  run "t_$e" 60 env MILLION_CUDA_LIB=.carry/attn_$e.so python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_attention.py -k "mma or test_matches_naive or back_to_back or graph_replay"
  if [ "$(grep -c ' failed\|error' "$W/t_$e.txt")" = 0 ] && grep -q ' passed' "$W/t_$e.txt"; then ok="$ok $e"; fi
done
if [ -n "$ok" ]; then
  B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
  for r in "" _b; do
    run "ab_lib$r" 45 env MILLION_CUDA_LIB=.carry/attn_tb.so $B --out "$W/ab_lib$r.json"
    for e in $ok; do
      run "ab_$e$r" 45 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --out "$W/ab_$e$r.json"
    done
  done
  for e in $ok; do adopt_arm $e gqa:1:32768:4; done
  run take 10 python3 benchmarks/ab_take.py "$W" $ok
  take=$(cat "$W/take" 2>/dev/null || echo none)
  if [ "$take" != none ]; then
    export MILLION_CUDA_LIB=.carry/attn_$take.so
    run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
      --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
    cache_tests 100
  fi
fi
finish_call
