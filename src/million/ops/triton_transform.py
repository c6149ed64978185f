"""Per-head linear maps of a few rows (Triton): the transforms a decode step with a transformed recipe applies.

Same contract as :func:`million.ops.naive.head_map` (the specification). With transforms, every layer of a decode
step maps its query to the codes' space, its new key and value rows to it (the window the kernel reads, beside their
untransformed copy), and the attention output back. In plain torch each of these is a cast to float32, a batched
matmul and a cast back, and the window writes are index copies: about fourteen small launches per layer. Here each
map is one launch, and :func:`head_map_kv` maps a step's key and value rows in one launch for both (the values on
the second half of the third axis): grid ``(ceil(R / BR), ceil(D / BN), B * H)`` (``B * H`` up to 65,535; twice that
for the pair), one program multiplies ``BR`` rows by a ``[D, BN]`` column block of its head's matrix in float32 FMAs
(no ``tl.dot``: the rows are few, and the products are exact as in the reference) and stores them in the output's
dtype, at a row offset read on the device when ``index`` is given (capturable in a CUDA graph; rows that would land
past the buffer are not written). The program of the first column block also stores the untransformed rows to
``raw``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .naive import _check_head_map, _check_head_map_kv

MAX_BH = 65535  # the grid's third axis


@triton.jit
def _map_rows(x_ptr, m_ptr, o_ptr, raw_ptr, idx_ptr, bh, pid_r, pid_n, H, R, T, D,
              sxb, sxh, sxr, sxd, smh, sob, soh, sor, sod, srb, srh, srr, srd,
              BD: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr, INDEXED: tl.constexpr, RAW: tl.constexpr):
    b = bh // H
    h = bh % H
    rows = pid_r * BR + tl.arange(0, BR)
    offs_d = tl.arange(0, BD)
    offs_n = pid_n * BN + tl.arange(0, BN)
    rmask = rows < R
    x = tl.load(x_ptr + b * sxb + h * sxh + rows[:, None] * sxr + offs_d[None, :] * sxd,
                mask=rmask[:, None] & (offs_d < D)[None, :], other=0.0)
    m = tl.load(m_ptr + h * smh + offs_d[:, None] * D + offs_n[None, :],
                mask=(offs_d < D)[:, None] & (offs_n < D)[None, :], other=0.0)
    y = tl.sum(x.to(tl.float32)[:, :, None] * m[None, :, :], axis=1)  # [BR, BN]
    orow = rows
    if INDEXED:
        orow = rows + tl.load(idx_ptr).to(tl.int64)
    wmask = rmask & (orow >= 0) & (orow < T)  # a device index past the buffer writes nothing (see the reference)
    tl.store(o_ptr + b * sob + h * soh + orow[:, None] * sor + offs_n[None, :] * sod, y.to(o_ptr.dtype.element_ty),
             mask=wmask[:, None] & (offs_n < D)[None, :])
    if RAW:
        if pid_n == 0:
            tl.store(raw_ptr + b * srb + h * srh + orow[:, None] * srr + offs_d[None, :] * srd,
                     x.to(raw_ptr.dtype.element_ty), mask=wmask[:, None] & (offs_d < D)[None, :])


@triton.jit
def _head_map_kernel(x_ptr, m_ptr, o_ptr, raw_ptr, idx_ptr, H, R, T, D,
                     sxb, sxh, sxr, sxd, smh, sob, soh, sor, sod, srb, srh, srr, srd,
                     x2_ptr, m2_ptr, o2_ptr, raw2_ptr, BH,
                     s2xb, s2xh, s2xr, s2xd, s2mh, s2ob, s2oh, s2or, s2od, s2rb, s2rh, s2rr, s2rd,
                     BD: tl.constexpr, BN: tl.constexpr, BR: tl.constexpr, INDEXED: tl.constexpr, RAW: tl.constexpr,
                     PAIR: tl.constexpr):
    pid_r = tl.program_id(0)
    pid_n = tl.program_id(1)
    bh = tl.program_id(2).to(tl.int64)
    if PAIR:  # programs BH.. of the third axis map the second operand set (the values beside the keys)
        if bh >= BH:
            _map_rows(x2_ptr, m2_ptr, o2_ptr, raw2_ptr, idx_ptr, bh - BH, pid_r, pid_n, H, R, T, D, s2xb, s2xh, s2xr,
                      s2xd, s2mh, s2ob, s2oh, s2or, s2od, s2rb, s2rh, s2rr, s2rd, BD, BN, BR, INDEXED, RAW)
        else:
            _map_rows(x_ptr, m_ptr, o_ptr, raw_ptr, idx_ptr, bh, pid_r, pid_n, H, R, T, D,
                      sxb, sxh, sxr, sxd, smh, sob, soh, sor, sod, srb, srh, srr, srd, BD, BN, BR, INDEXED, RAW)
    else:
        _map_rows(x_ptr, m_ptr, o_ptr, raw_ptr, idx_ptr, bh, pid_r, pid_n, H, R, T, D,
                  sxb, sxh, sxr, sxd, smh, sob, soh, sor, sod, srb, srh, srr, srd, BD, BN, BR, INDEXED, RAW)


def _operands(x, mats, out, raw):
    """The pointers and strides of one operand set, in the kernel's argument order."""
    r = raw if raw is not None else out
    return (x, mats, out, r), (x.stride(0), x.stride(1), x.stride(2), x.stride(3), 0 if mats.shape[0] == 1 else
                               mats.shape[1] * mats.shape[2], out.stride(0), out.stride(1), out.stride(2),
                               out.stride(3), r.stride(0), r.stride(1), r.stride(2), r.stride(3))


def _launch(first, second, index, R, D, BH, H, T, raw: bool) -> None:
    BD = triton.next_power_of_2(D)
    BN = min(BD, 32)
    BR = min(triton.next_power_of_2(R), 4 if BD >= 128 else 8)
    pair = second is not None
    if (1 + pair) * BH > MAX_BH:
        raise ValueError(f"head_map{'_kv' if pair else ''}: {'2 x ' if pair else ''}batch x heads = {(1 + pair) * BH} "
                         f"is more than this kernel's grid takes ({MAX_BH})")
    (ptrs, strides), (ptrs2, strides2) = first, second if pair else first
    grid = (triton.cdiv(R, BR), triton.cdiv(D, BN), (1 + pair) * BH)
    _head_map_kernel[grid](
        *ptrs[:4], index if index is not None else ptrs[2], H, R, T, D, *strides, *ptrs2[:4], BH, *strides2,
        BD=BD, BN=BN, BR=BR, INDEXED=index is not None, RAW=raw, PAIR=pair, num_warps=4)


def head_map(x: torch.Tensor, mats: torch.Tensor, dtype: torch.dtype | None = None, out: torch.Tensor | None = None,
             index: torch.Tensor | None = None, raw: torch.Tensor | None = None) -> torch.Tensor:
    """One launch; see :func:`million.ops.naive.head_map`."""
    _check_head_map(x, mats, out, index, raw)
    B, H, R, D = x.shape
    mats = mats.contiguous()
    if out is None:
        out = torch.empty(B, H, R, D, dtype=x.dtype if dtype is None else dtype, device=x.device)
    if R == 0 or B * H == 0:
        return out
    _launch(_operands(x, mats, out, raw), None, index, R, D, B * H, H, out.shape[2], raw is not None)
    return out


def head_map_kv(k: torch.Tensor, v: torch.Tensor, kmats: torch.Tensor, vmats: torch.Tensor, kout: torch.Tensor,
                vout: torch.Tensor, index: torch.Tensor | None = None, kraw: torch.Tensor | None = None,
                vraw: torch.Tensor | None = None, pair: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps in one launch (the values on the second half of the grid's third axis), or one launch per side
    (``pair=False``); see :func:`million.ops.naive.head_map_kv`."""
    _check_head_map_kv(k, v, kmats, vmats, kout, vout, index, kraw, vraw)
    B, H, R, D = k.shape
    if R == 0 or B * H == 0:
        return kout, vout
    ko, vo = _operands(k, kmats.contiguous(), kout, kraw), _operands(v, vmats.contiguous(), vout, vraw)
    for first, second in [(ko, vo)] if pair else [(ko, None), (vo, None)]:
        _launch(first, second, index, R, D, B * H, H, kout.shape[2], kraw is not None)
    return kout, vout
