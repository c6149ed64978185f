"""Accumulated attention of a block of causal queries, per key (Triton): the prefill scores of eviction.

Same contract as :func:`million.ops.naive.attention_column_sums` (the specification). Two launches over tiles of
``tl.dot``, nothing of size ``queries x keys`` in memory:

1. ``_row_lse_kernel``, grid ``(ceil(C / BQ), B * H_q)``: the log-sum-exp (base 2) of every query row over the keys
   it sees (online, as flash attention);
2. ``_col_sum_kernel``, grid ``(ceil(N / BK), B * H_kv)``: one program owns a block of keys and sums
   ``exp2(s - lse)`` over every query (of every query head of its KV head) that sees them. No atomics.

The lengths ``C`` and ``N`` are not specialized on (``do_not_specialize``): committed decode blocks call the column
pass with a key count that changes at every call, and a variant per divisibility class would compile mid-decode.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634


@triton.jit
def _scores(q, k, qk_scale, F32: tl.constexpr):
    # scaled q . k for a [BQ, D] x [BK, D] tile (exact float32 products for float32 inputs)
    if F32:
        return tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    return tl.dot(q, tl.trans(k)) * qk_scale


@triton.jit(do_not_specialize=["C", "N"])
def _row_lse_kernel(q_ptr, k_ptr, lse_ptr, pad_ptr, C, N, Hq, G, qk_scale,
                    sqb, sqh, sqc, skb, skh, skn,
                    D: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, F32: tl.constexpr):
    pid_q = tl.program_id(0)
    bhq = tl.program_id(1).to(tl.int64)
    b = bhq // Hq
    hq = bhq % Hq
    h = hq // G
    pad = tl.load(pad_ptr + b)
    offs_c = pid_q * BQ + tl.arange(0, BQ)
    offs_d = tl.arange(0, D)
    qpos = N - C + offs_c
    q = tl.load(q_ptr + b * sqb + hq * sqh + offs_c[:, None] * sqc + offs_d[None, :], mask=(offs_c < C)[:, None], other=0.0)
    m = tl.full([BQ], -1.0e30, tl.float32)
    l = tl.zeros([BQ], tl.float32)
    hi = tl.minimum(N, N - C + (pid_q + 1) * BQ)
    lo = (pad // BK) * BK
    for k0 in range(lo, hi, BK):
        offs_k = k0 + tl.arange(0, BK)
        k = tl.load(k_ptr + b * skb + h * skh + offs_k[:, None] * skn + offs_d[None, :], mask=(offs_k < N)[:, None], other=0.0)
        s = _scores(q, k, qk_scale, F32)
        ok = (offs_k[None, :] <= qpos[:, None]) & (offs_k[None, :] >= pad) & (offs_k[None, :] < N)
        s = tl.where(ok, s, -1.0e30)
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.where(ok, tl.exp2(s - m_new[:, None]), 0.0)
        l = l * tl.exp2(m - m_new) + tl.sum(p, 1)
        m = m_new
    lse = tl.where(l > 0, m + tl.log2(tl.maximum(l, 1.0e-30)), float("inf"))  # +inf: the row sees nothing and adds nothing
    tl.store(lse_ptr + bhq * C + offs_c, lse, mask=offs_c < C)


@triton.jit
def _col_accumulate(k, q_ptr, lse_ptr, pad, b, h, pid_k, C, N, H, G, qk_scale, sqb, sqh, sqc,
                    D: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, F32: tl.constexpr):
    # sum over the query heads of KV head h and every query that sees them of exp2(s - lse), for the key tile k
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_d = tl.arange(0, D)
    acc = tl.zeros([BK], tl.float32)
    # the first query that can see this block's first key: position N - C + c >= pid_k * BK, and not padding
    c_lo = tl.maximum(tl.maximum(pid_k * BK - (N - C), pad - (N - C)), 0)
    c_lo = (c_lo // BQ) * BQ
    for g in range(0, G):
        hq = h * G + g
        for c0 in range(c_lo, C, BQ):
            offs_c = c0 + tl.arange(0, BQ)
            qpos = N - C + offs_c
            q = tl.load(q_ptr + b * sqb + hq * sqh + offs_c[:, None] * sqc + offs_d[None, :], mask=(offs_c < C)[:, None], other=0.0)
            lse = tl.load(lse_ptr + (b * H * G + hq) * C + offs_c, mask=offs_c < C, other=float("inf"))
            s = _scores(q, k, qk_scale, F32)
            ok = (offs_k[None, :] <= qpos[:, None]) & (offs_k[None, :] >= pad) & (qpos[:, None] >= pad) \
                & (offs_c < C)[:, None] & (offs_k < N)[None, :]
            p = tl.where(ok, tl.exp2(s - lse[:, None]), 0.0)
            acc += tl.sum(p, 0)
    return acc


@triton.jit(do_not_specialize=["C", "N"])
def _col_sum_kernel(q_ptr, k_ptr, lse_ptr, out_ptr, pad_ptr, C, N, H, G, qk_scale,
                    sqb, sqh, sqc, skb, skh, skn,
                    D: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr, F32: tl.constexpr):
    pid_k = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    pad = tl.load(pad_ptr + b)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_d = tl.arange(0, D)
    k = tl.load(k_ptr + b * skb + h * skh + offs_k[:, None] * skn + offs_d[None, :], mask=(offs_k < N)[:, None], other=0.0)
    acc = _col_accumulate(k, q_ptr, lse_ptr, pad, b, h, pid_k, C, N, H, G, qk_scale, sqb, sqh, sqc, D, BQ, BK, F32)
    tl.store(out_ptr + bh * N + offs_k, acc, mask=offs_k < N)


@triton.jit(do_not_specialize=["C", "N", "P"])
def _col_sum_coded_kernel(q_ptr, kc_ptr, cen_ptr, kw_ptr, lse_ptr, out_ptr, pad_ptr, C, N, P, H, G, qk_scale,
                          sqb, sqh, sqc, scb, sch, scn, sch_cen, swb, swh, swn,
                          D: tl.constexpr, DSUB: tl.constexpr, KSUB: tl.constexpr, BQ: tl.constexpr, BK: tl.constexpr,
                          F32: tl.constexpr):
    # as _col_sum_kernel, with the key tile built in registers: keys [0, P) from their codes (centroids gathered
    # through L1/L2, once per tile and reused by every query block), keys [P, N) from the full-precision window
    pid_k = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b = bh // H
    h = bh % H
    pad = tl.load(pad_ptr + b)
    offs_k = pid_k * BK + tl.arange(0, BK)
    offs_d = tl.arange(0, D)
    m = offs_d // DSUB
    coded = offs_k < P
    code = tl.load(kc_ptr + b * scb + h * sch + offs_k[:, None] * scn + m[None, :], mask=coded[:, None], other=0)
    code = code.to(tl.int32) & (KSUB - 1)
    kq = tl.load(cen_ptr + h * sch_cen + (m[None, :] * KSUB + code) * DSUB + (offs_d % DSUB)[None, :],
                 mask=coded[:, None], other=0.0)
    win = (offs_k >= P) & (offs_k < N)
    kw = tl.load(kw_ptr + b * swb + h * swh + (offs_k - P)[:, None] * swn + offs_d[None, :], mask=win[:, None], other=0.0)
    k = tl.where(coded[:, None], kq.to(kw.dtype), kw)
    acc = _col_accumulate(k, q_ptr, lse_ptr, pad, b, h, pid_k, C, N, H, G, qk_scale, sqb, sqh, sqc, D, BQ, BK, F32)
    tl.store(out_ptr + bh * N + offs_k, acc, mask=offs_k < N)


def _pad_i32(pad: torch.Tensor | None, B: int, device) -> torch.Tensor:
    """Each sequence's first valid key (left padding) as a contiguous int32 ``[B]`` on ``device``."""
    if pad is None:
        return torch.zeros(B, dtype=torch.int32, device=device)
    return pad.to(device, torch.int32).contiguous()


def attention_column_sums(q: torch.Tensor, k: torch.Tensor, pad: torch.Tensor | None = None, scale: float | None = None,
                          lse: torch.Tensor | None = None, block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """See :func:`million.ops.naive.attention_column_sums`. ``D`` must be a power of two >= 16. With ``lse`` given
    (the queries' own log-sum-exp, natural log) only the column pass runs."""
    B, Hq, C, D = q.shape
    H, N = k.shape[1], k.shape[2]
    if Hq % H or D < 16 or D & (D - 1):
        raise ValueError(f"attention_column_sums: H_q={Hq} must be a multiple of H_kv={H} and D={D} a power of two >= 16")
    G = Hq // H
    scale = D**-0.5 if scale is None else float(scale)
    if k.dtype != q.dtype:
        k = k.to(q.dtype)
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    pad = _pad_i32(pad, B, q.device)
    given = lse is not None
    if given:
        if tuple(lse.shape) != (B, Hq, C):
            raise ValueError(f"attention_column_sums: lse has shape {tuple(lse.shape)}, expected {(B, Hq, C)}")
        lse = (lse.to(q.device, torch.float32) * _LOG2E).contiguous()  # base 2, as the kernels count
    else:
        lse = torch.empty(B, Hq, C, dtype=torch.float32, device=q.device)
    out = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    if B == 0 or N == 0:
        return out.zero_()
    qk = scale * _LOG2E
    f32 = q.dtype == torch.float32
    if C and not given:
        _row_lse_kernel[(triton.cdiv(C, block_q), B * Hq)](
            q, k, lse, pad, C, N, Hq, G, qk, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            D=D, BQ=block_q, BK=block_k, F32=f32)
    _col_sum_kernel[(triton.cdiv(N, block_k), B * H)](
        q, k, lse, out, pad, C, N, H, G, qk, q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        D=D, BQ=block_q, BK=block_k, F32=f32)
    return out


def attention_column_sums_coded(q: torch.Tensor, k_codes: torch.Tensor, k_centroids: torch.Tensor, k_window: torch.Tensor,
                                pad: torch.Tensor | None = None, scale: float | None = None, lse: torch.Tensor | None = None,
                                block_q: int = 64, block_k: int = 64) -> torch.Tensor:
    """See :func:`million.ops.naive.attention_column_sums_coded`: the column sums over keys held as codes then a
    full-precision window, without decoding the codes to memory. ``lse`` is required here (committed decode queries
    bring their own); ``D`` must be a power of two >= 16."""
    B, Hq, C, D = q.shape
    H, P, M = k_codes.shape[1], k_codes.shape[2], k_codes.shape[3]
    Hc, M2, ksub, dsub = k_centroids.shape
    W = k_window.shape[2]
    N = P + W
    if Hq % H or D < 16 or D & (D - 1) or M2 != M or M * dsub != D or Hc not in (1, H) or ksub & (ksub - 1):
        raise ValueError(f"attention_column_sums_coded: H_q={Hq}, H_kv={H}, D={D}, codes M={M}, centroids "
                         f"{tuple(k_centroids.shape)}: need H_q a multiple of H_kv, D a power of two >= 16 equal to "
                         f"M * dsub, one centroid set or one per KV head, ksub a power of two")
    if lse is None or tuple(lse.shape) != (B, Hq, C):
        raise ValueError(f"attention_column_sums_coded: lse must have shape {(B, Hq, C)}, got "
                         f"{None if lse is None else tuple(lse.shape)}")
    G = Hq // H
    scale = D**-0.5 if scale is None else float(scale)
    q = q if q.stride(-1) == 1 else q.contiguous()
    if k_codes.stride(-1) != 1:
        k_codes = k_codes.contiguous()
    k_window = (k_window if k_window.stride(-1) == 1 else k_window.contiguous()).to(q.dtype)
    cen = k_centroids.to(q.dtype).contiguous()
    pad = _pad_i32(pad, B, q.device)
    lse2 = (lse.to(q.device, torch.float32) * _LOG2E).contiguous()
    out = torch.empty(B, H, N, dtype=torch.float32, device=q.device)
    if B == 0 or N == 0:
        return out.zero_()
    _col_sum_coded_kernel[(triton.cdiv(N, block_k), B * H)](
        q, k_codes, cen, k_window, lse2, out, pad, C, N, P, H, G, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2), k_codes.stride(0), k_codes.stride(1), k_codes.stride(2),
        cen.stride(0) if Hc > 1 else 0, k_window.stride(0), k_window.stride(1), k_window.stride(2),
        D=D, DSUB=dsub, KSUB=ksub, BQ=block_q, BK=block_k, F32=q.dtype == torch.float32)
    return out
