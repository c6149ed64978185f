#!/usr/bin/env bash
# Set up, train 4-bit PQ codebooks for the embedded SmolLM2-135M on SQuAD text, and generate with
# an fp16 cache and a PQ cache side by side (a short full-precision window so the PQ path is used).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --model
# the recommended recipe with lighter k-means than the defaults (16,384 tokens, 8,192 samples x 12 iterations), so that
# this runs in about 7 minutes on 2 CPU cores (the defaults took 11 minutes there; docs/quality.md)
.venv/bin/million calibrate --model smollm2 --bits 4 --tokens 16384 --samples 8192 --iters 12 --out runs/smollm2-4bit --force
.venv/bin/million info runs/smollm2-4bit
.venv/bin/million generate --model smollm2 --codebooks runs/smollm2-4bit --residual 16 --max-new-tokens 64 \
    "Explain in two sentences why the sky is blue."
