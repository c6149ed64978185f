#!/usr/bin/env bash
# One device call, two changes against the library in the same call.
# (1) The MHA (FFMA) kernel accumulating each chunk's values in half2 (kind 4: fp16 inputs, one query head per block, V
# centroids within +-2048) instead of float32 (kind 2, the library before). Why: the SASS of the chunk loop (nvdisasm of sm_90 cubins built here by nvcc 13.0) has 693 instructions per 32-token
# chunk at 2 bits (d=128, M=32) and 1052 at 4 bits; at the timelines' loop times (2-bit 24.3 us, 4-bit 40.5 us for 256
# chunks of 16 warps per block) that is ~3.7 and ~3.4 warp instructions per cycle per SM, against the 4 the schedulers
# issue: the 2-bit loop is issue-bound (0.5 MB per block in 24.3 us, 2.8 TB/s over the grid, while the 4-bit loop moves
# 3.3 TB/s). In half2 the values cost one HFMA2 per centroid pair instead of two conversions and two FFMAs, flushed into
# the float32 accumulators once per chunk: 693 -> 541 instructions at 2 bits, 1052 -> 892 at 4 bits.
# Predicted: MHA B=1 32K 2-bit loop 24.3 -> ~20.5 us (the byte rate of the 4-bit loop), the call 34.0 -> ~30.5 us;
# 4-bit unchanged or slightly faster (its loop already moves 3.3 TB/s).
# (2) Merge blocks of 64 registers at 2 bits (MILLION_CUDA_MERGE8=1): at MHA B=1 32K 2-bit the partial grid takes 128
# of 132 SMs; 20 of the 32 merge blocks (96 registers) fit on the 4 free SMs, the other 12 enter as partial blocks
# exit and attend their residual windows after the last partial (2-3.3 us on the critical path, since at 2 bits the
# partial blocks end within ~1 us of each other). 64-register blocks fit all 32. Measured before as a blanket build
# flag (2026-12-06 11:38 UTC): MHA B=1 32K 2-bit 34.0 -> 32.0 us, but 4-bit 32K +2.3% and B=8 cells +10-14%; the
# rule now picks them only at 2 bits (dsub 4) where only 64-register blocks all fit beside a one-wave partial grid.
# Predicted: MHA B=1 32K 2-bit -2 us on top of (1); every other cell unchanged.
# One library (the final source) runs four arms by environment: base (HALF_V=0 MERGE8=0: every kernel's PTX identical
# to the library before, per-function nvcc -ptx comparison), h2 (HALF_V=1), m8 (MERGE8=1), h2m8 (both).
# Decisions (written before the run), each at MHA B=1 32K 2-bit, faster by more than 1% in both rounds and no cell more
# than 1% slower in both rounds (ab_adopt.py --margin 0.01 --guard 0.01):
# - half2 values: h2 against base;
# - merge8: h2m8 against h2 where half2 is taken, else m8 against base.
# The later stages run the configuration taken.
# Build here (nvcc 13.0) and carry .carry:
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_fin2.so src/million/ops/cuda/pq_attention.cu
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_fin2.so src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=560 bash benchmarks/gpu_vh2.sh      (writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/vh2 "${DEADLINE:-560}" .carry/attn_fin2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench |^adopt|^slower|^wrote|^ctx |FAIL|check B=(4|5) |check B=1 Hq=32"; }
env_txt
arm_env() {  # the environment of an arm
  case $1 in base) echo "MILLION_CUDA_HALF_V=0 MILLION_CUDA_MERGE8=0";; h2) echo "MILLION_CUDA_HALF_V=1 MILLION_CUDA_MERGE8=0";;
    m8) echo "MILLION_CUDA_HALF_V=0 MILLION_CUDA_MERGE8=1";; h2m8) echo "MILLION_CUDA_HALF_V=1 MILLION_CUDA_MERGE8=1";; esac
}
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2"
run t_attn 150 env MILLION_CUDA_HALF_V=1 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_attention.py
for v in base h2; do
  run "chk_$v" 40 env $(arm_env $v) $B --shapes mha --contexts 4096 --batches 1 --out "$W/chk_$v.json"
done
for r in "" _b; do
  for v in base h2 m8 h2m8; do
    run "ab_$v$r" 40 env $(arm_env $v) $B --skip-check --shapes mha,gqa,smollm2 --contexts 4096,32768,131072 \
      --batches 1,8 --out "$W/ab_$v$r.json"
  done
done
run adopt_h2 10 python3 benchmarks/ab_adopt.py "$W" base h2 --cell mha:1:32768:2 --margin 0.01 --guard 0.01
H2=$(cat "$W/adopt" 2>/dev/null || echo 0)
if [ "$H2" = 1 ]; then
  run adopt_m8 10 python3 benchmarks/ab_adopt.py "$W" h2 h2m8 --cell mha:1:32768:2 --margin 0.01 --guard 0.01
else
  run adopt_m8 10 python3 benchmarks/ab_adopt.py "$W" base m8 --cell mha:1:32768:2 --margin 0.01 --guard 0.01
fi
M8=$(cat "$W/adopt" 2>/dev/null || echo 0)
export MILLION_CUDA_HALF_V=$H2 MILLION_CUDA_MERGE8=$M8
echo "taken: MILLION_CUDA_HALF_V=$H2 MILLION_CUDA_MERGE8=$M8" | tee -a "$W/stages.txt"
run trace_taken 30 env MILLION_CUDA_LIB=.carry/attn_trace_fin2.so python3 benchmarks/trace_decode.py --graph --reps 5 \
  --out "$W/trace_taken.json"
run trace_base 30 env $(arm_env base) MILLION_CUDA_LIB=.carry/attn_trace_fin2.so python3 benchmarks/trace_decode.py \
  --graph --reps 5 --out "$W/trace_base.json"
cache_tests 150
MILLION_ENCODE_PRUNE_MIN=1000000000 run graph 90 python3 benchmarks/bench_e2e.py --graph --contexts 32768,65536 \
  --steps 128 --json "$W/e2e_graph.json"
finish_call
