#!/usr/bin/env bash
# One device call for the 2-bit encode's staged kernel (opt bit 8: mma3 with each row's values computed once by one lane
# and handed over by ldmatrix; bit 9: its column-block loop unrolled whole) against mma3 (opt 76): timed in two rounds ($V: the variants, JSON), the encode's
# GPU tests, SASS counts of both kernels (and the staged kernel's SASS, opt 960), and an ncu summary of the kernels in
# $NCU (kernel:opt pairs) at 8K tokens. Run 2026-12-05 21:32 and 21:37 UTC: docs/kernel_notes.md, "The 2-bit encode, staged".
# Libraries prebuilt here and carried; the encode library built with ops/_nvcc.py's FLAGS_SM90A:
#   ATTN_LIB=.carry/attn.so ENC_LIB=.carry/enc_wg.so bash benchmarks/gpu_encode_staged.sh   # `run` with carry [".carry"]
# Writes few files to $OUT (the device tool drops files past a count): stages.txt, env.txt, the benchmark JSONs,
# sass.txt, staged.sass, ncu.txt.
set -uo pipefail
. "$(dirname "$0")/gpu_stages.sh"  # gpu_setup, env_txt, left, tmo, stage, run
gpu_setup /tmp/encst 560 .carry/attn.so .carry/enc_wg.so
pack() { pack_lines "$1" "^encode 2b|^encode 4b|passed|failed|^\{|Error|^\|"; }
env_txt
C='"kernel":"cuda","kind":"mma"'
V=${V:-"[{$C,\"opt\":76},{$C,\"opt\":320},{$C,\"opt\":832},{$C,\"opt\":960},{$C,\"opt\":896},{$C,\"opt\":768}]"}
for r in 1 2; do
  run "st_$r" 90 python3 benchmarks/bench_encode.py --no-prefill --prefill-ms 1423 --variants "$V" --out "$W/st_$r.json"
done
run tests 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda_encode.py
LIB=$MILLION_CUDA_ENCODE_LIB
run sass 60 bash -c "cuobjdump -sass -fun _Z17enc_staged_kernelI6__halfLi8ELi3ELi3ELi32ELi0ELi0ELi256EEv7EncArgs $LIB > /tmp/st.sass; \
  cuobjdump -sass -fun _Z15enc_mma3_kernelI6__halfLi8ELb0ELi2ELi1EEv7EncArgs $LIB > /tmp/m3.sass; \
  for f in st m3; do echo \"\$f: lines \$(grep -cE '^\s+/\*[0-9a-f]{4}\*/' /tmp/\$f.sass) LEA \$(grep -c ' LEA ' /tmp/\$f.sass) \
  VIMNMX3 \$(grep -c VIMNMX3 /tmp/\$f.sass) HMMA \$(grep -c HMMA /tmp/\$f.sass) LDSM \$(grep -c LDSM /tmp/\$f.sass) \
  SHFL \$(grep -c SHFL /tmp/\$f.sass) LDG \$(grep -c LDG /tmp/\$f.sass) BRA \$(grep -c BRA /tmp/\$f.sass)\"; done > $OUT/sass.txt 2>&1; \
  cp /tmp/st.sass $OUT/staged.sass; cat $OUT/sass.txt"
for k in ${NCU:-staged:320 mma3:76}; do
  # the benchmark times its default before the variant: with the variant as the default every launch is the variant
  MILLION_ENCODE_OPT=${k##*:} run "ncu_${k%%:*}_${k##*:}" 90 ncu --kernel-name "regex:enc_${k%%:*}" --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section SchedulerStats --section WarpStateStats --section Occupancy --section LaunchStats \
    --section InstructionStats python3 benchmarks/bench_encode.py --no-prefill --tokens 8192 \
    --variants "[{$C,\"opt\":${k##*:}}]" --out /tmp/ncu_bench.json
  grep -vE '^encode|^ *[24]b|^\|' "$W/ncu_${k%%:*}_${k##*:}.txt" | grep -E "Duration|Executed Ipc|Issue Slots|Issued Warp|Active Warps|Eligible|No Eligible|Registers|Achieved Occ|Theoretical Occ|Block Limit|Executed Instructions|Warp Cycles Per Issued|Shared Memory Config|Dynamic Shared" \
    | sed "s/^/${k} /" >> "$OUT/ncu.txt"
done
cat "$W/stages.txt"; cat "$OUT/ncu.txt"
