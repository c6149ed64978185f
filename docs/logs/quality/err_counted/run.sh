#!/bin/bash
# the 2-bit eviction setting re-measured with the stored error counted (commit 2c6ddf4 and later)
cd /work/main
while pgrep -f "fresh_q2/.venv/bin/python" > /dev/null; do sleep 10; done
date -u +"start %H:%M:%S"
git log --oneline -1
.venv/bin/million calibrate --model smollm2 --bits 4 --out /tmp/runs/cb4-s32k --force > /tmp/runs/calib.log 2>&1
echo "calibrate rc=$?"; date -u +"calibrated %H:%M:%S"
S="--method pqsparse --bits 1.83 --codebooks /tmp/runs/cb4-s32k --recent 0.2 --observe 32 --pool 15 --pool-side after --pool-share 0.15"
for t in squad essays; do
  .venv/bin/million eval ppl --model smollm2 $S --text $t --max-windows 8 --json /tmp/runs/rm_$t.json > /tmp/runs/rm_$t.log 2>&1
  echo "$t rc=$?"; date -u +"$t done %H:%M:%S"; tail -1 /tmp/runs/rm_$t.log
done
