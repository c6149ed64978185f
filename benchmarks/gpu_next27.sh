#!/usr/bin/env bash
# One device call (prepared 2026-12-07, 17:15-17:30 UTC): the merge code warmed before its wait (mwarm).
# Why: the timelines of 16:16 UTC (docs/kernel_notes.md, "The four-class K un-rotation (refuted, +17.6%), ...") put
# 1.0-2.0 us between a merge block's griddepcontrol.wait and its output, the same cold and in graph replay, for one
# round of loads (16 lse values and 16 partial elements per thread, issued together) and about a hundred instructions.
# The merge code after the wait (391 SASS instructions in pq_merge_kernel<half, 128, 8>) runs once per call and SM;
# if fetching it is what takes the time, running it once before the wait with its loads predicated off fetches it
# while the partial grid still runs.
# mwarm (docs/logs/mwarm_1207/mwarm.patch, -DPQ_MWARM=1): pass 0 of the merge before the wait leaves (mx, den, o)
# exactly as they are (every lse -inf: merge_partials skips the group, or adds weight 0); pass 1 after the wait is the
# merge. The pass number goes through an asm, so the SASS has one copy of the loop body, with the wait inside it
# guarded for pass 1 (checked: pq_merge_kernel<half, 128, 8>, ACQBULK inside the pass loop). PTX at PQ_MWARM=0 is the
# library's (e53a3a8339dd7b3d). The 64-register d = 128 merge instance spills before the wait, as the library's does
# (38 STL against 34 in the SASS), and neither has a local load or store after the wait.
# Stages: 1. the whole attention test file on mwarm (every kernel's output goes through the merge);
# 2. two A/B rounds, library against mwarm: MHA, GQA and SmolLM2 shapes, 4K / 32K / 128K, B=1 and 8, 4 and 2 bits;
# 3. decision (written before the run; ab_adopt.py): taken if faster at GQA B=1 32K 4-bit by more than 1% in both rounds
#    and no cell more than 1% slower in both; then git apply the patch, #define PQ_MWARM 1 and check the PTX against
#    nvcc -ptx -DPQ_MWARM=1 of the patched source;
# 4. timelines of GQA B=1 32K 4-bit and MHA B=1 32K 2-bit on the library's trace build (attn_trace15.so) and on
#    mwarm's (attn_mwarm_trace.so), graph replay: the merge's wait-to-output, whatever the decision;
# 5. if taken, the sweep and the MillionCache tests on it.
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   git apply docs/logs/mwarm_1207/mwarm.patch; nvcc $F -DPQ_MWARM=1 -o .carry/attn_mwarm.so <the .cu>  (f7301d2e904f1213)
#   nvcc $F -DPQ_MWARM=1 -DPQ_TRACE -o .carry/attn_mwarm_trace.so <the .cu>                         (52f5c09ea576f171)
#   git checkout src/million/ops/cuda/pq_attention.cu; the library and its trace build as in gpu_next24.sh's header
# Usage: OUT=$OUT DEADLINE=420 bash benchmarks/gpu_next27.sh   (carry .carry/attn_lib14.so, .carry/attn_mwarm.so,
#        .carry/attn_mwarm_trace.so, .carry/attn_trace15.so, .carry/enc_wg.so; about 200 s, 330 s if taken)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next27
gpu_setup /tmp/next27 "${DEADLINE:-420}" .carry/attn_lib14.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench (mha|gqa) B=1 ctx=32768|passed|failed|Error|^adopt|^slower"; }
env_txt
run t_mwarm 90 env MILLION_CUDA_LIB=.carry/attn_mwarm.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py
if passed t_mwarm; then
  A="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 --contexts
    4096,32768,131072 --batches 1,8"
  ab_two lib mwarm 40 MILLION_CUDA_LIB=.carry/attn_mwarm.so $A
  adopt_arm mwarm gqa:1:32768:4
fi
C="--case gqa:1:4:32768 --case mha:1:2:32768"
run trace_lib 30 env MILLION_CUDA_LIB=.carry/attn_trace15.so python3 benchmarks/trace_decode.py --graph --reps 5 $C \
  --out "$W/trace_lib.json"
run trace_mwarm 30 env MILLION_CUDA_LIB=.carry/attn_mwarm_trace.so python3 benchmarks/trace_decode.py --graph --reps 5 \
  $C --out "$W/trace_mwarm.json"
if taken mwarm; then on_arm mwarm; fi
finish_call
