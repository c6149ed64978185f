#!/usr/bin/env bash
# Ran 2026-12-06 14:13 UTC inside gpu_pair_e2e.sh (the helper not taken; the end-to-end rows in docs/e2e.md, "The graph
# decode on an H100"); kept for its build lines.
# Prepared 2026-12-06 for one device call: (1) the MHA kernel's L2 prefetch through the shared helper
# prefetch_first_chunks (docs/logs/pfgqa_1206/next_mha_helper.patch; the source keeps an inline copy because the helper
# gives that kernel different PTX), A/B against the library, MHA only, two rounds; (2) the end-to-end decode of the
# 7B-shaped model with every step replayed from a CUDA graph (StaticCache fp16 vs MillionCache), on the current library,
# which docs/e2e.md last measured on an H200 on 2026-12-04 with the kernels of that day. 128K does not fit StaticCache
# beside the 13.5 GB of weights on an 80 GB card, so B=1 runs 4K, 32K and 64K.
# Build here and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_new.so src/million/ops/cuda/pq_attention.cu                  # the library
#   git apply docs/logs/pfgqa_1206/next_mha_helper.patch
#   nvcc $F -o .carry/attn_mh.so src/million/ops/cuda/pq_attention.cu
# Decision (written before the run): take the helper where it is at most 0.5% slower at MHA B=1 32K 4-bit in both rounds
# and no cell is more than 0.5% slower in both rounds (ab_adopt.py --margin -0.005 --guard 0.005).
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_e2e_mh.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/e2emh "${DEADLINE:-330}" .carry/attn_new.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^\| [0-9]"; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
B="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha --contexts 4096,32768"
run t_mh 60 env MILLION_CUDA_LIB=.carry/attn_mh.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py
for r in "" _b; do
  for e in new mh; do
    run "ab_$e$r" 30 env MILLION_CUDA_LIB=.carry/attn_$e.so $B --batches 1,8 --out "$W/ab_$e$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" new mh --cell mha:1:32768:4 --margin -0.005 --guard 0.005
export MILLION_ENCODE_PRUNE_MIN=1000000000  # as gpu_e2e.sh: the prefill takes the brute encode (no grid-list build)
run graph 150 python3 benchmarks/bench_e2e.py --graph --contexts 4096,32768,65536 --steps 128 --json "$W/e2e_graph.json"
run graph_b8 100 python3 benchmarks/bench_e2e.py --graph --batch 8 --contexts 4096,16384 --steps 128 \
  --json "$W/e2e_graph_b8.json"
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
