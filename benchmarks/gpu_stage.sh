#!/usr/bin/env bash
# One device call (2026-12-06): the FFMA kernel with its first chunks' K and V codes brought into shared memory by two
# bulk copies (-DPQ_STAGE_FIRST, attn_st.so) instead of per-thread global loads issued before the LUT build, against the
# library (attn_col.so); the timelines of both; and, where the variant is faster at MHA B=1 32K 4-bit in both rounds,
# its sweep and MillionCache tests in the same call.
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_col.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_STAGE_FIRST -o .carry/attn_st.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_STAGE_FIRST -DPQ_TRACE -o .carry/attn_trace_st.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace3.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=400 bash benchmarks/gpu_stage.sh      (writes stages.txt, env.txt, w.tgz)
# The A/B macros (-DPQ_CLUSTER_EARLY, -DPQ_MHA_NOLUT, -DPQ_LOAD_AFTER_LUT, -DPQ_STAGE_FIRST) left the source once measured:
# apply docs/logs/mcast_1206/ab_variants.patch before building a variant (or build from f762721, which has them all).
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/st "${DEADLINE:-420}" .carry/attn_st.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt"; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
run t_st 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for r in "" _b; do
  for e in col st; do
    run "ab_$e$r" 40 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768,131072 --batches 1,8 \
      --out "$W/ab_$e$r.json"
  done
done
for e in col st; do
  run "qop_$e" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha --contexts 4096,32768 --batches 1 --q-op \
    --out "$W/qop_$e.json"
done
run tr_col 40 env MILLION_CUDA_LIB=.carry/attn_trace3.so python3 benchmarks/trace_decode.py --graph --reps 5 \
  --case mha:1:4:32768 --case mha:1:4:4096 --case mha:1:2:32768 --out "$W/tr_col.json"
run tr_st 40 env MILLION_CUDA_LIB=.carry/attn_trace_st.so python3 benchmarks/trace_decode.py --graph --reps 5 \
  --case mha:1:4:32768 --case mha:1:4:4096 --case mha:1:2:32768 --out "$W/tr_st.json"
adopt_then_sweep col st mha:1:32768:4 90 150
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
