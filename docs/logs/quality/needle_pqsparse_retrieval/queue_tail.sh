#!/bin/bash
cd /work/main && source .venv/bin/activate
O=runs/q7
while pgrep -f "eval needle --model smollm2 --method pqsparse" > /dev/null; do sleep 10; done
million calibrate --model smollm2 --bits 4 --seed 1 --out runs/cb4-s32k-seed1 > $O/calibrate_s32k_seed1.log 2>&1
for t in squad essays; do
  million eval ppl --model smollm2 --method pq --bits 4 --codebooks runs/cb4-s32k-seed1 --text $t --max-windows 8 --json $O/ppl_s32k_seed1_$t.json > $O/ppl_s32k_seed1_$t.log 2>&1
done
for t in squad essays; do
  million eval ppl --model smollm2 --method pqsparse --bits 1.83 --codebooks runs/cb4-default --recent 0.2 --pool 15 --pool-side after --text $t --max-windows 8 --json $O/ppl_pqsparse_r02_pool15after_$t.json > $O/ppl_pqsparse_r02_pool15after_$t.log 2>&1
done
echo DONE6 > $O/done6
