#!/usr/bin/env bash
# One short device call (prepared 2026-12-07, 16:55 UTC): fp16 GQA 2-bit from 2^17 tokens of work on the tensor-core
# kernel at 16 warps instead of the packed LUT, and bf16 with the dispatch taken at 16:42 UTC.
# Why: in the 16:42 UTC call (gpu_next25.sh) bf16 at 16 warps took GQA B=8 32K 2-bit 96.3-96.4 us and B=1 128K 2-bit
# 52.1-52.2, where fp16 on the packed LUT (its default there since 2026-12-06) took 111.8 and 62.4 in the 16:20 UTC
# sweep: the LUT was chosen over the tensor-core kernel at 8 warps (B=8 32K 112.2 vs 135.4 us), never against 16.
# 1. fp16 A/B, two rounds, GQA 2-bit at B=1 and 8, 32K and 128K: the library's dispatch (lib) against
#    MILLION_CUDA_KERNEL=mma MILLION_CUDA_MMA_WARPS=16 (m16). Rule, written before the run (benchmarks/ab_adopt.py):
#    taken if faster at gqa:8:32768:2 by more than 1% in both rounds and no cell more than 1% slower in both; then
#    choose_kernel sends fp16 d = 128 2-bit GQA to the tensor-core kernel at 16 warps from 2^17 tokens too:
#    git apply docs/logs/m16_1207/m16.patch (the dispatch and its CPU tests; then LUT_WORK is unused: remove it, and
#    update the README's kernel paragraph and MILLION_CUDA_MMA_WARPS row).
# 2. bf16 with the dispatch of this commit (PYTHONPATH=src: 12 warps at d = 64 and 16 at d = 128 2-bit from 2^15),
#    the class cells of bf16_warps_rule.py, one round: the change in effect (times of the forced runs of 16:42 UTC).
# 3. The LLaMA-3-8B shape end to end against the stronger fp16 baseline: StaticCache with SDPA's enable_gqa
#    (bench_e2e.py's fp16static-gqa: transformers 5.17, the GPU image, otherwise repeats the 8 KV heads to 32 whenever
#    a mask is given, as every StaticCache step has) beside plain StaticCache and MillionCache (docs/e2e.md, "The
#    LLaMA-3-8B shape end to end").
# 4. Per-KV-head tables behind a kernel of another library (--q-op: an in-place op on q before each call, so the partial
#    grid cannot start early and its table copy overlaps nothing), against the shared table, MHA and GQA B=1 32K, two
#    rounds: is the per-head cost of the 16:41 UTC call (MHA +0.4-0.6 us) larger or smaller when the previous kernel
#    is not an attention call? (A model's attention call follows a projection or rotary kernel.)
# 5. bfh (docs/logs/bfh_1207/bfh.patch, -DPQ_BFH=1, .carry/attn_bfh.so 1e291552679a81d6): bf16 inputs on the MHA
#    kernel's half2 value path, the V table laid out in fp16 by the host (cuda_attention.ffma_tables_half, committed and
#    inert until a library exports million_pq_ffma_bf16_half). The 16:20 UTC bf16 sweep: MHA B=1 32K 4-bit 51.6 us
#    against fp16's 49.4, B=8 32K 2-bit 228.6 against 203.4. PTX at PQ_BFH=0 is the library's (e53a3a8339dd7b3d); the
#    new bf16 instances have no spill (95-128 registers). The whole attention test file on it, then two rounds of the
#    bf16 MHA cells (4K-128K, B=1 and 8, 4 and 2 bits), the library (bflib) against bfh. Rule, written before the run:
#    taken if its tests pass, faster at bf16 MHA B=1 32K 4-bit by more than 1% in both rounds and no cell more than 1%
#    slower in both (ab_adopt.py); then git apply the patch, #define PQ_BFH 1, check the PTX against nvcc -ptx
#    -DPQ_BFH=1 of the patched source.
# 6. tri (added 2026-12-07 21:15 UTC): the Triton changes of 5ecb102 on a GPU (the log-sum-exp path, the contiguous
#    fakes, the tensor-core encode with its norms in fp32, the kernel guards): their tests, then the tc encode kernel
#    against the version before (.carry/triton_encode_bcb5d00.py = git show bcb5d00:src/million/ops/triton_encode.py)
#    at the shape it is the default for (fp16, dsub 4, 16 centroids; 32 heads x 32K tokens), and at x200 values (the
#    old kernel's fp16 norms overflow there). No rule: the change fixes wrong codes; its time is recorded. Also the
#    GPU eviction tests with a short left-padded prompt (0de96ad: the others evict while it waits for its first code).
# Usage: OUT=$OUT DEADLINE=420 [STAGES="bfh e2e tri"] bash benchmarks/gpu_next26.sh   (carry .carry/attn_lib14.so,
#        .carry/attn_bfh.so, .carry/enc_wg.so, .carry/triton_encode_bcb5d00.py; ~80 s
#        for 1-2, ~100 s for 3, ~35 s for 4, ~120 s for 5; builds as in gpu_next24.sh's header, bfh with
#        git apply docs/logs/bfh_1207/bfh.patch; nvcc $F -DPQ_BFH=1 -o .carry/attn_bfh.so ...; git checkout the .cu)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
rm -rf /tmp/next26
gpu_setup /tmp/next26 "${DEADLINE:-420}" .carry/attn_lib14.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench|^adopt|^slower|^ctx |^\\| [0-9]"; }
env_txt
# STAGES: the stages to run, by name (default all). Stages 1, 2 and 4 ran in gpu_next28.sh (2026-12-07 19:34 UTC, m16
# taken), so the next call is STAGES="bfh e2e tri" (~270 s + ~120 s for tri).
STAGES=${STAGES:-"m16 bf qop bfh e2e tri"}
on() { [[ " $STAGES " == *" $1 "* ]]; }
if on m16; then
A="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 2 --shapes gqa --contexts 32768,131072
  --batches 1,8"
ab_two lib m16 30 "MILLION_CUDA_KERNEL=mma MILLION_CUDA_MMA_WARPS=16" $A
run adopt_m16 10 python3 benchmarks/ab_adopt.py "$W" lib m16 --cell gqa:8:32768:2 --margin 0.01 --guard 0.01
fi
on bf && run bf_auto 30 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --dtype bfloat16 --bits 4,2 \
  --contexts 4096,32768,131072 --batches 1,8 --shapes gqa,smollm2 --out "$W/bf_auto.json"
if on qop; then
Q="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa --contexts 32768
  --batches 1 --q-op"
for r in "" _b; do
  run "qop_sh$r" 30 $Q --out "$W/qop_sh$r.json"
  run "qop_hc$r" 30 $Q --head-codebooks --out "$W/qop_hc$r.json"
done
fi
if on bfh; then
run t_bfh 90 env MILLION_CUDA_LIB=.carry/attn_bfh.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py
if passed t_bfh; then
  M="python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --dtype bfloat16 --bits 4,2 --shapes mha
    --contexts 4096,32768,131072 --batches 1,8"
  ab_two bflib bfh 30 MILLION_CUDA_LIB=.carry/attn_bfh.so $M
  run adopt_bfh 10 python3 benchmarks/ab_adopt.py "$W" bflib bfh --cell mha:1:32768:4 --margin 0.01 --guard 0.01
fi
fi
on e2e && MILLION_ENCODE_PRUNE_MIN=1000000000 run e2e_gqa 150 python3 benchmarks/bench_e2e.py --graph --steps 128 \
  --shape llama3-8b --caches fp16static,fp16static-gqa,pq --contexts 4096,32768,131072 --json "$W/e2e_gqa.json"
if on tri; then  # the Triton changes of 2026-12-07 21:00 UTC (5ecb102) on a GPU: tests, then the tc encode A/B
run t_tri 120 python3 -m pytest -q -p no:cacheprovider tests/test_triton_attention.py tests/test_triton_encode.py \
  -k "lse or permuted or large_values or refuses or opcheck"
run t_evict 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_eviction.py -k "short or kept_tokens"
run enc_tc 40 python3 benchmarks/bench_encode_tc_ab.py --old .carry/triton_encode_bcb5d00.py --out "$W/enc_tc.json"
run enc_tc_big 40 python3 benchmarks/bench_encode_tc_ab.py --old .carry/triton_encode_bcb5d00.py --scale 200 \
  --tokens 4096 --out "$W/enc_tc_big.json"
fi
finish_call
