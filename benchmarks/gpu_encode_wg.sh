#!/usr/bin/env bash
# One device call for the 2-bit encode's key variants (opt bit 6: the index in the key's low 8 bits; bit 7: keys by
# IMAD) on mma3 (opt 12, the default) and on the warpgroup-MMA kernel (enc_wg_kernel, opt bit 5), timed in two rounds
# ($V: the variants, JSON), the encode's GPU tests, SASS counts of the wg kernel's variants; with $FRAMES (e.g.
# "0 0.01") the 4-bit encode at those grid frames too. Run 2026-12-05: docs/kernel_notes.md, "The 2-bit encode on
# warpgroup MMAs".
# Libraries prebuilt here and carried; the encode library built with ops/_nvcc.py's FLAGS_SM90A:
#   ATTN_LIB=.carry/attn.so ENC_LIB=.carry/enc_wg.so bash benchmarks/gpu_encode_wg.sh   # `run` with carry [".carry"]
# Writes few files to $OUT (the device tool drops files past a count): stages.txt, the benchmark JSONs, sass.txt.
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"  # gpu_setup, env_txt, left, tmo, stage, run
gpu_setup /tmp/encwg 560 .carry/attn.so .carry/enc_wg.so
pack() { pack_lines "$1" "^encode 2b|^encode 4b|passed|failed|^\{|Error"; }
env_txt
V=${V:-'[{"kernel":"cuda","kind":"mma","opt":12},{"kernel":"cuda","kind":"mma","opt":76},{"kernel":"cuda","kind":"mma","opt":140},{"kernel":"cuda","kind":"mma","opt":204},{"kernel":"cuda","kind":"mma","opt":224}]'}
for r in 1 2; do
  run "wg_$r" 90 python3 benchmarks/bench_encode.py --no-prefill --prefill-ms 1431 --variants "$V" --out "$W/wg_$r.json"
done
run tests 200 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_encode.py tests/test_triton_grid.py tests/test_triton_encode.py
run sass 60 bash -c "for km in 0 1 2 3; do cuobjdump -sass -fun _Z13enc_wg_kernelI6__halfLi8ELi\${km}EEv7EncArgsii $MILLION_CUDA_ENCODE_LIB \
  > /tmp/wg\$km.sass; echo \"KM \$km: lines \$(grep -cE '^\s+/\*[0-9a-f]{4}\*/' /tmp/wg\$km.sass) LEA \$(grep -c ' LEA ' /tmp/wg\$km.sass) \
  IMAD \$(grep -c ' IMAD' /tmp/wg\$km.sass) VIMNMX3 \$(grep -c VIMNMX3 /tmp/wg\$km.sass) SHFL \$(grep -c SHFL /tmp/wg\$km.sass) \
  HGMMA \$(grep -c HGMMA /tmp/wg\$km.sass)\"; done > $OUT/sass.txt 2>&1; cat $OUT/sass.txt"
for q in ${FRAMES:-}; do
  run "frame_q$q" 60 env MILLION_ENCODE_GRID_Q=$q python3 benchmarks/bench_encode.py --no-prefill --prefill-ms 1431 \
    --out "$W/frame2_q$q.json"
done
cat "$W/stages.txt"
