#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 18:40-18:50 UTC): gpu_next27.sh and gpu_next26.sh in one call, most target-relevant
# stage first. Why one call: this session's device time fell from 1,800 to 764 s in eight refused requests before any
# machine started, enough for one start and one call of at most 600 s. Every stage, and every decision rule, is the
# one of those two scripts, written and committed before this session (their headers say why and how):
# 1. mwarm (gpu_next27.sh): the whole attention test file on .carry/attn_mwarm.so; two A/B rounds, MHA / GQA / SmolLM2,
#    4K / 32K / 128K, B=1 and 8, 4 and 2 bits; taken by the standing rule at GQA B=1 32K 4-bit (ab_adopt.py, margin
#    and guard 1%); the timelines of GQA B=1 32K 4-bit and MHA B=1 32K 2-bit on the library's and mwarm's trace builds.
# 2. Per-KV-head tables behind a kernel of another library (gpu_next26.sh stage 4, --q-op), two rounds.
# 3. fp16 GQA 2-bit on 16 tensor-core warps against the library's dispatch (gpu_next26.sh stage 1, rule at
#    gqa:8:32768:2).
# 4. bf16 with the dispatch taken at 16:42 UTC (gpu_next26.sh stage 2).
# 5. The LLaMA-3-8B shape end to end with the stronger fp16 baseline (gpu_next26.sh stage 3), if at least 150 s are left.
# 6. If mwarm is taken: the sweep on it (the MillionCache tests too if time is left).
# 7. bfh (gpu_next26.sh stage 5), if at least 150 s are left.
# Usage: OUT=$OUT DEADLINE=560 bash benchmarks/gpu_next28.sh   (carry .carry/attn_lib14.so, attn_mwarm.so,
#        attn_mwarm_trace.so, attn_trace15.so, attn_bfh.so, enc_wg.so; about 520 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next28
gpu_setup /tmp/next28 "${DEADLINE:-560}" .carry/attn_lib14.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench (mha|gqa) B=1 ctx=32768|^bench gqa B=8 ctx=32768|passed|failed|Error|^adopt|^slower|^ctx |^\\| [0-9]"; }
env_txt
# 1. mwarm
run t_mwarm 90 env MILLION_CUDA_LIB=.carry/attn_mwarm.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py
if passed t_mwarm; then
  A="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 --contexts
    4096,32768,131072 --batches 1,8"
  ab_two lib mwarm 40 MILLION_CUDA_LIB=.carry/attn_mwarm.so $A
  adopt_arm mwarm gqa:1:32768:4
fi
C="--case gqa:1:4:32768 --case mha:1:2:32768"
run trace_lib 30 env MILLION_CUDA_LIB=.carry/attn_trace15.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
  --out "$W/trace_lib.json"
run trace_mwarm 30 env MILLION_CUDA_LIB=.carry/attn_mwarm_trace.so python3 benchmarks/trace_decode.py --graph --reps 5 \
  $C --out "$W/trace_mwarm.json"
# 2. per-KV-head tables behind another library's kernel
Q="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa --contexts 32768
  --batches 1 --q-op"
for r in "" _b; do
  run "qop_sh$r" 30 $Q --out "$W/qop_sh$r.json"
  run "qop_hc$r" 30 $Q --head-codebooks --out "$W/qop_hc$r.json"
done
# 3. m16 (its base is "lib16": the mwarm rounds keep ab_lib*.json)
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 2 --shapes gqa --contexts 32768,131072
  --batches 1,8"
ab_two lib16 m16 30 "MILLION_CUDA_KERNEL=mma MILLION_CUDA_MMA_WARPS=16" $B
run adopt_m16 10 python3 benchmarks/ab_adopt.py "$W" lib16 m16 --cell gqa:8:32768:2 --margin 0.01 --guard 0.01
# 4. bf16 as dispatched now
run bf_auto 30 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --dtype bfloat16 --bits 4,2 --contexts \
  4096,32768,131072 --batches 1,8 --shapes gqa,smollm2 --out "$W/bf_auto.json"
# 5. LLaMA-3-8B end to end
if [ "$(left)" -ge 150 ]; then  # it writes its JSON at the end: not started where it would be cut
  MILLION_ENCODE_PRUNE_MIN=1000000000 run e2e_gqa 170 python3 benchmarks/bench_e2e.py --graph --steps 128 \
    --shape llama3-8b --caches fp16static,fp16static-gqa,pq --contexts 4096,32768,131072 --json "$W/e2e_gqa.json"
fi
# 6. the sweep on mwarm, if taken
if taken mwarm; then
  MILLION_CUDA_LIB=.carry/attn_mwarm.so run sweep_mwarm 60 $SWEEP_CMD --out "$W/sweep_mwarm.json"
fi
# 7. bfh
if [ "$(left)" -ge 150 ]; then
  run t_bfh 90 env MILLION_CUDA_LIB=.carry/attn_bfh.so python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_attention.py
  if passed t_bfh; then
    M="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --dtype bfloat16 --bits 4,2 --shapes mha
      --contexts 4096,32768,131072 --batches 1,8"
    ab_two bflib bfh 30 MILLION_CUDA_LIB=.carry/attn_bfh.so $M
    run adopt_bfh 10 python3 benchmarks/ab_adopt.py "$W" bflib bfh --cell mha:1:32768:4 --margin 0.01 --guard 0.01
  fi
fi
if taken mwarm && [ "$(left)" -ge 90 ]; then
  MILLION_CUDA_LIB=.carry/attn_mwarm.so cache_tests 90
fi
finish_call
