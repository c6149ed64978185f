"""PQ beyond the published MILLION recipe: the options, their training, and their storage cost.

Options (every one can be switched on alone; :class:`PQVariant` holds them):

- ``granularity``: one codebook for all layers and heads (``merged``, as published), one per layer
  (``layer``) or one per layer and KV head (``layer_head``).
- ``transform`` applied to K and V before PQ, per layer and KV head, that attention can absorb so
  it still runs on codes: ``hadamard`` (orthonormal), ``metric`` (keys: ``A A^T = E[q^T q]``, so
  that the k-means error is the error of the attention scores ``q.k``; values:
  ``A A^T = sum_g W_o[g]^T W_o[g]``, so that it is the error that ``o_proj`` passes on),
  ``metric_hadamard`` (both), ``opq`` (a rotation learned by alternating k-means and Procrustes),
  ``fisher`` (``A A^T = E[g g^T]``, ``g`` the gradient of the next-token loss with respect to the
  post-RoPE key or the value: the second-order loss metric of a K/V error).
  With keys quantized as ``k' = k A``, a query uses ``q' = q A^-T`` (one ``D x D`` product per
  query head and step, after RoPE); for values the inverse folds into ``o_proj``.
- ``sinks``: the first tokens of a sequence stay in fp16 (and are left out of k-means).
- ``weighting``: ``attn`` weights each calibration vector in k-means by the attention its key
  received (mean probability over the queries that saw it); ``fisher`` by the squared norm of
  the loss gradient with respect to it (keys and values separately); ``none`` is plain k-means.
- ``k_nbits/k_dsub`` and ``v_nbits/v_dsub``: bits per code (4..12) and subvector size for keys and
  values separately (9..12-bit codes, or more bits to keys than to values at the same average).
- ``alloc="pca"``: rotate every head's (transformed) vectors onto their principal axes (one more
  rotation, absorbed like the others), cut them into subspaces of ``dsub`` consecutive
  components, and give each subspace its own code width by reverse water-filling on the
  component variances, keeping the total at ``nbits`` per ``dsub`` elements (so the bits per
  element are unchanged). High-variance subspaces get up to ``alloc_max_bits`` (9..12-bit
  codes), near-empty ones few or none. ``alloc="pca_adaptive"`` also sizes the subspaces (8, 4,
  2 or 1 components, the high-variance ones small) from the water-filling rates. The ``_k``
  forms (``pca_k``, ``pca_adaptive_k``) do this for keys only (values keep uniform subspaces:
  their spectrum is nearly flat, so there is little to gain for the training time).
- ``alloc="balanced"``: the same PCA rotation, but uniform subspaces and code widths: the principal
  components are dealt to the ``D / dsub`` subspaces so that the products of their variances come
  out as equal as possible (greedy eigenvalue allocation, as in non-parametric OPQ), which
  decorrelates the subspaces and spreads the variance evenly over codes of one width. Unlike the
  ``pca`` forms it changes nothing but the (folded) transform, so MillionCache serves it.
  ``balanced_k`` rotates the keys only.

Bits per element are ``nbits / dsub`` for the codes; codebooks (fp16), transforms (fp16) and sinks
are counted by :meth:`PQVariant.bits_breakdown` at a stated context length.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .eval.quant import hadamard, pq_qdq
from .kmeans import kmeans

TRANSFORMS = ("none", "hadamard", "metric", "metric_hadamard", "opq", "fisher")
WEIGHTINGS = ("none", "attn", "fisher")
ALLOCS = ("uniform", "pca", "pca_adaptive", "pca_k", "pca_adaptive_k", "balanced", "balanced_k")
UNIFORM_WIDTHS = ("uniform", "balanced", "balanced_k")  # one subspace size and code width: servable
GRANULARITIES = ("merged", "layer", "layer_head")
VARIANT_VERSION = 1


@dataclass
class PQVariant:
    """One PQ recipe (validated)."""

    k_nbits: int = 8
    k_dsub: int = 4
    v_nbits: int = 8
    v_dsub: int = 4
    granularity: str = "layer_head"
    transform: str = "none"
    sinks: int = 0
    weighting: str = "none"
    alloc: str = "uniform"
    alloc_max_bits: int = 10
    samples: int = 8192
    iters: int = 16
    seed: int = 0
    version: int = VARIANT_VERSION

    def __post_init__(self):
        for n in ("k_nbits", "v_nbits"):
            v = getattr(self, n)
            if not isinstance(v, int) or not 4 <= v <= 12:
                raise ValueError(f"{n}={v!r} is out of range; allowed: 4..12")
        for n in ("k_dsub", "v_dsub", "samples", "iters"):
            v = getattr(self, n)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{n}={v!r} must be a positive integer")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is not one of {GRANULARITIES}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform={self.transform!r} is not one of {TRANSFORMS}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={self.weighting!r} is not one of {WEIGHTINGS}")
        if not isinstance(self.alloc_max_bits, int) or not 1 <= self.alloc_max_bits <= 12:
            raise ValueError(f"alloc_max_bits={self.alloc_max_bits!r} is out of range; allowed: 1..12")
        if self.alloc not in ALLOCS:
            raise ValueError(f"alloc={self.alloc!r} is not one of {ALLOCS}")
        if self.alloc != "uniform" and (self.granularity != "layer_head" or self.transform == "opq"):
            raise ValueError(f"alloc {self.alloc!r} needs granularity 'layer_head' and a transform other than 'opq'")
        if not isinstance(self.sinks, int) or self.sinks < 0:
            raise ValueError(f"sinks={self.sinks!r} must be an integer >= 0")
        if self.version != VARIANT_VERSION:
            raise ValueError(f"PQVariant version {self.version} is not supported; this million reads {VARIANT_VERSION}")

    @property
    def k_bits(self) -> float:
        return self.k_nbits / self.k_dsub

    @property
    def v_bits(self) -> float:
        return self.v_nbits / self.v_dsub

    @property
    def code_bits(self) -> float:
        """Code bits per element, keys and values averaged."""
        return (self.k_bits + self.v_bits) / 2

    def check_head_dim(self, D: int) -> None:
        for n in ("k_dsub", "v_dsub"):
            if D % getattr(self, n):
                divisors = [m for m in range(1, D + 1) if D % m == 0]
                raise ValueError(f"{n}={getattr(self, n)} must divide head_dim={D}; allowed: {divisors}")
        if self.transform in ("hadamard", "metric_hadamard") and D & (D - 1):
            raise ValueError(f"transform {self.transform!r} needs a power-of-two head_dim, got {D}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PQVariant":
        known = {f.name for f in fields(cls)}
        bad = set(d) - known
        if bad:
            raise ValueError(f"unknown PQVariant fields {sorted(bad)}; allowed: {sorted(known)}")
        return cls(**d)

    def bits_breakdown(self, L: int, H: int, D: int, context: int, alloc_sizes: int | None = None) -> dict:
        """Bits per K/V element of one sequence of ``context`` tokens, by component.

        ``codebooks`` and ``transforms`` are per model (shared by every sequence); they are charged
        to this one sequence here, the worst case.
        """
        elems = 2 * L * H * D * context
        Lg, Hg = {"merged": (1, 1), "layer": (L, 1), "layer_head": (L, H)}[self.granularity]
        cb_vals = Lg * Hg * ((2**self.k_nbits) * D + (2**self.v_nbits) * D)  # M * ksub * dsub = ksub * D
        if self.alloc not in UNIFORM_WIDTHS and alloc_sizes is not None:
            cb_vals = alloc_sizes  # exact count of centroid values, from the trained widths
        n_t = {"none": 0, "hadamard": 0, "metric": 3, "metric_hadamard": 3, "opq": 3, "fisher": 3}[self.transform]
        if self.alloc != "uniform":
            n_t = 3  # the PCA rotation makes every transform a dense matrix (keys only for *_k: values as above)
            if self.alloc.endswith("_k") and self.transform in ("none", "hadamard"):
                n_t = 2
        # keys: A and A^-T per (layer, head); values: A (its inverse folds into o_proj); Hadamard is implicit
        tr_vals = n_t * L * H * D * D
        s = min(self.sinks, context)
        out = {
            "codes": self.code_bits * (context - s) / context,
            "sinks_fp16": 16.0 * s / context,
            "codebooks_fp16": 16.0 * cb_vals / elems,
            "transforms_fp16": 16.0 * tr_vals / elems,
        }
        out["total"] = sum(out.values())
        return out


@dataclass
class PQVariantCodebooks:
    """Trained codebooks (and transforms) of a :class:`PQVariant`, per layer.

    key_centroids[l], value_centroids[l] : ``[Hc, M, ksub, dsub]`` (``Hc`` 1 or ``H_kv``)
    key_transform[l], key_inverse[l], value_transform[l], value_inverse[l] : ``[H_kv, D, D]`` or None
    """

    variant: PQVariant
    key_centroids: list
    value_centroids: list
    key_transform: list | None = None
    key_inverse: list | None = None
    value_transform: list | None = None
    value_inverse: list | None = None
    info: dict | None = None
    key_alloc: list | None = None  # alloc "pca*": per layer [H, M, 2] (bits, dims); centroids padded
    value_alloc: list | None = None

    def _on(self, t, device):
        """``t`` on ``device``, copied once and memoized (codebooks are stored on the CPU)."""
        if t is None or t.device == device:
            return t
        memo = self.__dict__.setdefault("_device_copies", {})
        key = (id(t), str(device))
        if key not in memo:
            memo[key] = t.to(device)
        return memo[key]

    def _qdq(self, x, cents, alloc, t, ti):
        cents, alloc, t, ti = (self._on(a, x.device) for a in (cents, alloc, t, ti))
        if alloc is None:
            return pq_qdq(x, cents, t, ti)
        plans = self.__dict__.setdefault("_plans", {})
        key = id(alloc)
        if key not in plans:
            plans[key] = _alloc_plan(cents, alloc)
        return pq_alloc_qdq(x, cents, alloc, t, ti, plans[key])

    def qdq_keys(self, layer: int, k: torch.Tensor, pos0: int = 0) -> torch.Tensor:
        """Quantize-dequantize post-RoPE keys ``[B, H, T, D]`` whose first token has position ``pos0``."""
        t = self.key_transform[layer] if self.key_transform else None
        ti = self.key_inverse[layer] if self.key_inverse else None
        a = self.key_alloc[layer] if self.key_alloc else None
        return _with_sinks(k, pos0, self.variant.sinks, lambda x: self._qdq(x, self.key_centroids[layer], a, t, ti))

    def qdq_values(self, layer: int, v: torch.Tensor, pos0: int = 0) -> torch.Tensor:
        t = self.value_transform[layer] if self.value_transform else None
        ti = self.value_inverse[layer] if self.value_inverse else None
        a = self.value_alloc[layer] if self.value_alloc else None
        return _with_sinks(v, pos0, self.variant.sinks, lambda x: self._qdq(x, self.value_centroids[layer], a, t, ti))

    def save(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {}
        for name in _TENSOR_LISTS:
            xs = getattr(self, name)
            if xs:
                for i, x in enumerate(xs):
                    t = x if name.endswith("alloc") else x.float()
                    tensors[f"{name}.{i}"] = t.contiguous().clone()  # merged codebooks are views of one tensor
        save_file(tensors, str(d / "pq_variant.safetensors"))
        meta = {"format": "million-pq-variant", "variant": self.variant.to_dict(), "layers": len(self.key_centroids), "info": self.info or {}}
        (d / "pq_variant.json").write_text(json.dumps(meta, indent=2) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "PQVariantCodebooks":
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / "pq_variant.json").is_file():
            raise FileNotFoundError(f"{str(directory)!r} is not a PQ variant directory (needs pq_variant.json)")
        meta = json.loads((d / "pq_variant.json").read_text())
        if meta.get("format") != "million-pq-variant":
            raise ValueError(f"{d / 'pq_variant.json'} is not a million PQ variant file")
        t = load_file(str(d / "pq_variant.safetensors"))
        L = meta["layers"]
        get = lambda name: [t[f"{name}.{i}"] for i in range(L)] if f"{name}.0" in t else None  # noqa: E731
        return cls(PQVariant.from_dict(meta["variant"]), get("key_centroids"), get("value_centroids"), get("key_transform"),
                   get("key_inverse"), get("value_transform"), get("value_inverse"), meta.get("info"),
                   get("key_alloc"), get("value_alloc"))


_TENSOR_LISTS = ("key_centroids", "value_centroids", "key_transform", "key_inverse", "value_transform", "value_inverse",
                 "key_alloc", "value_alloc")


def _alloc_plan(centroids: torch.Tensor, alloc: torch.Tensor) -> list:
    """Group the subspaces of all heads by (bits, dims): ``[(heads [P], offsets [P], centroids [P, k, d])]``."""
    groups: dict = {}
    for h in range(alloc.shape[0]):
        o = 0
        for m in range(alloc.shape[1]):
            b, d = int(alloc[h, m, 0]), int(alloc[h, m, 1])
            if b < 0:
                break
            groups.setdefault((b, d), []).append((h, o, centroids[h, m, : 2**b, :d]))
            o += d
    return [(torch.tensor([g[0] for g in v]), torch.tensor([g[1] for g in v]), torch.stack([g[2] for g in v]).float())
            for (b, d), v in sorted(groups.items())]


def pq_alloc_qdq(x: torch.Tensor, centroids: torch.Tensor, alloc: torch.Tensor, transform=None, inverse=None,
                 plan: list | None = None) -> torch.Tensor:
    """PQ round trip with a code width and a subspace size per head and subspace.

    ``x [B, H, T, D]``; ``alloc [H, M, 2]`` int: ``(bits, dims)`` of subspace ``m`` of head ``h``
    (subspaces tile ``D`` in order; ``bits = -1`` marks padding); ``centroids [H, M, 2**max_bits,
    max_dims]`` (subspace ``(h, m)`` uses its first ``2**bits`` rows and ``dims`` columns);
    ``transform``/``inverse`` ``[H, D, D]`` or None; ``plan``: :func:`_alloc_plan` (computed if None).
    """
    if x.shape[2] == 0:
        return x
    B, H, T, D = x.shape
    xf = x.float()
    if transform is not None:
        xf = torch.einsum("bhtd,hde->bhte", xf, transform.float())
    rec = torch.empty_like(xf)
    xt = xf.permute(1, 0, 2, 3).reshape(H, B * T, D)
    for heads, offs, c in plan if plan is not None else _alloc_plan(centroids, alloc):
        d = c.shape[-1]
        cols = offs[:, None] + torch.arange(d)[None]  # [P, d]
        xs = xt[heads[:, None, None], torch.arange(B * T)[None, :, None], cols[:, None, :]]  # [P, BT, d]
        dist = torch.baddbmm((c * c).sum(-1)[:, None, :], xs, c.transpose(1, 2), alpha=-2)  # [P, BT, k]
        q = torch.gather(c, 1, dist.argmin(-1)[..., None].expand(-1, -1, d))  # [P, BT, d]
        rec_t = q.view(len(heads), B, T, d)
        for i in range(len(heads)):
            rec[:, int(heads[i]), :, int(offs[i]) : int(offs[i]) + d] = rec_t[i]
    if inverse is not None:
        rec = torch.einsum("bhtd,hde->bhte", rec, inverse.float())
    return rec.to(x.dtype)


def adaptive_partition(var: torch.Tensor, total: int, max_bits: int = 10, sizes=(8, 4, 2, 1)) -> list[tuple[int, int]]:
    """Subspaces ``[(bits, dims), ...]`` tiling components of variances ``var [D]`` (descending).

    Reverse water-filling gives each component a rate ``max(0, log2(var / theta) / 2)`` with the
    rates summing to ``total``; components are then grouped in order into the largest subspace
    (8, 4, 2 or 1 dims) whose rate fits ``max_bits``, and integer widths are set greedily on the
    high-rate model ``D(b) = var * 2**(-2b/dims)`` so that they sum to ``total``.
    """
    v = var.double().clamp_min(1e-30)
    D = v.numel()
    lo, hi = float(v.min()) * 2.0 ** (-2 * total), float(v.max())
    for _ in range(200):  # bisection on theta (geometric)
        th = (lo * hi) ** 0.5
        r = (0.5 * torch.log2(v / th)).clamp_min(0)
        lo, hi = (th, hi) if r.sum() > total else (lo, th)
    r = (0.5 * torch.log2(v / ((lo * hi) ** 0.5))).clamp_min(0)
    parts, i = [], 0
    while i < D:
        for s in sizes:
            if i + s <= D and (float(r[i : i + s].sum()) <= max_bits or s == 1):
                parts.append((i, s))
                i += s
                break
    var_p = torch.tensor([float(v[i : i + s].sum()) for i, s in parts])
    dims = torch.tensor([s for _, s in parts], dtype=torch.float64)
    bits = torch.zeros(len(parts), dtype=torch.long)
    dist = var_p.double().clone()
    for _ in range(min(total, len(parts) * max_bits)):
        gain = torch.where(bits < max_bits, dist * (1 - 2.0 ** (-2.0 / dims)), torch.full_like(dist, -1.0))
        m = int(gain.argmax())
        bits[m] += 1
        dist[m] *= 2.0 ** (-2.0 / float(dims[m]))
    return [(int(b), s) for b, (_, s) in zip(bits, parts)]


def water_fill(var: torch.Tensor, dsub: int, total: int, max_bits: int = 12) -> torch.Tensor:
    """Code widths for subspaces of variance ``var [M]`` summing to ``total`` bits (greedy reverse
    water-filling on the high-rate model ``D(b) = var * 2**(-2b/dsub)``)."""
    M = var.numel()
    b = torch.zeros(M, dtype=torch.long)
    dist = var.double().clone()
    for _ in range(min(total, M * max_bits)):
        gain = torch.where(b < max_bits, dist, torch.full_like(dist, -1.0))
        m = int(gain.argmax())
        b[m] += 1
        dist[m] *= 2.0 ** (-2.0 / dsub)
    return b


def _with_sinks(x: torch.Tensor, pos0: int, sinks: int, fn) -> torch.Tensor:
    # positions [pos0, pos0 + T): the ones below `sinks` pass through unquantized
    n = max(0, min(sinks - pos0, x.shape[2]))
    if n == 0:
        return fn(x)
    if n == x.shape[2]:
        return x
    return torch.cat([x[:, :, :n], fn(x[:, :, n:])], 2)


def _sqrtm(S: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric square root of SPD ``[..., D, D]`` and its inverse, with a relative ridge."""
    D = S.shape[-1]
    S = S.double()
    tr = S.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None] / D
    S = S + ridge * tr * torch.eye(D, dtype=S.dtype)
    e, U = torch.linalg.eigh(S)
    e = e.clamp_min(1e-12)
    A = U @ torch.diag_embed(e.sqrt()) @ U.transpose(-1, -2)
    Ai = U @ torch.diag_embed(e.rsqrt()) @ U.transpose(-1, -2)
    return A.float(), Ai.float()


def _fisher(calib):
    f = getattr(calib, "fisher", None)
    if f is None:
        raise ValueError("this PQ variant needs Fisher statistics: calibration data from "
                         "million.eval.calibdata.load_or_collect(..., fisher=True)")
    return f


def _transforms(calib, variant: PQVariant, D: int):
    """Per layer ``(A_k, A_k^-1, A_v, A_v^-1)``, each ``[H, D, D]`` or None (row-vector convention)."""
    L = calib.num_layers
    H = calib.keys_pre[0].shape[0]
    t = variant.transform
    if t in ("none", "opq"):
        return None
    ks, kis, vs, vis = [], [], [], []
    Hd = hadamard(D)
    for l in range(L):
        if t == "hadamard":
            A_k = A_v = Hd.expand(H, D, D)
            Ai_k = Ai_v = Hd.t().expand(H, D, D)
        elif t == "fisher":
            f = _fisher(calib)
            A_k, Ai_k = _sqrtm(f.metric_k[l])
            A_v, Ai_v = _sqrtm(f.metric_v[l])
        else:
            A_k, Ai_k = _sqrtm(calib.q_moment[l])
            A_v, Ai_v = _sqrtm(calib.o_moment[l])
            if t == "metric_hadamard":
                A_k, Ai_k = A_k @ Hd, Hd.t() @ Ai_k
                A_v, Ai_v = A_v @ Hd, Hd.t() @ Ai_v
        ks.append(A_k.contiguous())
        kis.append(Ai_k.contiguous())
        vs.append(A_v.contiguous())
        vis.append(Ai_v.contiguous())
    return ks, kis, vs, vis


def _kmeans_on(device, data: torch.Tensor, k: int, weights=None, **kw) -> torch.Tensor:
    """k-means centroids of ``data [P, n, d]`` computed on ``device`` (None: where ``data`` is), returned on the CPU."""
    if device is not None:
        data = data.to(device)
        weights = None if weights is None else weights.to(device)
    return kmeans(data, k, weights=weights, **kw).centroids.cpu()


def _train_group(x: torch.Tensor, w: torch.Tensor | None, nbits: int, dsub: int, variant: PQVariant, seed: int,
                 progress: bool = False, device=None) -> torch.Tensor:
    """k-means codebooks for groups of samples: ``x [G, n, D]`` -> ``[G, M, ksub, dsub]``."""
    G, n, D = x.shape
    M, ksub = D // dsub, 2**nbits
    if n < ksub:
        raise ValueError(f"too few calibration vectors ({n}) for ksub={ksub} centroids; give more calibration tokens")
    data = x.view(G, n, M, dsub).permute(0, 2, 1, 3).reshape(G * M, n, dsub)
    ww = None if w is None else w[:, None, :].expand(G, M, n).reshape(G * M, n)
    per_chunk = max(1, (1 << 27) // max(1, n * ksub))
    chunks = range(0, G * M, per_chunk)
    out = []
    # one bar over the chunks (a bar per chunk's iterations would print hundreds of lines)
    for c0 in tqdm(chunks, desc=f"k-means ({G * M} codebooks, k={ksub})", disable=not progress or len(chunks) == 1):
        out.append(_kmeans_on(device, data[c0 : c0 + per_chunk], ksub, iters=variant.iters, seed=seed + c0,
                              weights=None if ww is None else ww[c0 : c0 + per_chunk], progress=progress and len(chunks) == 1))
    return torch.cat(out, 0).view(G, M, ksub, dsub)


def _groups(xs: list, ws: list | None, granularity: str, samples: int, gen: torch.Generator):
    """Per-layer ``[H, N, D]`` samples -> ``([G, n, D], [G, n] or None)`` by granularity, subsampled to ``samples``."""
    def pick(x, w):
        N = x.shape[1]
        if N <= samples:
            return x, w
        idx = torch.randperm(N, generator=gen)[:samples]
        return x[:, idx], None if w is None else w[:, idx]

    D = xs[0].shape[-1]
    if granularity == "merged":
        x = torch.cat([x.reshape(-1, D) for x in xs])[None]
        w = None if ws is None else torch.cat([w.reshape(-1) for w in ws])[None]
        return pick(x, w)
    if granularity == "layer":
        parts = [pick(x.reshape(1, -1, D), None if w is None else w.reshape(1, -1)) for x, w in zip(xs, ws or [None] * len(xs))]
    else:
        parts = [pick(x, w) for x, w in zip(xs, ws or [None] * len(xs))]
    x = torch.cat([p[0] for p in parts])
    w = None if ws is None else torch.cat([p[1] for p in parts])
    return x, w


def _opq(x: torch.Tensor, w, nbits: int, dsub: int, variant: PQVariant, seed: int, outer: int = 4, device=None):
    """OPQ (non-parametric): rotation ``R [G, D, D]`` and codebooks for ``x [G, n, D]``."""
    G, n, D = x.shape
    # init: PCA with eigenvalues dealt round-robin over subspaces (balanced variance)
    C = torch.einsum("gnd,gne->gde", x, x) / n
    e, U = torch.linalg.eigh(C.double())
    U = U.flip(-1).float()  # descending variance
    M = D // dsub
    order = torch.arange(D).view(dsub, M).t().reshape(-1)  # component j -> subspace j % M
    R = U[:, :, order]
    v = PQVariant(**{**variant.to_dict(), "iters": max(4, variant.iters // 2)})
    for it in range(outer):
        xr = torch.einsum("gnd,gde->gne", x, R)
        cent = _train_group(xr, w, nbits, dsub, v, seed + 7919 * it, device=device)
        rec = torch.stack([pq_qdq(xr[g][None, None], cent[g][None])[0, 0] for g in range(G)])  # [G, n, D]
        # R = argmin ||x R - rec|| over rotations: Procrustes on x^T rec
        Uu, _, Vh = torch.linalg.svd(torch.einsum("gnd,gne->gde", x, rec).double())
        R = (Uu @ Vh).float()
    xr = torch.einsum("gnd,gde->gne", x, R)
    return R, _train_group(xr, w, nbits, dsub, variant, seed + 104729, device=device)


def train_variant(calib, variant: PQVariant, progress: bool = False, device=None) -> PQVariantCodebooks:
    """Train the codebooks (and transforms) of ``variant`` on :class:`~million.eval.calibdata.CalibData`.

    ``device``: where k-means runs (e.g. ``"cuda"``; default: the CPU, where the calibration data
    lives); the codebooks are returned on the CPU either way."""
    L = calib.num_layers
    H, _, D = calib.keys_pre[0].shape
    variant.check_head_dim(D)
    gen = torch.Generator().manual_seed(variant.seed)
    keep = calib.positions >= variant.sinks  # sinks stay fp16: not trained on
    keys = [calib.keys_post(l)[:, keep] for l in range(L)]
    vals = [calib.values[l][:, keep] for l in range(L)]
    ws = wv = None
    if variant.weighting == "attn":
        if calib.attn is None:
            raise ValueError("weighting 'attn' needs the attention mass of the calibration keys: collect(..., attention=True)")
        ws = [a[:, keep] for a in calib.attn]
        ws = wv = [w / w.mean().clamp_min(1e-12) for w in ws]
    elif variant.weighting == "fisher":
        f = _fisher(calib)
        ws = [w[:, keep] / w[:, keep].mean().clamp_min(1e-30) for w in f.weight_k]
        wv = [w[:, keep] / w[:, keep].mean().clamp_min(1e-30) for w in f.weight_v]
    tr = _transforms(calib, variant, D)
    if tr is not None:
        ks, kis, vs, vis = tr
        keys = [torch.einsum("hnd,hde->hne", x, A) for x, A in zip(keys, ks)]
        vals = [torch.einsum("hnd,hde->hne", x, A) for x, A in zip(vals, vs)]
    else:
        ks = kis = vs = vis = None
    Lg, Hg = {"merged": (1, 1), "layer": (L, 1), "layer_head": (L, H)}[variant.granularity]
    if variant.alloc != "uniform":  # every PCA form rotates: the transforms become dense (identity if there were none)
        eye = torch.eye(D).expand(H, D, D)
        ks, kis, vs, vis = (ks, kis, vs, vis) if ks is not None else ([eye] * L, [eye] * L, [eye] * L, [eye] * L)

    def fold(t, ti, U):  # codes of x @ (t U); the inverse side takes U^T ti
        return [(t[l] @ U[l]).contiguous() for l in range(L)], [(U[l].transpose(-1, -2) @ ti[l]).contiguous() for l in range(L)]

    if variant.alloc in ("balanced", "balanced_k"):  # a rotation folded into the transforms; uniform codes below
        kU = [balanced_rotation(x, variant.k_dsub) for x in keys]
        keys = [torch.einsum("hnd,hde->hne", x, U) for x, U in zip(keys, kU)]
        ks, kis = fold(ks, kis, kU)
        if variant.alloc == "balanced":
            vU = [balanced_rotation(x, variant.v_dsub) for x in vals]
            vals = [torch.einsum("hnd,hde->hne", x, U) for x, U in zip(vals, vU)]
            vs, vis = fold(vs, vis, vU)
    if variant.alloc not in UNIFORM_WIDTHS:
        kc, ka, kU = _train_alloc(keys, ws, variant.k_nbits, variant.k_dsub, variant, gen, 0, device)
        ks, kis = fold(ks, kis, kU)
        if variant.alloc.endswith("_k"):  # values: uniform subspaces
            x, w = _groups(vals, wv, "layer_head", variant.samples, gen)
            cent = _train_group(x, w, variant.v_nbits, variant.v_dsub, variant, variant.seed + (1 << 20), device=device)
            vc, va = [cent.view(L, H, *cent.shape[1:])[l] for l in range(L)], None
        else:
            vc, va, vU = _train_alloc(vals, wv, variant.v_nbits, variant.v_dsub, variant, gen, 1 << 20, device)
            vs, vis = fold(vs, vis, vU)
        cb = PQVariantCodebooks(variant, kc, vc, ks, kis, vs, vis, key_alloc=ka, value_alloc=va)
        cb.info = {"calibration_text": calib.text, "calibration_tokens": calib.tokens, **distortion(cb, calib),
                   "centroid_values": sum(int(((2 ** a[..., 0]) * a[..., 1] * (a[..., 0] >= 0)).sum()) for a in ka + (va or []))
                   + (0 if va else L * H * (2**variant.v_nbits) * D)}
        return cb

    def train(xs, ws, nbits, dsub, salt):
        x, w = _groups(xs, ws, variant.granularity, variant.samples, gen)
        if variant.transform == "opq":
            if variant.granularity != "layer_head":
                raise ValueError("transform 'opq' needs granularity 'layer_head' (one rotation per layer and head)")
            R, cent = _opq(x, w, nbits, dsub, variant, variant.seed + salt, device=device)
            return cent.view(Lg, Hg, *cent.shape[1:]), R.view(L, H, D, D)
        cent = _train_group(x, w, nbits, dsub, variant, variant.seed + salt, progress, device)
        return cent.view(Lg, Hg, *cent.shape[1:]), None

    kc, kR = train(keys, ws, variant.k_nbits, variant.k_dsub, 0)
    vc, vR = train(vals, wv, variant.v_nbits, variant.v_dsub, 1 << 20)
    if kR is not None:
        ks = [kR[l] for l in range(L)]
        kis = [kR[l].transpose(-1, -2) for l in range(L)]
        vs = [vR[l] for l in range(L)]
        vis = [vR[l].transpose(-1, -2) for l in range(L)]
    per_layer = lambda c: [c[l if Lg > 1 else 0] for l in range(L)]  # noqa: E731
    cb = PQVariantCodebooks(variant, per_layer(kc), per_layer(vc), ks, kis, vs, vis)
    cb.info = {"calibration_text": calib.text, "calibration_tokens": calib.tokens, "window": calib.window, "pre_rope": False,
               **distortion(cb, calib)}
    return cb


def balanced_rotation(x: torch.Tensor, dsub: int) -> torch.Tensor:
    """Per-head rotation ``[H, D, D]`` for ``x [H, N, D]``: the principal axes, dealt to the ``D / dsub``
    subspaces of ``dsub`` consecutive output columns so that the products of the variances in each subspace
    are as equal as possible (components in descending variance, each to the subspace with the smallest
    log-variance sum that still has room). The columns stay orthonormal, so ``x @ R`` keeps every distance."""
    H, N, D = x.shape
    M = D // dsub
    C = torch.einsum("hnd,hne->hde", x.double(), x.double()) / max(1, N)
    e, U = torch.linalg.eigh(C)
    e, U = e.flip(-1).clamp_min(1e-20), U.flip(-1)  # descending variance
    out = torch.empty(H, D, D, dtype=torch.float64)
    for h in range(H):
        logs = torch.log(e[h]).tolist()
        load, room, slots = [0.0] * M, [dsub] * M, [[] for _ in range(M)]
        for j in range(D):  # largest variance first, to the open subspace with the least log-variance so far
            m = min((m for m in range(M) if room[m]), key=lambda m: load[m])
            slots[m].append(j)
            load[m] += logs[j]
            room[m] -= 1
        order = torch.tensor([j for m in range(M) for j in slots[m]])
        out[h] = U[h][:, order]
    return out.to(x.dtype)


def _train_alloc(xs: list, ws: list | None, nbits: int, dsub: int, variant: PQVariant, gen: torch.Generator, salt: int,
                 device=None):
    """PCA rotation, subspaces with water-filled code widths, and their codebooks, per layer and head.

    Returns per layer: centroids ``[H, M, 2**max_bits, max_dims]`` (zero-padded), ``alloc [H, M, 2]``
    (bits, dims; -1 padding) and the rotation ``[H, D, D]``.
    """
    L = len(xs)
    H, N, D = xs[0].shape
    total = D * nbits // dsub  # bits per head vector, as with uniform subspaces
    rots, plans, rotated = [], [], []
    for x in xs:
        C = torch.einsum("hnd,hne->hde", x, x).double() / N
        e, U = torch.linalg.eigh(C)
        e, U = e.flip(-1).clamp_min(0).float(), U.flip(-1).float()  # descending variance
        rots.append(U)
        rotated.append(torch.einsum("hnd,hde->hne", x, U))
        row = []
        for h in range(H):
            if variant.alloc == "pca":
                b = water_fill(e[h].view(D // dsub, dsub).sum(-1), dsub, total, variant.alloc_max_bits)
                row.append([(int(bb), dsub) for bb in b])
            else:
                row.append(adaptive_partition(e[h], total, variant.alloc_max_bits))
        plans.append(row)
    M = max(len(p) for row in plans for p in row)
    dmax = max(d for row in plans for p in row for _, d in p)
    bmax = max(b for row in plans for p in row for b, _ in p)
    alloc = torch.full((L, H, M, 2), -1, dtype=torch.long)
    jobs: dict = {}  # (bits, dims) -> [(l, h, m, offset)]
    for l, row in enumerate(plans):
        for h, p in enumerate(row):
            o = 0
            for m, (b, d) in enumerate(p):
                alloc[l, h, m] = torch.tensor([b, d])
                jobs.setdefault((b, d), []).append((l, h, m, o))
                o += d
    cents = torch.zeros(L, H, M, 2**bmax, dmax)
    for (b, d), where in sorted(jobs.items()):
        k = 2**b
        n = min(N, max(variant.samples, 4 * k))
        idx = torch.randperm(N, generator=gen)[:n]
        data = torch.stack([rotated[l][h, idx, o : o + d] for l, h, m, o in where])  # [P, n, d]
        w = None if ws is None else torch.stack([ws[l][h, idx] for l, h, m, o in where])
        per_chunk = max(1, (1 << 27) // max(1, n * k * max(1, d // 4)))
        out = []
        for c0 in range(0, len(where), per_chunk):
            seed = variant.seed + salt + 131 * b + 7 * d + c0
            wc = None if w is None else w[c0 : c0 + per_chunk]
            out.append(_kmeans_on(device, data[c0 : c0 + per_chunk], k, iters=variant.iters, seed=seed, weights=wc))
        for (l, h, m, o), c in zip(where, torch.cat(out)):
            cents[l, h, m, :k, :d] = c
    return [cents[l] for l in range(L)], [alloc[l] for l in range(L)], rots


@torch.no_grad()
def distortion(cb: PQVariantCodebooks, calib, max_tokens: int = 2048) -> dict:
    """Relative errors on (the first ``max_tokens`` of) the calibration data: plain MSE of K and V,
    and the error that matters (scores ``q.dk`` via ``E[q^T q]``; ``o_proj`` output via its metric)."""
    L = calib.num_layers
    n = min(max_tokens, calib.tokens)
    f = getattr(calib, "fisher", None)
    pk = pv = 0.0
    ek = ev = sk = sv = 0.0
    for l in range(L):
        k = calib.keys_post(l)[:, :n][None]
        v = calib.values[l][:, :n][None]
        dk = (cb.qdq_keys(l, k) - k)[0]
        dv = (cb.qdq_values(l, v) - v)[0]
        ek += float(dk.pow(2).sum() / k.pow(2).sum())
        ev += float(dv.pow(2).sum() / v.pow(2).sum())
        Qm, Om = calib.q_moment[l], calib.o_moment[l]
        sk += float(torch.einsum("hnd,hde,hne->", dk, Qm, dk) / torch.einsum("hnd,hde,hne->", k[0], Qm, k[0]))
        sv += float(torch.einsum("hnd,hde,hne->", dv, Om, dv) / torch.einsum("hnd,hde,hne->", v[0], Om, v[0]))
        if f is not None:
            # second-order loss model: dNLL ~ 1/2 E_tokens[d^T F d], summed over heads and layers
            pk += 0.5 * float(torch.einsum("hnd,hde,hne->", dk, f.metric_k[l], dk)) / n
            pv += 0.5 * float(torch.einsum("hnd,hde,hne->", dv, f.metric_v[l], dv)) / n
    out = {"rel_mse_k": ek / L, "rel_mse_v": ev / L, "rel_score_err_k": sk / L, "rel_out_err_v": sv / L}
    if f is not None:
        out.update({"pred_dnll_k": pk, "pred_dnll_v": pv})
    return out


def to_codebooks(cb: PQVariantCodebooks, model_config, residual_length: int = 128) -> "Codebooks":
    """A :class:`~million.codebook.Codebooks` that :class:`million.MillionCache` serves, from trained variant
    codebooks: centroids, sinks and the per-(layer, head) transforms (metric, Hadamard, OPQ or Fisher),
    which the cache applies when it encodes and folds into the query and the output when it attends.

    Needs uniform subspaces (``alloc`` one of ``uniform``, ``balanced``, ``balanced_k``) with the same code
    width and subspace size for keys and values (one :class:`~million.config.PQConfig`).
    """
    from .codebook import Codebooks, model_identity
    from .config import PQConfig

    v = cb.variant
    if v.alloc not in UNIFORM_WIDTHS:
        raise ValueError(f"alloc {v.alloc!r} is evaluation-only: MillionCache needs one subspace size and code width "
                         f"(alloc one of {UNIFORM_WIDTHS})")
    if (v.k_nbits, v.k_dsub) != (v.v_nbits, v.v_dsub):
        raise ValueError(f"keys ({v.k_nbits} bits, dsub {v.k_dsub}) and values ({v.v_nbits} bits, dsub {v.v_dsub}) differ; "
                         "MillionCache needs the same code width and subspace size for both")
    L = len(cb.key_centroids)
    D = cb.key_centroids[0].shape[-1] * cb.key_centroids[0].shape[-3]
    pq = PQConfig(head_dim=D, M=D // v.k_dsub, nbits=v.k_nbits, residual_length=residual_length, granularity=v.granularity,
                  sink_length=v.sinks)
    Lg = 1 if v.granularity == "merged" else L
    kc = torch.stack([cb.key_centroids[l].float() for l in range(Lg)])
    vc = torch.stack([cb.value_centroids[l].float() for l in range(Lg)])
    tr = None
    if cb.key_transform is not None:
        from .eval.calibdata import geometry

        H = geometry(model_config)[1]
        st = lambda xs: torch.stack([x.float().expand(H, D, D) for x in xs]).contiguous()  # noqa: E731
        tr = {"key": st(cb.key_transform), "key_inverse": st(cb.key_inverse),
              "value": st(cb.value_transform), "value_inverse": st(cb.value_inverse)}
    cal = {**(cb.info or {}), "variant": v.to_dict()}
    return Codebooks(pq, kc, vc, model_identity(model_config), cal, tr)

