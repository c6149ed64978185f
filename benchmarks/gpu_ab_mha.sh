#!/usr/bin/env bash
# One device call: an FFMA-kernel (MHA) variant .carry/attn_$VAR.so against the library .carry/attn_$BASE.so, and where
# the variant is faster at MHA B=1 32K 4-bit in both rounds by more than 0.5% (benchmarks/ab_adopt.py, written before the
# run), its sweep and MillionCache tests in the same call. Stages: the attention suite against the variant; MHA, 4 and
# 2 bits, B=1 and 8, 4K / 32K / 128K: BASE, VAR, twice; --q-op at B=1 4K / 32K; with TRACE=1 the graph timelines of
# .carry/attn_trace_$BASE.so and .carry/attn_trace_$VAR.so (MHA 32K 4-bit, 4K 4-bit, 32K 2-bit); the decision.
# The 2026-12-06 calls (docs/kernel_notes.md, "The first chunk's code loads ..."; base attn_col.so, built from adb68ae's
# source; the variants with the A/B macros of docs/logs/mcast_1206/ab_variants.patch, or from f762721, which has them):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_LOAD_AFTER_LUT -o .carry/attn_la.so ...      VAR=la TRACE=1 OUT=$OUT DEADLINE=400 bash benchmarks/gpu_ab_mha.sh
#   nvcc $F -DPQ_STAGE_FIRST -o .carry/attn_st.so ...         VAR=st TRACE=1 OUT=$OUT DEADLINE=360 bash benchmarks/gpu_ab_mha.sh
#   nvcc $F -DPQ_PF_EARLY -o .carry/attn_pf.so ...            VAR=pf OUT=$OUT DEADLINE=270 bash benchmarks/gpu_ab_mha.sh
#   (trace builds: add -DPQ_TRACE, named attn_trace_$VAR.so; the base's trace build was attn_trace3.so, copy or link it
#   to attn_trace_col.so)
# Writes to $OUT: stages.txt, env.txt, w.tgz (every output and JSON).
set -uo pipefail
VAR=${VAR:?set VAR: the variant library .carry/attn_\$VAR.so}
BASE=${BASE:-col}
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup "/tmp/ab_$VAR" "${DEADLINE:-420}" ".carry/attn_$VAR.so" .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt"; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
run "t_$VAR" 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for r in "" _b; do
  for e in "$BASE" "$VAR"; do
    run "ab_$e$r" 40 env MILLION_CUDA_LIB=".carry/attn_$e.so" $B --shapes mha --contexts 4096,32768,131072 --batches 1,8 \
      --out "$W/ab_$e$r.json"
  done
done
for e in "$BASE" "$VAR"; do
  run "qop_$e" 30 env MILLION_CUDA_LIB=".carry/attn_$e.so" $B --shapes mha --contexts 4096,32768 --batches 1 --q-op \
    --out "$W/qop_$e.json"
done
if [ "${TRACE:-0}" = 1 ]; then
  for e in "$BASE" "$VAR"; do
    run "tr_$e" 40 env MILLION_CUDA_LIB=".carry/attn_trace_$e.so" python3 benchmarks/trace_decode.py --graph --reps 5 \
      --case mha:1:4:32768 --case mha:1:4:4096 --case mha:1:2:32768 --out "$W/tr_$e.json"
  done
fi
adopt_then_sweep "$BASE" "$VAR" mha:1:32768:4 90 150
finish_call
