#!/usr/bin/env bash
# Ran 2026-12-06 11:38 UTC (docs/kernel_notes.md, "The L2 prefetch in the tensor-core and packed-LUT kernels"; taken): the L2 prefetch of the split's first chunks before the
# wait, which the MHA kernel has had since 4bbcf89 (MHA B=1 32K 4-bit 52.3 -> 51.5 us), in the tensor-core and packed-LUT
# kernels (GQA, SmolLM2 shape): docs/logs/mcast_1206/next_pf_gqa.patch adds it behind -DPQ_PF_EARLY_GQA=N (N x NW chunks),
# and -DPQ_PF_MHA_CHUNKS=N (the MHA kernel's prefetch over N x NW chunks instead of NW).
# Build here and carry .carry (these commands apply to a48bf5c; since 2ce4295 the source has the prefetch, N = 1):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_cur.so src/million/ops/cuda/pq_attention.cu                     # the library
#   git apply docs/logs/mcast_1206/next_pf_gqa.patch
#   nvcc $F -DPQ_PF_EARLY_GQA=1 -o .carry/attn_pg1.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_PF_EARLY_GQA=2 -o .carry/attn_pg2.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_PF_MHA_CHUNKS=2 -o .carry/attn_pm2.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Then: the attention suite against attn_pg1.so; GQA and SmolLM2 shapes, B=1 and 8, 4K and 32K, 4 and 2 bits: cur, pg1,
# pg2, twice, and --q-op at B=1; MHA, the same cells, cur against pm2, twice (reported only); where pg1 is faster at GQA
# B=1 4K 4-bit in both rounds by more than 0.5%, its sweep and the MillionCache tests in the same call (the decision
# written here, before the run).
# Usage: OUT=$OUT DEADLINE=400 bash benchmarks/gpu_pf_gqa.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/pfg "${DEADLINE:-400}" .carry/attn_pg1.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt"; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
run t_pg1 60 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for r in "" _b; do
  for e in cur pg1 pg2; do
    run "ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes gqa,smollm2 --contexts 4096,32768 --batches 1,8 \
      --out "$W/ab_$e$r.json"
  done
done
for r in "" _b; do
  for e in cur pm2; do
    run "mha_$e$r" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768 --batches 1,8 \
      --out "$W/mha_$e$r.json"
  done
done
for e in cur pg1 pg2; do
  run "qop_$e" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes gqa,smollm2 --contexts 4096,32768 --batches 1 \
    --q-op --out "$W/qop_$e.json"
done
adopt_then_sweep cur pg1 gqa:1:4096:4 50 120
finish_call
