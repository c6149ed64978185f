#!/usr/bin/env bash
# One device call (run 08:37 UTC on an H100, results in docs/benchmarks.md;
# prepared 2026-12-07 after gpu_next10.sh's call of 08:31 UTC). Two questions, each against the
# library (MILLION_CUDA_MERGE8=0, 8-warp tensor-core blocks), two rounds, interleaved:
# 1. m8r: the merge8 rule (MILLION_CUDA_MERGE8=1) now taken for grouped query heads too: 64-register merge blocks where
#    only they all fit beside a one-wave partial grid. 08:31 UTC, merge8 on every launch (=2): GQA B=1 32K 4-bit
#    23.5 -> 22.4 us, 2-bit 22.6 -> 21.8, MHA B=1 32K 2-bit 30.7 -> 30.0, but B=8 up to 14% slower, where the rule
#    does not pick it (a multi-wave partial grid). Decision (written before the run): the rule becomes the default if
#    it is faster at gqa:1:32768:4 by more than 1% in both rounds and no cell of any shape is more than 1% slower in both.
# 2. w12 / w16: 12 or 16 warps per tensor-core block (MILLION_CUDA_MMA_WARPS; 12: the chunk-ahead register prefetch,
#    16: codes loaded after use at 128 registers). The 08:31 UTC timelines put the GQA B=1 32K 4-bit loop at 2.05 us
#    per 32-token chunk and warp, with two warps per scheduler, the issue slots and the shared pipe each about half
#    busy: latency the 8 warps do not hide. Measured no faster on 2026-11-23, before the conflict-free gathers.
#    Decision: per arm, faster at gqa:1:32768:4 by more than 1% in both rounds, no GQA or SmolLM2 cell more than 1%
#    slower in both; of the arms that pass, the one with the lower total (ab_take.py) becomes the default.
# Where m8r passes, the sweep and the MillionCache tests run with it (and with the warps taken, if any).
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib11.so src/million/ops/cuda/pq_attention.cu   (this commit's source: the kernels' PTX is
#     gpu_next10.sh's library's; only the launcher's merge8 rule changed)
#   enc_wg.so as in gpu_next9.sh
# Usage: OUT=$OUT DEADLINE=360 bash benchmarks/gpu_next11.sh   (carry .carry/attn_lib11.so, enc_wg.so; about 290 s;
#        WARPS=0 skips question 2)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next11 "${DEADLINE:-360}" .carry/attn_lib11.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (mha|gqa|smollm2) B=1 ctx=32768|^adopt|^slower|^take|^total|FAIL"; }
env_txt
run t_kern 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py \
  -k "mma or test_matches_naive or back_to_back or graph_replay or merge8"
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  run "ab_lib$r" 45 $B --shapes mha,gqa,smollm2 --out "$W/ab_lib$r.json"
  run "ab_m8r$r" 45 env MILLION_CUDA_MERGE8=1 $B --shapes mha,gqa,smollm2 --out "$W/ab_m8r$r.json"
  if [ "${WARPS:-1}" = 1 ]; then
    run "ab_w12$r" 30 env MILLION_CUDA_MMA_WARPS=12 $B --shapes gqa,smollm2 --out "$W/ab_w12$r.json"
    run "ab_w16$r" 30 env MILLION_CUDA_MMA_WARPS=16 $B --shapes gqa,smollm2 --out "$W/ab_w16$r.json"
  fi
done
rm -f "$W/adopt"
run adopt_m8r 10 python3 benchmarks/ab_adopt.py "$W" lib m8r --cell gqa:1:32768:4 --margin 0.01 --guard 0.01
cp "$W/adopt" "$W/adopt_m8r" 2>/dev/null
if [ "${WARPS:-1}" = 1 ]; then
  for a in w12 w16; do
    rm -f "$W/adopt"
    run "adopt_$a" 10 python3 benchmarks/ab_adopt.py "$W" lib "$a" --cell gqa:1:32768:4 --margin 0.01 --guard 0.01 \
      --shapes gqa,smollm2
    cp "$W/adopt" "$W/adopt_$a" 2>/dev/null
  done
  run take 10 python3 benchmarks/ab_take.py "$W" w12 w16
fi
if [ "$(cat "$W/adopt_m8r" 2>/dev/null)" = 1 ]; then
  export MILLION_CUDA_MERGE8=1
  case "$(cat "$W/take" 2>/dev/null)" in w12) export MILLION_CUDA_MMA_WARPS=12;; w16) export MILLION_CUDA_MMA_WARPS=16;; esac
  run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
    --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
  cache_tests 100
fi
finish_call
