"""Q-Hitter-style sparse-quantized KV cache (Zhang et al., MLSys 2024), at matched memory.

Tokens are kept or evicted per layer and KV head: a ``recent`` share of the budget keeps the most
recent tokens; the rest keeps the tokens with the highest accumulated attention, discounted by
their quantization error ("quantization friendliness": ``score / (1 + err / mean err)``). Kept
tokens are stored 4-bit (asymmetric uniform, per-token groups of 32, fp16 scale and zero point).
The budget grows with the sequence, ``ceil(keep * t)`` tokens at ``t`` tokens seen, with ``keep``
chosen so that the bits per element of the whole sequence equal the target (``bits / bits per
kept element``, counting codes, scales, zero points and the fp16 score of each kept token).

Evaluation runs the window in chunks of ``chunk`` tokens (eviction after every chunk: within a
chunk tokens see each other, as in a chunked prefill); decoding evicts after every token.
Accumulated attention is computed from the post-RoPE queries (a forward hook on ``q_proj`` and on
the rotary embedding module) against the keys the cache returns.

Retrieval settings (the options of :class:`million.Eviction`, so the harness can run the rule MillionCache serves in
the all-quantized protocol): ``observe`` makes a multi-token step add only the attention of its last ``observe``
queries to the scores (SnapKV's observation window; with it, ``greedy`` prefills the prompt in one step, so the
question at its end decides what is kept), and ``pool`` / ``pool_side`` max-pool the discounted scores over
neighbouring tokens before choosing.

``scope="layer"`` (evaluation only; measured not to help, docs/quality.md) shares one budget among the KV heads of a
layer: every head keeps the recent share, the heavy hitters are chosen across heads (after ``head_floor`` of each
head's own), heads are stored compacted with padding and each layer's attention gets a mask per query head.
"""

from __future__ import annotations

import math

import torch
from transformers.cache_utils import Cache, DynamicLayer

from .calibdata import attention_modules, geometry, rope, rotary_module
from ..compat import cache_arg
from .methods import KVMethod
from .quant import uniform_qdq


def _discounted(score, err, among=None, on: bool = True):
    """Scores discounted by quantization error ("quantization friendliness"): ``score / (1 + err / mean err)``, the
    mean over the last axis, or over the slots where ``among`` is True; ``on=False`` (the rule's ``friendliness`` off):
    the scores as they are."""
    if not on:
        return score
    if among is None:
        mean = err.mean(-1, keepdim=True)
    else:
        mean = (err * among).sum(-1, keepdim=True) / among.sum(-1, keepdim=True).clamp_min(1)
    return score / (1 + err / mean.clamp_min(1e-12))


class _QHLayer(DynamicLayer):
    def __init__(self, layer_idx: int, owner: "QHitterRunner"):
        super().__init__()
        self.layer_idx = layer_idx
        self.owner = owner
        self.k = self.v = self.score = self.err = self.pos = None
        self.kh = self.vh = self.tier = None  # the high tier (methods with ``high > 0``): its K/V and which tokens use it
        self.valid = None  # scope "layer": which slots of each head hold a token (heads keep different counts)

    def get_seq_length(self) -> int:
        return self.owner.seen

    def update(self, key_states, value_states, *args, **kwargs):
        o = self.owner
        m = o.method
        tiers = m.high > 0
        kq = m.qdq_key(self.layer_idx, key_states, o.seen)
        vq = m.qdq_value(self.layer_idx, value_states, o.seen)
        B, H, C, D = key_states.shape
        err = ((kq - key_states).float().pow(2).sum(-1) / key_states.float().pow(2).sum(-1).clamp_min(1e-12)
               + (vq - value_states).float().pow(2).sum(-1) / value_states.float().pow(2).sum(-1).clamp_min(1e-12)) / 2
        pos = torch.arange(o.seen, o.seen + C, device=key_states.device).view(1, 1, C).expand(B, H, C)
        new = torch.zeros(B, H, C, device=kq.device)
        if tiers:
            kh, vh = m.qdq_high(key_states, o.seen), m.qdq_high(value_states, o.seen)
        layer_scope = m.scope == "layer"
        if layer_scope:
            ones = torch.ones(B, H, C, dtype=torch.bool, device=kq.device)
            valid = ones if self.valid is None else torch.cat([self.valid, ones], 2)
        if self.k is None:
            K, V, score, errs, P = kq, vq, new, err, pos
            if tiers:
                KH, VH, T = kh, vh, new.bool()
        else:
            K, V = torch.cat([self.k, kq], 2), torch.cat([self.v, vq], 2)
            score = torch.cat([self.score, new], 2)
            errs, P = torch.cat([self.err, err], 2), torch.cat([self.pos, pos], 2)
            if tiers:
                KH, VH, T = torch.cat([self.kh, kh], 2), torch.cat([self.vh, vh], 2), torch.cat([self.tier, new.bool()], 2)
        # accumulated attention of this chunk's queries (post-RoPE) on every key as stored so far
        q = o.taps.pop(self.layer_idx)  # [B, C, Hq * D]
        cos, sin = o.taps["rope"]
        Hq = q.shape[-1] // D
        q = rope(q.view(B, C, Hq, D).transpose(1, 2).float(), cos[:, None].float(), sin[:, None].float())
        G = Hq // H
        q = q.view(B, H, G, C, D)
        n = K.shape[2]
        n_old = n - C
        causal = torch.ones(C, C, dtype=torch.bool, device=K.device).tril()
        allowed = torch.cat([torch.ones(C, n_old, dtype=torch.bool, device=K.device), causal], 1)
        w = m.rule.observe
        if w is not None and C > w:  # a prompt scores by its observation window only
            q, allowed = q[:, :, :, C - w :], allowed[C - w :]
        Ks = torch.where(T[..., None], KH, K) if tiers else K
        s = torch.einsum("bhgcd,bhnd->bhgcn", q, Ks.float()) * D**-0.5
        if layer_scope:
            allowed = allowed & valid[:, :, None, None, :]
        p = s.masked_fill(~allowed, float("-inf")).softmax(-1)
        score = score + p.sum((2, 3))
        # evict down to the budget at seen + C tokens
        budget = m.budget(o.seen + C)
        if layer_scope:
            return self._evict_layer(K, V, score, errs, P, valid, budget, o.seen + C)
        if n > budget:
            n_recent = min(budget, int(m.rule.recent * budget))
            n_heavy = budget - n_recent
            old = n - n_recent
            heavy = m.rule.heavy(_discounted(score[..., :old], errs[..., :old], on=m.rule.friendliness), n_heavy)
            idx = torch.cat([heavy, torch.arange(old, n, device=K.device).expand(B, H, n_recent)], -1)  # [B, H, budget]
            g = lambda x: x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))  # noqa: E731
            gt = lambda x: x.gather(2, idx)  # noqa: E731
        else:  # nothing to evict
            idx, g, gt = torch.arange(n, device=K.device).expand(B, H, n), lambda x: x, lambda x: x
        self.k, self.v = g(K), g(V)
        self.score, self.err, self.pos = gt(score), gt(errs), gt(P)
        if not tiers:
            return K, V
        # the high tier: the strongest kept tokens among those high already or new in this step (a token's original
        # K/V are at hand only when it enters; a high token may be demoted to its code later, a coded one not promoted)
        eligible = T.clone()
        eligible[..., n_old:] = True
        eligible &= P >= m.exact_tokens()  # sinks are stored exact already
        kept = torch.zeros_like(T).scatter(2, idx, True)
        adj = _discounted(score, errs, on=m.rule.friendliness)
        rank = m.rule.pooled(adj) if m.high_by == "pooled" else adj
        top = rank.masked_fill(~(kept & eligible), float("-inf")).topk(min(m.high_budget(o.seen + C), n), -1)
        T = torch.zeros_like(T).scatter(2, top.indices, torch.isfinite(top.values))
        self.kh, self.vh, self.tier = g(KH), g(VH), gt(T)
        return torch.where(T[..., None], KH, K), torch.where(T[..., None], VH, V)

    def _evict_layer(self, K, V, score, errs, P, valid, budget: int, seen: int):
        """Scope "layer": the layer keeps ``H * budget`` tokens per sequence; every head keeps the recent tokens, and
        the heavy hitters are chosen across heads (:func:`_layer_heavy`), so heads keep different counts. Slots are
        compacted per head (kept tokens in position order, then padding with ``valid`` False, which attention and
        scoring skip)."""
        m = self.owner.method
        B, H, n = score.shape
        n_recent = min(budget, int(m.rule.recent * budget))
        recent = valid & (P >= seen - n_recent)
        cand = valid & ~recent
        total = H * budget - recent.sum((1, 2))
        if int(valid.sum((1, 2)).max()) <= H * budget:
            keep = valid
        else:
            adj = _discounted(score, errs, cand, on=m.rule.friendliness)
            heavy = _layer_heavy(m.rule, adj, cand, total, budget - n_recent, m.head_floor)
            keep = recent | heavy
        L = max(1, int(keep.sum(-1).max()))
        ar = torch.arange(n, device=K.device)
        idx = ((~keep).long() * (n + 1) + ar).argsort(-1)[..., :L]  # kept slots first, in slot (= position) order
        g = lambda x: x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))  # noqa: E731
        gt = lambda x: x.gather(2, idx)  # noqa: E731
        self.k, self.v = g(K), g(V)
        self.score, self.err, self.pos, self.valid = gt(score), gt(errs), gt(P), gt(keep)
        return K, V


def _layer_heavy(rule, adj, cand, n_total, per_head: int, floor: float):
    """``[B, H, n]`` mask of the heavy hitters when the KV heads of a layer share one budget: each head first keeps its
    own top ``round(floor * per_head)`` candidates, then the rest of the ``n_total [B]`` slots go to the strongest
    candidates of any head (``rule``'s split: the top by score, then a ``pool_share`` by pooled score). Attention
    probabilities sum to the same mass in every head, so accumulated scores compare across heads."""
    B, H, n = adj.shape
    neg = float("-inf")
    adj = adj.masked_fill(~cand, neg)
    sel = torch.zeros_like(cand)
    f = min(round(floor * per_head), n)
    if f > 0:
        top = adj.topk(f, -1)
        sel.scatter_(2, top.indices, torch.isfinite(top.values))
    pooled = rule.pooled(adj).masked_fill(~cand, neg) if rule.pool > 1 else None
    for b in range(B):
        left = int(n_total[b]) - int(sel[b].sum())
        if left <= 0:
            continue
        n_raw = rule.by_score(left)
        for part, k in ((adj[b], n_raw), (pooled[b] if pooled is not None else None, left - n_raw)):
            if part is None or k <= 0:
                continue
            flat = part.masked_fill(sel[b], neg).reshape(-1)
            top = flat.topk(min(k, flat.numel()))
            keep = top.indices[torch.isfinite(top.values)]
            sel[b].view(-1)[keep] = True
    return sel


class QHitterRunner:
    """Chunked evaluation and greedy decoding with a :class:`QHitter` cache."""

    def __init__(self, model, method: "QHitter", protocol: str = "all-quantized"):
        if protocol != "all-quantized":
            raise ValueError(f"qhitter runs only its own chunked-eviction protocol; allowed: all-quantized, got {protocol!r}")
        self.model, self.method = model, method
        self.L = model.config.num_hidden_layers
        self.taps: dict = {}
        self.seen = 0

    def _hooks(self):
        hs = [rotary_module(self.model).register_forward_hook(lambda m, i, o: self.taps.__setitem__("rope", o))]
        for a in attention_modules(self.model):
            hs.append(a.q_proj.register_forward_hook(lambda m, i, o, li=a.layer_idx: self.taps.__setitem__(li, o)))
            if self.method.scope == "layer":
                hs.append(a.register_forward_pre_hook(lambda m, args, kw, li=a.layer_idx: self._head_mask(li, args, kw),
                                                      with_kwargs=True))
        return hs

    def _head_mask(self, li: int, args, kwargs):
        """Scope "layer": heads of a layer hold different numbers of tokens, so this layer's attention gets a mask per
        query head (its KV head's valid slots, then the chunk causal) in place of the model's shared one."""
        layer = self._cur.layers[li]
        if layer.valid is None:
            return None
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        C = x.shape[1]
        B, H, n_old = layer.valid.shape
        Hq = self.model.config.num_attention_heads
        old = layer.valid.repeat_interleave(Hq // H, 1)[:, :, None, :].expand(B, Hq, C, n_old)
        new = torch.ones(C, C, dtype=torch.bool, device=x.device).tril().expand(B, Hq, C, C)
        kwargs["attention_mask"] = torch.cat([old, new], -1)
        return args, kwargs

    def _step(self, cache, ids):
        # one chunk: kept tokens all visible, the chunk causal
        C = ids.shape[1]
        n_old = cache.layers[0].k.shape[2] if cache.layers[0].k is not None else 0
        mask = torch.cat([torch.ones(C, n_old, dtype=torch.bool), torch.ones(C, C, dtype=torch.bool).tril()], 1)
        pos = torch.arange(self.seen, self.seen + C, device=ids.device)[None]
        out = self.model(input_ids=ids, attention_mask=mask[None, None].to(ids.device), position_ids=pos,
                         **cache_arg(self.model, cache), use_cache=True).logits
        self.seen += C
        return out

    def _cache(self):
        self.seen = 0
        self.taps.clear()
        self._cur = Cache(layers=[_QHLayer(i, self) for i in range(self.L)])
        return self._cur

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        cache = self._cache()
        hs = self._hooks()
        try:
            outs = [self._step(cache, ids[:, t : t + self.method.chunk]) for t in range(0, ids.shape[1], self.method.chunk)]
        finally:
            for h in hs:
                h.remove()
        return torch.cat(outs, 1).float()

    @torch.no_grad()
    def greedy(self, ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> list[int]:
        cache = self._cache()
        hs = self._hooks()
        out: list[int] = []
        try:
            step = ids.shape[1] if self.method.rule.observe is not None else self.method.chunk  # the prompt in one step
            for t in range(0, ids.shape[1], step):
                logits = self._step(cache, ids[:, t : t + step])[:, -1]
            for _ in range(max_new_tokens):
                nxt = int(logits.argmax(-1))
                out.append(nxt)
                if eos_token_id is not None and nxt == eos_token_id:
                    break
                logits = self._step(cache, torch.tensor([[nxt]], device=ids.device))[:, -1]
        finally:
            for h in hs:
                h.remove()
        return out


class QHitter(KVMethod):
    """Q-Hitter-style: heavy hitters by accumulated attention and quantization friendliness, 4-bit."""

    name = "qhitter"

    def __init__(self, bits: int, qbits: int = 4, group: int = 32, recent: float = 0.5, chunk: int = 128, head_dim: int = 64,
                 observe: int | None = None, pool: int = 1, pool_side: str = "both", pool_share: float = 1.0,
                 scope: str = "head", head_floor: float = 0.0, friendliness: bool = True):
        from ..config import Eviction

        super().__init__(bits)
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk={chunk!r} must be an integer >= 1")
        if scope not in ("head", "layer"):
            raise ValueError(f"scope={scope!r} is not allowed; allowed: 'head' (the same budget in every KV head), "
                             "'layer' (one budget shared by the KV heads of a layer)")
        if isinstance(head_floor, bool) or not isinstance(head_floor, (int, float)) or not 0 <= head_floor <= 1:
            raise ValueError(f"head_floor={head_floor!r} (share of a head's heavy budget it always keeps) is out of "
                             "range; allowed: [0, 1]")
        self.scope, self.head_floor = scope, float(head_floor)
        # the selection options, checked (and pooled) as MillionCache's eviction does; keep is set below
        self.rule = Eviction(keep=1.0, recent=recent, friendliness=friendliness, observe=observe, pool=pool,
                             pool_side=pool_side, pool_share=pool_share)
        self.qbits, self.group, self.chunk = qbits, group, chunk
        self.head_dim = head_dim
        self.high, self.high_bits, self.high_by = 0.0, 8, "score"  # no high tier (PQHitter's option)
        self._set_keep(head_dim)

    def _set_keep(self, D: int) -> None:
        """The share of tokens kept so that the whole sequence costs ``bits`` per element."""
        self.keep = min(1.0, self.bits / self.kept_bits(D))

    def err_bits(self, D: int) -> float:
        """Bits per element of the stored quantization error that the friendliness discount reads at every later
        eviction (one fp16 number per kept token and head, as MillionCache stores it; none without the discount)."""
        return 16.0 / (2 * D) if self.rule.friendliness else 0.0

    def kept_bits(self, D: int) -> float:
        """Bits per element of a kept token: codes, fp16 scale + zero per group, fp16 score and (with the friendliness
        discount) fp16 quantization error per (token, head) for K+V."""
        return self.qbits + 32.0 / min(self.group, D) + 16.0 / (2 * D) + self.err_bits(D)

    def budget(self, t: int) -> int:
        return max(1, math.ceil(self.keep * t))

    def high_budget(self, t: int) -> int:
        """Kept tokens in the high tier at ``t`` tokens seen (0 without one)."""
        return min(self.budget(t), math.ceil(self.high * t)) if self.high > 0 else 0

    def qdq_key(self, layer, k, pos0):
        return uniform_qdq(k, self.qbits, "token", self.group)

    qdq_value = qdq_key

    def make_runner(self, model, protocol="all-quantized"):
        D = geometry(model.config)[3]
        if D != self.head_dim:
            self.head_dim = D
            self._set_keep(D)
        return QHitterRunner(model, self, protocol)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        f = self.budget(context) / context
        D = shape.D
        parts = {
            "codes": self.qbits * f,
            "scales_zeros_fp16": 32.0 / min(self.group, D) * f,
            "scores_fp16": 16.0 / (2 * D) * f,
            "errors_fp16": self.err_bits(D) * f,
        }
        parts["total"] = sum(parts.values())
        return parts

    def describe(self):
        return {**super().describe(), "keep_fraction": self.keep, "kept_bits": self.qbits, "group": self.group,
                "recent_share": self.rule.recent, "chunk": self.chunk, "observe": self.rule.observe, "pool": self.rule.pool,
                "pool_side": self.rule.pool_side, "pool_share": self.rule.pool_share, "scope": self.scope,
                "head_floor": self.head_floor}


class PQHitter(QHitter):
    """Heavy-hitter eviction (as :class:`QHitter`) with the kept tokens stored as PQ codes.

    The same token selection as Q-Hitter-style (accumulated attention discounted by the
    quantization error, a recent share), but a kept token costs only its PQ code bits (and the fp16
    score used for the selection), so at the same total bits more tokens are kept. ``pq`` is a fitted
    :class:`~million.eval.methods.PQMethod` (its codebooks, sinks and transforms).

    ``high`` (a share of the tokens seen, default 0) puts the strongest kept tokens in a high-precision tier instead of
    their codes: ``high_bits`` 8 (asymmetric uniform int8 per token in groups of 32 with an fp16 scale and zero point, 9
    bits per element) or 16 (kept as computed). The tier is chosen when a token enters (after the step that scores it,
    so a prompt scored by its observation window stores its strongest tokens high), by discounted score
    (``high_by="score"``) or pooled score (``"pooled"``); a high token may be demoted to its code later, a coded one is
    not promoted. Its cost is paid by keeping fewer tokens: ``keep * (code bits + score + tier flag) + high * (high bits
    - code bits) = bits``. The all-quantized evaluation method; :class:`million.MillionCache` serves the same selection
    (:class:`million.Eviction`) without the high tier.
    """

    name = "pqsparse"

    def __init__(self, bits: float, pq, recent: float = 0.5, chunk: int = 128, head_dim: int = 64, observe: int | None = None,
                 pool: int = 1, pool_side: str = "both", pool_share: float = 1.0, high: float = 0.0, high_bits: int = 8,
                 high_by: str = "score", scope: str = "head", head_floor: float = 0.0, friendliness: bool = True):
        if isinstance(high, bool) or not isinstance(high, (int, float)) or not 0 <= high < 1:
            raise ValueError(f"high={high!r} (share of tokens in the high tier) is out of range; allowed: [0, 1)")
        if high_bits not in (8, 16):
            raise ValueError(f"high_bits={high_bits!r} is not allowed; allowed: 8 (int8, groups of 32), 16 (as computed)")
        if high_by not in ("score", "pooled"):
            raise ValueError(f"high_by={high_by!r} is not allowed; allowed: 'score', 'pooled'")
        self.pq = pq
        super().__init__(bits, qbits=4, recent=recent, chunk=chunk, head_dim=head_dim, observe=observe, pool=pool,
                         pool_side=pool_side, pool_share=pool_share, scope=scope, head_floor=head_floor,
                         friendliness=friendliness)
        if scope == "layer" and high > 0:
            raise ValueError("scope='layer' with a high tier (high > 0) is not supported; allowed: one of the two")
        self.high, self.high_bits, self.high_by = float(high), high_bits, high_by
        self.bits = bits
        self._set_keep(head_dim)

    def code_bits(self) -> float:
        return self.pq.variant.code_bits if self.pq.variant is not None else self.pq.bits

    def high_cost(self, D: int) -> float:
        """Bits per element of a token in the high tier."""
        return 16.0 if self.high_bits == 16 else 8.0 + 32.0 / min(32, D)

    def kept_bits(self, D: int) -> float:
        return self.code_bits() + 16.0 / (2 * D) + self.err_bits(D) + (1.0 / (2 * D) if self.high > 0 else 0.0)

    def _set_keep(self, D: int) -> None:
        extra = self.high * (self.high_cost(D) - self.code_bits())
        self.keep = min(1.0, (self.bits - extra) / self.kept_bits(D))
        if self.keep <= self.high:
            raise ValueError(f"high={self.high:g}: at {self.bits:g} bits/element the high tier leaves room for only "
                             f"{max(0.0, self.keep):.3f} of the tokens; allowed: a smaller share")

    def fit(self, model, calib_fn):
        self.pq.fit(model, calib_fn)
        if self.pq.variant.code_bits < self.bits:
            raise ValueError(f"--bits {self.bits:g} is above the kept tokens' {self.pq.variant.code_bits:g} code bits; "
                             f"allowed: at most {self.pq.variant.code_bits:g}")
        self.head_dim = geometry(model.config)[3]
        self._set_keep(self.head_dim)
        return self

    def qdq_key(self, layer, k, pos0):
        return self.pq.qdq_key(layer, k, pos0)

    def qdq_value(self, layer, v, pos0):
        return self.pq.qdq_value(layer, v, pos0)

    def exact_tokens(self) -> int:
        """The first tokens, stored exact (the PQ recipe's fp16 sinks): never in the high tier."""
        return self.pq.variant.sinks if self.pq.variant is not None else 0

    def qdq_high(self, x, pos0: int):
        """The high tier's round trip of ``x [B, H, T, D]`` (its first tokens from ``pos0``); fp16 sinks stay exact."""
        if self.high_bits == 16:
            return x
        out = uniform_qdq(x, 8, "token", 32)
        n = max(0, min(self.exact_tokens() - pos0, x.shape[2]))
        if n:
            out = out.clone()
            out[:, :, :n] = x[:, :, :n]
        return out

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        f = self.budget(context) / context
        pq = self.pq.bits_breakdown(shape, context, "all-quantized")
        parts = {"codes": pq["codes"] * f, "scores_fp16": 16.0 / (2 * shape.D) * f, "errors_fp16": self.err_bits(shape.D) * f}
        if self.high > 0:
            parts["tier_flags"] = 1.0 / (2 * shape.D) * f
            parts["high_tier_extra"] = self.high_budget(context) / context * (self.high_cost(shape.D) - self.code_bits())
        parts.update({k: v for k, v in pq.items() if k not in ("codes", "total", "window_fp16")})
        parts["total"] = sum(parts.values())
        return parts

    def describe(self):
        return {**super().describe(), "kept_quantizer": self.pq.describe(), "high": self.high, "high_bits": self.high_bits,
                "high_by": self.high_by}
