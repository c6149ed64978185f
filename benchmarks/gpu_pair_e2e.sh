#!/usr/bin/env bash
# Ran 2026-12-06 14:13 UTC (docs/kernel_notes.md, "Merge blocks of two query heads (refuted); the MHA prefetch through
# the shared helper (not taken)"; docs/e2e.md, "The graph decode on an H100"; raw docs/logs/pair_1206/call1/).
# One device call, stages in order of need: the GPU kernel tests on the pair build, the pairs A/B (two rounds, the
# sweep's cells), its decision, the MHA helper A/B and its decision, the end-to-end graph decode on the library the
# pairs decision leaves, the pair build's timelines, the --q-op sweep, the MillionCache tests.
# (1) Merge blocks of two query heads (pq_merge2_kernel, MILLION_CUDA_MERGE_PAIR=1 by default in the pair build):
#   at B=1 32K (MHA and GQA) the partial grid takes 128 of the 132 SMs with all their registers; 20 of the 32 merge
#   blocks fit on the 4 free SMs and attend their residual windows while the partial grid runs, the other 12 start only
#   as partial blocks exit and attend theirs after the last one (2-3.3 us on the critical path at MHA 2-bit). 16 blocks
#   of two heads fit at once. Every other kernel's PTX byte-identical (per-function nvcc -ptx comparison). Predicted:
#   MHA B=1 32K 2-bit 33.8 -> ~31.5 us, GQA B=1 32K 4-bit 28.5 -> ~27.5, MHA 4-bit 50.9 -> ~50.5; others unchanged.
# (2) The MHA kernel's L2 prefetch through the shared helper prefetch_first_chunks (the source keeps an inline copy
#   because the helper gives that kernel different PTX): docs/logs/pfgqa_1206/next_mha_helper.patch.
# (3) The 7B-shaped end-to-end graph decode (StaticCache fp16 vs MillionCache) on the library left; 128K does not fit
#   StaticCache beside the weights on an 80 GB card, so B=1 runs 4K, 32K and 64K.
# Decisions (written before the run):
# - pairs: adopt where faster at MHA B=1 32K 2-bit by more than 0.5% in both rounds and no cell more than 1% slower in
#   both rounds (ab_adopt.py --margin 0.005 --guard 0.01); then the end-to-end runs use the pair build.
# - helper: take it where at most 0.5% slower at MHA B=1 32K 4-bit and no cell more than 0.5% slower, both rounds
#   (ab_adopt.py --margin -0.005 --guard 0.005).
# Build here (nvcc 13.0) and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_new.so src/million/ops/cuda/pq_attention.cu            # the library (2ce4295's kernels)
#   git checkout 6ce287e -- src/million/ops/cuda/pq_attention.cu   # (the helper patch predates a comment change)
#   git apply docs/logs/pfgqa_1206/next_mha_helper.patch
#   nvcc $F -o .carry/attn_mh.so src/million/ops/cuda/pq_attention.cu; git checkout HEAD -- src
#   git apply --exclude=benchmarks/trace_decode.py docs/logs/pair_1206/pair.patch
#   nvcc $F -o .carry/attn_pair.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_pair.so src/million/ops/cuda/pq_attention.cu; git checkout src tests
# Usage: OUT=$OUT DEADLINE=530 bash benchmarks/gpu_pair_e2e.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/paire2e "${DEADLINE:-530}" .carry/attn_pair.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote|^ctx "; }
env_txt
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2"
C="--contexts 4096,16384,32768,131072 --batches 1,8"
run t_pair 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for r in "" _b; do
  for e in new pair; do
    run "ab_$e$r" 50 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --shapes mha,gqa,smollm2 $C --out "$W/ab_$e$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" new pair --cell mha:1:32768:2 --guard 0.01
cp "$W/adopt" "$W/adopt_pair" 2>/dev/null
for r in "" _b; do
  run "ab_mh$r" 25 env MILLION_CUDA_LIB=.carry/attn_mh.so $B --shapes mha $C --out "$W/ab_mh$r.json"
done
run adopt_mh 10 python3 benchmarks/ab_adopt.py "$W" new mh --cell mha:1:32768:4 --margin -0.005 --guard 0.005
cp "$W/adopt" "$W/adopt_mh" 2>/dev/null
[ "$(cat "$W/adopt_pair" 2>/dev/null)" = 1 ] || export MILLION_CUDA_LIB=$PWD/.carry/attn_new.so
echo "e2e library: $MILLION_CUDA_LIB" >> "$W/stages.txt"
MILLION_ENCODE_PRUNE_MIN=1000000000 run graph 150 python3 benchmarks/bench_e2e.py --graph --contexts 4096,32768,65536 \
  --steps 128 --json "$W/e2e_graph.json"
MILLION_ENCODE_PRUNE_MIN=1000000000 run graph_b8 100 python3 benchmarks/bench_e2e.py --graph --batch 8 \
  --contexts 4096,16384 --steps 128 --json "$W/e2e_graph_b8.json"
run trace_pair 30 env MILLION_CUDA_LIB=.carry/attn_trace_pair.so python3 benchmarks/trace_decode.py --graph --reps 5 \
  --out "$W/trace_pair.json"
run sweep_qop 45 $B --shapes mha,gqa,smollm2 $C --q-op --out "$W/sweep_qop.json"
cache_tests 150
finish_call
