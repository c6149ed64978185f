"""Perplexity over non-overlapping windows of a text, with a method's quantizer in front of attention.

Windows are ``window`` tokens long and start at token ``offset``: by default 65536 for SQuAD, so
that calibration on the first 16384 SQuAD tokens (``million calibrate``'s default) is held out,
and 0 for other texts. Every window is scored on its own (fresh cache); the first token of a
window is context only. Results are returned as a dict; the CLI writes it as JSON.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from .methods import Shape
from .runners import Runner

SQUAD_OFFSET = 65536


def default_offset(text_name: str) -> int:
    return SQUAD_OFFSET if text_name == "squad" else 0


def token_windows(ids: torch.Tensor, window: int, max_windows: int | None, offset: int = 0) -> list[torch.Tensor]:
    """Cut ``ids [N]`` into ``[1, window]`` windows from ``offset``; at most ``max_windows``."""
    if window < 2:
        raise ValueError(f"--window {window} must be >= 2")
    if offset < 0:
        raise ValueError(f"--offset {offset} must be >= 0")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"--max-windows {max_windows} must be >= 1 (or omitted for every window)")
    n = (ids.numel() - offset) // window
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ValueError(f"text has {ids.numel()} tokens: not one window of {window} after offset {offset}; "
                         + (f"allowed: a window of at most {ids.numel() - offset} tokens" if ids.numel() - offset >= 2
                            else f"allowed: an offset of at most {ids.numel() - window}" if ids.numel() >= window
                            else "give a longer text"))
    return [ids[offset + i * window : offset + (i + 1) * window][None] for i in range(n)]


@torch.no_grad()
def window_nll(runner: Runner, ids: torch.Tensor) -> float:
    """Summed next-token negative log-likelihood of one window ``[1, T]`` (``T - 1`` predictions)."""
    logits = runner.logits(ids)
    return float(F.cross_entropy(logits[0, :-1], ids[0, 1:], reduction="sum"))


def perplexity(model, ids: torch.Tensor, method, protocol: str = "all-quantized", window: int = 2048,
               max_windows: int | None = 8, offset: int = 0, text_name: str = "text", progress=None) -> dict:
    """Perplexity of ``model`` with ``method`` (already fitted) over windows of the token ids ``ids [N]``.

    Returns a dict: ``ppl``, ``nll`` (mean per token), ``nll_per_window``, ``tokens`` (scored),
    ``windows``, ``bits_per_element`` (at ``window`` tokens), ``bits_per_element_32k``, their
    breakdowns, ``method``, ``protocol``, ``text``, ``seconds``.
    """
    wins = token_windows(ids, window, max_windows, offset)
    runner = method.make_runner(model, protocol) if hasattr(method, "make_runner") else Runner(model, method, protocol)
    dev = next(model.parameters()).device
    t0 = time.time()
    nlls = []
    for i, w in enumerate(wins):
        nlls.append(window_nll(runner, w.to(dev)))
        if progress is not None:
            progress(i + 1, len(wins), math.exp(sum(nlls) / ((i + 1) * (window - 1))))
    tokens = len(wins) * (window - 1)
    nll = sum(nlls) / tokens
    shape = Shape.of(model.config)
    b = method.bits_breakdown(shape, window, protocol)
    b32 = method.bits_breakdown(shape, 32768, protocol)
    return {
        "ppl": math.exp(nll),
        "nll": nll,
        "nll_per_window": [x / (window - 1) for x in nlls],
        "method": method.name,
        "label": method.label,
        "bits": method.bits,
        "bits_per_element": b["total"],
        "bits_per_element_32k": b32["total"],
        "bits_breakdown": b,
        "bits_breakdown_32k": b32,
        "window": window,
        "windows": len(wins),
        "offset": offset,
        "tokens": tokens,
        "protocol": protocol,
        "text": text_name,
        "seconds": time.time() - t0,
        "method_details": method.describe(),
    }
