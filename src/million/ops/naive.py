"""Reference PQ operations in plain torch: the specification every GPU kernel is tested against.

One canonical layout everywhere:

- keys / values ``x``: ``[B, H, T, D]``
- codes: ``[B, H_kv, T, M]``, uint8 (nbits <= 8) or uint16 (nbits 9..12)
- centroids: ``[Hc, M, ksub, dsub]`` with ``Hc`` 1 (shared by all KV heads) or ``H_kv``
- decode queries: ``[B, H_q, D]`` with ``H_q = G * H_kv`` (query head ``h`` reads KV head ``h // G``)

All arithmetic is float32; results are cast back to the query dtype at the very end. Partial
attention results travel as ``(out, lse)`` with the log-sum-exp ``lse`` in float32 (natural log).
"""

from __future__ import annotations

import torch

_ENCODE_CHUNK_ELEMS = 1 << 25  # distances materialized at once by pq_encode


def _expand_heads(centroids: torch.Tensor, H: int) -> torch.Tensor:
    # centroids: [Hc, M, ksub, dsub] -> [H, M, ksub, dsub] (view when Hc == 1)
    if centroids.shape[0] == H:
        return centroids
    return centroids.expand(H, *centroids.shape[1:])


def pq_encode(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid codes of ``x``, subspace by subspace.

    Parameters
    ----------
    x : Tensor ``[B, H, T, D]``
    centroids : Tensor ``[Hc, M, ksub, dsub]``, ``Hc`` in ``{1, H}``, ``M * dsub == D``

    Returns
    -------
    codes : Tensor ``[B, H, T, M]``, uint8 if ``ksub <= 256`` else uint16
    """
    B, H, T, D = x.shape
    Hc, M, ksub, dsub = centroids.shape
    code_dtype = torch.uint8 if ksub <= 256 else torch.uint16
    codes = torch.empty(B, H, T, M, dtype=code_dtype, device=x.device)
    if x.numel() == 0:
        return codes
    c = _expand_heads(centroids.float(), H)  # [H, M, ksub, dsub]
    c_sq = (c * c).sum(-1)  # [H, M, ksub]
    step = max(1, _ENCODE_CHUNK_ELEMS // max(1, B * H * M * ksub))
    for t0 in range(0, T, step):
        xs = x[:, :, t0 : t0 + step].float().reshape(B, H, -1, M, dsub)  # [B, H, t, M, dsub]
        # argmin_k ||x - c_k||^2 = argmin_k (||c_k||^2 - 2 x.c_k)
        dots = torch.einsum("bhtmd,hmkd->bhtmk", xs, c)
        dist = c_sq[None, :, None] - 2 * dots
        codes[:, :, t0 : t0 + step] = dist.argmin(-1).to(code_dtype)
    return codes


def pq_decode(codes: torch.Tensor, centroids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reconstruct vectors from codes.

    codes ``[B, H, T, M]``, centroids ``[Hc, M, ksub, dsub]`` -> ``[B, H, T, M * dsub]`` in ``dtype``.
    """
    B, H, T, M = codes.shape
    Hc, M2, ksub, dsub = centroids.shape
    # one flat row gather: row (h * M + m) * ksub + code of the [Hc * M * ksub, dsub] table
    flat = centroids.to(dtype).reshape(Hc * M * ksub, dsub)
    off = torch.arange(M, device=codes.device) * ksub
    if Hc > 1:
        off = off + torch.arange(Hc, device=codes.device)[:, None] * (M * ksub)  # [H, M]
    idx = codes.long() + off.view(1, Hc, 1, M)
    return flat.index_select(0, idx.reshape(-1)).view(B, H, T, M * dsub)


def inner_prod_table(q: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Lookup table of ``q . centroid`` for every subspace and centroid.

    Parameters
    ----------
    q : Tensor ``[B, H_q, D]``
    centroids : Tensor ``[Hc, M, ksub, dsub]``, ``Hc`` in ``{1, H_kv}`` with ``H_q % H_kv == 0``

    Returns
    -------
    lut : float32 Tensor ``[B, H_q, M, ksub]``
    """
    B, Hq, D = q.shape
    Hc, M, ksub, dsub = centroids.shape
    qs = q.float().reshape(B, Hq, M, dsub)
    if Hc == 1:
        c = centroids.float()[0].unsqueeze(0).expand(Hq, M, ksub, dsub)
    else:
        c = centroids.float().repeat_interleave(Hq // Hc, dim=0)  # [Hq, M, ksub, dsub]
    return torch.einsum("bhmd,hmkd->bhmk", qs, c)


def merge_state(
    v_a: torch.Tensor, s_a: torch.Tensor, v_b: torch.Tensor, s_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention results over disjoint key sets.

    ``v_*``: ``[..., D]`` normalized outputs; ``s_*``: ``[...]`` float32 log-sum-exp of the scores
    (``-inf`` for an empty set). Returns ``(v, s)``; an all-empty merge gives ``v = 0, s = -inf``.
    """
    s_a = s_a.float()
    s_b = s_b.float()
    s_max = torch.maximum(s_a, s_b)
    s_max_safe = torch.where(torch.isinf(s_max), torch.zeros_like(s_max), s_max)
    w_a = torch.exp(s_a - s_max_safe)
    w_b = torch.exp(s_b - s_max_safe)
    denom = w_a + w_b
    s = torch.where(denom > 0, s_max_safe + torch.log(denom), torch.full_like(s_max, float("-inf")))
    denom_safe = torch.where(denom > 0, denom, torch.ones_like(denom))
    v = (v_a.float() * w_a[..., None] + v_b.float() * w_b[..., None]) / denom_safe[..., None]
    return v, s


def _softmax_partial(scores: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # scores, valid: [..., T] -> probabilities [..., T] (0 where invalid) and lse [...] (-inf if none valid)
    scores = scores.masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    lse_safe = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    p = torch.exp(scores - lse_safe[..., None]).masked_fill(~valid, 0.0)
    return p, lse


def pq_attention_partial(
    q: torch.Tensor,
    k_codes: torch.Tensor,
    v_codes: torch.Tensor,
    k_centroids: torch.Tensor,
    v_centroids: torch.Tensor,
    pq_lens: torch.Tensor,
    starts: torch.Tensor | None = None,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention of one query per head over PQ codes, straight from the codes.

    Scores come from the lookup table ``q . centroid`` summed over subspaces; the output is the sum
    over subspaces and centroids of (softmax mass that chose the centroid) * centroid.

    Parameters
    ----------
    q : ``[B, H_q, D]``
    k_codes, v_codes : ``[B, H_kv, T, M]`` (``T`` may exceed the valid length: capacity)
    k_centroids, v_centroids : ``[Hc, M, ksub, dsub]``
    pq_lens : int ``[B]``: token ``t`` of sequence ``b`` is valid iff ``starts[b] <= t < pq_lens[b]``
    starts : int ``[B]`` or None (zeros): first valid token (left padding)
    scale : softmax scale, default ``D ** -0.5``

    Returns
    -------
    out : float32 ``[B, H_q, D]`` (zeros where no token is valid), lse : float32 ``[B, H_q]``
    """
    B, Hq, D = q.shape
    _, Hkv, T, M = k_codes.shape
    G = Hq // Hkv
    ksub_k, ksub = k_centroids.shape[2], v_centroids.shape[2]  # keys and values may have different code widths
    scale = D**-0.5 if scale is None else scale
    dev = q.device
    if starts is None:
        starts = torch.zeros(B, dtype=torch.int32, device=dev)
    t = torch.arange(T, device=dev)
    valid = (t[None, :] >= starts.long()[:, None]) & (t[None, :] < pq_lens.long()[:, None])  # [B, T]

    # scores[b, hkv, g, t] = sum_m lut[b, hkv, g, m, k_codes[b, hkv, t, m]]
    lut = inner_prod_table(q, k_centroids).view(B, Hkv, G, M, ksub_k)
    lut = lut.permute(0, 1, 3, 4, 2)  # [B, Hkv, M, ksub_k, G]
    b_idx = torch.arange(B, device=dev).view(B, 1, 1, 1)
    h_idx = torch.arange(Hkv, device=dev).view(1, Hkv, 1, 1)
    m_idx = torch.arange(M, device=dev).view(1, 1, 1, M)
    picked = lut[b_idx, h_idx, m_idx, k_codes.long()]  # [B, Hkv, T, M, G]
    scores = picked.sum(3).permute(0, 1, 3, 2) * scale  # [B, Hkv, G, T]
    p, lse = _softmax_partial(scores, valid[:, None, None, :])

    # mass[b, hkv, g, m, k] = sum_t p[b, hkv, g, t] * [v_codes[b, hkv, t, m] == k]
    idx = v_codes.long().permute(0, 1, 3, 2).unsqueeze(2).expand(B, Hkv, G, M, T)
    mass = torch.zeros(B, Hkv, G, M, ksub, device=dev, dtype=torch.float32)
    mass.scatter_add_(-1, idx, p.unsqueeze(3).expand(B, Hkv, G, M, T).contiguous())
    vc = _expand_heads(v_centroids.float(), Hkv)  # [Hkv, M, ksub, dsub]
    out = torch.einsum("bhgmk,hmkd->bhgmd", mass, vc).reshape(B, Hq, D)
    return out, lse.reshape(B, Hq)


def dense_attention_partial(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    valid: torch.Tensor,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode attention over full-precision keys ``[B, H_kv, T, D]`` with a mask ``valid [B, T]``.

    Returns float32 ``out [B, H_q, D]`` and ``lse [B, H_q]``.
    """
    B, Hq, D = q.shape
    Hkv, T = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    qg = q.float().view(B, Hkv, G, D)
    scores = torch.einsum("bhgd,bhtd->bhgt", qg, k.float()) * scale
    p, lse = _softmax_partial(scores, valid[:, None, None, :])
    v = v.float().masked_fill(~valid[:, None, :, None], 0.0)  # 0 * inf would be NaN
    out = torch.einsum("bhgt,bhtd->bhgd", p, v)
    return out.reshape(B, Hq, D), lse.reshape(B, Hq)


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
):
    """One decode step of attention over a PQ cache plus its full-precision residual window.

    Token positions: codes hold positions ``[0, pq_lens[b])``; residual slot ``j`` holds position
    ``pq_lens[b] + j`` and is valid iff ``j < res_lens[b]``; any position below ``starts[b]`` is
    padding and is ignored. The two parts are merged through a float32 log-sum-exp.

    Parameters
    ----------
    q : ``[B, H_q, D]``
    k_codes, v_codes : ``[B, H_kv, T, M]``
    k_centroids, v_centroids : ``[Hc, M, ksub, dsub]``
    pq_lens, res_lens : int32 ``[B]``
    k_res, v_res : ``[B, H_kv, R, D]``
    starts : int32 ``[B]`` or None
    scale : float or None (``D ** -0.5``)

    return_lse : also return the float32 log-sum-exp ``[B, H_q]`` (``-inf`` where nothing is valid)

    Returns
    -------
    out : ``[B, H_q, D]`` in ``q.dtype`` (zeros for a sequence with no valid token); ``(out, lse)``
    with ``return_lse``
    """
    B = q.shape[0]
    if starts is None:
        starts = torch.zeros(B, dtype=torch.int32, device=q.device)
    o_pq, s_pq = pq_attention_partial(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, starts, scale)
    R = k_res.shape[2]
    j = torch.arange(R, device=q.device)
    valid_res = (j[None, :] < res_lens.long()[:, None]) & (
        (pq_lens.long()[:, None] + j[None, :]) >= starts.long()[:, None]
    )
    o_res, s_res = dense_attention_partial(q, k_res, v_res, valid_res, scale)
    out, lse = merge_state(o_pq, s_pq, o_res, s_res)
    if return_lse:
        return out.to(q.dtype), lse
    return out.to(q.dtype)


def attention_column_sums(q: torch.Tensor, k: torch.Tensor, pad: torch.Tensor | None = None, scale: float | None = None,
                          lse: torch.Tensor | None = None, chunk_elems: int = 1 << 26) -> torch.Tensor:
    """Attention each key receives from a block of causal queries, summed over the queries and the query heads of
    its KV head (the accumulated-attention score of heavy-hitter eviction).

    ``q [B, H_q, C, D]`` are the last ``C`` positions of the key sequence ``k [B, H_kv, N, D]``: query ``c`` sits at
    key index ``N - C + c`` and sees keys ``j <= N - C + c`` with ``j >= pad[b]`` (left padding); queries at
    positions below ``pad[b]`` count for nothing. Returns float32 ``[B, H_kv, N]``:
    ``sum over g, c of softmax(scale * q . k)``.

    ``lse [B, H_q, C]`` (float, natural log), when given, is each query's log-sum-exp of the attention it ran
    (decode steps whose scores are taken later): the sum is then of ``exp(scale * q . k - lse)`` over the same visible
    keys, and a query with ``lse = +inf`` adds nothing.
    """
    B, Hq, C, D = q.shape
    H, N = k.shape[1], k.shape[2]
    G = Hq // H
    scale = D**-0.5 if scale is None else float(scale)
    if lse is not None and tuple(lse.shape) != (B, Hq, C):
        raise ValueError(f"attention_column_sums: lse has shape {tuple(lse.shape)}, expected {(B, Hq, C)}")
    pad = torch.zeros(B, dtype=torch.long, device=q.device) if pad is None else pad.to(q.device).long()
    qg = q.float().view(B, H, G, C, D)
    kf = k.float()
    out = torch.zeros(B, H, N, dtype=torch.float32, device=q.device)
    step = max(1, chunk_elems // max(1, B * Hq * N))
    j = torch.arange(N, device=q.device)
    for c0 in range(0, C, step):
        c1 = min(C, c0 + step)
        hi = N - C + c1  # keys past the chunk's last query are masked for all of its queries
        qpos = torch.arange(c0, c1, device=q.device) + (N - C)
        logits = torch.einsum("bhgcd,bhnd->bhgcn", qg[:, :, :, c0:c1], kf[:, :, :hi]) * scale
        seen = (j[None, None, :hi] <= qpos[None, :, None]) & (j[None, None, :hi] >= pad[:, None, None])  # [B, c, hi]
        logits = logits.masked_fill(~seen[:, None, None], float("-inf"))
        if lse is None:
            p = logits.softmax(-1).nan_to_num(0.0)
        else:
            p = (logits - lse.float().view(B, H, G, C)[:, :, :, c0:c1, None]).exp().nan_to_num(0.0)
        p = p * (qpos[None, :] >= pad[:, None])[:, None, None, :, None]
        out[:, :, :hi] += p.sum((2, 3))
    return out


def attention_column_sums_coded(q: torch.Tensor, k_codes: torch.Tensor, k_centroids: torch.Tensor, k_window: torch.Tensor,
                                pad: torch.Tensor | None = None, scale: float | None = None,
                                lse: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`attention_column_sums` over keys held as PQ codes followed by a full-precision window: ``k_codes
    [B, H_kv, P, M]`` with ``k_centroids [Hc, M, ksub, dsub]`` (``Hc`` 1 or ``H_kv``) are keys ``[0, P)``,
    ``k_window [B, H_kv, W, D]`` keys ``[P, P + W)``; returns ``[B, H_kv, P + W]``. This is how committed decode
    queries are scored (with their own ``lse``)."""
    k = torch.cat([pq_decode(k_codes, k_centroids, torch.float32), k_window.float()], 2)
    return attention_column_sums(q, k, pad, scale, lse)


def _check_head_map(x: torch.Tensor, mats: torch.Tensor, out, index, raw) -> None:
    if x.dim() != 4:
        raise ValueError(f"head_map takes x [B, H, R, D], got shape {tuple(x.shape)}")
    B, H, R, D = x.shape
    if mats.dim() != 3 or mats.shape[1:] != (D, D) or mats.shape[0] not in (1, H):
        raise ValueError(f"head_map takes mats [1 or H={H}, D={D}, D={D}], got shape {tuple(mats.shape)}")
    if mats.dtype != torch.float32:
        raise ValueError(f"head_map takes float32 mats, got {mats.dtype}")
    if out is None:
        if index is not None or raw is not None:
            raise ValueError("head_map: index and raw need out (the buffer written in place)")
        return
    if out.dim() != 4 or out.shape[:2] != (B, H) or out.shape[3] != D:
        raise ValueError(f"head_map: out must be [B={B}, H={H}, T, D={D}], got shape {tuple(out.shape)}")
    if raw is not None and raw.shape != out.shape:
        raise ValueError(f"head_map: raw must have out's shape {tuple(out.shape)}, got {tuple(raw.shape)}")
    if index is not None and (index.numel() != 1 or index.dtype not in (torch.int32, torch.int64)):
        raise ValueError(f"head_map: index must be a one-element integer tensor, got {index.dtype} x {index.numel()}")
    if R > out.shape[2]:
        raise ValueError(f"head_map: {R} rows do not fit out's {out.shape[2]}")


def _check_head_map_kv(k, v, kmats, vmats, kout, vout, index, kraw, vraw) -> None:
    if kout is None or vout is None:
        raise ValueError("head_map_kv writes in place: give both kout and vout (use head_map for a fresh result)")
    if (kraw is None) != (vraw is None):
        raise ValueError("head_map_kv: give both raw buffers (kraw and vraw) or neither")
    _check_head_map(k, kmats, kout, index, kraw)
    _check_head_map(v, vmats, vout, index, vraw)
    if v.shape != k.shape or v.dtype != k.dtype:
        raise ValueError(f"head_map_kv: v must match k, got {tuple(v.shape)} {v.dtype} against {tuple(k.shape)} {k.dtype}")
    if vout.shape != kout.shape or vout.dtype != kout.dtype:
        raise ValueError(f"head_map_kv: vout must match kout, got {tuple(vout.shape)} {vout.dtype} against "
                         f"{tuple(kout.shape)} {kout.dtype}")
    if kraw is not None and (kraw.dtype != vraw.dtype):
        raise ValueError(f"head_map_kv: vraw must have kraw's dtype {kraw.dtype}, got {vraw.dtype}")


def head_map_kv(k: torch.Tensor, v: torch.Tensor, kmats: torch.Tensor, vmats: torch.Tensor, kout: torch.Tensor,
                vout: torch.Tensor, index: torch.Tensor | None = None, kraw: torch.Tensor | None = None,
                vraw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's key and value rows into their windows: :func:`head_map` of ``k`` by ``kmats`` into ``kout`` (and
    ``kraw``) and of ``v`` by ``vmats`` into ``vout`` (and ``vraw``), at the same rows. ``k`` and ``v`` have one
    shape and dtype, so do ``kout`` and ``vout``; both raw buffers or neither. Returns ``(kout, vout)``; the Triton
    kernel does both in one launch."""
    _check_head_map_kv(k, v, kmats, vmats, kout, vout, index, kraw, vraw)
    return head_map(k, kmats, out=kout, index=index, raw=kraw), head_map(v, vmats, out=vout, index=index, raw=vraw)


def head_map(x: torch.Tensor, mats: torch.Tensor, dtype: torch.dtype | None = None, out: torch.Tensor | None = None,
             index: torch.Tensor | None = None, raw: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head linear map of rows, ``y[b, h, r] = x[b, h, r] @ mats[h]``, in float32.

    ``x [B, H, R, D]``; ``mats [Hm, D, D]`` float32, ``Hm`` 1 (one matrix for every head) or ``H``. Without ``out``:
    returns ``y [B, H, R, D]`` in ``dtype`` (default ``x.dtype``). With ``out [B, H, T, D]``: writes ``y`` into rows
    ``index .. index + R - 1`` of ``out`` in its dtype (``index``: a one-element integer tensor read on the device, so
    the call can be captured in a CUDA graph; None for row 0), and ``x`` itself into the same rows of ``raw`` (same
    shape as ``out``) when given; returns ``out``. The cache's transforms: the query to the codes' space, the new
    window rows to it (with their untransformed copy), the attention output back.

    Rows past ``out``'s end (``index + R > T``) are the caller's error. The host cannot see a device index without a
    synchronization, so it is not checked there: this reference raises (``index_copy_``), the Triton kernel leaves
    those rows unwritten and writes nothing outside ``out`` and ``raw``."""
    _check_head_map(x, mats, out, index, raw)
    B, H, R, D = x.shape
    y = torch.einsum("bhrd,hde->bhre", x.float(), mats.expand(H, D, D))
    if out is None:
        return y.to(x.dtype if dtype is None else dtype)
    if index is None:
        out[:, :, :R] = y
        if raw is not None:
            raw[:, :, :R] = x
        return out
    # one row (a decode step): the index itself, as the cache's own index copies (no extra launch)
    rows = index.reshape(1).long() if R == 1 else torch.arange(R, device=out.device) + index.to(out.device, torch.long)
    out.index_copy_(2, rows, y.to(out.dtype))
    if raw is not None:
        raw.index_copy_(2, rows, x.to(raw.dtype))
    return out
