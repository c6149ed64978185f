"""Fused PQ encoding (nearest centroid per subspace) in Triton.

Same contract as :func:`million.ops.naive.pq_encode` (the specification): ``x [B, H, T, D]`` (any
strides, fp16/bf16/fp32), ``centroids [Hc, M, ksub, dsub]`` with ``Hc`` in ``{1, H}``; returns
``codes [B, H, T, M]``, uint8 for ``ksub <= 256`` else uint16 (up to 4096 centroids).

One program encodes ``BT`` tokens of one head for ``MB`` subspaces. Distances are
``||x||^2 + ||c||^2 - 2 x.c`` in float32 over blocks of ``KB`` centroids, with a running minimum
across blocks. The argmin of a block is one integer ``min`` over keys that carry the distance in
their high bits and the centroid's index in their low ``log2(KB)`` bits: exact ties go to the lowest
index (as ``torch.argmin``); distances closer than ``2**-(23 - log2(KB))`` relative may be ordered
either way (near-ties also flip under fp16 inputs and any change of summation order).

Encode v2 (default for ``dsub <= 4``): ``_pq_encode_v2_kernel`` loops over centroids as
program-uniform scalars (table ``(-2c, ||c||^2)`` in fp32), so each candidate costs ``dsub`` FMAs, a
compare and two selects per token, with no cross-lane argmin; exact fp32, ties to the lowest index.

Older kernels: ``_pq_encode_kernel`` (CUDA cores, fp32 arithmetic, any input) and, for fp16 ``x`` and
fp16 centroids, ``_pq_encode_tc_kernel``, which gets a whole ``[BT, KB]`` block of squared
distances from one fp16 ``tl.dot`` with fp32 accumulation (measured 1.3x-1.9x faster on an H100).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

DEFAULT_KERNEL: str | None = "v2"  # for dsub <= 4; None = the older tc/cuda choice (tests override on CPU)


@triton.jit
def _pq_encode_kernel(
    x_ptr, c_ptr, codes_ptr,
    T, H, M,
    stride_xb, stride_xh, stride_xt, stride_xd,
    stride_ch, stride_cm, stride_ck,
    stride_ob, stride_oh, stride_ot,
    DSUB: tl.constexpr, KS: tl.constexpr, KB: tl.constexpr, BT: tl.constexpr, MB: tl.constexpr,
    LOG2_KB: tl.constexpr,
):
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # offsets can pass 2**31 elements
    pid_m = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs_t = pid_t * BT + tl.arange(0, BT)
    m_t = offs_t < T
    offs_k = tl.arange(0, KB)
    x_base = x_ptr + b * stride_xb + h * stride_xh + offs_t.to(tl.int64) * stride_xt  # [BT]
    c_base = c_ptr + h * stride_ch
    o_base = codes_ptr + b * stride_ob + h * stride_oh + offs_t.to(tl.int64) * stride_ot
    for mi in range(MB):
        m = pid_m * MB + mi
        if m < M:
            best_d = tl.full([BT], float("inf"), dtype=tl.float32)
            best_i = tl.zeros([BT], dtype=tl.int32)
            for k0 in range(0, KS, KB):
                kk = k0 + offs_k
                m_k = kk < KS
                # dist[t, k] = ||x_t||^2 + ||c_k||^2 - 2 x_t . c_k  (>= 0 up to rounding; a rounded
                # negative value still sorts below every positive one)
                x_sq = tl.zeros([BT], dtype=tl.float32)
                c_sq = tl.zeros([KB], dtype=tl.float32)
                for j in tl.static_range(DSUB):
                    x_j = tl.load(x_base + (m * DSUB + j) * stride_xd, mask=m_t, other=0.0).to(tl.float32)
                    c_j = tl.load(c_base + m * stride_cm + kk * stride_ck + j, mask=m_k, other=0.0).to(tl.float32)
                    x_sq += x_j * x_j
                    c_sq += c_j * c_j
                dist = x_sq[:, None] + c_sq[None, :]
                for j in tl.static_range(DSUB):
                    x_j = tl.load(x_base + (m * DSUB + j) * stride_xd, mask=m_t, other=0.0).to(tl.float32)
                    c_j = tl.load(c_base + m * stride_cm + kk * stride_ck + j, mask=m_k, other=0.0).to(tl.float32)
                    dist += (-2.0 * x_j)[:, None] * c_j[None, :]
                # pack (distance, local index) into one sortable int32 key
                key = (dist.to(tl.int32, bitcast=True) & ~(KB - 1)) | offs_k[None, :]
                if KS % KB != 0:
                    key = tl.where(m_k[None, :], key, 0x7FFFFFFF)
                kmin = tl.min(key, 1)
                d_blk = (kmin & ~(KB - 1)).to(tl.float32, bitcast=True)
                i_blk = k0 + (kmin & (KB - 1))
                better = d_blk < best_d
                best_i = tl.where(better, i_blk, best_i)
                best_d = tl.where(better, d_blk, best_d)
            tl.store(o_base + m, best_i.to(codes_ptr.dtype.element_ty), mask=m_t)


@triton.jit
def _pq_encode_tc_kernel(
    x_ptr, c_ptr, codes_ptr,
    T, H, M,
    stride_xb, stride_xh, stride_xt, stride_xd,
    stride_ch, stride_cm, stride_ck,
    stride_ob, stride_oh, stride_ot,
    DSUB: tl.constexpr, KS: tl.constexpr, KB: tl.constexpr, BT: tl.constexpr, KR: tl.constexpr,
):
    # Tensor-core distances: the 16 rows of the MMA's inner dimension hold MG = 16 // KR subspaces,
    # KR rows each:  A = [x_0 .. x_{dsub-1}, 0..]  and  B = [-2 c_0 .. -2 c_{dsub-1}, 0..] for the subspace being
    # searched (zeros for the others), so one fp16 tl.dot (fp32 accumulation) gives -2 x.c for a [BT, KB] block, and
    # ||x||^2 + ||c||^2 are added in fp32 after it: ||x - c||^2 without fp16 norms, which overflowed (inf, wrong
    # codes) once a subvector's squared norm passed 65504. (KR keeps its dsub + 3 rows of before: the launch grid.)
    MG: tl.constexpr = 16 // KR
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # offsets can pass 2**31 elements
    pid_g = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs_t = pid_t * BT + tl.arange(0, BT)
    m_t = offs_t < T
    offs_r = tl.arange(0, 16)
    sub = offs_r // KR  # subspace (within the group) of each inner row
    u = offs_r % KR  # slot within the subspace
    m_r = pid_g * MG + sub
    x_base = x_ptr + b * stride_xb + h * stride_xh + offs_t.to(tl.int64) * stride_xt  # [BT]
    xv = tl.load(x_base[:, None] + (m_r * DSUB + u)[None, :] * stride_xd,
                 mask=m_t[:, None] & ((u < DSUB) & (m_r < M))[None, :], other=0.0).to(tl.float32)  # [BT, 16]
    a = xv.to(tl.float16)  # exact: x is fp16 (rows u >= DSUB are 0)
    offs_k = tl.arange(0, KB)
    c_base = c_ptr + h * stride_ch
    o_base = codes_ptr + b * stride_ob + h * stride_oh + offs_t.to(tl.int64) * stride_ot
    for mi in tl.static_range(MG):
        m = pid_g * MG + mi
        if m < M:
            best = tl.full([BT], float("inf"), dtype=tl.float32)
            best_i = tl.zeros([BT], dtype=tl.int32)
            row_m = (sub == mi)[:, None]  # [16, 1]
            x_sq = tl.sum(tl.where((sub == mi)[None, :], xv * xv, 0.0), 1)  # [BT] fp32
            for k0 in range(0, KS, KB):
                kk = k0 + offs_k
                m_k = kk < KS
                cv = tl.load(c_base + m * stride_cm + kk[None, :] * stride_ck + u[:, None],
                             mask=(row_m & (u < DSUB)[:, None]) & m_k[None, :], other=0.0).to(tl.float32)  # [16, KB]
                c_sq = tl.sum(cv * cv, 0)  # [KB] fp32
                xc = tl.dot(a, (-2.0 * cv).to(tl.float16))  # [BT, KB] = -2 x.c (exact operands, fp32 sums)
                d = tl.maximum(xc + x_sq[:, None] + c_sq[None, :], 0.0)  # ||x - c||^2, >= 0 for the key below
                key = ((d.to(tl.int32, bitcast=True) & ~(KB - 1)) | offs_k[None, :]).to(tl.float32, bitcast=True)
                if KS % KB != 0:
                    key = tl.where(m_k[None, :], key, float("inf"))
                kmin = tl.min(key, 1).to(tl.int32, bitcast=True)
                d_blk = (kmin & ~(KB - 1)).to(tl.float32, bitcast=True)
                better = d_blk < best
                best_i = tl.where(better, k0 + (kmin & (KB - 1)), best_i)
                best = tl.where(better, d_blk, best)
            tl.store(o_base + m, best_i.to(codes_ptr.dtype.element_ty), mask=m_t)


@triton.jit
def _pq_encode_v2_kernel(
    x_ptr, tab_ptr, codes_ptr,
    T, H, M,
    stride_xb, stride_xh, stride_xt, stride_xd,
    stride_th,
    stride_ob, stride_oh, stride_ot,
    DSUB: tl.constexpr, KSP: tl.constexpr, KU: tl.constexpr, BT: tl.constexpr, MB: tl.constexpr,
):
    # "Encode v2": one program owns BT tokens of one head and MB subspaces; the centroid loop is
    # scalar (program-uniform), so each candidate costs DSUB FMAs + compare + min + select per token
    # and no cross-lane reduction. tab [Hc, M, KSP, DSUB + 1] fp32 = (-2 c_0 .. -2 c_{d-1}, ||c||^2)
    # (padding rows: ||c||^2 = +inf); dist' = ||c||^2 - 2 x.c (the naive formula). Ascending k with a
    # strict '<' keeps the lowest index on exact ties.
    W: tl.constexpr = DSUB + 1
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)  # offsets can pass 2**31 elements
    pid_m = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs_t = pid_t * BT + tl.arange(0, BT)
    m_t = offs_t < T
    x_base = x_ptr + b * stride_xb + h * stride_xh + offs_t.to(tl.int64) * stride_xt  # [BT]
    o_base = codes_ptr + b * stride_ob + h * stride_oh + offs_t.to(tl.int64) * stride_ot
    for mi in range(MB):
        m = pid_m * MB + mi
        if m < M:
            x0 = tl.load(x_base + (m * DSUB) * stride_xd, mask=m_t, other=0.0).to(tl.float32)
            if DSUB > 1:
                x1 = tl.load(x_base + (m * DSUB + 1) * stride_xd, mask=m_t, other=0.0).to(tl.float32)
            else:
                x1 = x0
            if DSUB > 2:
                x2 = tl.load(x_base + (m * DSUB + 2) * stride_xd, mask=m_t, other=0.0).to(tl.float32)
            else:
                x2 = x0
            if DSUB > 3:
                x3 = tl.load(x_base + (m * DSUB + 3) * stride_xd, mask=m_t, other=0.0).to(tl.float32)
            else:
                x3 = x0
            tb = tab_ptr + h * stride_th + m * (KSP * W)
            best = tl.full([BT], float("inf"), dtype=tl.float32)
            best_i = tl.zeros([BT], dtype=tl.int32)
            for k0 in range(0, KSP, KU):
                for kk in tl.static_range(KU):
                    p = tb + (k0 + kk) * W
                    d = tl.load(p + DSUB) + x0 * tl.load(p)
                    if DSUB > 1:
                        d += x1 * tl.load(p + 1)
                    if DSUB > 2:
                        d += x2 * tl.load(p + 2)
                    if DSUB > 3:
                        d += x3 * tl.load(p + 3)
                    better = d < best
                    best = tl.where(better, d, best)
                    best_i = tl.where(better, k0 + kk, best_i)
            tl.store(o_base + m, best_i.to(codes_ptr.dtype.element_ty), mask=m_t)


@triton.jit
def _pq_encode_v3_kernel(
    x_ptr, tab_ptr, codes_ptr,
    T, H, M,
    stride_xb, stride_xh, stride_xt, stride_xd,
    stride_th,
    stride_ob, stride_oh, stride_ot,
    DSUB: tl.constexpr, KSP: tl.constexpr, KU: tl.constexpr, BT: tl.constexpr, MB: tl.constexpr,
):
    # Encode v2, tiled: a [BT, MB] tile (tokens x subspaces) per program, all MB subspaces searched
    # at once; per centroid k one contiguous [MB] load per row of tab [Hc, KSP, DSUB + 1, M]
    # (-2 c_j ... , ||c||^2), and codes stored as [BT, MB] rows of contiguous bytes.
    W: tl.constexpr = DSUB + 1
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    pid_m = tl.program_id(2)
    b = bh // H
    h = bh % H
    offs_t = pid_t * BT + tl.arange(0, BT)
    offs_m = pid_m * MB + tl.arange(0, MB)
    m_t = offs_t < T
    m_m = offs_m < M
    mask = m_t[:, None] & m_m[None, :]
    xp = x_ptr + b * stride_xb + h * stride_xh + offs_t.to(tl.int64)[:, None] * stride_xt + (offs_m * DSUB)[None, :] * stride_xd
    x0 = tl.load(xp, mask=mask, other=0.0).to(tl.float32)
    if DSUB > 1:
        x1 = tl.load(xp + stride_xd, mask=mask, other=0.0).to(tl.float32)
    else:
        x1 = x0
    if DSUB > 2:
        x2 = tl.load(xp + 2 * stride_xd, mask=mask, other=0.0).to(tl.float32)
    else:
        x2 = x0
    if DSUB > 3:
        x3 = tl.load(xp + 3 * stride_xd, mask=mask, other=0.0).to(tl.float32)
    else:
        x3 = x0
    tb = tab_ptr + h * stride_th + offs_m  # [MB]
    best = tl.full([BT, MB], float("inf"), dtype=tl.float32)
    best_i = tl.zeros([BT, MB], dtype=tl.int32)
    for k0 in range(0, KSP, KU):
        for kk in tl.static_range(KU):
            p = tb + ((k0 + kk) * W) * M
            d = tl.load(p + DSUB * M, mask=m_m, other=0.0)[None, :] + x0 * tl.load(p, mask=m_m, other=0.0)[None, :]
            if DSUB > 1:
                d += x1 * tl.load(p + M, mask=m_m, other=0.0)[None, :]
            if DSUB > 2:
                d += x2 * tl.load(p + 2 * M, mask=m_m, other=0.0)[None, :]
            if DSUB > 3:
                d += x3 * tl.load(p + 3 * M, mask=m_m, other=0.0)[None, :]
            better = d < best
            best = tl.where(better, d, best)
            best_i = tl.where(better, k0 + kk, best_i)
    op = codes_ptr + b * stride_ob + h * stride_oh + offs_t.to(tl.int64)[:, None] * stride_ot + offs_m[None, :]
    tl.store(op, best_i.to(codes_ptr.dtype.element_ty), mask=mask)


def _pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def _v2_table(c: torch.Tensor, KU: int) -> torch.Tensor:
    """[Hc, M, KSP, dsub + 1] fp32: (-2 c, ||c||^2), KSP = ksub rounded up to KU (pad: ||c||^2 = inf)."""
    Hc, M, ksub, dsub = c.shape
    cf = c.float()
    ksp = -(-ksub // KU) * KU
    tab = torch.zeros(Hc, M, ksp, dsub + 1, dtype=torch.float32, device=c.device)
    tab[:, :, :ksub, :dsub] = -2.0 * cf
    tab[:, :, :ksub, dsub] = (cf * cf).sum(-1)
    if ksp > ksub:
        tab[:, :, ksub:, dsub] = float("inf")
    return tab


def pq_encode_launch(x: torch.Tensor, centroids: torch.Tensor, BT: int | None = None, KB: int | None = None,
                     MB: int | None = None, num_warps: int | None = None, tc: bool | None = None,
                     kernel: str | None = None) -> torch.Tensor:
    """Launch an encode kernel (no validation; see :func:`pq_encode`). Keyword sizes override the
    defaults (benchmarks). ``kernel``: ``"v2"`` (scalar centroid loop, exact fp32, dsub <= 4),
    ``"tc"`` (tensor cores; with fp32 centroids it rounds ``-2c`` to fp16 and flips ~1-5% of codes
    to near-tie neighbours, measured on an H100) or ``"cuda"`` (fp32 block kernel); ``tc=True/False``
    is the older spelling of ``"tc"`` / ``"cuda"``. Default: ``"v2"`` when ``dsub <= 4``, except
    fp16 ``x`` and centroids with ``ksub <= 16`` (tensor cores, faster there)."""
    B, H, T, D = x.shape
    Hc, M, ksub, dsub = centroids.shape
    code_dtype = torch.uint8 if ksub <= 256 else torch.uint16
    codes = torch.empty(B, H, T, M, dtype=code_dtype, device=x.device)
    if codes.numel() == 0:
        return codes
    if kernel is None and tc is not None:
        kernel = "tc" if tc else "cuda"
    if kernel in ("v2", "v3") and dsub > 4:
        raise ValueError(f"kernel={kernel!r} handles dsub <= 4, got dsub={dsub}; use kernel='cuda' or the default")
    if kernel not in (None, "v2", "v3", "tc", "cuda"):
        raise ValueError(f"kernel={kernel!r} is not one of 'v2', 'v3', 'tc', 'cuda' (or None: the default)")
    if kernel is None and dsub <= 4:
        # measured on an H100 (docs/kernel_notes.md, "Encode v2"): v2 beats the tensor-core kernel
        # at ksub 256 (dsub 2) and the fp32 block kernel everywhere; at ksub 16 (dsub 4) with fp16
        # x and centroids the tensor-core kernel is faster (2.83 vs 3.8 ms per 32K x 32-head tensor)
        half = x.dtype == torch.float16 and centroids.dtype == torch.float16
        kernel = None if (half and ksub <= 16) else DEFAULT_KERNEL
    if kernel == "v2":
        KU = 8
        tab = _v2_table(centroids, KU)
        BT = BT or 512
        MB = MB or min(M, 8)
        grid = (triton.cdiv(T, BT), B * H, triton.cdiv(M, MB))
        _pq_encode_v2_kernel[grid](
            x, tab, codes,
            T, H, M,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3),
            tab.stride(0) if Hc > 1 else 0,
            codes.stride(0), codes.stride(1), codes.stride(2),
            DSUB=dsub, KSP=tab.shape[2], KU=KU, BT=BT, MB=MB,
            num_warps=num_warps or 4,
        )
        return codes
    if kernel == "v3":
        KU = 4
        tab = _v2_table(centroids, KU).permute(0, 2, 3, 1).contiguous()  # [Hc, KSP, dsub + 1, M]
        BT = BT or 128
        MB = MB or min(_pow2(M), 16)
        grid = (triton.cdiv(T, BT), B * H, triton.cdiv(M, MB))
        _pq_encode_v3_kernel[grid](
            x, tab, codes,
            T, H, M,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3),
            tab.stride(0) if Hc > 1 else 0,
            codes.stride(0), codes.stride(1), codes.stride(2),
            DSUB=dsub, KSP=tab.shape[1], KU=KU, BT=BT, MB=MB,
            num_warps=num_warps or 4,
        )
        return codes
    c = centroids.contiguous()
    tc = kernel == "tc" if kernel is not None else None
    if tc is None:
        # fp16 operands are exact only for fp16 x and centroids; otherwise the exact fp32 kernel
        tc = x.dtype == torch.float16 and c.dtype == torch.float16 and dsub + 3 <= 16
    if tc:
        KR = _pow2(dsub + 3)
        KB = KB or min(max(_pow2(ksub), 16), 64)
        BT = BT or 128
        grid = (triton.cdiv(T, BT), B * H, triton.cdiv(M, 16 // KR))
        _pq_encode_tc_kernel[grid](
            x, c, codes,
            T, H, M,
            x.stride(0), x.stride(1), x.stride(2), x.stride(3),
            c.stride(0) if Hc > 1 else 0, c.stride(1), c.stride(2),
            codes.stride(0), codes.stride(1), codes.stride(2),
            DSUB=dsub, KS=ksub, KB=KB, BT=BT, KR=KR,
            num_warps=num_warps or 4,
        )
        return codes
    # [BT, KB] = [128, 32] with 4 warps: a warp reduces a row with one redux, no spills (sm_90)
    KB = KB or min(_pow2(ksub), 32)
    BT = BT or 128
    MB = MB or min(M, 8)
    num_warps = num_warps or 4
    grid = (triton.cdiv(T, BT), B * H, triton.cdiv(M, MB))
    _pq_encode_kernel[grid](
        x, c, codes,
        T, H, M,
        x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        c.stride(0) if Hc > 1 else 0, c.stride(1), c.stride(2),
        codes.stride(0), codes.stride(1), codes.stride(2),
        DSUB=dsub, KS=ksub, KB=KB, BT=BT, MB=MB, LOG2_KB=KB.bit_length() - 1,
        num_warps=num_warps,
    )
    return codes


def pq_encode(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid codes on the GPU; see :func:`million.ops.naive.pq_encode`.

    x ``[B, H, T, D]`` (fp16/bf16/fp32, any strides), centroids ``[Hc, M, ksub, dsub]`` with ``Hc``
    in ``{1, H}``, ``M * dsub == D``, ``ksub <= 4096``. Returns ``[B, H, T, M]`` uint8
    (``ksub <= 256``) or uint16. Runs as the opaque custom op ``million::pq_encode``.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be [B, H, T, D], got shape {tuple(x.shape)}")
    if centroids.dim() != 4:
        raise ValueError(f"centroids must be [Hc, M, ksub, dsub], got shape {tuple(centroids.shape)}")
    B, H, T, D = x.shape
    Hc, M, ksub, dsub = centroids.shape
    if Hc not in (1, H):
        raise ValueError(f"centroids have Hc={Hc} heads; allowed: 1 or H={H}")
    if M * dsub != D:
        raise ValueError(f"centroids [.., M={M}, ksub, dsub={dsub}] do not split D={D} (need M * dsub == D)")
    if not 1 <= ksub <= 4096:
        raise ValueError(f"ksub={ksub} is not allowed; 1..4096 (at most 12 bits)")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"x dtype {x.dtype} is not allowed; use float16, bfloat16 or float32")
    from . import custom_ops  # noqa: F401  (registers torch.ops.million.*)

    return torch.ops.million.pq_encode(x, centroids)
