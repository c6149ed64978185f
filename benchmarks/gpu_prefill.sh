#!/usr/bin/env bash
# One device call for the cost of the codes in a long prefill (docs/benchmarks.md, "What the codes cost a 32K
# prefill, end to end"): GPU tests of MillionCache, the 32K prefill of the 7B shape with no cache / DynamicCache /
# MillionCache at 2 and 4 bits (bench_prefill_encode.py), and a probe of the table multicast at the SmolLM2 B=1 4K
# decode cell. (Run at commit 13ad719 with the prefill's encode on the side stream as a fourth variant, refuted and
# removed since; the stage helpers come from gpu_stages.sh since then, the mechanics checked on the CPU.) Libraries
# prebuilt here and carried:
#   ATTN_LIB=.carry/attn_cm2.so ENC_LIB=.carry/enc_h200.so bash benchmarks/gpu_prefill.sh   # `run` with carry [".carry"]
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"  # gpu_setup, env_txt, left, tmo, stage, run
gpu_setup /tmp/pf 560 .carry/attn_cm2.so .carry/enc_h200.so
pack() {  # after each stage (gpu_stages.sh's run): the stage's last lines into the summary, everything to $OUT
  tail -8 "$W/$1.txt" | sed 's/^/   /' >> "$W/stages.txt"
  cp -r "$W"/. "$OUT"/ 2>/dev/null
}
env_txt
run tests 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_cache.py -k mha
run prefill2 150 python3 benchmarks/bench_prefill_encode.py --context 32768 --bits 2 --rounds 3 --json "$W/prefill2.json"
run prefill4 200 python3 benchmarks/bench_prefill_encode.py --context 32768 --bits 4 --rounds 3 --json "$W/prefill4.json"
for c in 1 2 4; do
  run cluster$c 45 env MILLION_CUDA_CLUSTER=$c python3 benchmarks/bench_decode_cuda.py --no-triton --skip-check \
    --shapes smollm2 --batches 1 --contexts 4096,16384 --out "$W/cluster$c.json"
done
cat "$W/stages.txt"
