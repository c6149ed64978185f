#!/usr/bin/env bash
# One device call for the lead of docs/kernel_notes.md, "What a warp pays, and a grid over the centroids' inner 98%":
# the 4-bit (pruned) encode timed with the grid lists over the centroids' bounding box (MILLION_ENCODE_GRID_Q=0) and
# over their inner quantiles (0.01, the default since 2026-12-05, and 0.02), interleaved twice (bench_encode.py,
# Gaussian data as every encode timing so far), and the encode's GPU tests with the 0.01 frame (exact codes either
# way). Not run as such: the frames 0 and 0.01 were timed through gpu_encode_wg.sh ($FRAMES) on 2026-12-05.
# Libraries prebuilt here (flags of ops/_nvcc.py) and carried:
#   ATTN_LIB=.carry/attn.so ENC_LIB=.carry/enc.so bash benchmarks/gpu_grid_frame.sh   # `run` with carry [".carry"]
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"  # gpu_setup, env_txt, left, tmo, stage, run
gpu_setup /tmp/gridq 400 .carry/attn.so .carry/enc.so
pack() {  # after each stage: the 4-bit encode lines (or the test summary) into the summary, everything to $OUT
  grep -E "^encode 4b|passed|failed" "$W/$1.txt" | cut -c1-160 | sed 's/^/   /' >> "$W/stages.txt"
  cp -r "$W"/. "$OUT"/ 2>/dev/null
}
env_txt
for r in 1 2; do
  for q in 0 0.01 0.02; do
    run "enc_q${q}_$r" 60 env MILLION_ENCODE_GRID_Q=$q python3 benchmarks/bench_encode.py --no-prefill --prefill-ms 1431 \
      --out "$W/enc_q${q}_$r.json"
  done
done
run tests_q0.01 150 env MILLION_ENCODE_GRID_Q=0.01 python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_encode.py tests/test_triton_grid.py
cat "$W/stages.txt"
