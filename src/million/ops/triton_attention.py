"""Split-K flash-decoding attention computed straight on PQ codes (Triton).

Same contract as :func:`million.ops.naive.pq_decode_attention` (the specification): one query per
head attends to the PQ-coded tokens ``starts[b] <= t < pq_lens[b]`` plus the full-precision residual
window; lengths are read from device memory, so a launch can be captured in a CUDA graph.

Two launches:

1. ``_pq_attn_partial_kernel``, grid ``(S, H_kv, B)``: program ``s`` attends to its ``1/S`` share
   of the valid code tokens of one KV head, for all ``G`` query heads of that KV head at once (the
   codes are loaded once per GQA group), and writes a normalized partial output and its float32
   log-sum-exp.
2. ``_pq_attn_combine_kernel``, grid ``(H_kv, B)``: merges the ``S`` partials and the residual window
   (dense attention over at most ``R`` full-precision tokens) and writes ``out`` in ``q.dtype``.

Scores and outputs never materialize the decoded K/V in device memory. The centroid tables of a
KV head are small (``M * ksub * dsub`` values), so each program keeps them on chip and looks them
up by code. Two designs for the score side (``K_LUT``):

- LUT (as in MILLION): ``lut[g, k, m] = q_g[m] . c_m[k]`` computed once per program, then a score is
  ``sum_m lut[g, code[t, m], m]``: one lookup per subspace and query head, no multiply.
- centroid tiles: the K centroids are gathered by code into a ``[BT, D]`` tile that all ``G`` query
  heads share (``tl.dot`` on tensor cores when ``USE_DOT``, else FMAs).

The value side always gathers V centroids by code into a ``[BT, D]`` tile weighted by the softmax
probabilities. Lookups go through shared memory (``tl.gather``) when the table fits
(``SMEM_GATHER``), else through the L1/L2 cache with pointer loads (any ``ksub`` up to 4096).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634
_LN2 = 0.6931471805599453


# --------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------


@triton.jit
def _expand_codes(c, BT: tl.constexpr, M: tl.constexpr, DSUB: tl.constexpr):
    # c: [BT, M] -> [BT, M * DSUB] with column d holding c[:, d // DSUB]
    if DSUB == 1:
        e = c
    elif DSUB == 2:
        e = tl.reshape(tl.join(c, c), [BT, M * DSUB])
    elif DSUB == 4:
        c2 = tl.join(c, c)
        e = tl.reshape(tl.join(c2, c2), [BT, M * DSUB])
    elif DSUB == 8:
        c2 = tl.join(c, c)
        c4 = tl.join(c2, c2)
        e = tl.reshape(tl.join(c4, c4), [BT, M * DSUB])
    else:
        c2 = tl.join(c, c)
        c4 = tl.join(c2, c2)
        c8 = tl.join(c4, c4)
        e = tl.reshape(tl.join(c8, c8), [BT, M * DSUB])
    return e


@triton.jit
def _gather_tile(
    table, cen_base, codes, offs_d, stride_cm, stride_ck,
    BT: tl.constexpr, M: tl.constexpr, DSUB: tl.constexpr, KS: tl.constexpr, SMEM_GATHER: tl.constexpr,
):
    # codes: [BT, M] int32 -> decoded tile [BT, D], D = M * DSUB
    idx = _expand_codes(codes, BT, M, DSUB)
    if SMEM_GATHER:
        # table: [KS, D] register tensor; tl.gather goes through shared memory
        tile = tl.gather(table, idx, 0)
    else:
        # centroids [M, KS, DSUB] in global memory (L1/L2 resident): pointer gather
        p_c = cen_base + (offs_d // DSUB)[None, :] * stride_cm + idx * stride_ck + (offs_d % DSUB)[None, :]
        tile = tl.load(p_c)
    return tile


@triton.jit
def _pq_attn_partial_kernel(
    q_ptr, kc_ptr, vc_ptr, kcen_ptr, vcen_ptr, pq_lens_ptr, starts_ptr, o_ptr, lse_ptr,
    T, S, qk_scale,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_km,
    stride_vb, stride_vh, stride_vt, stride_vm,
    stride_kch, stride_vch, stride_cm, stride_ck,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, M: tl.constexpr, DSUB: tl.constexpr,
    KS: tl.constexpr, KSP: tl.constexpr, BT: tl.constexpr,
    K_LUT: tl.constexpr, USE_DOT: tl.constexpr, SMEM_GATHER: tl.constexpr, TAB_DTYPE: tl.constexpr,
    IEEE_DOT: tl.constexpr,
):
    pid_s = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2)
    Hq = tl.num_programs(1) * G

    # this program's share of the valid code tokens [start, end) of sequence b
    start = tl.maximum(tl.load(starts_ptr + b).to(tl.int32), 0)
    end = tl.minimum(tl.load(pq_lens_ptr + b).to(tl.int32), T)
    n = tl.maximum(end - start, 0)
    chunk = tl.cdiv(tl.cdiv(n, S), BT) * BT
    lo = start + pid_s * chunk
    hi = tl.minimum(lo + chunk, end)

    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, D)
    offs_m = tl.arange(0, M)
    offs_k = tl.arange(0, KSP)
    m_k = offs_k < KS
    offs_bt = tl.arange(0, BT)
    m_g = offs_g < G
    q_base = q_ptr + b * stride_qb + (hk * G + offs_g) * stride_qh  # [GP]
    kcen_base = kcen_ptr + hk * stride_kch
    vcen_base = vcen_ptr + hk * stride_vch
    kc_base = kc_ptr + b * stride_kb + hk * stride_kh
    vc_base = vc_ptr + b * stride_vb + hk * stride_vh

    # on-chip tables
    if K_LUT:
        # lut[g, k, m] = sum_j q[g, m * DSUB + j] * c_k[m, k, j], with the softmax scale folded in
        lut = tl.zeros([GP, KSP, M], dtype=tl.float32)
        for j in tl.static_range(DSUB):
            q_j = tl.load(q_base[:, None] + (offs_m * DSUB + j)[None, :] * stride_qd, mask=m_g[:, None], other=0.0)
            c_j = tl.load(kcen_base + offs_m[None, :] * stride_cm + offs_k[:, None] * stride_ck + j, mask=m_k[:, None], other=0.0)
            lut += (q_j.to(tl.float32) * qk_scale)[:, None, :] * c_j.to(tl.float32)[None, :, :]
        k_table = lut  # unused on this path
    else:
        q_t = tl.load(q_base[:, None] + offs_d[None, :] * stride_qd, mask=m_g[:, None], other=0.0)
        q_t = q_t.to(tl.float32) * qk_scale  # [GP, D]
        if SMEM_GATHER:
            k_table = tl.load(
                kcen_base + (offs_d // DSUB)[None, :] * stride_cm + offs_k[:, None] * stride_ck + (offs_d % DSUB)[None, :],
                mask=m_k[:, None], other=0.0,
            ).to(TAB_DTYPE)  # [KSP, D]
        else:
            k_table = q_t  # unused
    if SMEM_GATHER:
        v_table = tl.load(
            vcen_base + (offs_d // DSUB)[None, :] * stride_cm + offs_k[:, None] * stride_ck + (offs_d % DSUB)[None, :],
            mask=m_k[:, None], other=0.0,
        ).to(TAB_DTYPE)  # [KSP, D]
    else:
        v_table = offs_d  # unused

    m_i = tl.full([GP], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GP], dtype=tl.float32)
    acc = tl.zeros([GP, D], dtype=tl.float32)
    for t0 in range(lo, hi, BT):
        offs_t = t0 + offs_bt
        m_t = offs_t < hi
        kc = tl.load(kc_base + offs_t[:, None] * stride_kt + offs_m[None, :] * stride_km, mask=m_t[:, None], other=0)
        kc = kc.to(tl.int32)  # [BT, M]
        if K_LUT:
            idx = tl.broadcast_to(kc[None, :, :], [GP, BT, M])
            s = tl.sum(tl.gather(lut, idx, 1), 2)  # [GP, BT], already scaled (log2 units)
        else:
            k_tile = _gather_tile(k_table, kcen_base, kc, offs_d, stride_cm, stride_ck, BT, M, DSUB, KS, SMEM_GATHER)
            if USE_DOT:
                if IEEE_DOT:
                    s = tl.dot(q_t, tl.trans(k_tile.to(tl.float32)), input_precision="ieee")
                else:
                    s = tl.dot(q_t.to(k_tile.dtype), tl.trans(k_tile))
            else:
                s = tl.sum(q_t[:, None, :] * k_tile.to(tl.float32)[None, :, :], 2)
        s = tl.where(m_t[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])  # [GP, BT]
        l_i = l_i * alpha + tl.sum(p, 1)
        vc = tl.load(vc_base + offs_t[:, None] * stride_vt + offs_m[None, :] * stride_vm, mask=m_t[:, None], other=0)
        v_tile = _gather_tile(v_table, vcen_base, vc.to(tl.int32), offs_d, stride_cm, stride_ck, BT, M, DSUB, KS, SMEM_GATHER)
        if USE_DOT:
            if IEEE_DOT:
                pv = tl.dot(p, v_tile.to(tl.float32), input_precision="ieee")
            else:
                pv = tl.dot(p.to(v_tile.dtype), v_tile)
        else:
            pv = tl.sum(p[:, :, None] * v_tile.to(tl.float32)[None, :, :], 1)
        acc = acc * alpha[:, None] + pv
        m_i = m_new

    has = l_i > 0
    out = acc / tl.where(has, l_i, 1.0)[:, None]
    lse = tl.where(has, (m_i + tl.log2(tl.where(has, l_i, 1.0))) * 0.6931471805599453, float("-inf"))
    row = (b * Hq + hk * G + offs_g) * S + pid_s  # [GP]
    tl.store(o_ptr + row[:, None] * D + offs_d[None, :], out, mask=m_g[:, None])
    tl.store(lse_ptr + row, lse, mask=m_g)


@triton.jit
def _pq_attn_combine_kernel(
    q_ptr, o_part_ptr, lse_part_ptr, kr_ptr, vr_ptr, pq_lens_ptr, res_lens_ptr, starts_ptr, out_ptr,
    S, R, qk_scale,
    stride_qb, stride_qh, stride_qd,
    stride_krb, stride_krh, stride_krt, stride_krd,
    stride_vrb, stride_vrh, stride_vrt, stride_vrd,
    stride_ob, stride_oh, stride_od,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, SP: tl.constexpr, BR: tl.constexpr,
):
    hk = tl.program_id(0)
    b = tl.program_id(1)
    Hq = tl.num_programs(0) * G
    offs_g = tl.arange(0, GP)
    offs_s = tl.arange(0, SP)
    offs_d = tl.arange(0, D)
    offs_r = tl.arange(0, BR)
    m_g = offs_g < G
    hq = hk * G + offs_g

    # merge the S partials (natural-log lse -> log2 units)
    row = (b * Hq + hq)[:, None] * S + offs_s[None, :]  # [GP, SP]
    m_gs = m_g[:, None] & (offs_s < S)[None, :]
    lse = tl.load(lse_part_ptr + row, mask=m_gs, other=float("-inf")) * 1.4426950408889634
    m_i = tl.max(lse, 1)  # [GP]
    m_safe = tl.where(m_i == float("-inf"), 0.0, m_i)
    w = tl.exp2(lse - m_safe[:, None])  # 0 for empty partials
    l_i = tl.sum(w, 1)
    o_p = tl.load(o_part_ptr + row[:, :, None] * D + offs_d[None, None, :], mask=m_gs[:, :, None], other=0.0)
    acc = tl.sum(w[:, :, None] * o_p, 1)  # [GP, D], unnormalized with max m_safe
    m_i = m_safe
    # l_i == 0 means nothing so far; the -inf-safe max of 0 then only shifts the residual exponents

    # residual window: slot j valid iff j < res_lens[b] and pq_lens[b] + j >= starts[b]
    res_len = tl.load(res_lens_ptr + b).to(tl.int32)
    pq_len = tl.load(pq_lens_ptr + b).to(tl.int32)
    start = tl.load(starts_ptr + b).to(tl.int32)
    q = tl.load(q_ptr + b * stride_qb + hq[:, None] * stride_qh + offs_d[None, :] * stride_qd, mask=m_g[:, None], other=0.0)
    q = q.to(tl.float32) * qk_scale  # [GP, D]
    r_end = tl.minimum(res_len, R)
    r_lo = tl.maximum(start - pq_len, 0)
    for r0 in range(r_lo, r_end, BR):
        rr = r0 + offs_r
        m_r = rr < r_end
        kr = tl.load(kr_ptr + b * stride_krb + hk * stride_krh + rr[:, None] * stride_krt + offs_d[None, :] * stride_krd,
                     mask=m_r[:, None], other=0.0).to(tl.float32)  # [BR, D]
        s = tl.sum(q[:, None, :] * kr[None, :, :], 2)  # [GP, BR]
        s = tl.where(m_r[None, :], s, float("-inf"))
        m_new = tl.where(l_i > 0, tl.maximum(m_i, tl.max(s, 1)), tl.max(s, 1))
        alpha = tl.where(l_i > 0, tl.exp2(m_i - m_new), 0.0)
        p = tl.exp2(s - m_new[:, None])
        vr = tl.load(vr_ptr + b * stride_vrb + hk * stride_vrh + rr[:, None] * stride_vrt + offs_d[None, :] * stride_vrd,
                     mask=m_r[:, None], other=0.0).to(tl.float32)
        acc = acc * alpha[:, None] + tl.sum(p[:, :, None] * vr[None, :, :], 1)
        l_i = l_i * alpha + tl.sum(p, 1)
        m_i = m_new

    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + b * stride_ob + hq[:, None] * stride_oh + offs_d[None, :] * stride_od,
             out.to(out_ptr.dtype.element_ty), mask=m_g[:, None])


# --------------------------------------------------------------------------------------------------
# launchers
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 8
    return _num_sms(device.index if device.index is not None else torch.cuda.current_device())


def _pow2(n: int) -> int:
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def choose_config(B: int, Hkv: int, G: int, T: int, D: int, M: int, ksub: int, dtype: torch.dtype, device) -> dict:
    """Launch parameters for one shape: design, tile size, warps and number of splits.

    The grid is ``S * H_kv * B`` programs; ``S`` is picked so that it covers the SMs about twice,
    while every split keeps at least a few tiles of tokens.
    """
    dsub = D // M
    GP = _pow2(G)
    smem_ok = ksub <= 256 and D <= 256
    lut_ok = smem_ok and GP * ksub * M * 4 <= 64 * 1024 and G <= 2
    use_dot = dtype != torch.float32 and G > 2
    cfg = dict(
        K_LUT=lut_ok,
        USE_DOT=use_dot,
        SMEM_GATHER=smem_ok,
        BT=64 if D <= 64 else 32,
        num_warps=4,
    )
    if not smem_ok:
        cfg["BT"] = 16
    sms = _sm_count(device)
    bh = B * Hkv
    s = max(1, math.ceil(2 * sms / bh))
    s = min(s, max(1, T // (4 * cfg["BT"])))
    cfg["S"] = s
    return cfg


def _validate(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts):
    if q.dim() != 3:
        raise ValueError(f"q must be [B, H_q, D], got shape {tuple(q.shape)}")
    B, Hq, D = q.shape
    if k_codes.dim() != 4 or v_codes.shape != k_codes.shape:
        raise ValueError(f"k_codes/v_codes must both be [B, H_kv, T, M], got {tuple(k_codes.shape)} and {tuple(v_codes.shape)}")
    _, Hkv, T, M = k_codes.shape
    if k_codes.shape[0] != B or Hq % Hkv != 0:
        raise ValueError(f"codes {tuple(k_codes.shape)} do not match q {tuple(q.shape)} (need same B and H_q % H_kv == 0)")
    if k_codes.dtype not in (torch.uint8, torch.uint16, torch.int16, torch.int32, torch.int64):
        raise ValueError(f"codes dtype {k_codes.dtype} is not allowed; use uint8 or uint16")
    for name, c in (("k_centroids", k_centroids), ("v_centroids", v_centroids)):
        if c.dim() != 4 or c.shape[0] not in (1, Hkv) or c.shape[1] != M or c.shape[1] * c.shape[3] != D:
            raise ValueError(f"{name} must be [Hc, M, ksub, dsub] with Hc in (1, {Hkv}), M={M}, M*dsub={D}; got {tuple(c.shape)}")
        if c.shape[2] > 4096:
            raise ValueError(f"{name}: ksub={c.shape[2]} is not allowed; at most 4096 (12 bits)")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q dtype {q.dtype} is not allowed; use float16, bfloat16 or float32")
    for name, r in (("k_res", k_res), ("v_res", v_res)):
        if r.dim() != 4 or r.shape[0] != B or r.shape[1] != Hkv or r.shape[3] != D:
            raise ValueError(f"{name} must be [B={B}, H_kv={Hkv}, R, D={D}], got {tuple(r.shape)}")
    if v_res.shape[2] != k_res.shape[2]:
        raise ValueError(f"k_res and v_res disagree on R: {k_res.shape[2]} vs {v_res.shape[2]}")
    for name, t in (("pq_lens", pq_lens), ("res_lens", res_lens), ("starts", starts)):
        if t is not None and (t.dim() != 1 or t.shape[0] != B):
            raise ValueError(f"{name} must be an int tensor of shape [B={B}], got {tuple(t.shape)}")


def pq_decode_attention_launch(
    q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts=None, scale=None,
    config: dict | None = None,
) -> torch.Tensor:
    """Launch the two kernels (no validation; see :func:`pq_decode_attention`). ``config`` overrides
    :func:`choose_config` (benchmarks)."""
    B, Hq, D = q.shape
    _, Hkv, T, M = k_codes.shape
    G = Hq // Hkv
    GP = _pow2(G)
    ksub = v_centroids.shape[2]
    dsub = D // M
    R = k_res.shape[2]
    dev = q.device
    scale = D**-0.5 if scale is None else float(scale)
    if starts is None:
        starts = torch.zeros(B, dtype=torch.int32, device=dev)
    cfg = choose_config(B, Hkv, G, T, D, M, ksub, q.dtype, dev)
    if config:
        cfg.update(config)
    S = cfg["S"]
    kcen = k_centroids.contiguous()
    vcen = v_centroids.contiguous()
    out = torch.empty(B, Hq, D, dtype=q.dtype, device=dev)
    o_part = torch.empty(B, Hq, S, D, dtype=torch.float32, device=dev)
    lse_part = torch.empty(B, Hq, S, dtype=torch.float32, device=dev)
    if B == 0 or Hq == 0:
        return out
    use_dot = cfg["USE_DOT"]
    gp_kernel = max(16, GP) if use_dot else GP
    tab_dtype = tl.float32 if q.dtype == torch.float32 else (tl.float16 if q.dtype == torch.float16 else tl.bfloat16)
    _pq_attn_partial_kernel[(S, Hkv, B)](
        q, k_codes, v_codes, kcen, vcen, pq_lens, starts, o_part, lse_part,
        T, S, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k_codes.stride(0), k_codes.stride(1), k_codes.stride(2), k_codes.stride(3),
        v_codes.stride(0), v_codes.stride(1), v_codes.stride(2), v_codes.stride(3),
        kcen.stride(0) if kcen.shape[0] > 1 else 0, vcen.stride(0) if vcen.shape[0] > 1 else 0,
        kcen.stride(1), kcen.stride(2),
        G=G, GP=gp_kernel, D=D, M=M, DSUB=dsub, KS=ksub, KSP=_pow2(ksub), BT=cfg["BT"],
        K_LUT=cfg["K_LUT"], USE_DOT=use_dot, SMEM_GATHER=cfg["SMEM_GATHER"], TAB_DTYPE=tab_dtype,
        IEEE_DOT=q.dtype == torch.float32,
        num_warps=cfg["num_warps"],
    )
    BR = 16
    _pq_attn_combine_kernel[(Hkv, B)](
        q, o_part, lse_part, k_res, v_res, pq_lens, res_lens, starts, out,
        S, R, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k_res.stride(0), k_res.stride(1), k_res.stride(2), k_res.stride(3),
        v_res.stride(0), v_res.stride(1), v_res.stride(2), v_res.stride(3),
        out.stride(0), out.stride(1), out.stride(2),
        G=G, GP=GP, D=D, SP=_pow2(S), BR=BR,
        num_warps=4,
    )
    return out


def pq_decode_attention(
    q: torch.Tensor,
    k_codes: torch.Tensor,
    v_codes: torch.Tensor,
    k_centroids: torch.Tensor,
    v_centroids: torch.Tensor,
    pq_lens: torch.Tensor,
    k_res: torch.Tensor,
    v_res: torch.Tensor,
    res_lens: torch.Tensor,
    starts: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Decode attention over PQ codes plus the residual window, on the GPU.

    Same shapes and semantics as :func:`million.ops.naive.pq_decode_attention`:

    q ``[B, H_q, D]``; k_codes, v_codes ``[B, H_kv, T, M]`` (uint8 or uint16); k_centroids,
    v_centroids ``[Hc, M, ksub, dsub]``; pq_lens, res_lens, starts int ``[B]`` (read on the device,
    never synchronized); k_res, v_res ``[B, H_kv, R, D]``. Returns ``[B, H_q, D]`` in ``q.dtype``.
    Runs as the opaque custom op ``million::pq_decode_attention`` (torch.compile and CUDA graphs).
    """
    _validate(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts)
    from . import custom_ops  # noqa: F401  (registers torch.ops.million.*)

    return torch.ops.million.pq_decode_attention(
        q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts,
        None if scale is None else float(scale),
    )
