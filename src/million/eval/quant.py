"""Quantize-then-dequantize primitives for the methods compared in :mod:`million.eval.methods`.

Every function takes and returns K or V in the canonical layout ``x [B, H, T, D]`` and works in
float32; the result has the input's dtype. They simulate storage (what comes back after a round
trip through the format), they do not pack bits: bit accounting lives in the methods.
"""

from __future__ import annotations

import math

import torch

from ..ops.naive import pq_decode, pq_encode


def _uniform_rows(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Asymmetric min/max uniform quantization of every row of ``x [..., n]`` to ``2**bits`` levels."""
    lo = x.amin(-1, keepdim=True)
    hi = x.amax(-1, keepdim=True)
    qmax = 2**bits - 1
    scale = ((hi - lo) / qmax).clamp_min(1e-8)
    q = ((x - lo) / scale).round().clamp(0, qmax)
    return q * scale + lo


def uniform_qdq(x: torch.Tensor, bits: int, axis: str, group: int) -> torch.Tensor:
    """Asymmetric uniform quantization in groups (KIVI style), scale and zero point per group.

    Parameters
    ----------
    x : ``[B, H, T, D]``
    bits : 1..8
    axis : ``"channel"``: a group is ``group`` consecutive tokens of one channel (KIVI keys);
        ``"token"``: a group is ``group`` consecutive channels of one token (KIVI values).
    group : group size (per-token groups: at most ``D``); a last, shorter group along T is
        quantized on its own.
    """
    if axis not in ("channel", "token"):
        raise ValueError(f"axis={axis!r} is not one of ('channel', 'token')")
    B, H, T, D = x.shape
    xf = x.float()
    if T == 0:
        return x
    if axis == "token":
        group = min(group, D)
        if D % group:
            raise ValueError(f"group={group} must divide head_dim={D} for per-token groups")
        out = _uniform_rows(xf.reshape(B, H, T, D // group, group), bits).reshape(B, H, T, D)
        return out.to(x.dtype)
    out = torch.empty_like(xf)
    full = T // group * group
    if full:
        g = xf[:, :, :full].reshape(B, H, full // group, group, D).transpose(-1, -2)  # [B, H, n, D, group]
        out[:, :, :full] = _uniform_rows(g, bits).transpose(-1, -2).reshape(B, H, full, D)
    if full < T:
        g = xf[:, :, full:].transpose(-1, -2)  # [B, H, D, rest]
        out[:, :, full:] = _uniform_rows(g, bits).transpose(-1, -2)
    return out.to(x.dtype)


def nearest_level(x: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Round every element of ``x [..., D]`` to the nearest of its channel's sorted ``levels [..., D, n]``.

    ``levels`` broadcasts against ``x[..., None]`` (e.g. ``[H, 1, D, n]`` for ``x [B, H, T, D]``).
    """
    xf = x.float()
    lv = levels.float()
    mid = (lv[..., 1:] + lv[..., :-1]) / 2  # [..., D, n-1]
    idx = (xf.unsqueeze(-1) > mid).sum(-1, keepdim=True)  # [..., D, 1]
    return torch.gather(lv.expand(*xf.shape, lv.shape[-1]), -1, idx).squeeze(-1)


def outlier_mask_thresholds(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Elements outside per-channel calibrated ``[lo, hi]`` (``[H, D]``) for ``x [B, H, T, D]``."""
    return (x < lo[None, :, None]) | (x > hi[None, :, None])


def outlier_mask_topk(x: torch.Tensor, frac: float) -> torch.Tensor:
    """The ``frac`` largest-magnitude elements of every ``[D]`` vector (online, per token)."""
    D = x.shape[-1]
    k = int(round(frac * D))
    m = torch.zeros_like(x, dtype=torch.bool)
    if k <= 0:
        return m
    idx = x.abs().topk(k, dim=-1).indices
    return m.scatter_(-1, idx, True)


def nuq_token_qdq(x: torch.Tensor, levels: torch.Tensor, outliers: torch.Tensor | None) -> torch.Tensor:
    """Per-token non-uniform quantization (KVQuant values).

    Each ``[D]`` vector is normalized to ``[-1, 1]`` by its own min/max over the non-outlier
    elements (an fp16 scale and offset per token), rounded to the nearest of ``levels [n]`` (sorted,
    in ``[-1, 1]``), and mapped back; outlier elements are kept exactly.
    """
    xf = x.float()
    if outliers is None:
        outliers = torch.zeros_like(xf, dtype=torch.bool)
    big = torch.finfo(torch.float32).max
    lo = torch.where(outliers, torch.full_like(xf, big), xf).amin(-1, keepdim=True)
    hi = torch.where(outliers, torch.full_like(xf, -big), xf).amax(-1, keepdim=True)
    lo = torch.where(lo > hi, torch.zeros_like(lo), lo)
    hi = torch.maximum(hi, lo + 1e-8)
    mid, half = (hi + lo) / 2, (hi - lo) / 2
    z = (xf - mid) / half
    zq = nearest_level(z, levels.float()[None].expand(x.shape[-1], -1))  # levels [D, n], shared by channels
    out = torch.where(outliers, xf, zq * half + mid)
    return out.to(x.dtype)


def hadamard(n: int, dtype=torch.float32) -> torch.Tensor:
    """Orthonormal Sylvester Hadamard matrix ``[n, n]`` (``n`` a power of two)."""
    if n < 1 or n & (n - 1):
        raise ValueError(f"Hadamard size must be a power of two, got {n}")
    h = torch.ones(1, 1, dtype=dtype)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return h / math.sqrt(n)


def pq_qdq(
    x: torch.Tensor,
    centroids: torch.Tensor,
    transform: torch.Tensor | None = None,
    inverse: torch.Tensor | None = None,
) -> torch.Tensor:
    """Product quantization round trip, optionally in a transformed space.

    ``x [B, H, T, D]``; ``centroids [Hc, M, ksub, dsub]``; ``transform`` and ``inverse``
    ``[Hc, D, D]`` (row-vector convention: the codes quantize ``x @ transform``; the
    reconstruction is ``x_hat' @ inverse``).
    """
    if x.shape[2] == 0:
        return x
    xf = x.float()
    if transform is not None:
        xf = torch.einsum("bhtd,hde->bhte", xf, transform.float().expand(x.shape[1], -1, -1))
    rec = pq_decode(pq_encode(xf, centroids), centroids)
    if transform is not None:
        rec = torch.einsum("bhtd,hde->bhte", rec, inverse.float().expand(x.shape[1], -1, -1))
    return rec.to(x.dtype)
