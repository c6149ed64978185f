#!/usr/bin/env bash
# One short device call (2026-12-07, after PQ_ROT=1 was taken): with the K gathers conflict-free, is the tensor-core
# kernel now ahead of the packed LUT kernel where `choose_kernel` gives fp16 GQA at d = 128 to the LUT (from 2^17 tokens
# of work: B=1 128K, B=8 16K and up)? Two rounds, `auto` (the dispatch as committed) against MILLION_CUDA_KERNEL=mma,
# interleaved, over the GQA cells of both widths at 16K-128K, B=1 and 8. Decision (written before the run): a cell moves
# to the tensor-core kernel only if it is faster there by more than 1% in both rounds; the dispatch change itself is made
# by hand from the table, in Python (no kernel change). The `cells` stage lists them: ab_adopt.py with mma as the base and
# auto as the variant, its guard at 1%, prints "slower: CELL" for every cell where auto is slower than mma by more than 1%
# in both rounds (its "adopt" line is not the decision here). Dry-run on the CPU with stubbed GPU commands (2026-12-07).
# The library: .carry/attn_rot.so (its PTX is the library source's with PQ_ROT=1, checked by docs/logs/rot_1207/adopt.sh).
# Where .carry is gone, a plain build of the source is that library (nvcc 13.0, here; about 2 min on 2 cores):
#   F="-O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared"
#   nvcc $F -o .carry/attn_rot.so src/million/ops/cuda/pq_attention.cu
#   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90 -Xcompiler -fPIC \
#        -shared -o .carry/enc_wg.so src/million/ops/cuda/pq_encode.cu
# Usage: OUT=$OUT DEADLINE=150 bash benchmarks/gpu_kmma.sh     (carry .carry/attn_rot.so, .carry/enc_wg.so; about 80 s)
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"
gpu_setup /tmp/kmma "${DEADLINE:-150}" .carry/attn_rot.so .carry/enc_wg.so
pack() { pack_tgz "$1" "^bench gqa|^adopt|^slower|FAIL|Error"; }
env_txt
kmma_cells  # the cells to move: where auto (the LUT there) is slower than mma by >1% in both rounds ("slower:")
finish_call
