#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 15:40-16:00 UTC, not yet run): one arm under the standing rule (kc4), one
# diagnostic arm (hm), and measurements of the library.
# 1. Timelines of the target cells on the library's trace build (.carry/attn_trace15.so: the committed source with
#    -DPQ_TRACE, whose merge end stamp is now read before the previous stamp is copied out: the earlier trace builds'
#    merge "end" waited for that global load; docs/kernel_notes.md, "The merge tail in the recorded timelines"):
#    GQA B=1 32K 4 and 2 bits, MHA B=1 32K 2 bits, in graph replay and cold. Question: how long the production merge
#    takes after its wait, which sizes the fused last-arriver merge (worth building only if the last partial block's
#    end to the last output is well above the 0.45-0.5 us hand-over plus one L2 round trip).
# 2. hm (docs/logs/hm_1207/hm.patch, -DPQ_HM=1), a diagnostic arm, never adopted: the library plus 16 HMMA per chunk
#    in two chains of 4 (each score mma issued again against a second n-tile of q, its sum added times 0), in the 8-warp
#    d = 128 4-bit instances. kt2 (20-26% slower) had 16 more HMMA and score chains twice as long; sch showed halving
#    the chains changes nothing. Question: do 16 more HMMA per chunk cost by themselves? Kernel tests, then the A/B's
#    two rounds against the library (its "adopt" line is not a decision). Reading, written before the run: within 1% at
#    the fp16 4-bit GQA cells -> the HMMA count is free, kt2's loss came from its chain depth or lane layout, and a K
#    un-rotation absorbed by four q classes (two n-tiles, 64 fewer SEL) is worth building; +3% or more -> it is not.
# 3. kc4 (docs/logs/kc4_1207/kc4.patch, -DPQ_KC4=1): the K un-rotation in one select stage instead of two, the rest
#    absorbed by four q classes in two n-tiles of the score mma (8-warp d = 128 4-bit instances). SASS of the chunk loop
#    861 -> 820 instructions (SEL 178 -> 114, HMMA 32 -> 48, FADD 24 -> 32), 216-221 registers, no spill; PTX at 0 the
#    library's; lane maps checked on the CPU by docs/logs/kc4_1207/emulate.py. Prediction: if hm is within 1%, about
#    -3% at the fp16 4-bit GQA cells (GQA B=1 32K 4-bit 20.2 -> ~19.6 us); else hm's cost minus that.
#    Decision (the rule of gpu_next20.sh-gpu_next22.sh, written before the run): only if its kernel tests pass, taken if
#    faster at gqa:1:32768:4 by more than 1% in both rounds and no GQA or SmolLM2 cell more than 1% slower in both;
#    then the sweep and the MillionCache tests on it. Adopt: git apply kc4.patch, #define PQ_KC4 1, and check the PTX
#    against nvcc -ptx -DPQ_KC4=1 of the patched source.
# 4. The library's sweep in bfloat16 and float16, and split sweeps at MHA B=1 32K 2/4-bit
#    and GQA B=1 32K 4-bit.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib14.so src/million/ops/cuda/pq_attention.cu              (the library, 818b53b8f68540dd)
#   git apply docs/logs/hm_1207/hm.patch; nvcc $F -DPQ_HM=1 -o .carry/attn_hm.so src/million/ops/cuda/pq_attention.cu;
#   git checkout src/million/ops/cuda/pq_attention.cu                                   (hm, 9e6a453cb41617c1)
#   the same with kc4.patch and -DPQ_KC4=1 -o .carry/attn_kc4.so                       (kc4, 462ac20efc39add1)
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace15.so src/million/ops/cuda/pq_attention.cu  (its trace build, f3ff570d2134bba0)
#   (enc_wg.so as in gpu_next9.sh)
# Usage: OUT=$OUT DEADLINE=500 bash benchmarks/gpu_next24.sh   (carry .carry/attn_lib14.so, .carry/attn_trace15.so,
#        .carry/attn_hm.so, .carry/attn_kc4.so, .carry/enc_wg.so; about 330 s, 430 s if kc4 is taken)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next24  # a reused host may keep an earlier call's files there (seen at 15:27 UTC in /tmp/next22)
gpu_setup /tmp/next24 "${DEADLINE:-500}" .carry/attn_lib14.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench (mha|gqa|smollm2) B=1 ctx=32768|^splits|passed|failed|Error|^(mha|gqa):1:|^adopt|^slower|gqa:1:"; }
env_txt
gate_arms hm kc4
[ -n "$GATED" ] && ab_rounds $GATED
C="--case gqa:1:4:32768 --case gqa:1:2:32768 --case mha:1:2:32768"
run trace_graph 40 env MILLION_CUDA_LIB=.carry/attn_trace15.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
  --out "$W/trace_graph.json"
run trace_cold 40 env MILLION_CUDA_LIB=.carry/attn_trace15.so python3 benchmarks/trace_decode.py --reps 5 $C \
  --out "$W/trace_cold.json"
if taken kc4; then on_arm kc4; fi  # kc4 taken: the sweep and the MillionCache tests on it
run sweep_bf16 70 $SWEEP_CMD --dtype bfloat16 --out "$W/sweep_bf16.json"
run sweep_fp16 70 $SWEEP_CMD --out "$W/sweep_fp16.json"
run splits 60 python3 benchmarks/bench_decode_cuda.py --skip-check --skip-bench --sweep-splits \
  --sweep-spec "mha:32768:2:2,3,4,5,6,8;mha:32768:4:2,3,4,5,6,8;gqa:32768:4:8,12,14,16,24,32" --out "$W/splits.json"
finish_call
