#!/usr/bin/env bash
# One device call: the GPU tests of MillionCache, of the CUDA-graph decode loop (million.decode) and of eviction, the
# GPU time of the 4-bit encode's grid lists (stage grid), the graph loop with eviction (stage graph_ev), then the
# end-to-end decode benchmark of the 7B-shaped model with every step replayed from a CUDA graph (StaticCache fp16
# vs MillionCache, plain and transformed codebooks), batch 1 and 8, and the eager loop at 32K for reference.
# Stage profile_ev: benchmarks/profile_evict.py at PROF_CONTEXTS (default 32768), the library's scoring and the einsum.
# Every stage runs under `timeout`, clipped to DEADLINE seconds after the start (default 560). Libraries are the
# carried prebuilt ones (nvcc flags as in src/million/ops/_nvcc.py).
#
#   OUT=$OUT ATTN_LIB=.carry/attn_h200.so ENC_LIB=.carry/enc_h200.so bash benchmarks/gpu_e2e.sh
#
# Everything goes under $W (default /tmp/e2e), packed after every stage into $OUT/e2e.tgz; stages.txt and the
# result tables are also copied to $OUT.
set -uo pipefail
T0=$(date +%s)
OUT=${OUT:-gpu_out}
W=${W:-/tmp/e2e}
DEADLINE=${DEADLINE:-560}
ATTN_LIB=${ATTN_LIB:-.carry/attn_h200.so}
ENC_LIB=${ENC_LIB:-.carry/enc_h200.so}
CONTEXTS=${CONTEXTS:-4096,16384,32768,65536,131072}
B8_CONTEXTS=${B8_CONTEXTS:-4096,16384}
STAGES=${STAGES:-env,tests,graph,graph_b8,eager}
mkdir -p "$OUT" "$W"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
export MILLION_CUDA_LIB=$PWD/$ATTN_LIB MILLION_CUDA_ENCODE_LIB=$PWD/$ENC_LIB
# prefill encodes take the brute kernel: the pruned kernel's one-time grid build (about 90 s for the 64 per-head
# codebook tensors of the 7B shape) is not what this benchmark measures; decode steps encode R-token blocks either way
export MILLION_ENCODE_PRUNE_MIN=${MILLION_ENCODE_PRUNE_MIN:-1000000000}
PY=${PY:-python3}

# pack [NAME]: the stage's last lines to $OUT, everything under $W into $OUT/e2e.tgz, stages.txt to $OUT
pack() { [ -n "${1:-}" ] && tail -n 25 "$W/$1.txt" > "$OUT/$1.tail.txt"
  tar -czf "$OUT/e2e.tgz.tmp" -C "$(dirname "$W")" "$(basename "$W")" 2>/dev/null && mv "$OUT/e2e.tgz.tmp" "$OUT/e2e.tgz"
  cp "$W/stages.txt" "$OUT/" 2>/dev/null; }
. "$(dirname "$0")/gpu_stages.sh"  # left, tmo, stage, run
want() { case ",$STAGES," in *",$1,"*) return 0;; *) return 1;; esac; }

if want env; then
  stage env
  { date -u '+%Y-%m-%d %H:%M:%S UTC'
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit,pstate --format=csv
    $PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
    sha256sum "$ATTN_LIB" "$ENC_LIB"; git log -1 --format='%H %s' 2>/dev/null
  } > "$W/env.txt" 2>&1
  cp "$W/env.txt" "$OUT/"
fi
want tests && run tests ${TESTS_S:-300} $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_gpu_cache.py tests/test_gpu_decode.py tests/test_gpu_eviction.py
# the Triton column sums (prefill scores, and committed decode queries with their own lse) compiled on the GPU
want tests && run tests_scores 120 $PY -m pytest -q -p no:cacheprovider tests/test_triton_scores.py
# one commit step taken apart: the library's scoring against the earlier einsum, same process settings
if want profile_ev; then
  for ctx in ${PROF_CONTEXTS:-32768}; do
    # the library's route (flash prefill, one column-sum launch per commit) and the earlier one (SDPA prefill with
    # two passes of the scores, einsum at commits)
    run "profile_kernel_$ctx" 150 $PY benchmarks/profile_evict.py --context "$ctx" --steps ${PROF_STEPS:-512} --score kernel --prefill cudnn --json "$W/profile_evict_kernel_$ctx.json"
    run "profile_einsum_$ctx" 150 $PY benchmarks/profile_evict.py --context "$ctx" --steps ${PROF_STEPS:-512} --score einsum --prefill sdpa --json "$W/profile_evict_einsum_$ctx.json"
  done
fi
want grid && run grid 90 $PY benchmarks/bench_grid_build.py --device cuda --subspaces 2048 --json "$W/grid_build.json"
want graph_ev && run graph_ev ${EV_S:-240} $PY benchmarks/bench_e2e.py --graph --caches fp16static,pq,pq-ev --keep ${KEEP:-0.4} --contexts "${EV_CONTEXTS:-4096,32768}" --steps 256 --json "$W/e2e_graph_ev.json"
want graph && run graph 260 $PY benchmarks/bench_e2e.py --graph --contexts "$CONTEXTS" --steps 128 --json "$W/e2e_graph.json"
want graph_b8 && run graph_b8 120 $PY benchmarks/bench_e2e.py --graph --batch 8 --contexts "$B8_CONTEXTS" --steps 128 --json "$W/e2e_graph_b8.json"
want eager && run eager 90 $PY benchmarks/bench_e2e.py --contexts 32768 --steps 32 --json "$W/e2e_eager.json"
stage done
pack
