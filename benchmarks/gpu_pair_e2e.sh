#!/usr/bin/env bash
# gpu_pair.sh and gpu_e2e_lib.sh in one device call (2026-12-06: starts were refused for an hour, each refusal costing
# device time), stages in order of need: the GPU kernel tests on the pair build, the pairs A/B (two rounds, the sweep's
# cells), its decision, the MHA helper A/B and its decision, the end-to-end graph decode on the library the pairs
# decision leaves, the pair build's timelines, the --q-op sweep, the MillionCache tests. Decisions and builds: see
# gpu_pair.sh (written before the run).
# Usage: OUT=$OUT DEADLINE=540 bash benchmarks/gpu_pair_e2e.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/paire2e "${DEADLINE:-540}" .carry/attn_pair.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote|^ctx "; }
env_txt
sha256sum .carry/*.so | cut -c1-16,66- >> "$W/env.txt"
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
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"; tar czf "$OUT/w.tgz" -C "$W" .
