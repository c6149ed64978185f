#!/usr/bin/env bash
# pqsparse with the served 4-bit codebooks (million calibrate defaults), at the nominal bits that make 2.00 bits/element
# at 32K with codebooks and transforms counted, and at nominal 2 (as the main table's row); SQuAD and essays, 8 windows.
set -u
cd "$(dirname "$0")/../.."
M=".venv/bin/million"
date -u
s=$(date +%s)
$M calibrate --model smollm2 --bits 4 --out runs/cb4-default --force > runs/pqsparse/calibrate.log 2>&1
echo "calibrate rc $? $(( $(date +%s) - s )) s"
for b in 1.83 2; do
  for t in squad essays; do
    s=$(date +%s)
    $M eval ppl --model smollm2 --method pqsparse --bits $b --codebooks runs/cb4-default --text $t --max-windows 8 \
      --json runs/pqsparse/pqsparse-$b-$t.json --quiet > runs/pqsparse/pqsparse-$b-$t.log 2>&1
    echo "pqsparse $b $t rc $? $(( $(date +%s) - s )) s"
  done
done
date -u
