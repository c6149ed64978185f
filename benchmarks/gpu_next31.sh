#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 23:50 UTC): the head map's matrix block loaded once per head for every row of
# the batch. Why: at 23:35 UTC (gpu_next30.sh) the default recipe's transforms cost 0.47-0.55 ms per step at the MHA
# shape, B=1, and 0.76-0.77 ms at B=8 (LLaMA-3-8B shape: 0.31-0.37), where each program of a39cba1's kernel loaded its
# head's [D, 32] float32 block for its own sequence: at MHA B=8, 8 x 2 MB of matrix reads per map and layer.
# The new kernel (docs/logs/headmap_1207/v2/triton_transform.py, copied over a copy of src/ here) runs a program per
# (column block, head, 32 rows) and loads the block once. The old kernel: the library (the working tree, a39cba1's
# kernel), each arm run with PYTHONPATH on its src.
# 1. The head-map and transform tests, the MillionCache and decode-loop GPU tests, on the new kernel.
# 2. pq-tr end to end, old then new, at MHA B=1 32K, MHA B=8 4K, LLaMA-3-8B B=1 32K and B=8 16K; then a second
#    round of MHA B=8 4K. Rule, written before the run: the new kernel is taken (copied into src/) if the tests pass, pq-tr is faster with
#    it at MHA B=8 4K by more than 1% in both rounds and no row is slower by more than 1%; otherwise a39cba1's kernel
#    stays.
# Usage: OUT=$OUT DEADLINE=480 bash benchmarks/gpu_next31.sh   (carry .carry/attn_bfh.so, .carry/enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next31 /tmp/new31
gpu_setup /tmp/next31 "${DEADLINE:-480}" .carry/attn_bfh.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|error|^ctx .*pq-tr"; }
env_txt
mkdir -p /tmp/new31 && cp -r src /tmp/new31/ && cp docs/logs/headmap_1207/v2/triton_transform.py \
  /tmp/new31/src/million/ops/triton_transform.py
export MILLION_ENCODE_PRUNE_MIN=1000000000
run t_map 120 env PYTHONPATH=/tmp/new31/src python3 -m pytest -q -p no:cacheprovider tests/test_triton_transform.py tests/test_transforms.py
run t_cache 100 env PYTHONPATH=/tmp/new31/src python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py tests/test_gpu_decode.py -k transformed
E="python3 benchmarks/bench_e2e.py --graph --steps 128 --caches pq-tr"
cells() {  # cells ARM PYTHONPATH
  run "$1_mha1" 40 env PYTHONPATH="$2" $E --contexts 32768 --json "$W/$1_mha1.json"
  run "$1_mha8" 40 env PYTHONPATH="$2" $E --batch 8 --contexts 4096 --json "$W/$1_mha8.json"
  run "$1_l31" 40 env PYTHONPATH="$2" $E --shape llama3-8b --contexts 32768 --json "$W/$1_l31.json"
  run "$1_l38" 40 env PYTHONPATH="$2" $E --shape llama3-8b --batch 8 --contexts 16384 --json "$W/$1_l38.json"
}
cells old "$PWD/src"
cells new /tmp/new31/src
run old_mha8_b 40 env PYTHONPATH="$PWD/src" $E --batch 8 --contexts 4096 --json "$W/old_mha8_b.json"
run new_mha8_b 40 env PYTHONPATH=/tmp/new31/src $E --batch 8 --contexts 4096 --json "$W/new_mha8_b.json"
finish_call
