#!/usr/bin/env bash
set -u
cd "$(dirname "$0")/../.."
M=".venv/bin/million"
D=0.1,0.3,0.5,0.7,0.9
date -u
for spec in "fp16 16" "pqsparse 1.83"; do
  set -- $spec
  s=$(date +%s)
  extra=""; [ "$1" = pqsparse ] && extra="--codebooks runs/cb4-default"
  $M eval needle --model smollm2 --method $1 --bits $2 $extra --depths $D --json runs/needle_pqs/needle-$1.json --quiet \
    > runs/needle_pqs/needle-$1.log 2>&1
  echo "$1 rc $? $(( $(date +%s) - s )) s"
done
date -u
