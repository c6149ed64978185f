#!/usr/bin/env bash
# Set up, train 4-bit PQ codebooks for the embedded SmolLM2-135M on SQuAD text, and generate with
# an fp16 cache and a PQ cache side by side (a short full-precision window so the PQ path is used).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --model
.venv/bin/million calibrate --model smollm2 --bits 4 --out runs/smollm2-4bit --force
.venv/bin/million info runs/smollm2-4bit
.venv/bin/million generate --model smollm2 --codebooks runs/smollm2-4bit --residual 16 --max-new-tokens 64 \
    "Explain in two sentences why the sky is blue."
