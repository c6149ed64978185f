#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 23:50 UTC): the transforms of a decode step in one Triton launch each.
# Why: the default recipe's form (pq-tr: key/value transforms, one fp16 sink) cost 1.39 ms per step over plain codes at
# the LLaMA-3-8B shape (docs/e2e.md, H100 16:46 UTC: 10.368 vs 8.982 ms at 32K; 12.849 vs 10.824 at B=8 16K): per layer
# the query map, the output map and the window's mapped rows were float32 casts, batched matmuls, casts back and index
# copies (about fourteen launches). million.ops.head_map (src/million/ops/triton_transform.py) does each map in one
# launch, and the window write with its untransformed copy in the same launch. MILLION_HEAD_MAP=torch keeps the old
# path (the reference's casts and einsum) for this A/B.
# 1. GPU tests: the kernel against its twin on the GPU, the MillionCache and decode-loop GPU tests (transformed cases).
# 2. End to end, LLaMA-3-8B shape, graph-replayed decode: B=1 4K/32K/128K and B=8 4K/16K; pq-tr with
#    MILLION_HEAD_MAP=torch (old) and =triton (new), pq and StaticCache with SDPA's own GQA beside them (new run).
#    Rule, written before the run: the Triton head map stays the default if the tests pass and pq-tr is faster with it
#    at B=1 32K by more than 1% and no pq-tr row is slower by more than 1%; otherwise the default goes back to torch.
# Usage: OUT=$OUT DEADLINE=480 bash benchmarks/gpu_next29.sh   (carry .carry/attn_bfh.so, .carry/enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next29
gpu_setup /tmp/next29 "${DEADLINE:-480}" .carry/attn_bfh.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|error|^ctx |^\\| [0-9]|^ *[0-9]+ *\\|"; }
env_txt
export MILLION_ENCODE_PRUNE_MIN=1000000000
run t_map 120 python3 -m pytest -q -p no:cacheprovider tests/test_triton_transform.py tests/test_transforms.py
run t_cache 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_cache.py tests/test_gpu_decode.py
E="python3 benchmarks/bench_e2e.py --graph --steps 128 --shape llama3-8b"
run e2e_old 80 env MILLION_HEAD_MAP=torch $E --caches pq-tr --contexts 4096,32768,131072 --json "$W/e2e_old.json"
run e2e_new 130 env MILLION_HEAD_MAP=triton $E --caches fp16static-gqa,pq,pq-tr --contexts 4096,32768,131072 \
  --json "$W/e2e_new.json"
run e2e_old_b8 60 env MILLION_HEAD_MAP=torch $E --batch 8 --caches pq-tr --contexts 4096,16384 --json "$W/e2e_old_b8.json"
run e2e_new_b8 80 env MILLION_HEAD_MAP=triton $E --batch 8 --caches pq,pq-tr --contexts 4096,16384 \
  --json "$W/e2e_new_b8.json"
finish_call
