#!/usr/bin/env bash
# One device call (prepared 2026-12-07, not yet run): the tensor-core kernel's next chunk of codes staged in shared
# memory by cp.async instead of held in registers (docs/logs/cst_1207/cst.patch, -DPQ_CSTAGE=1, d = 128 only), so that
# 12 warps per block fit in the register file at d = 128, 4 bits. The library's 8-warp instance there uses 218
# registers; at 12 warps the cap is 168 and the instance spills 60-64 bytes; the staged build's registers and spills are
# in docs/kernel_notes.md ("Prepared, not measured: the next chunk's codes staged in shared memory"). In the 08:38 UTC
# A/B of 2026-12-07, 12 warps made every SmolLM2 cell (d = 64, no spills) from 2^15 tokens faster, by up to 10.9%, but
# GQA 4-bit 18-20% slower.
# Arms, two rounds interleaved, GQA and SmolLM2 cells at 4K-128K, B=1 and 8, both widths:
#   lib    the library (its defaults: MILLION_CUDA_MMA_WARPS=auto, 8 warps at d = 128 4-bit);
#   cst    the staged build, the same defaults (the 8-warp d = 128 instances staged);
#   cst12  the staged build with MILLION_CUDA_MMA_WARPS=12.
# Decisions (written before the run; ab_adopt.py, margin and guard 1%), only if the kernel tests pass on the staged build
# with its default warps and with 12 warps:
# - cst: faster at gqa:1:32768:4 by more than 1% in both rounds, no GQA or SmolLM2 cell more than 1% slower in both;
# - cst12: faster at gqa:1:32768:4 by more than 1% in both rounds, no GQA 4-bit cell more than 1% slower in both (it
#   would become the rule's warp count at d = 128, 4 bits, fp16);
# of the arms that pass, the one with the lower total over the GQA 4-bit cells (ab_take.py on those cells' JSONs) is
# taken; then the MillionCache tests run on it (and for cst the sweep).
# Builds (nvcc 13.0, here; not committed, in .carry):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lib13.so src/million/ops/cuda/pq_attention.cu     (the library)
#   git apply docs/logs/cst_1207/cst.patch
#   nvcc $F -DPQ_CSTAGE=1 -o .carry/attn_cst.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
#   enc_wg.so as in gpu_next9.sh
#   (cst.patch at PQ_CSTAGE=0: PTX byte-identical to the library's, nvcc 13.0, whole file)
# Usage: OUT=$OUT DEADLINE=330 bash benchmarks/gpu_next13.sh   (carry .carry/attn_lib13.so, attn_cst.so, enc_wg.so;
#        about 240 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/next13 "${DEADLINE:-330}" .carry/attn_lib13.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench (gqa|smollm2) B=1 ctx=32768|^adopt|^slower|^take|^total|FAIL"; }
env_txt
K="-k mma or test_matches_naive or back_to_back or graph_replay"
run t_cst 60 env MILLION_CUDA_LIB=.carry/attn_cst.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py "$K"
run t_cst12 60 env MILLION_CUDA_LIB=.carry/attn_cst.so MILLION_CUDA_MMA_WARPS=12 python3 -m pytest -q -p no:cacheprovider \
  -m gpu tests/test_cuda_attention.py "$K"
ok() { [ "$(grep -c ' failed\|error' "$W/$1.txt")" = 0 ] && grep -q ' passed' "$W/$1.txt"; }
if ok t_cst && ok t_cst12; then
  B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes gqa,smollm2 --contexts 4096,16384,32768,131072 --batches 1,8"
  for r in "" _b; do
    run "ab_lib$r" 40 $B --out "$W/ab_lib$r.json"
    run "ab_cst$r" 40 env MILLION_CUDA_LIB=.carry/attn_cst.so $B --out "$W/ab_cst$r.json"
    run "ab_cst12$r" 40 env MILLION_CUDA_LIB=.carry/attn_cst.so MILLION_CUDA_MMA_WARPS=12 $B --out "$W/ab_cst12$r.json"
  done
  rm -f "$W/adopt"
  run adopt_cst 10 python3 benchmarks/ab_adopt.py "$W" lib cst --cell gqa:1:32768:4 --margin 0.01 --guard 0.01 \
    --shapes gqa,smollm2
  cp "$W/adopt" "$W/adopt_cst" 2>/dev/null
  rm -f "$W/adopt"
  run adopt_cst12 10 python3 benchmarks/ab_adopt.py "$W" lib cst12 --cell gqa:1:32768:4 --margin 0.01 --guard 0.01 \
    --shapes gqa --guard-bits
  cp "$W/adopt" "$W/adopt_cst12" 2>/dev/null
  # the totals over the GQA 4-bit cells only
  mkdir -p "$W/g4"
  for f in "$W"/ab_*.json; do
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['bench']=[r for r in d['bench'] if r['shape']=='gqa' and r['bits']==4]; json.dump(d,open(sys.argv[2],'w'))" "$f" "$W/g4/$(basename "$f")"
  done
  cp "$W/adopt_cst" "$W/adopt_cst12" "$W/g4/" 2>/dev/null
  run take 10 python3 benchmarks/ab_take.py "$W/g4" cst cst12
  # cst: the sweep and the cache tests on it; cst12: the cache tests with 12 warps everywhere (the sweep waits for the
  # rule that gives d = 128 4-bit its 12 warps: MILLION_CUDA_MMA_WARPS=12 would also move the cells auto gives 8 or 16)
  case "$(cat "$W/g4/take" 2>/dev/null)" in
    cst)
      export MILLION_CUDA_LIB=.carry/attn_cst.so
      run sweep 60 python3 benchmarks/bench_decode_cuda.py --skip-check --no-triton --bits 4,2 --shapes mha,gqa,smollm2 \
        --contexts 4096,16384,32768,131072 --batches 1,8 --out "$W/sweep.json"
      cache_tests 100 ;;
    cst12)
      export MILLION_CUDA_LIB=.carry/attn_cst.so MILLION_CUDA_MMA_WARPS=12
      cache_tests 100 ;;
  esac
fi
finish_call
