"""The KV-cache methods compared, each with its quantizer and its true bits per element.

Registry names (``--method``) and the bits each takes (``--bits``):

=============  =========  =====================================================================
name           bits       what
=============  =========  =====================================================================
fp16           16         K/V rounded to fp16 (the reference)
million        4, 2       MILLION as published: one merged codebook for all layers and heads,
                          post-RoPE keys, 8-bit codes, M = d/2 (4 bits) or d/4 (2 bits)
pq             any        PQ with codebooks from ``--codebooks`` (``million calibrate`` output or a
                          :mod:`million.pq_variants` directory), or trained in-process with the
                          best recipe found here (see ``best_variant``)
kivi           4, 2       KIVI: keys per-channel, values per-token, asymmetric uniform, group 32,
                          fp16 window of 128 tokens (deployed protocol)
kvquant        4, 3, 2    KVQuant-style: pre-RoPE per-channel keys, per-channel non-uniform levels
                          from sensitivity-weighted k-means, values per-token non-uniform, 1%
                          dense-and-sparse outliers in fp16, fp16 first token
quanto         4, 2       transformers' ``QuantizedCache`` with the optimum-quanto backend, its
                          defaults (per-token groups of 64, residual 128)
qhitter        4, 2       Q-Hitter-style: keep tokens by accumulated attention and quantization
                          friendliness, evict the rest, 4-bit kept tokens, at matched memory
=============  =========  =====================================================================

Bits per element (:meth:`KVMethod.bits_breakdown`) count everything a sequence's cache holds at a
stated context length: codes, scales and zero points, outliers with their indices, fp16 windows
and sinks, and per-model tables (codebooks, levels, transforms) charged to that one sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .quant import nearest_level, nuq_token_qdq, outlier_mask_thresholds, uniform_qdq
from .runners import block_fp_start, million_fp_start, quanto_fp_start

METHOD_BITS = {
    "fp16": (16,),
    "million": (4, 2),
    "pq": None,  # any the codebooks give
    "kivi": (4, 2),
    "kvquant": (4, 3, 2),
    "quanto": (4, 2),
    "qhitter": (4, 2),
    "pqsparse": None,  # up to the kept tokens' PQ code bits (4-bit codebooks by default)
}


@dataclass
class Shape:
    """KV geometry of a model."""

    L: int
    H: int
    D: int

    @classmethod
    def of(cls, config) -> "Shape":
        from .calibdata import geometry

        L, H, _, D = geometry(config)
        return cls(L, H, D)


class KVMethod:
    """Base: a quantizer for K and V plus its storage accounting.

    ``qdq_key(layer, k [B, H, T, D], pos0)`` / ``qdq_value`` return the reconstruction of states
    whose first token sits at position ``pos0``. ``key_space`` says whether keys are quantized
    after RoPE (in the cache) or before (at ``k_proj``). ``fp_start(t)`` is the deployed cache's
    rule: the first position query ``t`` reads in full precision.
    """

    name = "base"
    key_space = "post_rope"
    needs_calibration = False
    needs_fisher = False  # calibration data must carry Fisher statistics
    window = 0  # fp16 residual window of the deployed cache (tokens)

    def __init__(self, bits: float):
        self.bits = bits
        self.stats: dict = {}

    @property
    def label(self) -> str:
        return f"{self.name}-{self.bits:g}"

    def fit(self, model, calib_fn) -> "KVMethod":
        """Calibrate (``calib_fn()`` returns :class:`~million.eval.calibdata.CalibData`). Default: nothing."""
        return self

    def qdq_key(self, layer: int, k: torch.Tensor, pos0: int) -> torch.Tensor:
        raise NotImplementedError

    def qdq_value(self, layer: int, v: torch.Tensor, pos0: int) -> torch.Tensor:
        raise NotImplementedError

    def fp_start(self, t: torch.Tensor) -> torch.Tensor:
        # no window: every token (the current one included) is read quantized
        return million_fp_start(t, self.window) if self.window else t + 1

    def fp_start_v(self, t: torch.Tensor) -> torch.Tensor:
        """The first full-precision value query ``t`` reads; the keys' (:meth:`fp_start`) unless a method moves its
        values out of the window on their own schedule."""
        return self.fp_start(t)

    def window_tokens(self, context: int) -> int:
        """fp16 window tokens a deployed cache holds at ``context`` tokens."""
        if not self.window:
            return 0
        return int(context - int(self.fp_start(torch.tensor(context - 1))))

    def bits_breakdown(self, shape: Shape, context: int, protocol: str = "all-quantized") -> dict:
        raise NotImplementedError

    def _with_window(self, parts: dict, per_elem_quant_bits: float, context: int, protocol: str) -> dict:
        """Replace ``window`` tokens' worth of quantized storage by fp16 (deployed protocol)."""
        w = self.window_tokens(context) if protocol == "deployed" else 0
        f = w / context
        out = {k: v * (1 - f) for k, v in parts.items()}
        out["window_fp16"] = 16.0 * f
        out["total"] = sum(out.values())
        return out

    def describe(self) -> dict:
        return {"method": self.name, "bits": self.bits, "key_space": self.key_space}


class FP16(KVMethod):
    name = "fp16"

    def qdq_key(self, layer, k, pos0):
        return k.half().to(k.dtype)

    qdq_value = qdq_key

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        return {"codes": 16.0, "total": 16.0}


class KIVI(KVMethod):
    """KIVI (Liu et al. 2024): keys per-channel over groups of 32 tokens, values per-token over
    groups of 32 channels, asymmetric uniform, fp16 scale and zero point per group."""

    name = "kivi"

    def __init__(self, bits: int, group: int = 32, window: int = 128):
        super().__init__(bits)
        self.group, self.window = group, window

    def qdq_key(self, layer, k, pos0):
        return uniform_qdq(k, self.bits, "channel", self.group)

    def qdq_value(self, layer, v, pos0):
        return uniform_qdq(v, self.bits, "token", self.group)

    def fp_start(self, t):
        return block_fp_start(t, self.window)

    def fp_start_v(self, t):
        """KIVI's values leave its fp16 residual one token at a time once it holds ``window``: query ``t`` reads the
        values of ``[t - window, t]`` in full precision (its keys leave in blocks, :meth:`fp_start`)."""
        return (t - self.window).clamp_min(0)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        # keys are grouped along the tokens (32 per group), values along the channels: min(group, D) per group
        g_v = min(self.group, shape.D)
        parts = {"codes": float(self.bits), "scales_zeros_fp16": 0.5 * 32.0 / self.group + 0.5 * 32.0 / g_v}
        return self._with_window(parts, 0, context, protocol)


class Quanto(KVMethod):
    """transformers ``QuantizedCache(backend="quanto")`` as its users run it: ``nbits`` 2 or 4, the
    defaults ``axis_key=axis_value=0``, ``q_group_size=64``, ``residual_length=128``. The
    quantizer is the layer's own ``_quantize``/``_dequantize``."""

    name = "quanto"

    def __init__(self, bits: int, group: int = 64, window: int = 128):
        super().__init__(bits)
        self.group, self.window = group, window
        self._layer = None

    def _q(self):
        if self._layer is None:
            try:
                from transformers.cache_utils import QuantoQuantizedLayer

                self._layer = QuantoQuantizedLayer(nbits=int(self.bits), q_group_size=self.group, residual_length=self.window)
            except ImportError as e:
                raise RuntimeError(f"method quanto needs optimum-quanto: {e}") from None
        return self._layer

    def _qdq(self, x, axis):
        lay = self._q()
        return lay._dequantize(lay._quantize(x.contiguous(), axis=axis)).to(x.dtype)

    def qdq_key(self, layer, k, pos0):
        return self._qdq(k, self._q().axis_key)

    def qdq_value(self, layer, v, pos0):
        return self._qdq(v, self._q().axis_value)

    def fp_start(self, t):
        return quanto_fp_start(t, self.window)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        # scale and zero point per group of 64, counted as fp16 (what a GPU fp16 run stores)
        parts = {"codes": float(self.bits), "scales_zeros_fp16": 32.0 / self.group}
        return self._with_window(parts, 0, context, protocol)


KVQUANT_WEIGHTINGS = ("fisher", "sq", "attn", "none")


class KVQuant(KVMethod):
    """KVQuant-style (Hooper et al. 2024).

    Keys: pre-RoPE, per-channel non-uniform levels (``2**bits`` per layer, head and channel) from
    1-D weighted k-means on calibration keys (weights: the Fisher proxy ``|dLoss/dk|^2`` of each
    token, ``weighting="fisher"``; squared activations, ``"sq"``; attention received, ``"attn"``;
    or none), after removing per-channel outliers (calibrated
    thresholds at the ``outlier/2`` and ``1 - outlier/2`` quantiles), which stay fp16.
    Values: per-token, normalized by the token's own min/max over inliers (fp16 scale and offset
    per head vector), non-uniform levels per layer from k-means with the same weighting; the ``outlier`` largest-magnitude
    elements of each token (over all heads) stay fp16. The first token stays fp16.
    """

    name = "kvquant"
    key_space = "pre_rope"
    needs_calibration = True

    def __init__(self, bits: int, outlier: float = 0.01, sinks: int = 1, weighting: str = "fisher", iters: int = 20,
                 samples: int = 16384):
        super().__init__(bits)
        if weighting not in KVQUANT_WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r} is not one of {KVQUANT_WEIGHTINGS}")
        self.outlier, self.sinks, self.weighting, self.iters, self.samples = outlier, sinks, weighting, iters, samples
        self.needs_fisher = weighting == "fisher"
        self.k_levels = self.k_lo = self.k_hi = self.v_levels = None
        self._count = {"k_out": 0, "k_all": 0, "v_out": 0, "v_all": 0}

    def fit(self, model, calib_fn):
        from ..kmeans import kmeans

        calib = calib_fn()
        n_lv = 2 ** int(self.bits)
        gen = torch.Generator().manual_seed(0)
        keep = calib.positions >= self.sinks
        self.k_levels, self.k_lo, self.k_hi, self.v_levels = [], [], [], []
        q = torch.tensor([self.outlier / 2, 1 - self.outlier / 2])
        for l in range(calib.num_layers):
            k = calib.keys_pre[l][:, keep]  # [H, N, D]
            H, N, D = k.shape
            idx = torch.randperm(N, generator=gen)[: self.samples]
            ks = k[:, idx]
            lohi = torch.quantile(ks.transpose(1, 2), q, dim=-1)  # [2, H, D]
            lo, hi = lohi[0], lohi[1]
            x = ks.permute(0, 2, 1).reshape(H * D, -1)  # [H*D, n]
            inl = (x >= lo.reshape(-1, 1)) & (x <= hi.reshape(-1, 1))
            w = self._weights(calib, l, keep, idx, x, H, D, "k")
            w = w * inl  # outliers do not train the levels
            r = kmeans(x[..., None], n_lv, iters=self.iters, seed=l, weights=w)
            self.k_levels.append(r.centroids[..., 0].sort(-1).values.view(H, D, n_lv))
            self.k_lo.append(lo)
            self.k_hi.append(hi)
            # values: normalized per token over inliers, then one set of levels per layer
            v = calib.values[l][:, keep][:, idx]  # [H, n, D]
            vv = v.permute(1, 0, 2)[None]  # [1, n, H, D]
            z, inl_v = self._normalize_values(vv)
            zs = z[inl_v].reshape(1, -1, 1)
            if self.weighting == "sq":
                wv = zs[..., 0].pow(2)
            elif self.weighting in ("fisher", "attn"):
                tw = self._token_weights(calib, l, keep, idx, "v")  # [H, n]
                wv = tw.t()[None, :, :, None].expand(1, -1, -1, D)[inl_v].reshape(1, -1)
            else:
                wv = torch.ones_like(zs[..., 0])
            sub = torch.randperm(zs.shape[1], generator=gen)[: 8 * self.samples]
            rv = kmeans(zs[:, sub], n_lv, iters=self.iters, seed=1000 + l, weights=wv[:, sub] + 1e-6)
            self.v_levels.append(rv.centroids[0, :, 0].sort().values)
        return self

    def _token_weights(self, calib, l, keep, idx, which):
        """Per-token sensitivity ``[H, n]``: the squared loss gradient (Fisher) or the attention received."""
        if self.weighting == "fisher":
            f = getattr(calib, "fisher", None)
            if f is None:
                raise ValueError("kvquant weighting 'fisher' needs calibration data with Fisher statistics "
                                 "(load_or_collect(..., fisher=True))")
            a = (f.weight_k if which == "k" else f.weight_v)[l][:, keep][:, idx]
        else:
            if calib.attn is None:
                raise ValueError("kvquant weighting 'attn' needs the attention mass of the calibration keys "
                                 "(collect(..., attention=True))")
            a = calib.attn[l][:, keep][:, idx]
        return a / a.mean().clamp_min(1e-30)

    def _weights(self, calib, l, keep, idx, x, H, D, which):
        # x: [H*D, n] channel-major samples
        if self.weighting == "sq":
            return x.pow(2) + 1e-6
        if self.weighting in ("fisher", "attn"):
            return self._token_weights(calib, l, keep, idx, which).repeat_interleave(D, 0) + 1e-6
        return torch.ones_like(x)

    def _value_outliers(self, v):
        # v: [B, T, H, D] -> mask of the top `outlier` fraction per token over all heads
        B, T, H, D = v.shape
        k = int(round(self.outlier * H * D))
        m = torch.zeros(B, T, H * D, dtype=torch.bool, device=v.device)
        if k > 0:
            m.scatter_(-1, v.reshape(B, T, H * D).abs().topk(k, -1).indices, True)
        return m.view(B, T, H, D)

    def _normalize_values(self, v):
        # v: [B, T, H, D] -> normalized inliers z in [-1, 1] and inlier mask
        out = self._value_outliers(v)
        big = torch.finfo(torch.float32).max
        lo = torch.where(out, torch.full_like(v, big), v).amin(-1, keepdim=True)
        hi = torch.where(out, torch.full_like(v, -big), v).amax(-1, keepdim=True)
        hi = torch.maximum(hi, lo + 1e-8)
        z = (v - (hi + lo) / 2) / ((hi - lo) / 2)
        return z, ~out

    def qdq_key(self, layer, k, pos0):
        kf = k.float()
        lv = self.k_levels[layer].to(k.device)[None, :, None]  # [1, H, 1, D, n]
        out = outlier_mask_thresholds(kf, self.k_lo[layer].to(k.device), self.k_hi[layer].to(k.device))
        rec = torch.where(out, kf, nearest_level(kf, lv))
        n = max(0, min(self.sinks - pos0, k.shape[2]))
        if n:
            rec[:, :, :n] = kf[:, :, :n]
        self._count["k_out"] += int(out[:, :, n:].sum())
        self._count["k_all"] += out[:, :, n:].numel()
        return rec.to(k.dtype)

    def qdq_value(self, layer, v, pos0):
        vf = v.float().transpose(1, 2)  # [B, T, H, D]
        out = self._value_outliers(vf)
        rec = nuq_token_qdq(vf, self.v_levels[layer].to(v.device), out).transpose(1, 2)
        n = max(0, min(self.sinks - pos0, v.shape[2]))
        if n:
            rec[:, :, :n] = v.float()[:, :, :n]
        self._count["v_out"] += int(out[:, n:].sum())
        self._count["v_all"] += out[:, n:].numel()
        return rec.to(v.dtype)

    @property
    def outlier_fraction(self) -> dict:
        c = self._count
        f = lambda a, b: (c[a] / c[b]) if c[b] else self.outlier  # noqa: E731
        return {"k": f("k_out", "k_all"), "v": f("v_out", "v_all")}

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        of = self.outlier_fraction
        o = (of["k"] + of["v"]) / 2
        s = min(self.sinks, context)
        q = (context - s) / context
        HD = shape.H * shape.D
        n_lv = 2 ** int(self.bits)
        parts = {
            "codes": self.bits * q,
            # values: fp16 scale + offset per token and head
            "scales_zeros_fp16": 0.5 * 32.0 / shape.D * q,
            # sparse outliers: fp16 value + 16-bit column index, and a 32-bit row pointer per token and layer (K and V)
            "outliers": (o * 32.0 + 32.0 / HD) * q,
            "sinks_fp16": 16.0 * s / context,
            # per-model levels: keys per (layer, head, channel), values per layer; fp16
            "levels_fp16": 16.0 * (shape.L * HD * n_lv + shape.L * n_lv) / (2 * shape.L * HD * context),
            # the keys' per-channel outlier thresholds (lo, hi per layer, head and channel), read online; fp16
            "thresholds_fp16": 16.0 * 2 * shape.L * HD / (2 * shape.L * HD * context),
        }
        parts["total"] = sum(parts.values())
        return parts

    def describe(self):
        return {**super().describe(), "outlier_target": self.outlier, "outlier_measured": self.outlier_fraction,
                "sinks": self.sinks, "weighting": self.weighting}


class PQMethod(KVMethod):
    """Product quantization with a :class:`~million.pq_variants.PQVariant` recipe, or with
    ``million calibrate`` codebooks (``--codebooks DIR``)."""

    name = "pq"
    needs_calibration = True
    window = 128
    evict = None  # protocol served: a million.Eviction (set by `million eval --keep`)
    chunk = 1  # protocol served: tokens per forward

    def __init__(self, bits: float, variant=None, codebooks_dir: str | None = None, label: str | None = None):
        super().__init__(bits)
        self.variant = variant
        self.needs_fisher = codebooks_dir is None and variant is not None and "fisher" in (variant.transform, variant.weighting)
        self.codebooks_dir = codebooks_dir
        self.cb = None  # PQVariantCodebooks
        self._label = label

    @property
    def label(self):
        return self._label or f"{self.name}-{self.bits:g}"

    def fit(self, model, calib_fn):
        from ..pq_variants import PQVariantCodebooks, train_variant

        if self.codebooks_dir is not None:
            self.cb = load_pq_codebooks(self.codebooks_dir, model.config)
            self.variant = self.cb.variant
        else:
            self.cb = train_variant(calib_fn(), self.variant)
        if abs(self.variant.code_bits - self.bits) > 1e-9:
            raise ValueError(f"--bits {self.bits:g} does not match the codebooks, which give {self.variant.code_bits:g} "
                             f"bits per element; allowed: {self.variant.code_bits:g}")
        return self

    def qdq_key(self, layer, k, pos0):
        return self.cb.qdq_keys(layer, k, pos0)

    def qdq_value(self, layer, v, pos0):
        return self.cb.qdq_values(layer, v, pos0)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        sizes = (self.cb.info or {}).get("centroid_values") if self.cb is not None else None
        parts = self.variant.bits_breakdown(shape.L, shape.H, shape.D, context, sizes)
        parts.pop("total")
        w = self.window_tokens(context) if protocol in ("deployed", "served") else 0
        f = w / context
        out = {k: (v * (1 - f) if k in ("codes",) else v) for k, v in parts.items()}
        out["window_fp16"] = 16.0 * f
        ev = self.evict
        if protocol == "served" and ev is not None:
            # what the cache holds at `context` tokens: the kept share of the code positions past the sinks, each
            # with its float32 score and fp16 quantization error per KV head
            sinks = self.variant.sinks if self.variant is not None else 0
            n = max(0, context - w - sinks)
            kept = ev.budget(n) / n if n else 0.0
            out["codes"] *= kept
            out["scores_fp32_err_fp16"] = 48.0 / (2 * shape.D) * kept * n / context
        out["total"] = sum(out.values())
        return out

    def make_runner(self, model, protocol="all-quantized"):
        from .runners import Runner, ServedRunner

        if protocol != "served":
            return Runner(model, self, protocol)
        if self.codebooks_dir is None:
            raise ValueError("--protocol served runs the real cache: give --codebooks DIR written by `million calibrate`")
        from ..codebook import Codebooks

        return ServedRunner(model, Codebooks.load(self.codebooks_dir), self.evict, self.chunk)

    def describe(self):
        d = {**super().describe(), "variant": self.variant.to_dict() if self.variant else None}
        if self.cb is not None and self.cb.info:
            d["codebook_info"] = self.cb.info
        if self.codebooks_dir:
            d["codebooks"] = str(self.codebooks_dir)
        return d


class Million(PQMethod):
    """MILLION as published: merged codebook, post-RoPE keys, 8-bit codes, ``dsub = 8 / bits``."""

    name = "million"

    def __init__(self, bits: int, codebooks_dir: str | None = None):
        from ..pq_variants import PQVariant

        if bits not in (4, 2):
            raise ValueError(f"--bits {bits} is not available for million; allowed: (4, 2)")
        super().__init__(bits, PQVariant(k_nbits=8, k_dsub=8 // bits, v_nbits=8, v_dsub=8 // bits, granularity="merged",
                                          samples=65536), codebooks_dir)

    def fit(self, model, calib_fn):
        super().fit(model, calib_fn)
        if self.variant.granularity != "merged":
            raise ValueError(f"method million needs merged codebooks, got granularity {self.variant.granularity!r}; "
                             "use --method pq for other codebooks")
        return self


class LayerMix(KVMethod):
    """A different method per layer: ``methods[l]`` quantizes layer ``l`` (``None``: the layer is kept in
    fp16, as the ``fp16`` reference, counted as 16 bits). Bits per element are the layer average of each method's own total (every
    layer of the model has the same number of K/V elements). Used by the benchmark's layer scan
    (``benchmarks/bench_quality.py --parts layerscan``): one quantized layer at a time, and bit
    allocations across layers at a matched average."""

    name = "layermix"

    def __init__(self, methods: list, label: str):
        if not methods:
            raise ValueError("LayerMix needs one entry per layer, got none")
        for m in methods:
            if m is not None and getattr(m, "key_space", "post_rope") != "post_rope":
                raise ValueError(f"LayerMix takes post-RoPE methods only, got {m.label} ({m.key_space})")
        self.methods = list(methods)
        bits = sum(16.0 if m is None else float(m.bits) for m in methods) / len(methods)
        super().__init__(bits)
        self._label = label

    @property
    def label(self):
        return self._label

    def _m(self, layer: int):
        if not 0 <= layer < len(self.methods):
            raise ValueError(f"layer {layer} is outside the mix's {len(self.methods)} layers")
        return self.methods[layer]

    def qdq_key(self, layer, k, pos0):
        m = self._m(layer)
        return k.half().to(k.dtype) if m is None else m.qdq_key(layer, k, pos0)

    def qdq_value(self, layer, v, pos0):
        m = self._m(layer)
        return v.half().to(v.dtype) if m is None else m.qdq_value(layer, v, pos0)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        if protocol != "all-quantized":
            raise ValueError(f"LayerMix is measured in the all-quantized protocol only, not {protocol!r}")
        if shape.L != len(self.methods):
            raise ValueError(f"the mix has {len(self.methods)} layers, the model {shape.L}")
        totals = {}
        per_layer = []
        for m in self.methods:
            if m is None:
                per_layer.append(16.0)
                continue
            if id(m) not in totals:
                totals[id(m)] = m.bits_breakdown(shape, context, protocol)["total"]
            per_layer.append(totals[id(m)])
        return {"layers": per_layer, "total": sum(per_layer) / len(per_layer)}

    def describe(self):
        names = ["fp16" if m is None else m.label for m in self.methods]
        return {**super().describe(), "layers": names}


def load_pq_codebooks(directory, model_config=None):
    """A ``million calibrate`` directory (``codebooks.json``) or a PQ variant directory, as
    :class:`~million.pq_variants.PQVariantCodebooks`."""
    from pathlib import Path

    from ..codebook import Codebooks
    from ..pq_variants import PQVariant, PQVariantCodebooks

    d = Path(directory)
    if (d / "pq_variant.json").is_file():
        return PQVariantCodebooks.load(d)
    cb = Codebooks.load(d)
    if model_config is not None:
        cb.check_model(model_config)
    c = cb.config
    L = cb.num_layers or model_config.num_hidden_layers
    v = PQVariant(k_nbits=c.nbits, k_dsub=c.dsub, v_nbits=c.nbits, v_dsub=c.dsub, granularity=c.granularity,
                  sinks=c.sink_length)
    kc = [cb.for_layer(l)[0].float() for l in range(L)]
    vc = [cb.for_layer(l)[1].float() for l in range(L)]
    tr = cb.transforms
    if tr is None:
        return PQVariantCodebooks(v, kc, vc, info={"million_calibrate": cb.calibration})
    # codes of x @ A (keys) and v @ B (values): the same transforms the cache applies, so the evaluation
    # quantizes exactly what MillionCache stores
    rec = (cb.calibration or {}).get("variant")
    if rec is not None:  # the recipe that made them (its transform and rotation count in the bits)
        r = PQVariant.from_dict(rec)
        v = PQVariant.from_dict({**v.to_dict(), "transform": r.transform, "alloc": r.alloc})
    else:
        v = PQVariant.from_dict({**v.to_dict(), "transform": "metric"})  # a dense transform per layer and head
    per = lambda name: [tr[name][l].float() for l in range(L)]  # noqa: E731  [H_kv, D, D] per layer
    return PQVariantCodebooks(v, kc, vc, per("key"), per("key_inverse"), per("value"), per("value_inverse"),
                              info={"million_calibrate": cb.calibration})


def best_variant(bits: float):
    """The PQ recipe chosen from the measurements in docs/quality.md, for 4 or 2 bits per element."""
    from ..pq_variants import PQVariant

    dsub = {4: 2, 2: 4}.get(bits)
    if dsub is None:
        raise ValueError(f"--bits {bits:g} has no default PQ recipe; allowed: (4, 2), or give --codebooks")
    # per-layer-head codebooks in the attention metric, one fp16 sink token, key subspaces sized and
    # given code widths by water-filling on their PCA spectrum (docs/quality.md, "PQ options")
    return PQVariant(k_nbits=8, k_dsub=dsub, v_nbits=8, v_dsub=dsub, granularity="layer_head", transform="metric",
                     sinks=1, weighting="none", alloc="pca_adaptive_k", samples=32768)


def make_method(name: str, bits: float, codebooks: str | None = None, **kw) -> KVMethod:
    """Build a registered method; raises ``ValueError`` naming allowed names / bits."""
    if name not in METHOD_BITS:
        raise ValueError(f"--method {name!r} is not one of {sorted(METHOD_BITS)}")
    allowed = METHOD_BITS[name]
    if allowed is not None and bits not in allowed:
        raise ValueError(f"--bits {bits:g} is not available for {name}; allowed: {allowed}")
    if codebooks is not None and name not in ("pq", "million", "pqsparse"):
        raise ValueError(f"--codebooks applies to methods pq, million and pqsparse, not {name!r}")
    if name == "fp16":
        return FP16(16)
    if name == "kivi":
        return KIVI(int(bits), **kw)
    if name == "quanto":
        return Quanto(int(bits), **kw)
    if name == "kvquant":
        return KVQuant(int(bits), **kw)
    if name == "million":
        return Million(int(bits), codebooks)
    if name == "qhitter":
        from .qhitter import QHitter

        return QHitter(int(bits), **kw)
    if name == "pqsparse":
        from .qhitter import PQHitter

        if not 0 < bits <= 12:
            raise ValueError(f"--bits {bits:g} is out of range for pqsparse; allowed: (0, 12] (at most the codebooks' code bits)")
        pq_bits = kw.pop("pq_bits", 4)
        inner = PQMethod(pq_bits, None, codebooks) if codebooks is not None else PQMethod(pq_bits, best_variant(pq_bits), None)
        return PQHitter(bits, inner, **kw)
    # pq
    if codebooks is not None:
        return PQMethod(bits, None, codebooks)
    return PQMethod(bits, kw.pop("variant", None) or best_variant(bits), None, **kw)
