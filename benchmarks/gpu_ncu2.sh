#!/usr/bin/env bash
# One device call: Nsight Compute on the MHA (FFMA) partial kernel of the library at B=1 32K, 2 and 4 bits.
# Why: the 2-bit chunk loop moves 2.85-3.0 TB/s against the 4-bit loop's 3.3 TB/s; it issues ~2.7 instructions per
# cycle and SM (not at the limit of 4), and more bytes in flight (an in-loop L2 prefetch) made it slower
# (docs/kernel_notes.md, 2026-12-06). The warp-state breakdown (what the warps wait on per issued instruction) and the
# pipes' utilization say which limit the 2-bit loop sits at, for the next design.
# Library: attn_fin2.so (c67c5d5's kernels = 3db61e0's source). MILLION_CUDA_PDL=0: no overlap with the previous call
# (ncu serializes launches anyway); the second call of each shape is profiled (the first builds the tables' caches).
# Usage: OUT=$OUT DEADLINE=150 bash benchmarks/gpu_ncu2.sh      (carry .carry; writes stages.txt, env.txt, w.tgz)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/ncu "${DEADLINE:-150}" .carry/attn_fin2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "Duration|Throughput|Issue Slots Busy|Issued Ipc|Eligible Warps|Warp Cycles Per Issued|stalled|==ERR|Error"; }
env_txt
K="--clock-control none -k regex:pq_partial --launch-skip 1 --launch-count 1"
STALL="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,sm__cycles_elapsed.avg,dram__bytes_read.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active,smsp__inst_executed_op_shared_ld.sum"
for b in 2 4; do
  run "stall_$b" 60 env MILLION_CUDA_PDL=0 ncu $K --metrics "$STALL" --page raw python3 benchmarks/ncu_decode.py mha:32768:$b
  run "full_$b" 90 env MILLION_CUDA_PDL=0 ncu $K --set full --page details python3 benchmarks/ncu_decode.py mha:32768:$b
done
finish_call
