"""The ``million`` attention function, registered through transformers' ``AttentionInterface``.

Prefill and any call that receives full-precision keys go to transformers' SDPA path unchanged. A
decode step whose cache layer returned a :class:`~million.cache.PQState` attends straight on the
PQ codes plus the full-precision window (:func:`million.ops.pq_decode_attention`).
"""

from __future__ import annotations

import torch

from . import ops

NAME = "million"


def _starts_from_mask(attention_mask: torch.Tensor | None, batch: int, device) -> torch.Tensor | None:
    """First valid key position of every sequence (left padding) from a 4D mask ``[B, 1, q, kv]``."""
    if attention_mask is None:
        return None
    row = attention_mask[:, 0, -1, :]
    valid = row if row.dtype == torch.bool else row == 0
    if valid.shape[0] == 1 and batch > 1:
        valid = valid.expand(batch, -1)
    return valid.to(torch.int32).argmax(-1).to(torch.int32)


def million_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """``AttentionInterface`` function: ``query [B, H_q, q_len, D]`` -> ``([B, q_len, H_q, D], None)``."""
    from .cache import PQState

    if isinstance(key, PQState):
        st = key
        B, Hq, q_len, D = query.shape
        if q_len != 1:
            raise ValueError(f"PQ decode attention takes one query token, got {q_len}")
        if st.static or attention_mask is None:
            starts = st.starts  # static steps carry their padding starts (a mask made during capture is stale)
        else:
            starts = _starts_from_mask(attention_mask, B, query.device)
        q = query[:, :, 0]
        if st.k_folded is not None:  # static step without padding: sinks, window and codes in one kernel call
            if st.q_map is not None:
                return _transformed(st, q, None, scaling).to(query.dtype).unsqueeze(1), None
            out = ops.pq_decode_attention(q, st.k_codes, st.v_codes, st.k_centroids, st.v_centroids, st.pq_lens,
                                          st.k_folded, st.v_folded, st.folded_lens, st.folded_starts, scaling)
            return out.unsqueeze(1), None
        if st.q_map is not None:
            return _transformed(st, q, starts, scaling).to(query.dtype).unsqueeze(1), None
        args = (q, st.k_codes, st.v_codes, st.k_centroids, st.v_centroids, st.pq_lens, st.k_window, st.v_window, st.res_lens)
        if not st.sink_length:
            out = ops.pq_decode_attention(*args, starts, scaling)
        else:
            # positions [0, S) come from the full-precision sink buffers, the rest from codes + window
            if starts is None:
                starts = torch.zeros(B, dtype=torch.int32, device=query.device)
            main_starts = torch.clamp(starts, min=st.sink_length)
            o_main, s_main = ops.pq_decode_attention(*args, main_starts, scaling, return_lse=True)
            i = torch.arange(st.sink_length, device=query.device)
            valid = (i[None, :] < st.sink_lens[:, None]) & (i[None, :] >= starts[:, None])
            o_sink, s_sink = ops.dense_attention_partial(q, st.k_sink, st.v_sink, valid, scaling)
            out, _ = ops.merge_state(o_main, s_main, o_sink, s_sink)
            out = out.to(query.dtype)
        return out.unsqueeze(1), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def _transformed(st, q: torch.Tensor, starts, scaling) -> torch.Tensor:
    """Decode attention when the codes live in a transformed space (``PQState.q_map``): the query is mapped to
    the codes' space, and so is the full-precision window (``k_map`` / ``v_map``, the encode transforms), so
    that one call of the decode kernel attends codes and window (``q . k = (q @ q_map) . (k @ k_map)`` and the
    attention output is linear in the values: mapping the merged output back with ``v_inverse`` is exact).
    The sinks are attended with the plain query and merged through their float32 log-sum-exp.
    Returns ``[B, H_q, D]``."""
    B, Hq, D = q.shape
    H = st.k_window.shape[1]
    G = Hq // H
    qm = torch.einsum("bhgd,hde->bhge", q.float().view(B, H, G, D), st.q_map.expand(H, D, D)).reshape(B, Hq, D)
    if st.k_folded is not None:  # sinks and window as one mapped block, codes from position S: one kernel call
        o = ops.pq_decode_attention(qm.to(q.dtype), st.k_codes, st.v_codes, st.k_centroids, st.v_centroids, st.pq_lens,
                                    st.k_folded, st.v_folded, st.folded_lens, st.folded_starts, scaling)
        return torch.einsum("bhgd,hde->bhge", o.float().view(B, H, G, D), st.v_inverse.expand(H, D, D)).reshape(B, Hq, D)
    if st.k_window_t is not None:  # kept mapped by the cache, token by token
        kw, vw = st.k_window_t, st.v_window_t
    else:
        kw = torch.einsum("bhtd,hde->bhte", st.k_window.float(), st.k_map.expand(H, D, D)).to(q.dtype)
        vw = torch.einsum("bhtd,hde->bhte", st.v_window.float(), st.v_map.expand(H, D, D)).to(q.dtype)
    if starts is None:
        starts = torch.zeros(B, dtype=torch.int32, device=q.device)
    main_starts = torch.clamp(starts, min=st.sink_length)
    o, s = ops.pq_decode_attention(qm.to(q.dtype), st.k_codes, st.v_codes, st.k_centroids, st.v_centroids, st.pq_lens,
                                   kw, vw, st.res_lens, main_starts, scaling, return_lse=True)
    out = torch.einsum("bhgd,hde->bhge", o.float().view(B, H, G, D), st.v_inverse.expand(H, D, D)).reshape(B, Hq, D)
    if st.sink_length:
        i = torch.arange(st.sink_length, device=q.device)
        valid = (i[None, :] < st.sink_lens[:, None]) & (i[None, :] >= starts[:, None])
        o_s, s_s = ops.dense_attention_partial(q, st.k_sink, st.v_sink, valid, scaling)
        out, _ = ops.merge_state(out, s, o_s, s_s)
    return out


def register() -> None:
    """Register ``attn_implementation="million"`` (attention function and its mask) with transformers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, million_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
