#!/usr/bin/env bash
# One device call: chunk stealing in the decode-attention partial kernels (MILLION_CUDA_STEAL). B=1 timings
# (bench_decode_cuda.py, SDPA in the same run) with stealing off / on, for $ATTN_LIB and, if given, $LIB_A (another
# build of the same ABI, e.g. before a kernel change), interleaved $ROUNDS times (default 2), then the attention GPU
# tests with $ATTN_LIB ($TESTK: a -k selection), then the phase timelines of CUDA-graph replays (trace_decode.py
# --graph) off / on.
# Chunk stealing and the batched LUT build are not in the library yet: they wait, unmeasured, in
# docs/logs/trace_1206/steal_lut.patch (kernel, dispatch, GPU tests). Apply it to the working tree, then build here:
#   git apply docs/logs/trace_1206/steal_lut.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_lut.so src/million/ops/cuda/pq_attention.cu                    # both changes
#   nvcc $F -DPQ_LUT_CHAIN -o .carry/attn_steal.so src/million/ops/cuda/pq_attention.cu   # stealing only
#   nvcc $F -DPQ_TRACE -o .carry/attn_trace_steal.so src/million/ops/cuda/pq_attention.cu
#   ROUNDS=2 TESTK=steal ATTN_LIB=.carry/attn_lut.so LIB_A=.carry/attn_steal.so TRACE_LIB=.carry/attn_trace_steal.so \
#     OUT=$OUT bash benchmarks/gpu_steal.sh      # carry .carry
set -uo pipefail
source "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/steal ${DEADLINE:-560} .carry/attn.so .carry/enc_wg.so
TRACE_LIB=${TRACE_LIB:-.carry/attn_trace.so}
# everything in one archive (the device tool drops files past a count), the summary beside it
pack() { pack_lines "$1" "passed|failed|error|^(mha|gqa|smollm2) "; rm -f "$OUT"/*.json; tar czf "$OUT/all.tgz" -C "$W" .; }
env_txt
sha256sum "$TRACE_LIB" ${LIB_A:-} | cut -c1-16 >> "$W/env.txt"
B="--skip-check --no-triton --contexts ${CTX:-4096,32768} --batches ${BATCHES:-1} --bits 4,2 --shapes mha,gqa,smollm2"
for r in $(seq 1 ${ROUNDS:-2}); do
  for lib in ${LIB_A:+a} b; do
    L=$MILLION_CUDA_LIB; [ "$lib" = a ] && L=$LIB_A
    for s in 0 1; do
      run bench_${lib}_s${s}_r$r 90 env MILLION_CUDA_LIB="$L" MILLION_CUDA_STEAL=$s python3 benchmarks/bench_decode_cuda.py $B \
        --out "$W/bench_${lib}_s${s}_r$r.json"
    done
  done
done
run tests 200 python3 -m pytest -q -m gpu -x tests/test_cuda_attention.py -p no:cacheprovider ${TESTK:+-k "$TESTK"}
for s in 0 1; do
  run trace_s$s 90 env MILLION_CUDA_STEAL=$s MILLION_CUDA_LIB="$TRACE_LIB" python3 benchmarks/trace_decode.py --graph \
    --reps 3 --out "$W/trace_s$s.json"
done
echo "done in $(( $(date +%s) - T0 )) s" | tee -a "$W/stages.txt"; cp "$W/stages.txt" "$OUT/"
