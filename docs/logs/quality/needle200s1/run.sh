#!/usr/bin/env bash
# The 2-bit needle sets at 2.00 bits/element with the error counted (keep 0.431), second calibration run (--seed 1).
set -uo pipefail
cd /work/main && source .venv/bin/activate
O=runs/needle200s1
date -u +"start %F %T UTC" > $O/times.txt
[ -f runs/cb4-s32k-seed1/config.json ] || million calibrate --model smollm2 --bits 4 --seed 1 --out runs/cb4-s32k-seed1 > $O/calib.log 2>&1
date -u +"calibrated %F %T UTC" >> $O/times.txt
S="--method pqsparse --bits 1.83 --codebooks runs/cb4-s32k-seed1 --recent 0.2 --observe 32 --pool 15 --pool-side after --pool-share 0.15"
D="--depths 0.05,0.15,0.25,0.35,0.45,0.55,0.65,0.75,0.85,0.95"
for s in 0 1; do
  million eval needle --model smollm2 $S $D --seed $s --json $O/needle_s$s.json > $O/needle_s$s.log 2>&1
  date -u +"needle set $s %F %T UTC" >> $O/times.txt
done
