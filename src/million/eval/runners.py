"""How a method's quantizer is put in front of attention, for both evaluation protocols.

``all-quantized``
    Every K/V of the window is quantized-then-dequantized before attention. Post-RoPE methods do
    it in :class:`QDQCache` (a ``Cache`` of ``DynamicLayer`` s whose ``update`` replaces the incoming
    states by their reconstruction); pre-RoPE methods quantize keys in a forward hook on each
    attention module's ``k_proj`` (values still in the cache).

``deployed``
    What a cache with an fp16 residual window does in generation: query ``t`` reads tokens
    ``[fp_start(t), t]`` in full precision and the older ones quantized (sinks, if the method
    keeps any, stay exact in its quantized copy; a method whose values leave the window on their own schedule, KIVI,
    gives ``fp_start_v`` and gets a third copy, see :func:`deployed_mask`). One forward pass computes this exactly:
    :class:`DeployedSimCache` returns ``[quantized keys; fp keys]`` (``2T`` keys) and a 4D mask
    lets query ``t`` see quantized key ``s`` iff ``s < fp_start(t)`` and fp key ``s`` iff
    ``fp_start(t) <= s <= t``. The rule ``fp_start`` is the cache's own (MillionCache, quanto's
    QuantizedCache, KIVI); tests check the simulation against token-by-token decoding with the
    real caches.

``served``
    The real :class:`million.MillionCache` (codebooks written by ``million calibrate``, optionally with an
    :class:`million.Eviction`) fed the window ``chunk`` tokens at a time, exactly as generation feeds it: with
    ``chunk = 1`` every position is a decode step on the codes. The only protocol for eviction as served.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from transformers.cache_utils import Cache, DynamicLayer

from .calibdata import attention_modules, geometry, rope, rotary_module
from ..compat import cache_arg

PROTOCOLS = ("all-quantized", "deployed", "served")


# -- fp_start rules: first full-precision position visible to query t -------------------------------
def million_fp_start(t: torch.Tensor, R: int) -> torch.Tensor:
    """MillionCache: blocks of ``R`` are committed to codes once the window (``R..2R``) is full."""
    return R * (t // R - 1).clamp_min(0)


def quanto_fp_start(t: torch.Tensor, R: int) -> torch.Tensor:
    """transformers ``QuantizedCache``: the first token is quantized at once (prefill), then all is
    re-quantized whenever the residual reaches ``R`` tokens."""
    return torch.where(t == 0, torch.zeros_like(t), 1 + R * ((t - 1) // R))


def block_fp_start(t: torch.Tensor, R: int) -> torch.Tensor:
    """KIVI: the residual holds up to ``R`` tokens and is quantized when full."""
    return R * (t // R)


# -- caches -----------------------------------------------------------------------------------------
class QDQLayer(DynamicLayer):
    """A ``DynamicLayer`` that stores (and returns) the quantized reconstruction of what it receives."""

    def __init__(self, layer_idx: int, qdq_key, qdq_value):
        super().__init__()
        self.layer_idx = layer_idx
        self.qdq_key, self.qdq_value = qdq_key, qdq_value
        self.seen = 0

    def update(self, key_states, value_states, *args, **kwargs):
        pos0 = self.seen
        self.seen += key_states.shape[2]
        if self.qdq_key is not None:
            key_states = self.qdq_key(self.layer_idx, key_states, pos0)
        if self.qdq_value is not None:
            value_states = self.qdq_value(self.layer_idx, value_states, pos0)
        return super().update(key_states, value_states)


class QDQCache(Cache):
    """All-quantized cache: ``qdq_key/qdq_value(layer, x [B, H, T, D], pos0) -> x_hat`` (None: exact)."""

    def __init__(self, num_layers: int, qdq_key=None, qdq_value=None):
        super().__init__(layers=[QDQLayer(i, qdq_key, qdq_value) for i in range(num_layers)])


class DeployedSimLayer(DynamicLayer):
    """Keeps the exact and the quantized copy of every token; returns both, quantized first. ``split``: a method whose
    values leave full precision on another schedule than its keys (KIVI): three copies, ``[kq; kq; k]`` with
    ``[vq; v; v]``, the middle one for the tokens whose key is quantized but whose value is not yet."""

    def __init__(self, layer_idx: int, qdq_key, qdq_value, pre_rope_stash: dict | None, split: bool = False):
        super().__init__()
        self.layer_idx = layer_idx
        self.qdq_key, self.qdq_value = qdq_key, qdq_value
        self.stash = pre_rope_stash
        self.split = split
        self.kq = self.vq = None

    def update(self, key_states, value_states, *args, **kwargs):
        pos0 = self.get_seq_length()
        if self.stash is not None:  # pre-RoPE method: quantized keys were made in the k_proj hook
            kq = self.stash.pop(self.layer_idx)
        else:
            kq = self.qdq_key(self.layer_idx, key_states, pos0) if self.qdq_key is not None else key_states
        vq = self.qdq_value(self.layer_idx, value_states, pos0) if self.qdq_value is not None else value_states
        k, v = super().update(key_states, value_states)
        self.kq = kq if self.kq is None else torch.cat([self.kq, kq], 2)
        self.vq = vq if self.vq is None else torch.cat([self.vq, vq], 2)
        if self.split:
            return torch.cat([self.kq, self.kq, k], 2), torch.cat([self.vq, v, v], 2)
        return torch.cat([self.kq, k], 2), torch.cat([self.vq, v], 2)


def deployed_mask(T: int, fp_start: torch.Tensor, fp_start_v: torch.Tensor | None = None, dtype=torch.bool) -> torch.Tensor:
    """``[1, 1, T, 2T]`` boolean mask over ``[quantized keys; exact keys]`` for positions ``0..T-1``. With
    ``fp_start_v`` (values in full precision from there, never later than the keys): ``[1, 1, T, 3T]`` over the three
    copies of a split :class:`DeployedSimLayer`: both quantized before ``fp_start_v(t)``, the quantized key with the
    exact value up to ``fp_start(t)``, both exact from there."""
    t = torch.arange(T)[:, None]
    s = torch.arange(T)[None, :]
    fs = fp_start[:, None]
    exact = (s >= fs) & (s <= t)
    if fp_start_v is None:
        return torch.cat([s < fs, exact], 1)[None, None]
    fv = torch.minimum(fp_start_v, fp_start)[:, None]
    return torch.cat([s < fv, (s >= fv) & (s < fs), exact], 1)[None, None]


# -- hooks --------------------------------------------------------------------------------------------
@contextmanager
def pre_rope_key_hooks(model, qdq_key, stash: dict | None = None):
    """Quantize pre-RoPE keys at every ``k_proj`` output (``[B, T, H*D]``).

    Without ``stash`` the hook returns the quantized projection (all-quantized protocol). With
    ``stash`` it leaves the projection exact and stores the *post-RoPE* quantized keys in
    ``stash[layer]`` for :class:`DeployedSimLayer` (RoPE factors come from a hook on the rotary
    embedding module).
    """
    _, H, _, D = geometry(model.config)
    seen: dict[int, int] = {}
    rope_out: dict = {}
    hooks = []
    if stash is not None:
        hooks.append(rotary_module(model).register_forward_hook(lambda m, i, o: rope_out.__setitem__("cs", o)))

    def hook(mod, inp, out, li):
        B, T, _ = out.shape
        pos0 = seen.get(li, 0)
        seen[li] = pos0 + T
        k = out.view(B, T, H, D).transpose(1, 2)
        kq = qdq_key(li, k, pos0)
        if stash is None:
            return kq.transpose(1, 2).reshape(B, T, H * D).to(out.dtype)
        cos, sin = rope_out["cs"]
        stash[li] = rope(kq.float(), cos[:, None].float(), sin[:, None].float()).to(out.dtype)
        return None

    for m in attention_modules(model):
        hooks.append(m.k_proj.register_forward_hook(lambda mod, i, o, li=m.layer_idx: hook(mod, i, o, li)))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


# -- runners ------------------------------------------------------------------------------------------
class Runner:
    """Runs one method under one protocol: full-window logits (perplexity) and greedy decoding (needle)."""

    def __init__(self, model, method, protocol: str):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r} is not one of {PROTOCOLS}")
        self.model, self.method, self.protocol = model, method, protocol
        self.L = model.config.num_hidden_layers

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids [1, T]`` -> logits ``[1, T, V]`` (float32), fresh cache."""
        m = self.method
        pre = getattr(m, "key_space", "post_rope") == "pre_rope"
        if self.protocol == "all-quantized":
            cache = QDQCache(self.L, None if pre else m.qdq_key, m.qdq_value)
            if pre:
                with pre_rope_key_hooks(self.model, m.qdq_key):
                    return self.model(input_ids=ids, **cache_arg(self.model, cache), use_cache=True).logits.float()
            return self.model(input_ids=ids, **cache_arg(self.model, cache), use_cache=True).logits.float()
        # deployed
        T = ids.shape[1]
        stash = {} if pre else None
        t = torch.arange(T)
        fv = m.fp_start_v(t)
        split = not torch.equal(fv, m.fp_start(t))
        cache = Cache(layers=[DeployedSimLayer(i, None if pre else m.qdq_key, m.qdq_value, stash, split)
                              for i in range(self.L)])
        mask = deployed_mask(T, m.fp_start(t), fv if split else None).to(ids.device)
        pos = torch.arange(T, device=ids.device)[None]
        if pre:
            with pre_rope_key_hooks(self.model, m.qdq_key, stash):
                return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_arg(self.model, cache), use_cache=True).logits.float()
        return self.model(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_arg(self.model, cache), use_cache=True).logits.float()

    @torch.no_grad()
    def greedy(self, ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> list[int]:
        """Greedy continuation of ``ids [1, T]`` with every K/V quantized (prompt and new tokens)."""
        if self.protocol != "all-quantized":
            raise ValueError(f"greedy decoding with protocol {self.protocol!r} is not supported by this runner; "
                             "allowed: all-quantized (the deployed protocol decodes with the real cache)")
        m = self.method
        pre = getattr(m, "key_space", "post_rope") == "pre_rope"
        cache = QDQCache(self.L, None if pre else m.qdq_key, m.qdq_value)
        with pre_rope_key_hooks(self.model, m.qdq_key) if pre else _null():
            return _greedy(self.model, cache, ids, max_new_tokens, eos_token_id)


@contextmanager
def _null():
    yield


def _greedy(model, cache, ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> list[int]:
    """Greedy continuation of ``ids [1, T]``: prefill into ``cache``, then one token per step."""
    out: list[int] = []
    logits = model(input_ids=ids, **cache_arg(model, cache), use_cache=True).logits[:, -1]
    for _ in range(max_new_tokens):
        nxt = int(logits.argmax(-1))
        out.append(nxt)
        if eos_token_id is not None and nxt == eos_token_id:
            break
        logits = model(input_ids=torch.tensor([[nxt]], device=ids.device), **cache_arg(model, cache), use_cache=True).logits[:, -1]
    return out


class CacheRunner:
    """Greedy decoding with a real cache (``make_cache()`` -> a fresh transformers ``Cache``, e.g. a
    :class:`million.MillionCache`): exactly what generation does with it, prefill included."""

    def __init__(self, model, make_cache):
        self.model, self.make_cache = model, make_cache

    @torch.no_grad()
    def greedy(self, ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> list[int]:
        return _greedy(self.model, self.make_cache(), ids, max_new_tokens, eos_token_id)


class ServedRunner:
    """Perplexity and greedy decoding through the real :class:`million.MillionCache` (``protocol="served"``).

    ``codebooks``: a :class:`million.Codebooks`; ``evict``: a :class:`million.Eviction` or None; ``chunk``: tokens
    per forward (1: every position is a decode step, as in generation). The model gets the ``million`` attention."""

    def __init__(self, model, codebooks, evict=None, chunk: int = 1):
        import million

        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"--chunk {chunk!r} must be an integer >= 1")
        million.register()
        model.set_attn_implementation("million")
        self.model, self.codebooks, self.evict, self.chunk = model, codebooks, evict, chunk
        self.last_cache = None

    def _cache(self):
        from million import MillionCache

        self.last_cache = MillionCache(self.codebooks, self.model.config, evict=self.evict)
        return self.last_cache

    @torch.no_grad()
    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        cache = self._cache()
        outs = [self.model(input_ids=ids[:, t : t + self.chunk], **cache_arg(self.model, cache), use_cache=True).logits.float()
                for t in range(0, ids.shape[1], self.chunk)]
        return torch.cat(outs, 1)

    @torch.no_grad()
    def greedy(self, ids: torch.Tensor, max_new_tokens: int, eos_token_id=None) -> list[int]:
        return _greedy(self.model, self._cache(), ids, max_new_tokens, eos_token_id)
