"""Per-head linear maps of a few rows (Triton): the transforms a decode step with a transformed recipe applies.

Same contract as :func:`million.ops.naive.head_map` (the specification). With transforms, every layer of a decode
step maps its query to the codes' space, its new key and value rows to it (the window the kernel reads, beside their
untransformed copy), and the attention output back. In plain torch each of these is a cast to float32, a batched
matmul and a cast back, and the window writes are index copies: about fourteen small launches per layer. Here each
map is one launch: grid ``(ceil(D / BN), H, ceil(B * R / 32))``, one program loads a ``[D, BN]`` column block of its
head's matrix once and multiplies up to 32 of the head's rows (of every sequence of the batch: a decode step's rows
are one group) by it, ``BR`` at a time, in float32 FMAs (no ``tl.dot``: the rows are few, and the products are exact
as in the reference), and stores them in the output's dtype, at a row offset read on the device when ``index`` is given
(capturable in a CUDA graph). The program of the first column block also stores the untransformed rows to ``raw``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import _check_head_map


@triton.jit
def _head_map_kernel(x_ptr, m_ptr, o_ptr, raw_ptr, idx_ptr, R, NR, D,
                     sxb, sxh, sxr, sxd, smh, sob, soh, sor, sod, srb, srh, srr, srd,
                     BD: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr, RPG: tl.constexpr,
                     INDEXED: tl.constexpr, RAW: tl.constexpr):
    # program (column block, head, row group): the head's [D, BN] matrix block once, then its rows of every sequence
    # (flat row f = b * R + r, RPG of them per group) BR at a time
    pid_n = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    f0 = tl.program_id(2) * RPG
    offs_d = tl.arange(0, BD)
    offs_n = pid_n * BN + tl.arange(0, BN)
    dmask = offs_d < D
    nmask = offs_n < D
    m = tl.load(m_ptr + h * smh + offs_d[:, None] * D + offs_n[None, :], mask=dmask[:, None] & nmask[None, :], other=0.0)
    base = 0
    if INDEXED:
        base = tl.load(idx_ptr).to(tl.int64)
    for i in range(0, tl.minimum(RPG, NR - f0), BR):
        f = (f0 + i + tl.arange(0, BR)).to(tl.int64)
        fmask = f < NR
        b = f // R
        r = f % R
        x = tl.load(x_ptr + b[:, None] * sxb + h * sxh + r[:, None] * sxr + offs_d[None, :] * sxd,
                    mask=fmask[:, None] & dmask[None, :], other=0.0)
        y = tl.sum(x.to(tl.float32)[:, :, None] * m[None, :, :], axis=1)  # [BR, BN]
        orow = r + base
        tl.store(o_ptr + b[:, None] * sob + h * soh + orow[:, None] * sor + offs_n[None, :] * sod,
                 y.to(o_ptr.dtype.element_ty), mask=fmask[:, None] & nmask[None, :])
        if RAW:
            if pid_n == 0:
                tl.store(raw_ptr + b[:, None] * srb + h * srh + orow[:, None] * srr + offs_d[None, :] * srd,
                         x.to(raw_ptr.dtype.element_ty), mask=fmask[:, None] & dmask[None, :])


def head_map(x: torch.Tensor, mats: torch.Tensor, dtype: torch.dtype | None = None, out: torch.Tensor | None = None,
             index: torch.Tensor | None = None, raw: torch.Tensor | None = None) -> torch.Tensor:
    """One launch; see :func:`million.ops.naive.head_map`."""
    _check_head_map(x, mats, out, index, raw)
    B, H, R, D = x.shape
    mats = mats.contiguous()
    if out is None:
        out = torch.empty(B, H, R, D, dtype=x.dtype if dtype is None else dtype, device=x.device)
    NR = B * R
    if NR == 0 or H == 0:
        return out
    BD = triton.next_power_of_2(D)
    BN = min(BD, 32)
    BR = min(triton.next_power_of_2(NR), 4 if BD >= 128 else 8)
    # rows per program: a decode step's rows (batch x query group) in one group per head and column block; more for
    # long inputs (a prefill's window rows), within the grid's 65,535 groups
    RPG = max(32, triton.next_power_of_2(triton.cdiv(NR, 65535)))
    r = raw if raw is not None else out
    grid = (triton.cdiv(D, BN), H, triton.cdiv(NR, RPG))
    _head_map_kernel[grid](
        x, mats, out, r, index if index is not None else out, R, NR, D,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3), 0 if mats.shape[0] == 1 else D * D,
        out.stride(0), out.stride(1), out.stride(2), out.stride(3), r.stride(0), r.stride(1), r.stride(2), r.stride(3),
        BD=BD, BN=BN, BR=BR, RPG=RPG, INDEXED=index is not None, RAW=raw is not None, num_warps=4)
    return out
