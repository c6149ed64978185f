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
def _pq_lut_kernel(
    q_ptr, kcen_ptr, lut_ptr,
    Hq, qk_scale,
    stride_qb, stride_qh, stride_qd,
    stride_kch, stride_cm, stride_ck,
    G: tl.constexpr, M: tl.constexpr, DSUB: tl.constexpr, KS: tl.constexpr, KSP: tl.constexpr,
    MB: tl.constexpr,
):
    # lut[b, hq, m, k] = scale * log2(e) * (m-th subvector of q[b, hq]) . k_centroids[hc, m, k]
    bhq = tl.program_id(0)
    b = bhq // Hq
    hq = bhq % Hq
    offs_m = tl.program_id(1) * MB + tl.arange(0, MB)
    offs_k = tl.arange(0, KSP)
    m_m = offs_m < M
    m_mk = m_m[:, None] & (offs_k < KS)[None, :]
    c_base = kcen_ptr + (hq // G) * stride_kch + offs_m[:, None] * stride_cm + offs_k[None, :] * stride_ck
    acc = tl.zeros([MB, KSP], dtype=tl.float32)
    for j in tl.static_range(DSUB):
        q_j = tl.load(q_ptr + b * stride_qb + hq * stride_qh + (offs_m * DSUB + j) * stride_qd, mask=m_m, other=0.0)
        c_j = tl.load(c_base + j, mask=m_mk, other=0.0)
        acc += q_j.to(tl.float32)[:, None] * c_j.to(tl.float32)
    acc = acc * qk_scale
    tl.store(lut_ptr + bhq * (M * KSP) + offs_m[:, None] * KSP + offs_k[None, :],
             acc.to(lut_ptr.dtype.element_ty), mask=m_m[:, None])


@triton.jit
def _pq_attn_partial_kernel(
    q_ptr, kc_ptr, vc_ptr, kcen_ptr, vcen_ptr, lut_ptr, pq_lens_ptr, starts_ptr, o_ptr, lse_ptr,
    T, S, qk_scale,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_km,
    stride_vb, stride_vh, stride_vt, stride_vm,
    stride_kch, stride_vch, stride_cm, stride_ck,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, M: tl.constexpr, DSUB: tl.constexpr,
    KSP: tl.constexpr, BT: tl.constexpr,
    K_LUT: tl.constexpr, USE_DOT: tl.constexpr, IEEE_DOT: tl.constexpr, NUM_STAGES: tl.constexpr,
    PREFETCH: tl.constexpr = False, V_ACC3: tl.constexpr = False, PART: tl.constexpr = 0,
):
    # PART (benchmarks only): 0 = full kernel, 1 = score side only, 2 = value side only
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
    offs_j = tl.arange(0, DSUB)
    offs_bt = tl.arange(0, BT)
    m_g = offs_g < G
    kc_base = kc_ptr + b * stride_kb + hk * stride_kh
    vc_base = vc_ptr + b * stride_vb + hk * stride_vh
    # centroid element (m, k, j) of this KV head: base + m * stride_cm + k * stride_ck + j
    kcen_mj = kcen_ptr + hk * stride_kch + offs_m[None, :, None] * stride_cm + offs_j[None, None, :]  # [1, M, DSUB]
    vcen_mj = vcen_ptr + hk * stride_vch + offs_m[:, None, None] * stride_cm + offs_j[None, None, :]  # [M, 1, DSUB]
    vcen_mj2 = vcen_ptr + hk * stride_vch + offs_m[None, :, None] * stride_cm + offs_j[None, None, :]  # [1, M, DSUB]
    if K_LUT:
        # lut[b, hq, m, k] (scaled, log2 units) from _pq_lut_kernel; looked up through L1
        lut_g = lut_ptr + (b * Hq + hk * G + offs_g) * (M * KSP)  # [GP]
        q_t = tl.zeros([GP, D], dtype=tl.float32)  # unused
    else:
        q_t = tl.load(q_ptr + b * stride_qb + (hk * G + offs_g)[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                      mask=m_g[:, None], other=0.0)
        q_t = q_t.to(tl.float32) * qk_scale  # [GP, D]

    m_i = tl.full([GP], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GP], dtype=tl.float32)
    if USE_DOT:
        acc = tl.zeros([GP, D], dtype=tl.float32)
    elif V_ACC3:
        acc = tl.zeros([BT, M, DSUB], dtype=tl.float32)  # G == 1, summed over tokens after the loop
    else:
        acc = tl.zeros([M, DSUB], dtype=tl.float32)  # G == 1
    if PREFETCH:
        # codes of the next tile are loaded into registers one iteration ahead
        p_kc = kc_base + (lo + offs_bt)[:, None] * stride_kt + offs_m[None, :] * stride_km
        p_vc = vc_base + (lo + offs_bt)[:, None] * stride_vt + offs_m[None, :] * stride_vm
        m_nt = (lo + offs_bt) < hi
        kc_next = tl.load(p_kc, mask=m_nt[:, None], other=0)
        vc_next = tl.load(p_vc, mask=m_nt[:, None], other=0)
    for t0 in tl.range(lo, hi, BT, num_stages=NUM_STAGES):
        offs_t = t0 + offs_bt
        m_t = offs_t < hi
        if PREFETCH:
            kc = kc_next
            vc_pf = vc_next
            p_kc += BT * stride_kt
            p_vc += BT * stride_vt
            m_nt = (offs_t + BT) < hi
            kc_next = tl.load(p_kc, mask=m_nt[:, None], other=0)
            vc_next = tl.load(p_vc, mask=m_nt[:, None], other=0)
        else:
            kc = tl.load(kc_base + offs_t[:, None] * stride_kt + offs_m[None, :] * stride_km, mask=m_t[:, None], other=0)
        kc = kc.to(tl.int32)  # [BT, M]
        if PART == 2:
            s = tl.zeros([GP, BT], dtype=tl.float32) + tl.sum(kc, 1).to(tl.float32)[None, :] * 1e-9
        elif K_LUT:
            if GP == 1:
                s = tl.sum(tl.load(lut_ptr + (b * Hq + hk) * (M * KSP) + offs_m[None, :] * KSP + kc).to(tl.float32), 1)
                s = s[None, :]
            else:
                p_l = lut_g[:, None, None] + (offs_m * KSP)[None, None, :] + kc[None, :, :]
                s = tl.sum(tl.load(p_l, mask=m_g[:, None, None], other=0.0).to(tl.float32), 2)  # [GP, BT]
        else:
            k_tile = tl.reshape(tl.load(kcen_mj + kc[:, :, None] * stride_ck), [BT, D])
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
        if PREFETCH:
            vc = vc_pf
        else:
            vc = tl.load(vc_base + offs_t[:, None] * stride_vt + offs_m[None, :] * stride_vm, mask=m_t[:, None], other=0)
        if PART == 1:
            vc = vc * 0
        if V_ACC3:
            # [BT, M, DSUB] in the layout of the codes; the sum over tokens waits until after the loop
            v3 = tl.load(vcen_mj2 + vc.to(tl.int32)[:, :, None] * stride_ck).to(tl.float32)
            p1 = tl.sum(p, 0)  # [BT] (GP == 1)
            acc = acc * tl.sum(alpha, 0) + p1[:, None, None] * v3
        else:
            # [M, BT, DSUB]: subspaces on dim 0 so that lanes run along subspaces (Triton 3.6 puts the
            # lanes of a gather without contiguity on dim 0) and the sum over tokens stays in-thread
            v_tile = tl.load(vcen_mj + tl.trans(vc.to(tl.int32))[:, :, None] * stride_ck)
            if USE_DOT:
                v2 = tl.reshape(tl.permute(v_tile, (1, 0, 2)), [BT, D])
                if IEEE_DOT:
                    pv = tl.dot(p, v2.to(tl.float32), input_precision="ieee")
                else:
                    pv = tl.dot(p.to(v2.dtype), v2)
                acc = acc * alpha[:, None] + pv
            else:
                p1 = tl.sum(p, 0)  # [BT] (GP == 1)
                pv = tl.sum(p1[None, :, None] * v_tile.to(tl.float32), 1)  # [M, DSUB]
                acc = acc * tl.sum(alpha, 0) + pv
        m_i = m_new

    has = l_i > 0
    l_safe = tl.where(has, l_i, 1.0)
    lse = tl.where(has, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    row = (b * Hq + hk * G + offs_g) * S + pid_s  # [GP]
    if USE_DOT:
        out = acc / l_safe[:, None]
        tl.store(o_ptr + row[:, None] * D + offs_d[None, :], out, mask=m_g[:, None])
    elif V_ACC3:
        out = tl.reshape(tl.sum(acc, 0) / tl.sum(l_safe, 0), [D])
        tl.store(o_ptr + tl.sum(row, 0) * D + offs_d, out)
    else:
        out = tl.reshape(acc / tl.sum(l_safe, 0), [D])
        tl.store(o_ptr + tl.sum(row, 0) * D + offs_d, out)
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

    ``K_LUT``: scores from the per-query-head lookup table (else from K centroid tiles and ``tl.dot``);
    ``USE_DOT``: values through ``tl.dot`` (needed when ``G > 1``). The grid is ``S * H_kv * B``
    programs; ``S`` is picked so that it covers the SMs several times while every split keeps at
    least a few tiles of tokens.
    """
    cfg = dict(
        K_LUT=G == 1,
        USE_DOT=G > 1,
        LUT_FP16=dtype == torch.float16,
        BT=64,
        num_warps=4,
        NUM_STAGES=2,
    )
    cfg["S"] = num_splits(B, Hkv, T, cfg["BT"], 4, device)
    return cfg


def num_splits(B: int, Hkv: int, T: int, BT: int, s_mult: float, device) -> int:
    """Splits of the token range: about ``s_mult`` programs per SM, at least 4 tiles per split."""
    s = max(1, math.ceil(s_mult * _sm_count(device) / (B * Hkv)))
    return min(s, max(1, T // (4 * BT)))


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
        if "S" not in config and ("S_MULT" in config or "BT" in config):
            cfg["S"] = num_splits(B, Hkv, T, cfg["BT"], config.get("S_MULT", 4), dev)
    S = cfg["S"]
    kcen = k_centroids.contiguous()
    vcen = v_centroids.contiguous()
    out = torch.empty(B, Hq, D, dtype=q.dtype, device=dev)
    o_part = torch.empty(B, Hq, S, D, dtype=torch.float32, device=dev)
    lse_part = torch.empty(B, Hq, S, dtype=torch.float32, device=dev)
    if B == 0 or Hq == 0:
        return out
    use_dot = cfg["USE_DOT"]
    if G > 1 and not use_dot:
        raise ValueError("G > 1 needs USE_DOT")
    gp_kernel = max(16, GP) if use_dot else GP
    KSP = _pow2(ksub)
    stride_kch = kcen.stride(0) if kcen.shape[0] > 1 else 0
    if cfg["K_LUT"]:
        lut_dtype = torch.float16 if cfg.get("LUT_FP16") else torch.float32
        lut = torch.empty(B * Hq, M, KSP, dtype=lut_dtype, device=dev)
        MB = min(_pow2(M), max(1, 4096 // KSP))
        _pq_lut_kernel[(B * Hq, triton.cdiv(M, MB))](
            q, kcen, lut, Hq, scale * _LOG2E,
            q.stride(0), q.stride(1), q.stride(2),
            stride_kch, kcen.stride(1), kcen.stride(2),
            G=G, M=M, DSUB=dsub, KS=ksub, KSP=KSP, MB=MB,
            num_warps=4,
        )
    else:
        lut = o_part  # unused
    _pq_attn_partial_kernel[(S, Hkv, B)](
        q, k_codes, v_codes, kcen, vcen, lut, pq_lens, starts, o_part, lse_part,
        T, S, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k_codes.stride(0), k_codes.stride(1), k_codes.stride(2), k_codes.stride(3),
        v_codes.stride(0), v_codes.stride(1), v_codes.stride(2), v_codes.stride(3),
        stride_kch, vcen.stride(0) if vcen.shape[0] > 1 else 0,
        kcen.stride(1), kcen.stride(2),
        G=G, GP=gp_kernel, D=D, M=M, DSUB=dsub, KSP=KSP, BT=cfg["BT"],
        K_LUT=cfg["K_LUT"], USE_DOT=use_dot, IEEE_DOT=q.dtype == torch.float32, NUM_STAGES=cfg["NUM_STAGES"],
        PREFETCH=cfg.get("PREFETCH", False), V_ACC3=cfg.get("V_ACC3", False) and not use_dot,
        PART=cfg.get("PART", 0), num_warps=cfg["num_warps"],
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
