#!/usr/bin/env bash
# One device call that checks the library's defaults end to end after an encode change: the 32K prefill of the 7B
# shape with no cache / DynamicCache / MillionCache at 2 and 4 bits (bench_prefill_encode.py, $ROUNDS rounds each, default
# 3; bit widths in $PREFILL_BITS, default "2 4"), then every `gpu` test file together (or the files in $TESTS). Libraries prebuilt here (ops/_nvcc.py: FLAGS for attention, FLAGS_SM90A for the
# encode) and carried:
#   ATTN_LIB=.carry/attn.so ENC_LIB=.carry/enc_wg.so bash benchmarks/gpu_defaults.sh   # `run` with carry [".carry"]
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"  # gpu_setup, env_txt, left, tmo, stage, run
gpu_setup /tmp/defaults 560 .carry/attn.so .carry/enc_wg.so
pack() { pack_lines "$1" ""; }  # after each stage: its last lines into the summary; the summary and the JSONs to $OUT
env_txt
R=${ROUNDS:-3}
# $PREFILL_BITS: the bit widths of the prefill stage (default "2 4")
for b in ${PREFILL_BITS:-2 4}; do
  run prefill$b 150 python3 benchmarks/bench_prefill_encode.py --context 32768 --bits $b --rounds $R --json "$W/prefill$b.json"
done
# $TESTS: the test files (default: every `gpu` test file)
run tests 380 python3 -m pytest -q -p no:cacheprovider -m gpu ${TESTS:-tests/test_cuda_encode.py tests/test_cuda_attention.py \
  tests/test_gpu_cache.py tests/test_gpu_decode.py tests/test_gpu_eviction.py tests/test_triton_attention.py \
  tests/test_triton_encode.py tests/test_triton_grid.py}
cat "$W/stages.txt"
