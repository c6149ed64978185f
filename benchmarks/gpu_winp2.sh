#!/usr/bin/env bash
# One device call: the residual window attended by the MHA kernel's partial blocks at 2 bits only, as a separate kernel
# instance (pq_partial_kernel<..., WP = true> and pq_merge_kernel<..., WIN = false>), against the library in the same call.
# Why: the first version (docs/logs/winp_1206/winp.patch, measured 18:44 UTC) gained 2.2% at MHA B=1 32K 2-bit but
# changed the code of the default kernels (4-bit MHA 1.6-3% slower with no window staged) and, by its rule, also ran at
# B=8 (two waves of partial blocks; 4K +8-9%). Here every default kernel keeps its PTX (per-function comparison with the
# library's source: identical, names normalized, except equivalent address arithmetic in the table copy of one bf16
# d=64 kernel), the window runs only in the new 2-bit instances, and the rule (MILLION_CUDA_WINP=1) takes them only on
# a one-wave partial grid beside which some merge blocks would not fit.
# Predicted: MHA B=1 32K 2-bit -2% (as measured at 18:44), 128K within noise, every other cell unchanged.
# Decision (written before the run): wq1 (this build, MILLION_CUDA_WINP=1) against lib (attn_fin2.so), MHA 2-bit cells
# (the only ones whose kernels differ), two rounds: faster at MHA B=1 32K 2-bit by more than 1% in both rounds, no cell
# more than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01). Taken: the default of MILLION_CUDA_WINP
# becomes 1 (host code only; the device code is this build's).
# Build here (nvcc 13.0) and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_wp2.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=150 bash benchmarks/gpu_winp2.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/wq "${DEADLINE:-150}" .carry/attn_wp2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench mha B=1 ctx=32768|^adopt|^slower|^wrote|FAIL"; }
env_txt
# the patch's Python side and tests in this (device) copy of the tree; the library is the carried build
git apply docs/logs/winp_1206/winp2.patch 2>/dev/null && echo "winp2.patch applied" | tee -a "$W/stages.txt" ||
  echo "winp2.patch not applied (already in the tree?)" | tee -a "$W/stages.txt"
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 2 --skip-check --shapes mha --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  run "ab_lib$r" 25 env MILLION_CUDA_LIB=.carry/attn_fin2.so $B --out "$W/ab_lib$r.json"
  run "ab_wq1$r" 25 env MILLION_CUDA_WINP=1 $B --out "$W/ab_wq1$r.json"
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" lib wq1 --cell mha:1:32768:2 --margin 0.01 --guard 0.01
# the window cases by default and under WINP=1 / 2 (subprocesses: matching, window, FFMA, graph, back-to-back, no-starts)
run t_win 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py -k "window or ffma"
finish_call
