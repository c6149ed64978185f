"""PQ configuration: the few numbers that fix a product-quantized KV cache.

Vocabulary (as in faiss): a head vector of ``head_dim`` elements is split into ``M`` subvectors of
``dsub = head_dim // M`` elements; each is replaced by the index of its nearest centroid among
``ksub = 2 ** nbits`` centroids. Bits per element = ``nbits / dsub``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

GRANULARITIES = ("merged", "layer", "layer_head")
CONFIG_VERSION = 1


@dataclass
class PQConfig:
    """Validated product-quantization settings for one model's KV cache.

    Parameters
    ----------
    head_dim : int
        Size of one attention head (``d``).
    M : int
        Number of subspaces; must divide ``head_dim``.
    nbits : int
        Bits per code, 4..12 (``ksub = 2**nbits`` centroids per subspace).
    residual_length : int
        Most recent tokens kept in full precision; flushed to codes every ``residual_length`` tokens.
    granularity : str
        ``merged`` (one codebook for all layers and heads, as in the MILLION paper), ``layer``
        (one per layer) or ``layer_head`` (one per layer and KV head).
    sink_length : int
        First tokens of every sequence kept in full precision (attention sinks).
    """

    head_dim: int
    M: int
    nbits: int = 8
    residual_length: int = 128
    granularity: str = "layer"
    sink_length: int = 0
    version: int = CONFIG_VERSION
    # derived
    dsub: int = field(init=False)
    ksub: int = field(init=False)

    def __post_init__(self):
        for name in ("head_dim", "M", "nbits", "residual_length", "sink_length"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if self.head_dim <= 0:
            raise ValueError(f"head_dim must be positive, got {self.head_dim}")
        if self.M <= 0 or self.head_dim % self.M != 0:
            divisors = [m for m in range(1, self.head_dim + 1) if self.head_dim % m == 0]
            raise ValueError(f"M={self.M} must divide head_dim={self.head_dim}; allowed: {divisors}")
        if not 4 <= self.nbits <= 12:
            raise ValueError(f"nbits={self.nbits} is out of range; allowed: 4..12")
        if self.residual_length < 1:
            raise ValueError(f"residual_length={self.residual_length} must be >= 1")
        if self.sink_length < 0:
            raise ValueError(f"sink_length={self.sink_length} must be >= 0")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity={self.granularity!r} is not one of {GRANULARITIES}")
        if self.version != CONFIG_VERSION:
            raise ValueError(f"PQConfig version {self.version} is not supported; this million reads {CONFIG_VERSION}")
        self.dsub = self.head_dim // self.M
        self.ksub = 2**self.nbits

    @classmethod
    def from_bits(cls, head_dim: int, bits: float, nbits: int = 8, **kw) -> "PQConfig":
        """Config for a target ``bits`` per element: ``M = head_dim * bits / nbits``."""
        m = head_dim * bits / nbits
        if m != int(m) or int(m) <= 0 or head_dim % int(m) != 0:
            raise ValueError(
                f"bits={bits:g} with nbits={nbits} and head_dim={head_dim} gives M={m:g} subspaces, which does not "
                f"divide head_dim; allowed bits with nbits={nbits}: "
                f"{sorted(nbits * M / head_dim for M in range(1, head_dim + 1) if head_dim % M == 0)}"
            )
        return cls(head_dim=head_dim, M=int(m), nbits=nbits, **kw)

    @property
    def code_dtype(self) -> torch.dtype:
        """uint8 up to 8 bits, uint16 above."""
        return torch.uint8 if self.nbits <= 8 else torch.uint16

    @property
    def bits_per_element(self) -> float:
        """Bits of code storage per K or V element (codebooks, windows and sinks not counted)."""
        return self.nbits / self.dsub

    @property
    def code_bytes_per_element(self) -> float:
        """Bytes actually stored per element (codes are whole uint8/uint16 words)."""
        return (1 if self.nbits <= 8 else 2) / self.dsub

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @classmethod
    def from_dict(cls, d: dict) -> "PQConfig":
        known = {f.name for f in fields(cls) if f.init}
        unknown = set(d) - known - {"dsub", "ksub"}
        if unknown:
            raise ValueError(f"unknown PQConfig fields {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def __repr__(self):
        return "PQConfig(" + ", ".join(f"{k}={v!r}" for k, v in asdict(self).items()) + ")"


@dataclass
class Eviction:
    """Token eviction for :class:`~million.cache.MillionCache`: keep only part of the committed code tokens.

    After every committed block a cache keeps, per sequence, layer and KV head, at most ``ceil(keep * n)`` of
    the ``n`` code positions seen so far (positions past the attention sinks and left padding; the sinks and
    the full-precision window are always kept): a ``recent`` share of that budget goes to the most recent code
    tokens, the rest to the tokens with the highest accumulated attention (summed over every query that saw
    them and over the query heads of the KV head), discounted by their quantization error
    (``score / (1 + err / mean err)``, with ``friendliness``), as Q-Hitter does. Positions keep their RoPE
    phase (keys are stored after RoPE), so evicting a token only removes it from attention.

    In a left-padded batch each sequence evicts by its own budget from its own first code on: a short prompt whose
    padding still reaches past the committed codes keeps its tokens (in the window and sinks) while the others evict.

    Parameters
    ----------
    keep : float in (0, 1]
        Share of the code positions kept. ``keep = 1`` keeps every token (scores are still kept).
    recent : float in [0, 1]
        Share of the budget given to the most recent code tokens.
    friendliness : bool
        Discount each token's score by its relative quantization error.
    observe : int or None
        A multi-token step (a prompt) adds only the attention of its last ``observe`` queries to the scores (an
        observation window at the end of the prompt, as SnapKV; the question of a long-context prompt decides what
        is kept). None: every query counts. Decode steps always count.
    pool : int (odd)
        Max-pool the scores over this many neighbouring tokens before choosing (as SnapKV: the tokens around a heavy
        hitter are kept with it, so a fact spread over several tokens survives whole). 1: no pooling.
    pool_side : "both" or "after"
        Where the pooling window lies: centred on each token ("both", as SnapKV), or behind it ("after": a token takes
        the largest score of itself and the ``pool - 1`` tokens before it, so each heavy hitter keeps the ``pool - 1``
        tokens that follow it, the end of the fact it starts).
    pool_share : float in [0, 1]
        Share of the heavy-hitter budget chosen by the pooled scores; the rest is chosen first, by the scores
        themselves. 1 (default): every heavy hitter by pooled score. Below 1 the strongest tokens are kept as they are
        and only the remainder goes to their neighbours, so pooling costs fewer distinct heavy hitters.

    The defaults were measured for perplexity. For prompts that end with a question (retrieval), ``recent=0.2,
    observe=32, pool=15, pool_side="after"`` found the same needles as the full-precision model at 1K-8K tokens with
    ``keep=0.39`` (``docs/quality.md``, "Pooling behind each token"); adding ``pool_share=0.15`` took most of that
    setting's perplexity cost away with every K/V quantized at 2 bits, at one needle of 40 (``docs/quality.md``, "One
    2-bit setting for both targets").
    """

    keep: float
    recent: float = 0.5
    friendliness: bool = True
    observe: int | None = None
    pool: int = 1
    pool_side: str = "both"
    pool_share: float = 1.0

    def __post_init__(self):
        for name in ("keep", "recent", "pool_share"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"Eviction {name} must be a number, got {v!r}")
        if not 0 < self.keep <= 1:
            raise ValueError(f"Eviction keep={self.keep!r} is out of range; allowed: (0, 1]")
        if not 0 <= self.recent <= 1:
            raise ValueError(f"Eviction recent={self.recent!r} is out of range; allowed: [0, 1]")
        if not 0 <= self.pool_share <= 1:
            raise ValueError(f"Eviction pool_share={self.pool_share!r} is out of range; allowed: [0, 1]")
        if not isinstance(self.friendliness, bool):
            raise ValueError(f"Eviction friendliness must be True or False, got {self.friendliness!r}")
        if self.observe is not None and (isinstance(self.observe, bool) or not isinstance(self.observe, int) or self.observe < 1):
            raise ValueError(f"Eviction observe={self.observe!r} must be an integer >= 1 or None")
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1 or self.pool % 2 == 0:
            raise ValueError(f"Eviction pool={self.pool!r} must be an odd integer >= 1")
        if self.pool_side not in ("both", "after"):
            raise ValueError(f"Eviction pool_side={self.pool_side!r} is not allowed; allowed: 'both', 'after'")

    def pooled(self, scores):
        """``scores [..., n]`` max-pooled over ``pool`` neighbouring tokens (unchanged for ``pool = 1``)."""
        if self.pool == 1:
            return scores
        shape = scores.shape
        x = scores.reshape(-1, 1, shape[-1])
        if self.pool_side == "after":  # out[t] = max(s[t - pool + 1 .. t])
            out = F.max_pool1d(F.pad(x, (self.pool - 1, 0), value=float("-inf")), self.pool, stride=1)
        else:
            out = F.max_pool1d(x, self.pool, stride=1, padding=self.pool // 2)
        return out.reshape(shape)

    def by_score(self, n: int) -> int:
        """How many of ``n`` heavy hitters are chosen by score; the other ``n - by_score(n)`` by pooled score."""
        return n - round(self.pool_share * n) if self.pool > 1 else n

    def heavy(self, scores, n: int):
        """Indices ``[..., n]`` (ascending) of the heavy hitters among ``scores [..., m]`` (``n <= m``): the top
        ``n - round(pool_share * n)`` by score, then the rest by pooled score among the others."""
        if n <= 0:
            return scores[..., :0].long()
        n_raw = self.by_score(n)
        if n_raw == 0:
            return self.pooled(scores).topk(n, -1).indices.sort(-1).values
        raw = scores.topk(n_raw, -1).indices
        if n_raw == n:
            return raw.sort(-1).values
        rest = self.pooled(scores).scatter(-1, raw, float("-inf")).topk(n - n_raw, -1).indices
        return torch.cat([raw, rest], -1).sort(-1).values

    def budget(self, n: int) -> int:
        """Code tokens kept out of ``n`` code positions seen."""
        return min(n, math.ceil(self.keep * n - 1e-9)) if n > 0 else 0

    def to_dict(self) -> dict:
        return {"keep": self.keep, "recent": self.recent, "friendliness": self.friendliness, "observe": self.observe,
                "pool": self.pool, "pool_side": self.pool_side, "pool_share": self.pool_share}
