"""Calibration: run a model over text, capture the K/V vectors every layer and KV head produces,
and train PQ codebooks on them.

Keys are captured after RoPE by a recording ``Cache`` passed as the model's cache argument (exactly what a
KV cache stores); with ``pre_rope=True`` keys are captured before RoPE by forward hooks on the
attention modules' ``k_proj``. Nothing is monkey-patched.
"""

from __future__ import annotations

import math
import sys
import types

import torch
from tqdm.auto import tqdm
from transformers.cache_utils import Cache, DynamicLayer

from .codebook import Codebooks, granularity_shape, model_identity
from .compat import cache_arg
from .config import GRANULARITIES, PQConfig
from .kmeans import kmeans


class _RecordingLayer(DynamicLayer):
    """A DynamicLayer that also hands every update to a recorder."""

    def __init__(self, layer_idx: int, recorder: "KVRecorder"):
        super().__init__()
        self.layer_idx = layer_idx
        self.recorder = recorder

    def update(self, key_states, value_states, *args, **kwargs):
        self.recorder.record(self.layer_idx, key_states, value_states)
        return super().update(key_states, value_states, *args, **kwargs)


class KVRecorder:
    """Collects (a random subsample of) the K/V vectors of every layer.

    After running the model, ``keys[l]`` and ``values[l]`` are ``[H_kv, N, D]`` float32 tensors on the
    CPU. ``keep`` is the fraction of tokens kept from every forward (1.0 keeps all).
    """

    def __init__(self, num_layers: int, keep: float = 1.0, seed: int = 0, pre_rope: bool = False):
        self.num_layers = num_layers
        self.keep = keep
        self.pre_rope = pre_rope
        self.gen = torch.Generator().manual_seed(seed)
        self._k: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._v: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._pre: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]
        self._idx: torch.Tensor | None = None

    def cache(self) -> Cache:
        """A fresh cache to pass as the cache of one forward."""
        return Cache(layers=[_RecordingLayer(i, self) for i in range(self.num_layers)])

    def _token_index(self, T: int) -> torch.Tensor:
        if self.keep >= 1.0:
            return torch.arange(T)
        n = max(1, int(round(T * self.keep)))
        return torch.randperm(T, generator=self.gen)[:n].sort().values

    def begin(self, T: int) -> None:
        """Choose which of the next forward's ``T`` tokens are kept (the same for K, V and pre-RoPE K)."""
        self._idx = self._token_index(T)

    def record(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> None:
        # k, v: [B, H_kv, T, D]
        idx = self._idx if self._idx is not None else torch.arange(k.shape[2])
        idx = idx[idx < k.shape[2]].to(k.device)
        self._k[layer_idx].append(k[:, :, idx].float().transpose(0, 1).flatten(1, 2).cpu())
        self._v[layer_idx].append(v[:, :, idx].float().transpose(0, 1).flatten(1, 2).cpu())

    def record_pre_rope(self, layer_idx: int, k_proj_out: torch.Tensor, head_dim: int) -> None:
        # k_proj_out: [B, T, H_kv * D]
        B, T, _ = k_proj_out.shape
        k = k_proj_out.view(B, T, -1, head_dim).transpose(1, 2)  # [B, H_kv, T, D]
        idx = self._idx if self._idx is not None else torch.arange(T)
        idx = idx[idx < T].to(k.device)
        self._pre[layer_idx].append(k[:, :, idx].float().transpose(0, 1).flatten(1, 2).cpu())

    def _cat(self, lists) -> list[torch.Tensor]:
        return [torch.cat(x, dim=1) if x else torch.empty(0) for x in lists]

    @property
    def keys(self) -> list[torch.Tensor]:
        """Per layer ``[H_kv, N, D]``: post-RoPE keys, or pre-RoPE keys if ``pre_rope``."""
        return self._cat(self._pre if self.pre_rope else self._k)

    @property
    def values(self) -> list[torch.Tensor]:
        return self._cat(self._v)


def _attention_modules(model):
    """``(layer_idx, attention module)`` for every decoder layer that has a ``k_proj``."""
    out = []
    for name, mod in model.named_modules():
        if hasattr(mod, "k_proj") and hasattr(mod, "layer_idx"):
            out.append((mod.layer_idx, mod))
    return out


def tokenize_windows(tokenizer, text: str, n_tokens: int, window: int) -> list[torch.Tensor]:
    """The first ``n_tokens`` tokens of ``text``, cut into windows of ``window`` tokens ``[1, w]``."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if ids.numel() == 0:
        raise ValueError("calibration text is empty")
    ids = ids[:n_tokens]
    return [ids[i : i + window].unsqueeze(0) for i in range(0, ids.numel(), window)]


@torch.no_grad()
def collect_kv(model, windows: list[torch.Tensor], keep: float = 1.0, seed: int = 0, pre_rope: bool = False, progress: bool = True) -> KVRecorder:
    """Run ``model`` over token windows and record K/V of every layer (see :class:`KVRecorder`)."""
    cfg = model.config
    rec = KVRecorder(cfg.num_hidden_layers, keep=keep, seed=seed, pre_rope=pre_rope)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    hooks = []
    if pre_rope:
        for li, attn in _attention_modules(model):
            hooks.append(attn.k_proj.register_forward_hook(lambda m, i, o, li=li: rec.record_pre_rope(li, o, head_dim)))
    dev = next(model.parameters()).device
    try:
        for w in tqdm(windows, desc="capturing K/V", disable=not progress):
            rec.begin(w.shape[1])
            model(input_ids=w.to(dev), **cache_arg(model, rec.cache()), use_cache=True)
    finally:
        for h in hooks:
            h.remove()
    return rec


def _sample(x: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    # x: [G, N, D] -> [G, min(n, N), D], the same random rows for every group
    N = x.shape[1]
    if N <= n:
        return x
    idx = torch.randperm(N, generator=gen)[:n]
    return x[:, idx]


def train_codebooks(
    keys: list[torch.Tensor],
    values: list[torch.Tensor],
    config: PQConfig,
    samples: int = 8192,
    iters: int = 12,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """k-means codebooks from per-layer ``[H_kv, N, D]`` K/V samples.

    Returns ``key_centroids, value_centroids`` ``[Lg, Hg, M, ksub, dsub]`` and training stats.
    """
    L = len(keys)
    H, N, D = keys[0].shape
    if D != config.head_dim:
        raise ValueError(f"captured head_dim {D} != config.head_dim {config.head_dim}")
    if N * (H if config.granularity != "layer_head" else 1) < config.ksub:
        raise ValueError(f"too few calibration vectors ({N} tokens) for ksub={config.ksub} centroids; give more text")
    gen = torch.Generator().manual_seed(seed)
    Lg, Hg = granularity_shape(config.granularity, L, H)
    M, dsub = config.M, config.dsub

    def groups(xs: list[torch.Tensor]) -> torch.Tensor:
        # -> [Lg * Hg, n, D]
        if config.granularity == "merged":
            allv = torch.cat([x.reshape(-1, D) for x in xs], 0)[None]
            return _sample(allv, samples, gen)
        if config.granularity == "layer":
            return torch.cat([_sample(x.reshape(1, -1, D), samples, gen) for x in xs], 0)
        return torch.cat([_sample(x, samples, gen) for x in xs], 0)

    gk, gv = groups(keys), groups(values)  # [Lg*Hg, n, D]
    n = min(gk.shape[1], gv.shape[1])
    data = torch.cat([gk[:, :n], gv[:, :n]], 0)  # [2*Lg*Hg, n, D]
    data = data.view(2 * Lg * Hg, n, M, dsub).permute(0, 2, 1, 3).reshape(2 * Lg * Hg * M, n, dsub)
    # k-means over all (K/V, layer, head, subspace) problems at once, in chunks to bound memory
    per_chunk = max(1, (1 << 27) // max(1, n * config.ksub))
    cents, dist = [], []
    chunks = range(0, data.shape[0], per_chunk)
    for c0 in tqdm(chunks, desc=f"k-means ({data.shape[0]} codebooks, k={config.ksub})", disable=not progress or len(chunks) == 1):
        r = kmeans(data[c0 : c0 + per_chunk].to(device), config.ksub, iters=iters, seed=seed + c0, progress=progress and len(chunks) == 1)
        cents.append(r.centroids.cpu())
    cent = torch.cat(cents, 0).view(2, Lg, Hg, M, config.ksub, dsub)
    # relative distortion of the trained codebooks on the training data
    stats = {}
    for j, name in enumerate(("k", "v")):
        x = data.view(2, -1, n, dsub)[j]
        c = cent[j].reshape(-1, config.ksub, dsub)
        d = torch.cdist(x, c).min(-1).values.pow(2).sum() / x.pow(2).sum().clamp_min(1e-12)
        stats[f"distortion_{name}"] = float(d)
    stats["samples"] = n
    return cent[0].contiguous(), cent[1].contiguous(), stats


def calibrate(
    model,
    tokenizer,
    text: str,
    config: PQConfig | None = None,
    bits: float = 4,
    nbits: int = 8,
    granularity: str | None = None,
    tokens: int = 32768,
    window: int | None = None,
    samples: int = 32768,
    iters: int = 16,
    seed: int = 0,
    pre_rope: bool = False,
    text_name: str = "text",
    model_name: str | None = None,
    progress: bool = True,
    recipe: str = "recommended",
    sinks: int | None = None,
    transform: str | None = None,
    rotation: str | None = None,
    finetune_steps: int = 0,
    finetune_lr: float = 5e-3,
    finetune_window: int = 2048,
) -> Codebooks:
    """Train PQ codebooks for ``model`` on the first ``tokens`` tokens of ``text``.

    ``recipe`` picks the defaults of ``granularity``, ``sinks``, ``transform`` and ``rotation`` (see
    :data:`RECIPES` and :func:`resolve_recipe`; values given explicitly win): ``"recommended"``
    (per-layer-per-head codebooks, one full-precision sink token, codes trained in the attention
    metric, keys rotated by the balanced PCA rotation; the best recipe MillionCache serves, measured
    in docs/quality.md) or ``"plain"`` (per-layer codebooks on the raw post-RoPE vectors).
    ``tokens``, ``samples`` and ``iters`` default to the settings measured best for the recommended recipe at 4 bits
    (docs/quality.md, "The recommended recipe as the default" and "Every calibration vector in k-means"). ``config`` defaults to ``PQConfig.from_bits(head_dim, bits, nbits, granularity=..., sink_length=...)``;
    a given ``config`` brings its own granularity and sinks.
    The text runs in windows of ``window`` tokens (default: the model's ``max_position_embeddings``, at
    most 8192): post-RoPE keys are only seen at positions below
    ``window``, and codebooks calibrated on short windows quantize keys at later positions badly
    (measured: 4-bit needle retrieval fails at 4K and 8K with 2K-token calibration windows), so make
    it at least the longest context the codebooks will serve.

    ``finetune_steps > 0`` then tunes the centroids end to end (:func:`million.finetune.finetune_codebooks`: KL to the
    unquantized model, ``finetune_lr`` a fraction of each codebook's RMS) on the calibration text in windows of
    ``finetune_window`` tokens (at most ``window``); the model should be float32 there. The result is in
    ``Codebooks.calibration["finetune"]``.
    """
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if config is not None:
        if config.head_dim != head_dim:
            raise ValueError(f"config.head_dim={config.head_dim} does not match the model's head_dim={head_dim}")
        for name, v, have in (("granularity", granularity, config.granularity), ("sinks", sinks, config.sink_length)):
            if v is not None and v != have:
                raise ValueError(f"{name}={v!r} disagrees with config ({have!r}); give it in one place")
        granularity, sinks = config.granularity, config.sink_length
    r = resolve_recipe(recipe, granularity=granularity, sinks=sinks, transform=transform, rotation=rotation, pre_rope=pre_rope)
    if config is None:
        config = PQConfig.from_bits(head_dim, bits, nbits=nbits, granularity=r["granularity"], sink_length=r["sinks"])
    if window is None:  # the longest context the model was trained for, up to 8192
        window = min(8192, getattr(cfg, "max_position_embeddings", None) or 8192)
    if tokens < 1 or window < 1 or samples < 1 or iters < 1:
        raise ValueError(f"tokens, window, samples and iters must be positive (got {tokens}, {window}, {samples}, {iters})")
    if finetune_steps < 0 or not finetune_lr > 0 or finetune_window < 1:
        raise ValueError(f"finetune_steps must be >= 0, finetune_lr > 0 and finetune_window >= 1 (got {finetune_steps}, "
                         f"{finetune_lr}, {finetune_window})")
    if finetune_steps and pre_rope:
        raise ValueError(f"finetune_steps={finetune_steps} tunes post-RoPE codebooks; drop pre_rope or finetune_steps")
    windows = tokenize_windows(tokenizer, text, tokens, window)  # checks the text before any slow work
    n_avail, seen = sum(w.shape[1] for w in windows), max(w.shape[1] for w in windows)
    if n_avail < tokens:  # the codebooks then know keys at positions below `seen` only: recorded as their window
        import warnings

        warnings.warn(f"the calibration text has {n_avail} tokens, fewer than tokens={tokens}: the codebooks are trained "
                      f"on {n_avail}, with keys at positions below {seen}; give a longer text for more", stacklevel=2)
    tune = None
    if finetune_steps:  # the tuning windows, checked before the slow work too
        wins = tuning_windows(tokenizer, text, tokens, min(finetune_window, window))
        if not wins:
            raise ValueError(f"tuning needs at least one full {min(finetune_window, window)}-token window of calibration "
                             f"text; give more tokens ({tokens}) or a shorter finetune_window")
        tune = (wins, finetune_steps, finetune_lr)
    if r["transform"] != "none" or r["rotation"] != "none" or tune:
        cb = _calibrate_variant(model, tokenizer, text, config, r, tokens=tokens, window=window, samples=samples,
                                iters=iters, seed=seed, text_name=text_name, model_name=model_name, progress=progress,
                                tune=tune)
        cb.calibration["window"] = seen  # the longest window the text filled (at most `window`)
        return cb
    n_tok = sum(w.shape[1] for w in windows)
    H = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    per_layer = n_tok * (1 if config.granularity == "layer_head" else H) * (cfg.num_hidden_layers if config.granularity == "merged" else 1)
    keep = min(1.0, 4.0 * samples / max(1, per_layer))  # keep a few times more than k-means samples
    rec = collect_kv(model, windows, keep=keep, seed=seed, pre_rope=pre_rope, progress=progress)
    dev = next(model.parameters()).device
    kc, vc, stats = train_codebooks(rec.keys, rec.values, config, samples=samples, iters=iters, seed=seed, device=dev, progress=progress)
    ident = model_identity(cfg)
    ident["name"] = model_name or getattr(cfg, "_name_or_path", None) or ident["architecture"]
    cal = {"text": text_name, "tokens": n_tok, "window": seen, "iters": iters, "seed": seed, "pre_rope": pre_rope,
           "recipe": recipe, **stats}
    return Codebooks(config, kc, vc, ident, cal)


def tuning_windows(tokenizer, text: str, tokens: int, window: int) -> list:
    """The full ``window``-token windows of the first ``tokens`` tokens of ``text`` (end-to-end tuning steps)."""
    return [w for w in tokenize_windows(tokenizer, text, tokens, window) if w.shape[1] == window]


def _calibrate_variant(model, tokenizer, text: str, config: PQConfig, r: dict, *, tokens: int, window: int, samples: int,
                       iters: int, seed: int, text_name: str, model_name: str | None, progress: bool, tune=None) -> Codebooks:
    """Codes trained in a transformed space (``r["transform"]``, ``r["rotation"]``), folded into the stored
    transforms that MillionCache applies to queries and outputs; ``tune = (windows, steps, lr)`` tunes the
    centroids end to end after k-means."""
    from .eval.calibdata import collect
    from .pq_variants import PQVariant, to_codebooks, train_variant

    data = collect(model, tokenizer, text, tokens=tokens, window=window, text_name=text_name, progress=progress, attention=False)
    var = PQVariant(k_nbits=config.nbits, k_dsub=config.dsub, v_nbits=config.nbits, v_dsub=config.dsub,
                    granularity=config.granularity, transform=r["transform"], sinks=config.sink_length, samples=samples,
                    iters=iters, seed=seed, alloc=ROTATIONS[r["rotation"]])
    dev = next(model.parameters()).device
    vcb = train_variant(data, var, progress=progress, device=None if dev.type == "cpu" else dev)
    n_tok = data.tokens
    del data
    if tune is not None:
        from .finetune import finetune_codebooks

        wins, steps, lr = tune
        finetune_codebooks(vcb, model, wins, steps=steps, lr=lr, progress=progress)
    cb = to_codebooks(vcb, model.config, config.residual_length)
    cb.model["name"] = model_name or getattr(model.config, "_name_or_path", None) or cb.model.get("architecture")
    info = cb.calibration
    cb.calibration = {"text": text_name, "tokens": n_tok, "window": window, "iters": iters, "seed": seed, "pre_rope": False,
                      "recipe": r["recipe"], "transform": r["transform"], "rotation": r["rotation"], "samples": samples,
                      "distortion_k": info.get("rel_mse_k"), "distortion_v": info.get("rel_mse_v"),
                      **{k: v for k, v in info.items() if k not in ("calibration_text", "calibration_tokens", "window", "pre_rope")}}
    return cb


# calibration recipes: the defaults of the options that pick what the codes are trained on
RECIPES = {
    # the best recipe MillionCache serves (docs/quality.md, "Balanced PCA rotation"): 4-bit SQuAD +1.30% all-quantized,
    # -0.02% deployed; 2-bit +27.1% / +0.72% (without the rotation: +2.86% / +42% in the same ablation)
    "recommended": {"granularity": "layer_head", "sinks": 1, "transform": "metric", "rotation": "balanced-keys"},
    # per-layer k-means on the raw post-RoPE vectors (the MILLION paper's method, with per-layer codebooks)
    "plain": {"granularity": "layer", "sinks": 0, "transform": "none", "rotation": "none"},
}
TRANSFORMS = ("none", "metric", "hadamard")
ROTATIONS = {"none": "uniform", "balanced": "balanced", "balanced-keys": "balanced_k"}  # rotation -> PQVariant.alloc


def resolve_recipe(recipe: str = "recommended", *, granularity: str | None = None, sinks: int | None = None,
                   transform: str | None = None, rotation: str | None = None, pre_rope: bool = False,
                   cli: bool = False) -> dict:
    """The calibration options of ``recipe`` with the explicitly given ones (not None) put in.

    A recipe's post-RoPE options (transform, rotation) give way to ``pre_rope=True``, and its rotation to a
    ``granularity`` other than ``layer_head``, unless asked for explicitly; explicit combinations that
    cannot work raise ``ValueError`` naming the values (as command-line flags with ``cli=True``)."""
    def n(k):  # a parameter's name in messages
        return f"--{k.replace('_', '-')}" if cli else k

    def v(x):
        return str(x) if cli else repr(x)

    if recipe not in RECIPES:
        raise ValueError(f"{n('recipe')} {v(recipe)} is not one of {sorted(RECIPES)}")
    given = {k: x for k, x in (("granularity", granularity), ("sinks", sinks), ("transform", transform),
                               ("rotation", rotation)) if x is not None}
    for k, allowed in (("granularity", GRANULARITIES), ("transform", TRANSFORMS), ("rotation", tuple(ROTATIONS))):
        if k in given and given[k] not in allowed:
            raise ValueError(f"{n(k)} {v(given[k])} is not one of {list(allowed)}")
    if "sinks" in given and (not isinstance(given["sinks"], int) or given["sinks"] < 0):
        raise ValueError(f"{n('sinks')} must be a non-negative integer, got {v(given['sinks'])}")
    r = dict(RECIPES[recipe])
    if pre_rope:  # transform and rotation work on post-RoPE keys
        r["transform"] = r["rotation"] = "none"
    if given.get("granularity", "layer_head") != "layer_head":  # the rotation is one per layer and KV head
        r["rotation"] = "none"
    r.update(given)
    for k in ("transform", "rotation"):
        if pre_rope and r[k] != "none":
            raise ValueError(f"{n(k)} {v(r[k])} works on post-RoPE keys; drop {n('pre_rope')} or use {n(k)} {v('none')}")
    if r["rotation"] != "none" and r["granularity"] != "layer_head":
        raise ValueError(f"{n('rotation')} {v(r['rotation'])} is one rotation per layer and KV head: it needs "
                         f"{n('granularity')} {v('layer_head')}, got {v(r['granularity'])}")
    r["recipe"] = recipe
    return r


class _CallableModule(types.ModuleType):
    """``million.calibrate`` names both this module and its :func:`calibrate`: once anything imports the module
    (``from million.calibrate import ...``), the package attribute is the module, so calling it still calibrates."""

    def __call__(self, *args, **kwargs) -> Codebooks:
        return calibrate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
