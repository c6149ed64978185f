#!/usr/bin/env bash
# Ran 2026-12-06 14:13 UTC as gpu_pair_e2e.sh (pairs refuted, the helper not taken: docs/kernel_notes.md, "Merge blocks of
# two query heads"); its code is in docs/logs/pair_1206/pair.patch, no longer in the source.
# Prepared 2026-12-06 (second session of the day) for one device call: merge blocks of two query heads
# (pq_merge2_kernel, MILLION_CUDA_MERGE_PAIR=1 by default in this build), A/B against the library of 2ce4295, and the
# MHA kernel's L2 prefetch through the shared helper (docs/logs/pfgqa_1206/next_mha_helper.patch), both two rounds.
# Why pairs: at B=1 32K (MHA and GQA) the partial grid takes 128 of the 132 SMs with all their registers; 20 of the 32
# merge blocks fit on the 4 free SMs and attend their residual windows while the partial grid runs, the other 12 start
# only as partial blocks exit and attend theirs after the last one (2-3.3 us on the critical path at MHA 2-bit,
# docs/kernel_notes.md "Where the merge blocks wait at B=1 32K"). 16 blocks of two heads fit at once. Holding the merge
# kernel to 64 registers did the same but spilled and packed 8 blocks per SM everywhere (refuted); pairs change only
# the grids where the rule picks them (B=1, one-wave partial grids of 125+ blocks) and leave every other kernel's PTX
# byte-identical (checked here before the call: per-function comparison of nvcc -ptx output).
# Predicted: MHA B=1 32K 2-bit 33.8 -> ~31.5 us, GQA B=1 32K 4-bit 28.5 -> ~27.5, MHA B=1 32K 4-bit 50.9 -> ~50.5;
# B=8 and 4K cells unchanged.
# Build here and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_new.so src/million/ops/cuda/pq_attention.cu     # 2ce4295 kernels, before the patch
#   git apply --exclude=benchmarks/trace_decode.py docs/logs/pair_1206/pair.patch; nvcc $F -o .carry/attn_pair.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_pair.so src/million/ops/cuda/pq_attention.cu
#   (attn_mh.so, attn_trace_new.so: see gpu_e2e_mh.sh)
# Decisions (written before the run):
# - pairs: adopt where faster at MHA B=1 32K 2-bit by more than 0.5% in both rounds and no cell more than 1% slower in
#   both rounds (ab_adopt.py --margin 0.005 --guard 0.01). The A/B rounds time the sweep's cells (4K-128K, B=1 and 8);
#   where pairs are adopted, the --q-op sweep follows in the same call.
# - helper: as gpu_e2e_mh.sh: at most 0.5% slower at MHA B=1 32K 4-bit, no cell more than 0.5% slower, both rounds.
# Usage: OUT=$OUT DEADLINE=380 bash benchmarks/gpu_pair.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/pair "${DEADLINE:-380}" .carry/attn_pair.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote"; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
run t_pair 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
C="--contexts 4096,16384,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in new pair; do
    run "ab_$e$r" 50 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha,gqa,smollm2 $C --out "$W/ab_$e$r.json"
  done
  run "ab_mh$r" 25 env MILLION_CUDA_LIB=.carry/attn_mh.so $B --shapes mha $C --out "$W/ab_mh$r.json"
done
for e in new pair; do
  run "trace_$e" 40 env MILLION_CUDA_LIB=.carry/attn_trace_$e.so python3 benchmarks/trace_decode.py --graph --reps 5 \
    --out "$W/trace_$e.json"
done
run adopt_mh 10 python3 benchmarks/ab_adopt.py "$W" new mh --cell mha:1:32768:4 --margin -0.005 --guard 0.005
cp "$W/adopt" "$W/adopt_mh" 2>/dev/null
run adopt 10 python3 benchmarks/ab_adopt.py "$W" new pair --cell mha:1:32768:2 --guard 0.01
# (the A/B rounds are the plain sweep's cells: only --q-op is left)
[ "$(cat "$W/adopt" 2>/dev/null)" = 1 ] && run sweep_qop 50 $B --shapes mha,gqa,smollm2 $C --q-op --out "$W/sweep_qop.json"
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
