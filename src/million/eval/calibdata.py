"""Calibration statistics for the quantizers that need them (PQ variants, KVQuant-style levels).

One pass of the model over the first ``tokens`` tokens of a text, in windows, records for every
layer: pre-RoPE keys, values, the RoPE angles of each sample, the attention probability every key
receives (averaged over the queries that can see it, summed over the query heads that share its
KV head), and the second moment ``E[q^T q]`` of the post-RoPE queries of each KV head's group.
Everything is captured with forward hooks on ``q_proj``/``k_proj``/``v_proj`` and on the model's
rotary embedding module; nothing is patched.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary embedding (LLaMA ``rotate_half`` convention): ``x [..., T, D]``, ``cos/sin [T, D]``."""
    d = x.shape[-1] // 2
    rot = torch.cat([-x[..., d:], x[..., :d]], -1)
    return x * cos + rot * sin


def attention_modules(model) -> list:
    """Attention modules in layer order (each has ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``, ``layer_idx``)."""
    mods = [m for m in model.modules() if hasattr(m, "k_proj") and hasattr(m, "layer_idx")]
    return sorted(mods, key=lambda m: m.layer_idx)


def rotary_module(model):
    """The module that returns ``(cos, sin)`` for position ids (``model.model.rotary_emb`` for LLaMA-family)."""
    base = getattr(model, "model", model)
    rot = getattr(base, "rotary_emb", None)
    if rot is None:
        raise ValueError(f"{type(model).__name__} has no rotary_emb module; supported: LLaMA-family models with RoPE")
    return rot


@contextlib.contextmanager
def projection_taps(model):
    """Forward hooks, removed on exit, that record into the dict they yield the rotary module's ``(cos, sin)`` under
    ``"rope"`` and every attention module's ``q_proj``/``k_proj``/``v_proj`` output (detached) under
    ``(layer_idx, name)``, each forward overwriting the previous one's."""
    taps: dict = {}
    hooks = [rotary_module(model).register_forward_hook(lambda m, i, o: taps.__setitem__("rope", o))]
    try:
        for m in attention_modules(model):
            for name in ("q_proj", "k_proj", "v_proj"):
                hooks.append(getattr(m, name).register_forward_hook(
                    lambda mod, i, o, key=(m.layer_idx, name): taps.__setitem__(key, o.detach())))
        yield taps
    finally:
        for h in hooks:
            h.remove()


def geometry(config) -> tuple[int, int, int, int]:
    """``(num_layers, num_kv_heads, num_q_heads, head_dim)`` of an HF config."""
    D = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    Hq = config.num_attention_heads
    H = getattr(config, "num_key_value_heads", None) or Hq
    return config.num_hidden_layers, H, Hq, D


@dataclass
class CalibData:
    """Per-layer calibration samples (float32, CPU).

    keys_pre, values : per layer ``[H_kv, N, D]``
    positions : ``[N]`` position of each sample inside its window
    cos, sin : ``[N, D]`` RoPE factors of each sample
    attn : per layer ``[H_kv, N]`` mean attention probability the key received (None if not collected)
    q_moment : per layer ``[H_kv, D, D]`` ``E[q^T q]`` of its post-RoPE queries
    o_moment : per layer ``[H_kv, D, D]`` ``sum_g W_o[g]^T W_o[g]`` over the query heads ``g`` that read
        the KV head (``W_o[g]`` the ``[hidden, D]`` block of ``o_proj`` for head ``g``): the metric in
        which a value error reaches the residual stream
    """

    keys_pre: list
    values: list
    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    attn: list
    q_moment: list
    o_moment: list
    text: str = "text"
    window: int = 2048

    @property
    def num_layers(self) -> int:
        return len(self.keys_pre)

    @property
    def tokens(self) -> int:
        return int(self.positions.numel())

    def keys_post(self, layer: int) -> torch.Tensor:
        """Post-RoPE keys ``[H_kv, N, D]`` of one layer."""
        return rope(self.keys_pre[layer], self.cos, self.sin)


@torch.no_grad()
def collect(model, tokenizer, text: str, tokens: int = 16384, window: int = 2048, text_name: str = "text",
            progress: bool = False, query_chunk: int = 512, attention: bool = True) -> CalibData:
    """Run ``model`` over the first ``tokens`` tokens of ``text`` and gather :class:`CalibData`.

    ``attention=False`` skips the attention mass each key receives (``attn`` is then None; only the
    ``weighting="attn"`` PQ variants need it), which is most of the CPU time on long windows."""
    if tokens < 1 or window < 2:
        raise ValueError(f"tokens must be >= 1 and window >= 2, got tokens={tokens}, window={window}")
    L, H, Hq, D = geometry(model.config)
    G = Hq // H
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0][:tokens]
    if ids.numel() < 2:
        raise ValueError("calibration text is too short")
    mods = attention_modules(model)
    dev = next(model.parameters()).device
    kp = [[] for _ in range(L)]
    vs = [[] for _ in range(L)]
    at = [[] for _ in range(L)]
    qm = [torch.zeros(H, D, D) for _ in range(L)]
    nq = 0
    pos, coss, sins = [], [], []
    with projection_taps(model) as taps:
        wins = [ids[i : i + window] for i in range(0, ids.numel(), window)]
        for w in tqdm(wins, desc="calibration pass", disable=not progress):
            if w.numel() < 2:
                continue
            T = w.numel()
            model(input_ids=w[None].to(dev), use_cache=False)
            cos, sin = (t[0].float().cpu() for t in taps["rope"])  # [T, D]
            pos.append(torch.arange(T))
            coss.append(cos)
            sins.append(sin)
            causal = torch.ones(T, T, dtype=torch.bool).tril()
            seen_by = torch.arange(T, 0, -1, dtype=torch.float32)  # queries that can see key s: T - s
            for m in mods:
                li = m.layer_idx
                q = taps[(li, "q_proj")][0].float().cpu().view(T, Hq, D).transpose(0, 1)  # [Hq, T, D]
                k = taps[(li, "k_proj")][0].float().cpu().view(T, H, D).transpose(0, 1)  # [H, T, D]
                v = taps[(li, "v_proj")][0].float().cpu().view(T, H, D).transpose(0, 1)
                qr, kr = rope(q, cos, sin), rope(k, cos, sin)
                kp[li].append(k)
                vs[li].append(v)
                qg = qr.reshape(H, G * T, D)
                qm[li] += torch.einsum("htd,hte->hde", qg, qg) / G
                if not attention:
                    continue
                mass = torch.zeros(H, T)
                krg = kr.repeat_interleave(G, 0)  # [Hq, T, D]
                for t0 in range(0, T, query_chunk):
                    s = torch.einsum("htd,hsd->hts", qr[:, t0 : t0 + query_chunk], krg) * D**-0.5
                    s = s.masked_fill(~causal[t0 : t0 + query_chunk], float("-inf"))
                    p = s.softmax(-1)  # [Hq, t, T]
                    mass += p.sum(1).view(H, G, T).sum(1)
                at[li].append(mass / seen_by)
            nq += T
            taps.clear()
    if not pos:
        raise ValueError("calibration text is too short")
    cat = lambda xs: [torch.cat(x, 1) for x in xs]  # noqa: E731
    return CalibData(
        keys_pre=cat(kp), values=cat(vs), positions=torch.cat(pos), cos=torch.cat(coss), sin=torch.cat(sins),
        attn=cat(at) if attention else None, q_moment=[x / nq for x in qm], o_moment=o_moments(model), text=text_name, window=window,
    )


@torch.no_grad()
def o_moments(model) -> list:
    """Per layer ``[H_kv, D, D]``: ``sum_g B_g^T B_g`` with ``B_g`` the ``o_proj`` columns of query head ``g``."""
    L, H, Hq, D = geometry(model.config)
    G = Hq // H
    out = []
    for m in attention_modules(model):
        W = m.o_proj.weight.float().cpu()  # [hidden, Hq * D]
        B = W.view(W.shape[0], H, G, D)
        out.append(torch.einsum("ihgd,ihge->hde", B, B))
    return out


def load_or_collect(model, tokenizer, text_name: str = "squad", tokens: int = 16384, window: int = 2048,
                    model_name: str = "model", cache: bool = True, progress: bool = False, fisher: bool = False,
                    attention: bool = True) -> CalibData:
    """:func:`collect` on the first ``tokens`` tokens of a named text, memoized on disk under the
    user cache directory (``$MILLION_CACHE`` or ``~/.cache/million``). With ``fisher`` the result
    also carries ``.fisher`` (:class:`FisherData` on the same tokens)."""
    data = _load_or_collect(model, tokenizer, text_name, tokens, window, model_name, cache, progress, attention)
    if fisher:
        data.fisher = load_or_collect_fisher(model, tokenizer, text_name, tokens, window, model_name, cache, progress)
    return data


def _text_key(text_name: str, text: str) -> str:
    """The memo files' name for a text: its name and a digest of its content, so that two files of one name, or a
    file edited in place, never share calibration data."""
    import hashlib

    return f"{Path(text_name).name}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _load_or_collect(model, tokenizer, text_name, tokens, window, model_name, cache, progress, attention=True) -> CalibData:
    from dataclasses import asdict

    from ..data import cache_dir, load_text

    suffix = "" if attention else "-noattn"
    text = load_text(text_name)
    path = cache_dir() / "calib" / f"{model_name}-{_text_key(text_name, text)}-{tokens}-{window}{suffix}.pt"
    if cache and path.is_file():
        return CalibData(**torch.load(path, weights_only=True))
    data = collect(model, tokenizer, text, tokens=tokens, window=window, text_name=text_name, progress=progress,
                   attention=attention)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(asdict(data), path)
    return data


@dataclass
class FisherData:
    """Empirical Fisher of the loss with respect to post-RoPE keys and values, per layer.

    metric_k, metric_v : ``[H_kv, D, D]``: ``E[g g^T]`` over tokens (``g = dLoss/dk``, ``dLoss/dv``)
    weight_k, weight_v : ``[H_kv, N]``: ``|g|^2`` of every calibration token (aligned with
        :class:`CalibData` samples when computed on the same tokens and windows)
    """

    metric_k: list
    metric_v: list
    weight_k: list
    weight_v: list


def collect_fisher(model, tokenizer, text: str, tokens: int = 16384, window: int = 2048, progress: bool = False) -> FisherData:
    """Gradients of the next-token loss with respect to every K and V (one backward per window).

    The gradient with respect to the ``k_proj`` output (pre-RoPE) is rotated by RoPE to give the
    gradient with respect to the post-RoPE key (RoPE is orthogonal). Model weights get no grads.
    """
    L, H, Hq, D = geometry(model.config)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0][:tokens]
    mods = attention_modules(model)
    taps: dict = {}

    def keep(key):
        def hook(mod, i, o):
            o.retain_grad()
            taps[key] = o
        return hook

    hooks = [rotary_module(model).register_forward_hook(lambda m, i, o: taps.__setitem__("rope", o)),
             model.get_input_embeddings().register_forward_hook(lambda m, i, o: o.detach().requires_grad_(True))]
    for m in mods:
        hooks.append(m.k_proj.register_forward_hook(keep((m.layer_idx, "k"))))
        hooks.append(m.v_proj.register_forward_hook(keep((m.layer_idx, "v"))))
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    dev = next(model.parameters()).device
    mk = [torch.zeros(H, D, D) for _ in range(L)]
    mv = [torch.zeros(H, D, D) for _ in range(L)]
    wk = [[] for _ in range(L)]
    wv = [[] for _ in range(L)]
    n = 0
    try:
        wins = [ids[i : i + window] for i in range(0, ids.numel(), window)]
        for w in tqdm(wins, desc="fisher pass", disable=not progress):
            if w.numel() < 2:
                continue
            T = w.numel()
            with torch.enable_grad():
                out = model(input_ids=w[None].to(dev), labels=w[None].to(dev), use_cache=False)
                # sum (not mean) of token losses: per-token gradients on the scale of one prediction
                (out.loss * (T - 1)).backward()
            cos, sin = (t[0].detach().float().cpu() for t in taps["rope"])
            for m in mods:
                li = m.layer_idx
                gk = taps[(li, "k")].grad[0].float().cpu().view(T, H, D).transpose(0, 1)
                gv = taps[(li, "v")].grad[0].float().cpu().view(T, H, D).transpose(0, 1)
                gk = rope(gk, cos, sin)
                mk[li] += torch.einsum("htd,hte->hde", gk, gk)
                mv[li] += torch.einsum("htd,hte->hde", gv, gv)
                wk[li].append(gk.pow(2).sum(-1))
                wv[li].append(gv.pow(2).sum(-1))
            n += T
            taps.clear()
    finally:
        for h in hooks:
            h.remove()
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
    return FisherData([x / n for x in mk], [x / n for x in mv], [torch.cat(x, 1) for x in wk], [torch.cat(x, 1) for x in wv])


def load_or_collect_fisher(model, tokenizer, text_name: str = "squad", tokens: int = 16384, window: int = 2048,
                           model_name: str = "model", cache: bool = True, progress: bool = False) -> FisherData:
    """:func:`collect_fisher`, memoized like :func:`load_or_collect`."""
    from dataclasses import asdict

    from ..data import cache_dir, load_text

    text = load_text(text_name)
    path = cache_dir() / "calib" / f"{model_name}-{_text_key(text_name, text)}-{tokens}-{window}-fisher.pt"
    if cache and path.is_file():
        return FisherData(**torch.load(path, weights_only=True))
    data = collect_fisher(model, tokenizer, text, tokens=tokens, window=window, progress=progress)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(asdict(data), path)
    return data
