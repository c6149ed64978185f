"""Split-K flash-decoding attention computed straight on PQ codes (Triton).

Same contract as :func:`million.ops.naive.pq_decode_attention` (the specification): one query per
head attends to the PQ-coded tokens ``starts[b] <= t < pq_lens[b]`` plus the full-precision residual
window; lengths are read from device memory (never synchronized), so a call can be captured in a
CUDA graph.

Launches:

1. ``_pq_lut_kernel`` (MHA only), grid ``(B * H_q, M / MB)``: the lookup table
   ``lut[b, h, m, k] = scale * log2(e) * q[b, h, m-th subvector] . k_centroids[m, k]``.
2. ``_pq_attn_partial_kernel``, grid ``(S + 1, H_kv, B)``: program ``s < S`` attends to its ``1/S``
   share of the valid code tokens of one KV head, for all ``G`` query heads of that head at once
   (codes are loaded once per GQA group); program ``s == S`` attends to the residual window. Each
   writes a normalized partial output and its float32 log-sum-exp.
3. ``_pq_attn_combine_kernel``, grid ``(B, H_q)``: merges the ``S + 1`` partials, writes ``q.dtype``.

Decoded K/V never reach device memory: every code is looked up in a small per-subspace table
(``M x ksub`` entries) that stays in the L1/L2 cache. Scores: MHA sums ``M`` LUT entries per token
(no multiply, as in MILLION); GQA gathers K centroids into a ``[BT, D]`` tile shared by the ``G``
query heads and uses ``tl.dot``. Values: V centroids gathered by code, weighted by the softmax
probabilities (a ``[BT, M, dsub]`` register accumulator for MHA, ``tl.dot`` for GQA). The lookups
are plain pointer loads: with Triton 3.6 a 2-D ``tl.gather`` lowers to warp shuffles and a 1-D one
re-stores its table to shared memory at every call, both measured slower (docs/kernel_notes.md).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

_LOG2E = 1.4426950408889634


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
    bhq = tl.program_id(0).to(tl.int64)
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
def _online_update(s, m_i, l_i, acc, ACC_RANK: tl.constexpr, TAU: tl.constexpr):
    # Lazy online softmax (log2 units): the running max moves only when a score exceeds it by more
    # than TAU, so probabilities stay <= 2**TAU and the accumulator is rescaled rarely.
    m_new = tl.maximum(m_i, tl.max(s, 1))
    if tl.max(m_new - m_i, 0) > TAU:
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha
        if ACC_RANK == 2:
            acc = acc * alpha[:, None]
        else:
            acc = acc * tl.sum(alpha, 0)  # G == 1
        m_i = m_new
    p = tl.exp2(s - m_i[:, None])  # [GP, BT]
    l_i = l_i + tl.sum(p, 1)
    return p, m_i, l_i, acc


@triton.jit
def _store_partial(o_ptr, lse_ptr, acc, m_i, l_i, b, hk, pid_s, Hq, S1,
                   G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, ACC_RANK: tl.constexpr):
    # normalized partial output and its natural-log lse (-inf and zeros when no token was seen)
    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, D)
    has = l_i > 0
    l_safe = tl.where(has, l_i, 1.0)
    lse = tl.where(has, (m_i + tl.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    row = (b * Hq + hk * G + offs_g) * S1 + pid_s  # [GP]
    if ACC_RANK == 2:
        tl.store(o_ptr + row[:, None] * D + offs_d[None, :], acc / l_safe[:, None], mask=(offs_g < G)[:, None])
    else:
        tl.store(o_ptr + tl.sum(row, 0) * D + offs_d, tl.reshape(acc, [D]) / tl.sum(l_safe, 0))
    tl.store(lse_ptr + row, lse, mask=offs_g < G)


@triton.jit
def _pq_attn_partial_kernel(
    q_ptr, kc_ptr, vc_ptr, kcen_ptr, vcen_ptr, lut_ptr, kr_ptr, vr_ptr,
    pq_lens_ptr, res_lens_ptr, starts_ptr, o_ptr, lse_ptr,
    T, R, S, qk_scale,
    stride_qb, stride_qh, stride_qd,
    stride_kb, stride_kh, stride_kt, stride_km,
    stride_vb, stride_vh, stride_vt, stride_vm,
    stride_kch, stride_vch, stride_cm, stride_ck, stride_vcm, stride_vck,
    stride_krb, stride_krh, stride_krt, stride_krd,
    stride_vrb, stride_vrh, stride_vrt, stride_vrd,
    G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, M: tl.constexpr, DSUB: tl.constexpr,
    KSP: tl.constexpr, BT: tl.constexpr, BR: tl.constexpr,
    K_LUT: tl.constexpr, USE_DOT: tl.constexpr, IEEE_DOT: tl.constexpr, NUM_STAGES: tl.constexpr,
    PREFETCH: tl.constexpr, TAU: tl.constexpr, PART: tl.constexpr, HAS_STARTS: tl.constexpr = True,
):
    # Programs pid_s < S attend to 1/S of the code tokens; program pid_s == S to the residual window.
    # PART (benchmarks only): 0 = full kernel, 1 = score side only, 2 = value side only.
    pid_s = tl.program_id(0)
    hk = tl.program_id(1)
    b = tl.program_id(2)
    Hq = tl.num_programs(1) * G
    S1 = S + 1
    b64 = b.to(tl.int64)  # batch/head offsets of the code tensors can pass 2**31 elements
    hk64 = hk.to(tl.int64)

    if HAS_STARTS:
        start = tl.maximum(tl.load(starts_ptr + b).to(tl.int32), 0)
    else:  # no starts: every sequence starts at 0 (no zero tensor, and no kernel filling one, per call)
        start = tl.zeros([], dtype=tl.int32)
    end = tl.minimum(tl.load(pq_lens_ptr + b).to(tl.int32), T)

    offs_g = tl.arange(0, GP)
    offs_d = tl.arange(0, D)
    m_g = offs_g < G
    q_t = tl.load(q_ptr + b64 * stride_qb + (hk * G + offs_g)[:, None] * stride_qh + offs_d[None, :] * stride_qd,
                  mask=m_g[:, None], other=0.0)
    q_t = q_t.to(tl.float32) * qk_scale  # [GP, D], log2 units
    m_i = tl.full([GP], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([GP], dtype=tl.float32)

    if pid_s == S:
        # residual window: slot j (position end + j) is valid iff j < res_lens[b] and end + j >= start
        offs_r = tl.arange(0, BR)
        r_end = tl.minimum(tl.load(res_lens_ptr + b).to(tl.int32), R)
        r_lo = tl.maximum(start - tl.load(pq_lens_ptr + b).to(tl.int32), 0)
        r_acc = tl.zeros([GP, D], dtype=tl.float32)
        r_m = m_i
        r_l = l_i
        kr_base = kr_ptr + b64 * stride_krb + hk64 * stride_krh
        vr_base = vr_ptr + b64 * stride_vrb + hk64 * stride_vrh
        for r0 in range(r_lo, r_end, BR):
            rr = r0 + offs_r
            m_r = rr < r_end
            kr = tl.load(kr_base + rr[:, None] * stride_krt + offs_d[None, :] * stride_krd, mask=m_r[:, None], other=0.0)
            vr = tl.load(vr_base + rr[:, None] * stride_vrt + offs_d[None, :] * stride_vrd, mask=m_r[:, None], other=0.0)
            if USE_DOT:
                if IEEE_DOT:
                    r_s = tl.dot(q_t, tl.trans(kr.to(tl.float32)), input_precision="ieee")
                else:
                    r_s = tl.dot(q_t.to(kr.dtype), tl.trans(kr))
            else:
                r_s = tl.sum(q_t[:, None, :] * kr.to(tl.float32)[None, :, :], 2)  # [GP, BR]
            r_s = tl.where(m_r[None, :], r_s, float("-inf"))
            r_p, r_m, r_l, r_acc = _online_update(r_s, r_m, r_l, r_acc, 2, TAU)
            if USE_DOT:
                if IEEE_DOT:
                    r_acc += tl.dot(r_p, vr.to(tl.float32), input_precision="ieee")
                else:
                    r_acc += tl.dot(r_p.to(vr.dtype), vr)
            else:
                r_acc += tl.sum(r_p[:, :, None] * vr.to(tl.float32)[None, :, :], 1)
        _store_partial(o_ptr, lse_ptr, r_acc, r_m, r_l, b, hk, pid_s, Hq, S1, G, GP, D, 2)
    else:
        # this program's share of the valid code tokens [start, end) of sequence b
        n = tl.maximum(end - start, 0)
        chunk = tl.cdiv(tl.cdiv(n, S), BT) * BT
        lo = start + pid_s * chunk
        hi = tl.minimum(lo + chunk, end)
        offs_m = tl.arange(0, M)
        offs_j = tl.arange(0, DSUB)
        offs_bt = tl.arange(0, BT)
        kc_base = kc_ptr + b64 * stride_kb + hk64 * stride_kh
        vc_base = vc_ptr + b64 * stride_vb + hk64 * stride_vh
        # centroid element (m, k, j) of this KV head: base + m * stride_cm + k * stride_ck + j (values: their own
        # strides, the two tables may have different numbers of centroids)
        kcen_mj = kcen_ptr + hk64 * stride_kch + offs_m[None, :, None] * stride_cm + offs_j[None, None, :]  # [1, M, DSUB]
        vcen_mj2 = vcen_ptr + hk64 * stride_vch + offs_m[None, :, None] * stride_vcm + offs_j[None, None, :]  # [1, M, DSUB]
        # lut[b, hq, m, k] (scaled, log2 units) from _pq_lut_kernel; looked up through L1
        lut_g = lut_ptr + (b64 * Hq + hk * G + offs_g) * (M * KSP)  # [GP]
        if USE_DOT:
            acc = tl.zeros([GP, D], dtype=tl.float32)
        else:
            acc = tl.zeros([BT, M, DSUB], dtype=tl.float32)  # G == 1, summed over tokens after the loop
        if PREFETCH:
            # the codes of the next tile are loaded into registers one iteration ahead
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
                vc = vc_next
                p_kc += BT * stride_kt
                p_vc += BT * stride_vt
                m_nt = (offs_t + BT) < hi
                kc_next = tl.load(p_kc, mask=m_nt[:, None], other=0)
                vc_next = tl.load(p_vc, mask=m_nt[:, None], other=0)
            else:
                kc = tl.load(kc_base + offs_t[:, None] * stride_kt + offs_m[None, :] * stride_km,
                             mask=m_t[:, None], other=0)
                vc = tl.load(vc_base + offs_t[:, None] * stride_vt + offs_m[None, :] * stride_vm,
                             mask=m_t[:, None], other=0)
            kc = kc.to(tl.int32)  # [BT, M]
            vc = vc.to(tl.int32)
            if PART == 1:
                vc = vc * 0
            if PART == 2:
                s = tl.zeros([GP, BT], dtype=tl.float32) + tl.sum(kc, 1).to(tl.float32)[None, :] * 1e-9
            elif K_LUT:
                if GP == 1:
                    s = tl.sum(tl.load(lut_ptr + (b64 * Hq + hk) * (M * KSP) + offs_m[None, :] * KSP + kc).to(tl.float32), 1)
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
            if USE_DOT:
                p, m_i, l_i, acc = _online_update(s, m_i, l_i, acc, 2, TAU)
                v2 = tl.reshape(tl.load(vcen_mj2 + vc[:, :, None] * stride_vck), [BT, D])
                if IEEE_DOT:
                    acc += tl.dot(p, v2.to(tl.float32), input_precision="ieee")
                else:
                    acc += tl.dot(p.to(v2.dtype), v2)
            else:
                p, m_i, l_i, acc = _online_update(s, m_i, l_i, acc, 3, TAU)
                # [BT, M, DSUB] in the layout of the codes; the sum over tokens waits for the loop's end
                v3 = tl.load(vcen_mj2 + vc[:, :, None] * stride_vck).to(tl.float32)
                acc += tl.sum(p, 0)[:, None, None] * v3
        if USE_DOT:
            _store_partial(o_ptr, lse_ptr, acc, m_i, l_i, b, hk, pid_s, Hq, S1, G, GP, D, 2)
        else:
            _store_partial(o_ptr, lse_ptr, tl.sum(acc, 0), m_i, l_i, b, hk, pid_s, Hq, S1, G, GP, D, 3)


@triton.jit
def _pq_attn_combine_kernel(
    o_part_ptr, lse_part_ptr, out_ptr, lse_out_ptr, S1,
    stride_ob, stride_oh, stride_od,
    D: tl.constexpr, SP: tl.constexpr, STORE_LSE: tl.constexpr,
):
    # out[b, hq] = merge of the S1 partials of (b, hq); one program per (b, hq). STORE_LSE: also the merged
    # log-sum-exp of the scores (natural log, -inf when no token was attended) at lse_out[b, hq]
    bhq = tl.program_id(0)
    Hq = tl.num_programs(1)
    hq = tl.program_id(1)
    b = bhq.to(tl.int64)
    row = b * Hq + hq
    offs_s = tl.arange(0, SP)
    offs_d = tl.arange(0, D)
    m_s = offs_s < S1
    lse = tl.load(lse_part_ptr + row * S1 + offs_s, mask=m_s, other=float("-inf")) * 1.4426950408889634
    o = tl.load(o_part_ptr + (row * S1 + offs_s)[:, None] * D + offs_d[None, :], mask=m_s[:, None], other=0.0)
    mx = tl.max(lse, 0)
    mx = tl.where(mx == float("-inf"), 0.0, mx)
    w = tl.exp2(lse - mx)  # 0 for empty partials
    den = tl.sum(w, 0)
    out = tl.sum(w[:, None] * o, 0) / tl.where(den > 0, den, 1.0)
    tl.store(out_ptr + b * stride_ob + hq * stride_oh + offs_d * stride_od, out.to(out_ptr.dtype.element_ty))
    if STORE_LSE:
        lse_o = tl.where(den > 0, (mx + tl.log2(tl.where(den > 0, den, 1.0))) * 0.6931471805599453, float("-inf"))
        tl.store(lse_out_ptr + row, lse_o)


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
    """Launch parameters for one shape (measured on an H100, see docs/kernel_notes.md).

    - ``K_LUT``: scores from the per-query-head lookup table (MHA); else from K centroid tiles
      gathered by code and ``tl.dot`` with the ``G`` query heads of the group (GQA).
    - ``USE_DOT``: values through ``tl.dot`` (required when ``G > 1``); else (``G == 1``) a
      ``[BT, M, dsub]`` accumulator in the layout of the lookups, summed over tokens at the end.
    - ``PREFETCH``: codes of the next tile loaded one iteration ahead (``NUM_STAGES=1``: Triton's
      own pipelining turns the lookups into cp.async copies through shared memory, slower here).
    - ``S``: splits of the token range, about ``S_MULT`` programs per SM.
    """
    cfg = dict(
        K_LUT=G == 1,
        USE_DOT=G > 1,
        LUT_FP16=dtype == torch.float16,
        PREFETCH=True,
        NUM_STAGES=1,
        BT=32 if ksub <= 256 else 16,
        num_warps=4,
        S_MULT=8 if G == 1 else 2,
        TAU=8.0,
    )
    cfg["S"] = num_splits(B, Hkv, T, cfg["BT"], cfg["S_MULT"], device)
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
    if D < 1 or D & (D - 1):
        raise ValueError(f"head_dim D={D} is not allowed; the kernels need a power of two (16, 32, 64, 128, 256)")
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
    config: dict | None = None, return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Launch the two kernels (no validation; see :func:`pq_decode_attention`). ``config`` overrides
    :func:`choose_config` (benchmarks). ``return_lse``: ``(out, lse)``, lse ``[B, H_q]`` float32, the natural-log
    log-sum-exp of each head's scores (-inf where nothing was attended)."""
    B, Hq, D = q.shape
    _, Hkv, T, M = k_codes.shape
    G = Hq // Hkv
    GP = _pow2(G)
    ksub = max(k_centroids.shape[2], v_centroids.shape[2])  # (keys and values may have different code widths)
    ksub_k = k_centroids.shape[2]  # the score table is indexed by key codes
    dsub = D // M
    R = k_res.shape[2]
    dev = q.device
    scale = D**-0.5 if scale is None else float(scale)
    has_starts = starts is not None
    cfg = choose_config(B, Hkv, G, T, D, M, ksub, q.dtype, dev)
    if config:
        cfg.update(config)
        if "S" not in config and ("S_MULT" in config or "BT" in config):
            cfg["S"] = num_splits(B, Hkv, T, cfg["BT"], cfg["S_MULT"], dev)
    S = cfg["S"]
    kcen = k_centroids.contiguous()
    vcen = v_centroids.contiguous()
    out = torch.empty(B, Hq, D, dtype=q.dtype, device=dev)
    lse = torch.empty(B, Hq, dtype=torch.float32, device=dev) if return_lse else None
    if B == 0 or Hq == 0:
        return (out, lse) if return_lse else out
    o_part = torch.empty(B, Hq, S + 1, D, dtype=torch.float32, device=dev)
    lse_part = torch.empty(B, Hq, S + 1, dtype=torch.float32, device=dev)
    use_dot = cfg["USE_DOT"]
    if G > 1 and not use_dot:
        raise ValueError("G > 1 needs USE_DOT")
    gp_kernel = max(16, GP) if use_dot else GP
    KSP = _pow2(ksub_k)
    stride_kch = kcen.stride(0) if kcen.shape[0] > 1 else 0
    if cfg["K_LUT"]:
        lut_dtype = torch.float16 if cfg.get("LUT_FP16") else torch.float32
        lut = torch.empty(B * Hq, M, KSP, dtype=lut_dtype, device=dev)
        MB = min(_pow2(M), max(1, 4096 // KSP))
        _pq_lut_kernel[(B * Hq, triton.cdiv(M, MB))](
            q, kcen, lut, Hq, scale * _LOG2E,
            q.stride(0), q.stride(1), q.stride(2),
            stride_kch, kcen.stride(1), kcen.stride(2),
            G=G, M=M, DSUB=dsub, KS=ksub_k, KSP=KSP, MB=MB,
            num_warps=4,
        )
    else:
        lut = o_part  # unused
    BR = 16 if use_dot else max(1, min(32, 4096 // (GP * D)))
    _pq_attn_partial_kernel[(S + 1, Hkv, B)](
        q, k_codes, v_codes, kcen, vcen, lut, k_res, v_res,
        pq_lens, res_lens, starts if has_starts else pq_lens, o_part, lse_part,
        T, R, S, scale * _LOG2E,
        q.stride(0), q.stride(1), q.stride(2),
        k_codes.stride(0), k_codes.stride(1), k_codes.stride(2), k_codes.stride(3),
        v_codes.stride(0), v_codes.stride(1), v_codes.stride(2), v_codes.stride(3),
        stride_kch, vcen.stride(0) if vcen.shape[0] > 1 else 0,
        kcen.stride(1), kcen.stride(2), vcen.stride(1), vcen.stride(2),
        k_res.stride(0), k_res.stride(1), k_res.stride(2), k_res.stride(3),
        v_res.stride(0), v_res.stride(1), v_res.stride(2), v_res.stride(3),
        G=G, GP=gp_kernel, D=D, M=M, DSUB=dsub, KSP=KSP, BT=cfg["BT"], BR=BR,
        K_LUT=cfg["K_LUT"], USE_DOT=use_dot, IEEE_DOT=q.dtype == torch.float32, NUM_STAGES=cfg["NUM_STAGES"],
        PREFETCH=cfg["PREFETCH"],
        TAU=cfg["TAU"], PART=cfg.get("PART", 0), HAS_STARTS=has_starts,
        num_warps=cfg["num_warps"],
    )
    _pq_attn_combine_kernel[(B, Hq)](
        o_part, lse_part, out, lse if return_lse else lse_part, S + 1,
        out.stride(0), out.stride(1), out.stride(2),
        D=D, SP=_pow2(S + 1), STORE_LSE=return_lse,
        num_warps=4,
    )
    return (out, lse) if return_lse else out


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
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over PQ codes plus the residual window, on the GPU.

    Same shapes and semantics as :func:`million.ops.naive.pq_decode_attention`:

    q ``[B, H_q, D]``; k_codes, v_codes ``[B, H_kv, T, M]`` (uint8 or uint16); k_centroids,
    v_centroids ``[Hc, M, ksub, dsub]``; pq_lens, res_lens, starts int ``[B]`` (read on the device,
    never synchronized); k_res, v_res ``[B, H_kv, R, D]``. Returns ``[B, H_q, D]`` in ``q.dtype``; with
    ``return_lse`` also each head's log-sum-exp ``[B, H_q]`` (float32, natural log, -inf where nothing was attended).
    Runs as the opaque custom op ``million::pq_decode_attention`` (``million::pq_decode_attention_lse``) for
    torch.compile and CUDA graphs.
    """
    _validate(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts)
    from . import custom_ops  # noqa: F401  (registers torch.ops.million.*)

    op = torch.ops.million.pq_decode_attention_lse if return_lse else torch.ops.million.pq_decode_attention
    return op(
        q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts,
        None if scale is None else float(scale),
    )

