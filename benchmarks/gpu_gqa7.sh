#!/usr/bin/env bash
# One device call, four A/Bs of the GQA kernels against the library (attn_p8w.so) in the same call, two rounds each,
# and Nsight Compute on the library's tensor-core kernel at GQA B=1 32K 4-bit.
#   tb, tc: the tensor-core and packed-LUT kernels' tables at an aligned shared address (docs/logs/ta_1206/ta2.patch;
#       prepared 2026-12-06, see gpu_ta2.sh for the builds and their PTX checks): tb = -DPQ_TALIGN=1024
#       -DPQ_TALIGN_DMIN=128 (d = 128 only), tc = -DPQ_TALIGN=128 at every head dim. Decision cell gqa:1:4096:4.
#   lp2, lp4: an L2 prefetch inside the tensor-core kernel's chunk loop (docs/logs/mlpf_1207/mlpf.patch,
#       -DPQ_MMA_LPF=2 / 4): each warp's lanes prefetch the K and V code lines of its chunk 2 (4) chunks ahead, one
#       128-byte line per lane. Why: at d = 128 the kernel runs 8 warps in one block per SM (the tables fill 139 KB of
#       shared memory) and holds one chunk of codes ahead per warp in registers: 8 x 4 KB in flight per SM, where the
#       HBM needs ~25 KB/us per SM; its loop takes ~20 us against a shared-memory bound near 11 us (128 lookups of ~2.4
#       wavefronts per 32-token chunk, 62 chunks per SM). The same prefetch in the MHA kernel (16 warps, FFMA) was
#       refuted on 2026-12-06; there the loop was not latency-bound on its loads. Decision cell gqa:1:32768:4.
# Decision (written before the run), per arm against lib over the GQA and SmolLM2 cells of both widths, two rounds:
# faster at its decision cell by more than 1% in both rounds and no cell more than 1% slower in both rounds
# (ab_adopt.py --margin 0.01 --guard 0.01). Of the arms that pass, the one with the lowest total time over every cell
# and both rounds is taken; it is then tested (tensor-core and LUT kernel tests) and swept (plain, no --q-op).
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git apply docs/logs/mlpf_1207/mlpf.patch
#   nvcc $F -DPQ_MMA_LPF=2 -o .carry/attn_lp2.so src/million/ops/cuda/pq_attention.cu    (and =4 -> attn_lp4.so)
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=540 bash benchmarks/gpu_gqa7.sh
#        (carry .carry/attn_p8w.so, attn_tb.so, attn_tc.so, attn_lp2.so, attn_lp4.so, enc_wg.so; ARMS="tb lp4" for a subset;
#        NCU=0 to skip the profile, NCU_FULL=0 for its metrics list only, without the full set;
#        SWEEP=0: no sweep of the arm taken)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/gqa7 "${DEADLINE:-540}" .carry/attn_p8w.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=(4096|32768)|^adopt|^slower|^take|^total|FAIL|Duration|DRAM Throughput|Issue Slots Busy|Eligible Warps|Warp Cycles Per Issued|Bank|stalled_(short|long|barrier|mio|wait|math|not_sel|lg|tex)|wavefronts|issue_active"; }
env_txt
ARMS=${ARMS:-tb tc lp2 lp4}
lib() { case $1 in lib) echo .carry/attn_p8w.so;; *) echo .carry/attn_$1.so;; esac; }
cell() { case $1 in tb|tc) echo gqa:1:4096:4;; *) echo gqa:1:32768:4;; esac; }
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib $ARMS; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib $e) $B --out "$W/ab_$e$r.json"
  done
done
for e in $ARMS; do adopt_arm $e "$(cell $e)"; done
run take 10 python3 benchmarks/ab_take.py "$W" $ARMS
if [ "${NCU:-1}" = 1 ]; then
  STALL="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,dram__bytes_read.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,smsp__inst_executed_op_shared_ld.sum"
  K="--clock-control none -k regex:pq_partial_mma --launch-skip 1 --launch-count 1"
  run ncu_gqa 60 env MILLION_CUDA_PDL=0 MILLION_CUDA_LIB=.carry/attn_p8w.so ncu $K --metrics "$STALL" --page raw \
    python3 benchmarks/ncu_decode.py gqa:32768:4
  [ "${NCU_FULL:-1}" = 1 ] && run ncu_gqa_full 90 env MILLION_CUDA_PDL=0 MILLION_CUDA_LIB=.carry/attn_p8w.so ncu $K --set full --page details \
    python3 benchmarks/ncu_decode.py gqa:32768:4
fi
take=$(cat "$W/take" 2>/dev/null || echo none)
if [ "$take" != none ]; then
  export MILLION_CUDA_LIB=$(lib "$take")
  run "t_$take" 40 python3 -m pytest -q -p no:cacheprovider -m gpu \
    tests/test_cuda_attention.py -k "mma or lut or test_matches_naive or back_to_back or graph_replay"
  [ "${SWEEP:-1}" = 1 ] && run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
    --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
fi
finish_call
