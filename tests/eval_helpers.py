"""Shared helpers for the eval tests: a tiny random LLaMA and a character tokenizer (no download)."""

from __future__ import annotations

import torch


def tiny_model(seed: int = 0, layers: int = 2, max_pos: int = 1024):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=max_pos,
                      rope_theta=10000.0)
    return LlamaForCausalLM(cfg).eval()


class _Enc:
    def __init__(self, ids):
        self.input_ids = ids


class CharTokenizer:
    """Characters -> ids < 128; enough for calibration, windows and needle prompts."""

    eos_token_id = None

    def __call__(self, text, return_tensors=None, add_special_tokens=False):
        return _Enc(torch.tensor([[min(ord(c), 127) for c in text]], dtype=torch.long))

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(int(i)) for i in ids)


TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
        "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. ") * 30
