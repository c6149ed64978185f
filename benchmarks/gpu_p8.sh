#!/usr/bin/env bash
# One device call: lookup addresses by one byte permute in the MHA (FFMA) kernel at d = 128, both widths (-DPQ_P8=1,
# docs/logs/p8_1206/p8.patch), against the library in the same call.
# Why: the 2-bit chunk loop is latency- and issue-limited (Nsight Compute, docs/kernel_notes.md, H100 2026-12-06 18:55
# UTC: 40% of cycles without an eligible warp at 4 warps per scheduler, ~2.7 instructions per cycle and SM). Every table
# lookup costs a byte permute (the code) and an IMAD (code * row bytes + the lane's base): 64 IMAD/LEA of the 541 SASS
# instructions of a 32-token chunk at 2 bits, 128 of 892 at 4. With both tables at 64 KB-aligned shared addresses and
# 256-byte rows (d = 128 at either width), the address is (code << 8) | lane offset | base: one PRMT whose second operand
# holds the lane's offset (byte 0) and the table base (bytes 2-3). The dynamic allocation grows from 128 to 192 KB (one
# block per SM either way: 512 threads x 128 registers fill the register file).
# Predicted: MHA B=1 32K 2-bit 31.6 -> ~29.5-30.5 us, 4-bit 50.3 -> ~49-50 us; other kernels unchanged (at PQ_P8=0 the
# patched source's PTX is the library's).
# Decision (written before the run): p8 against lib over the MHA cells of both widths (the only kernels that differ), two
# rounds: faster at MHA B=1 32K 2-bit by more than 1% in both rounds and no cell more than 1% slower in both rounds
# (ab_adopt.py --margin 0.01 --guard 0.01). Taken: PQ_P8's default becomes 1 (the kernels then those of the measured
# build), provided the kernel tests pass on the build.
# Build here (nvcc 13.0) and carry .carry (as run at 20:08 UTC, on the source of 2a9472a; P8 has been the library's
# default since b3fd679, where `-DPQ_P8=0` builds the kernels before it):
#   git apply docs/logs/p8_1206/p8.patch
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -DPQ_P8=1 -o .carry/attn_p8.so src/million/ops/cuda/pq_attention.cu
#   git checkout src/million/ops/cuda/pq_attention.cu
# Usage: OUT=$OUT DEADLINE=230 bash benchmarks/gpu_p8.sh      (carry .carry: attn_fin2.so, attn_p8.so, enc_wg.so)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/p8 "${DEADLINE:-230}" .carry/attn_fin2.so .carry/enc_wg.so
pack() { pack_tgz "$1" "passed|failed|Error|^bench mha B=1 ctx=32768|^adopt|^slower|^wrote|FAIL"; }
env_txt
lib() { case $1 in lib) echo .carry/attn_fin2.so;; *) echo .carry/attn_$1.so;; esac; }
B="python3 benchmarks/bench_decode_cuda.py --no-triton --bits 4,2 --skip-check --shapes mha --contexts 4096,32768,131072 --batches 1,8"
for r in "" _b; do
  for e in lib p8; do
    run "ab_$e$r" 45 env MILLION_CUDA_LIB=$(lib $e) $B --out "$W/ab_$e$r.json"
  done
done
run adopt 10 python3 benchmarks/ab_adopt.py "$W" lib p8 --cell mha:1:32768:2 --margin 0.01 --guard 0.01
# the FFMA kernel's tests on the build (matching the naive twin at odd shapes, fp16 and bf16, host tables, half2 values,
# graph replay, back to back)
run t_p8 50 env MILLION_CUDA_LIB=.carry/attn_p8.so python3 -m pytest -q -p no:cacheprovider -m gpu \
  tests/test_cuda_attention.py -k "ffma or test_matches_naive or back_to_back or graph_replay"
finish_call
