"""The ``million`` attention function, registered through transformers' ``AttentionInterface``.

Prefill and any call that receives full-precision keys go to transformers' SDPA path unchanged (except the prefill
of a cache that evicts, on a CUDA GPU: torch's cuDNN or flash kernel, which also hands back the log-sum-exp its scoring needs).
A decode step whose cache layer returned a :class:`~million.cache.PQState` attends straight on the
PQ codes plus the full-precision window (:func:`million.ops.pq_decode_attention`).
"""

from __future__ import annotations

import threading

import torch

from . import ops

NAME = "million"


class _Observer(threading.local):
    """Hand-off from a caching layer with eviction to the attention call that follows its ``update``: the layer
    of a full-precision step wants that step's queries (see ``MillionLayer.observe_dense``)."""

    layer = None
    layer_idx = None

    def set(self, layer, layer_idx) -> None:
        self.layer, self.layer_idx = layer, layer_idx

    def take(self, module):
        layer, idx = self.layer, self.layer_idx
        self.layer = self.layer_idx = None
        if layer is None or getattr(module, "layer_idx", idx) != idx:
            return None
        return layer


_observer = _Observer()


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
        if st.static or attention_mask is None or st.code_starts is not None or not _reads_starts(st):
            # static steps carry their padding starts (a mask made during capture is stale); so do caches that
            # evict (their mask no longer lines up with the kept tokens). A step that attends from the cache's own
            # code starts (sinks, or sinks folded into the window) does not read them: no kernels spent on the mask
            starts = st.starts
        else:
            starts = _starts_from_mask(attention_mask, B, query.device)
        out = _pq_attention(st, query[:, :, 0], starts, scaling, return_lse=st.observer is not None)
        if st.observer is not None:
            out, lse = out
            st.observer.observe_step(query[:, :, 0], lse, scaling)
        return out.to(query.dtype).unsqueeze(1), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layer = _observer.take(module)
    if layer is not None:
        layer._ensure_pad(attention_mask, key, value)  # where each sequence's sinks are
        own = layer.dense_mask(query.shape[2], key.shape[2])
        if own is not None:  # after an eviction, padded sequences keep different counts: rows right-aligned
            attention_mask = own
    if layer is not None and layer.evict is not None:
        done = _prefill_with_lse(module, query, key, value, attention_mask, dropout, scaling, kwargs)
        if done is not None:  # the attention's own log-sum-exp: scoring the prompt needs only the column pass
            out, lse, _ = done
            layer.observe_dense(query, key, attention_mask, scaling, lse=lse)
            return out, None
        layer.observe_dense(query, key, attention_mask, scaling)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


LSE_PREFILL = True  # switch for tests and benchmarks: False always takes transformers' SDPA path (and two score passes)
PREFILL_KERNELS = ("cudnn", "flash")  # tried in this order; both return the log-sum-exp (natural log)


def _prefill_with_lse(module, query, key, value, attention_mask, dropout, scaling, kwargs):
    """A causal prefill from an empty cache (no mask, as many keys as queries) through torch's cuDNN or flash attention
    kernel, which also returns every query's log-sum-exp: ``(out [B, q, H_q, D], lse [B, H_q, q], kernel name)``, or None
    where neither applies (CPU, float32, a mask, dropout, soft-capping, head_dim over 256 or not a multiple of 8)."""
    B, Hq, C, D = query.shape
    if not (LSE_PREFILL and query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and attention_mask is None
            and C > 1 and key.shape[2] == C and value.shape[-1] == D and dropout == 0.0 and D % 8 == 0 and D <= 256
            and kwargs.get("is_causal", getattr(module, "is_causal", True)) and kwargs.get("softcap") is None
            and kwargs.get("position_bias") is None and Hq % key.shape[1] == 0):
        return None
    G = Hq // key.shape[1]
    if G > 1:
        key, value = key.repeat_interleave(G, 1), value.repeat_interleave(G, 1)
    for kernel in PREFILL_KERNELS:
        try:
            if kernel == "cudnn":
                out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(query, key, value, None, True, 0.0, True,
                                                                              False, scale=scaling)[:2]
            else:
                out, lse = torch.ops.aten._scaled_dot_product_flash_attention(query, key, value, 0.0, True, False,
                                                                              scale=scaling)[:2]
        except (RuntimeError, AttributeError):  # a build or an architecture without that kernel
            continue
        return out.transpose(1, 2).contiguous(), lse.reshape(B, Hq, -1)[:, :, :C].float(), kernel
    return None


def _reads_starts(st) -> bool:
    """Whether :func:`_pq_attention` reads the ``starts`` it is given (otherwise the codes start where the cache says:
    ``st.code_from`` with sinks, folded or apart, ``st.code_starts`` with eviction)."""
    return st.k_folded is None and st.sink_length == 0 and st.code_starts is None


def _pq_attention(st, q: torch.Tensor, starts, scaling, return_lse: bool = False):
    """One decode step on a :class:`~million.cache.PQState`: one decode-kernel call attends the codes and the
    full-precision rows (the window, and the sinks too when the cache folded them in front of it). With transforms
    (``st.q_map``) the query is mapped to the codes' space, the rows are the cache's mapped window (``q . k =
    (q @ q_map) . (k @ A)``), and the output is mapped back with ``v_inverse`` (exact: attention is linear in the
    values). Sinks kept apart are attended with the plain query and merged through their float32 log-sum-exp.
    Sinks kept apart are each sequence's first ``S`` valid positions, attended from their rows once committed
    (``st.sink_lens``): the codes and the window start after them, at ``st.code_from`` (which the cache keeps, with
    eviction at the first kept slot once the sinks are all committed).
    Returns ``[B, H_q, D]`` (and the float32 log-sum-exp ``[B, H_q]`` with ``return_lse``)."""
    B, Hq, D = q.shape
    H = st.k_window.shape[1]
    G = Hq // H
    S = st.sink_length
    if st.k_folded is not None:  # static step without padding: codes from position S, sinks + window as one block
        k_res, v_res, lens, main_starts, apart = st.k_folded, st.v_folded, st.folded_lens, st.code_from, False
    else:
        k_res, v_res = (st.k_window, st.v_window) if st.q_map is None else (st.k_window_t, st.v_window_t)
        lens, apart = st.res_lens, S > 0
        if apart:  # each sequence's committed sinks (its first S valid positions) come from the sink rows
            main_starts = st.code_from  # after the padding and the committed sinks (kept by the cache)
        else:
            main_starts = starts if st.code_starts is None else st.code_starts
    qk = q
    if st.q_map is not None:
        qk = ops.head_map(q.view(B, H, G, D), st.q_map).reshape(B, Hq, D)
    out = ops.pq_decode_attention(qk, st.k_codes, st.v_codes, st.k_centroids, st.v_centroids, st.pq_lens, k_res, v_res, lens,
                                  main_starts, scaling, return_lse=apart or return_lse)
    if apart or return_lse:
        out, s = out
    if st.q_map is not None:  # float32 where it is merged with the sinks' part next, else the query's dtype
        out = ops.head_map(out.view(B, H, G, D), st.v_inverse, torch.float32 if apart else q.dtype).reshape(B, Hq, D)
    if apart:
        valid = torch.arange(S, device=q.device)[None, :] < st.sink_lens[:, None]
        o_s, s_s = ops.dense_attention_partial(q, st.k_sink, st.v_sink, valid, scaling)
        out, s = ops.merge_state(out, s, o_s, s_s)
    return (out, s) if return_lse else out


def register() -> None:
    """Register ``attn_implementation="million"`` (attention function and its mask) with transformers."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, million_attention_forward)
    AttentionMaskInterface.register(NAME, sdpa_mask)
