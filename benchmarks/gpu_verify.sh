#!/usr/bin/env bash
# One device call that checks on a GPU what the CPU cannot: the fused Triton grid-list build compiled (its unmarked
# tests run on the GPU when one is there, plus its `gpu` test at 2048 subspaces), every `gpu`-marked test of the
# suite, the grid build timed against the torch rule, and the first (untimed elsewhere) 32K prefill of the 7B shape,
# whose warm-up builds the 4-bit encode's grid lists. Libraries prebuilt here (flags of ops/_nvcc.py) and carried:
#   ATTN_LIB=.carry/attn.so ENC_LIB=.carry/enc.so bash benchmarks/gpu_verify.sh   # `run` with carry [".carry"]
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"  # gpu_setup, env_txt, left, tmo, stage, run
gpu_setup /tmp/verify 560 .carry/attn.so .carry/enc.so
pack() {  # after each stage: the stage's last lines into the summary, everything to $OUT
  tail -6 "$W/$1.txt" | sed 's/^/   /' >> "$W/stages.txt"
  cp -r "$W"/. "$OUT"/ 2>/dev/null
}
env_txt
P="python3 -m pytest -q -p no:cacheprovider"
run grid 150 $P tests/test_triton_grid.py tests/test_cuda_encode_grid.py
run grid_gpu 90 $P -m gpu tests/test_triton_grid.py
run gridbench 90 python3 benchmarks/bench_grid_build.py --device cuda --subspaces 2048 --prefilters 64 --triton \
  --launches 4:2:1,8:4:1 --json "$W/gridbench.json"
run prefill4 150 python3 benchmarks/bench_prefill_encode.py --context 32768 --bits 4 --rounds 1 --variants nocache,pq \
  --json "$W/prefill4.json"
run tests 330 $P -m gpu tests/test_cuda_encode.py tests/test_cuda_attention.py tests/test_gpu_cache.py \
  tests/test_gpu_decode.py tests/test_gpu_eviction.py tests/test_triton_attention.py tests/test_triton_encode.py
cat "$W/stages.txt"
