#!/usr/bin/env bash
# gpu_ta2.sh cut to what the session's last device time allows (about 250 s with a machine's start): tb alone
# (-DPQ_TALIGN=1024 -DPQ_TALIGN_DMIN=128: the tensor-core and packed-LUT kernels' tables 1024-byte aligned at d = 128
# only; the d = 64 kernels are the library's) against the library, two rounds over the GQA and SmolLM2 cells.
# Decision (written before the run; gpu_ta2.sh's rule for tb): faster at GQA B=1 4K 4-bit by more than 1% in both rounds
# and no cell more than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01). Taken: the source's defaults
# become PQ_TALIGN=1024, PQ_TALIGN_DMIN=128, provided the tensor-core and packed-LUT tests pass on the build.
# Builds and carry: gpu_ta2.sh's header (attn_tb.so 8d426293a792e793).
# Usage: OUT=$OUT DEADLINE=150 bash benchmarks/gpu_ta3.sh      (carry .carry/attn_p8w.so, .carry/attn_tb.so, .carry/enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/ta3 "${DEADLINE:-150}" .carry/attn_p8w.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=(4096|32768)|^adopt|^slower|FAIL"; }
env_txt
lib() { case $1 in lib) echo .carry/attn_p8w.so;; *) echo .carry/attn_$1.so;; esac; }
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib tb; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib $e) $B --out "$W/ab_$e$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" lib tb --cell gqa:1:4096:4 --margin 0.01 --guard 0.01
run t_tb 40 env MILLION_CUDA_LIB=.carry/attn_tb.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py -k "mma or lut or test_matches_naive or back_to_back or graph_replay"
finish_call
