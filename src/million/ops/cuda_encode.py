"""PQ encoding (nearest centroid per subspace) in CUDA C++: ``ops/cuda/pq_encode.cu``.

Same contract as :func:`million.ops.naive.pq_encode`: ``x [B, H, T, D]`` (fp16 / bf16 / fp32),
``centroids [Hc, M, ksub, dsub]`` with ``Hc`` in ``{1, H}``; returns uint8 codes ``[B, H, T, M]``.
Covered here: ``ksub == 256`` and ``dsub`` 2 (4-bit) or 4 (2-bit); everything else is left to the
Triton kernel (:func:`supports` says False).

Kernels (``kind``):

- ``"pruned"`` (default for dsub 2): exact fp32 search restricted, per point, to the candidate list
  of its cell in a ``G x G`` grid over the subspace's centroids (:func:`build_grid_lists`).
- ``"mma"`` (default for dsub 4): tensor-core distances (fp16 hi/lo split operands, fp32
  accumulation, ~22-bit exact) and a packed-key float min; tokens whose values leave the fp16
  range are redone exactly.
- ``"brute"``: exact fp32 over all 256 centroids (any dsub 2/4; the fallback and the reference).

The per-codebook tables (grid lists, fragments) are built on the centroids' device on first use (the grid lists of a
CUDA tensor by one fused Triton launch, :mod:`million.ops.triton_grid`: about 0.1 s for 32 per-head codebooks of 64
subspaces on an H100, against 1.3 s with the torch rule) and cached
per live centroid tensor (a weak reference and its version counter: the tables die with their tensor; MillionCache
builds them at allocation): build them before CUDA-graph capture (one eager call). The shared library is found through ``MILLION_CUDA_ENCODE_LIB`` (a
prebuilt ``.so``) or built with ``nvcc`` on first use into ``~/.cache/million/cuda/`` (keyed by a
hash of the source and flags). Importing this module touches neither CUDA nor nvcc.
"""

from __future__ import annotations

import ctypes
import functools
import weakref
import os
from pathlib import Path

import torch

from ._env import env_setting as _env_setting
from ._nvcc import FLAGS, FLAGS_SM90A, CudaLibrary

_SRC = Path(__file__).with_name("cuda") / "pq_encode.cu"
_ENV = "MILLION_CUDA_ENCODE_LIB"
_LIBRARY = CudaLibrary(_SRC, "million_pq_encode", _ENV, FLAGS_SM90A, fallback=FLAGS)
KINDS = ("pruned", "brute", "mma")
GRID = 32  # cells per axis of the dsub-2 pruning grid
_MG = 8  # subspaces per block (pq_encode.cu)
_SMEM_MAX = 227 * 1024
_DTYPES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}


class _Args(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("x", "codes", "tab", "cells", "lists", "grid", "frags")] + [
        (n, ctypes.c_longlong) for n in ("sx_b", "sx_h", "sx_t", "so_b", "so_h", "so_t")] + [
        (n, ctypes.c_int) for n in ("B", "H", "T", "M", "Hc", "dsub", "dtype", "kind", "chunks", "G", "lcap", "opt")]


@functools.lru_cache(maxsize=None)
def _lib():
    path = _LIBRARY.path()
    lib = ctypes.CDLL(str(path))
    lib.million_pq_encode.argtypes = [ctypes.POINTER(_Args), ctypes.c_void_p]
    lib.million_pq_encode.restype = ctypes.c_int
    lib.million_pq_encode_last_error.restype = ctypes.c_char_p
    lib.million_pq_encode_args_size.restype = ctypes.c_int
    if lib.million_pq_encode_args_size() != ctypes.sizeof(_Args):
        raise RuntimeError(f"{path}: argument struct size mismatch (stale library?)")
    lib.million_pq_encode_set_wg_layout.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.million_pq_encode_wgmma.restype = ctypes.c_int
    return lib


def wgmma_available() -> bool:
    """True when the loaded library runs the 2-bit encode's warpgroup-MMA kernel (``opt`` bit 5): it
    was compiled for sm_90a and the GPU is of compute capability 9.0."""
    return bool(_lib().million_pq_encode_wgmma())


def available() -> bool:
    """True when a CUDA device of compute capability >= 9.0 is present and the library can be
    loaded or built (MILLION_CUDA_ENCODE_LIB set, a cached build, or nvcc on the PATH)."""
    return _LIBRARY.available()


def build(path: str | os.PathLike | None = None) -> Path:
    """Compile the kernels with nvcc into ``path`` (default: the user cache) and return the path."""
    return _LIBRARY.build(path)


def supports(x: torch.Tensor, centroids: torch.Tensor) -> bool:
    """Whether the CUDA kernels handle ``x [B, H, T, D]`` with ``centroids [Hc, M, ksub, dsub]``:
    CUDA tensors on one device, x fp16/bf16/fp32, float centroids, ``ksub == 256``, dsub 2 or 4."""
    if not (x.is_cuda and centroids.is_cuda and x.device == centroids.device):
        return False
    if x.dim() != 4 or centroids.dim() != 4:
        return False
    if x.dtype not in _DTYPES or centroids.dtype not in _DTYPES:
        return False
    B, H, T, D = x.shape
    Hc, M, ksub, dsub = centroids.shape
    return ksub == 256 and dsub in (2, 4) and M * dsub == D and Hc in (1, H) and H > 0


# ----------------------------------------------------------------------------------------------
# dsub 2: exact grid pruning


def _dropped(cc, cp, clo, chi, unb_lo, unb_hi, tol):
    """The exact drop rule of :func:`build_grid_lists` for candidates ``cc [s, C, Kc, 2]`` of each cell against its
    dominators ``cp [s, C, D, 2]`` over the cell boxes ``clo``, ``chi [s, C, 2]`` (``unb_lo`` / ``unb_hi [C, 2]``:
    the cell's side is unbounded). Returns ``[s, C, Kc]`` bool: dropped."""
    nc = (cc * cc).sum(-1)  # [s, C, Kc]
    ncp = (cp * cp).sum(-1)  # [s, C, D]
    amax_c = cc.abs().amax(-1)
    amax_p = cp.abs().amax(-1)
    g = nc[..., None] - ncp[:, :, None, :]  # [s, C, Kc, D]
    free = torch.zeros_like(g, dtype=torch.bool)
    box = torch.zeros_like(g)
    for d in range(2):
        a = cp[:, :, None, :, d] - cc[:, :, :, None, d]  # (c' - c)
        l = clo[:, :, None, None, d]
        h = chi[:, :, None, None, d]
        g = g + torch.minimum(2 * l * a, 2 * h * a)
        box = torch.maximum(box, torch.maximum(l.abs(), h.abs()).expand_as(box))
        eps = 1e-5 * (amax_c[..., None] + amax_p[:, :, None, :])
        free |= unb_lo[None, :, None, None, d] & (a > -eps)
        free |= unb_hi[None, :, None, None, d] & (a < eps)
    scale = nc[..., None] + ncp[:, :, None, :] + 2 * box * (amax_c[..., None] + amax_p[:, :, None, :])
    return ((g > tol * scale) & ~free).any(-1)


def grid_q() -> float:
    """The quantile of :func:`grid_frame`'s default frame: ``$MILLION_ENCODE_GRID_Q``, default 0.01 (the centroids'
    inner 98% per axis; 0 = their bounding box). The 4-bit encode ran 10-12% faster with 0.01 than with the box on
    the H100 (2026-12-05, two rounds: 0.817-0.842 against 0.919-0.951 ms per 32K x 32-head tensor; docs/benchmarks.md);
    the codes are the same either way (exact lists)."""
    return _env_setting("MILLION_ENCODE_GRID_Q", "0.01", float, lambda q: 0.0 <= q < 0.5, "a quantile in [0, 0.5)")


def default_opt() -> int:
    """The default ``opt`` of :func:`pq_encode`: ``$MILLION_ENCODE_OPT``, default 6080 (see :func:`pq_encode`; an
    environment setting so that an end-to-end benchmark can run another kernel variant without code changes)."""
    return _env_setting("MILLION_ENCODE_OPT", "6080", int, lambda o: 0 <= o < 8192, "an opt bit mask in [0, 8192)")


def grid_frame(c: torch.Tensor, G: int, q: float | None = None):
    """The grid of :func:`build_grid_lists` over ``c [S, K, 2]``: ``(c in float64, lo, w, lo32, inv_w32)``, where
    ``lo32``, ``inv_w32`` (float32, ``[S, 2]``) are what the encode kernel assigns cells with and ``lo``, ``w`` the
    same origin and cell width in float64 (``w = 1 / inv_w32``), from which the cell boxes are built. The grid spans
    the centroids' bounding box, or with ``q > 0`` their ``q`` .. ``1 - q`` quantiles per axis (the border cells reach
    to infinity either way, so the lists stay exact; ``benchmarks/grid_list_probe.py --frames`` compares them).
    ``q=None``: :func:`grid_q` (an environment setting, so that a benchmark can compare frames without code changes)."""
    if c.dim() != 3 or c.shape[-1] != 2:
        raise ValueError(f"build_grid_lists needs 2-D subspaces, got dsub={c.shape[-1]}")
    if q is None:
        q = grid_q()
    if not 0.0 <= q < 0.5:
        raise ValueError(f"q={q}: expected a quantile in [0, 0.5)")
    cd64 = c.double()
    if q > 0 and cd64.shape[0] > 0:  # (torch.quantile refuses an empty tensor: no subspaces, no frame to fit)
        lo = torch.quantile(cd64, q, dim=1)
        span = torch.quantile(cd64, 1 - q, dim=1) - lo
    else:
        lo = cd64.amin(1)
        span = cd64.amax(1) - lo
    span = torch.where(span > 0, span, torch.ones_like(span))
    lo32 = lo.float()
    inv_w32 = (G / span).float()
    return cd64, lo32.double(), 1.0 / inv_w32.double(), lo32, inv_w32


def grid_lists(c: torch.Tensor, G: int = GRID):
    """The grid lists of :func:`build_grid_lists` for ``c [S, 256, 2]``: on a CUDA device by the fused Triton build
    (:mod:`million.ops.triton_grid`, one launch), elsewhere (or without Triton) by :func:`build_grid_lists`."""
    if c.is_cuda:
        try:
            from . import triton_grid
        except ImportError:
            triton_grid = None
        if triton_grid is not None:
            return triton_grid.build_grid_lists(c, G)
    return build_grid_lists(c, G)


def build_grid_lists(c: torch.Tensor, G: int = GRID, n_dom: int = 16, margin: float = 0.02,
                     tol: float = 1e-5, chunk: int | None = None, prefilter: int = 64):
    """Per-cell candidate lists for exact nearest-centroid search in 2-D.

    ``c [S, K, 2]`` (S independent subspaces of K centroids). Each subspace gets a ``G x G`` grid over
    its centroids' bounding box; cell ``(gx, gy)`` (id ``gy * G + gx``, ``gx`` along dim 0) covers
    ``[lo + w (g - margin), lo + w (g + 1 + margin)]`` per axis, the first and last cells extended to
    -inf / +inf. Centroid ``c`` is dropped from a cell when one of the ``n_dom`` centroids nearest
    to the cell's centre, ``c'``, is strictly closer to every point of the cell:
    ``min_p 2 p.(c' - c) + ||c||^2 - ||c'||^2 > tol * scale`` (linear in p: checked at the box's
    corners; an unbounded side in a direction where the form decreases, or is nearly flat, keeps c).
    So the exact argmin of any point of the cell is in its list (fp32 cell assignment within the
    margin, distance rounding within ``tol``).

    ``prefilter`` (0 = off): for the bounded (inner) cells, the rule runs only on the ``prefilter`` centroids
    nearest to the box; a centroid left out has ``min_box d^2(p, c) - max_box d^2(p, c*) > 2 tol scale`` for the
    centroid ``c*`` nearest to the centre, a lower bound of the rule's left side with ``c' = c*``, so the rule drops
    it too: the lists are the same as without the prefilter (a chunk where some cell keeps more falls back to
    the full rule), at a fraction of the work.

    Returns ``(kept [S, G*G, K] bool, lo [S, 2] fp32, inv_w [S, 2] fp32)``; a point ``p`` lies in cell
    ``clamp(floor((p - lo) * inv_w), 0, G - 1)`` computed in fp32 (as the kernel does).
    """
    S, K, _ = c.shape
    dev = c.device
    if chunk is None:
        chunk = 16 if c.is_cuda else 4
    cd64, lo, w, lo32, inv_w32 = grid_frame(c, G)
    gi = torch.arange(G, dtype=torch.float64, device=dev)
    gx = torch.arange(G, device=dev).repeat(G)
    gy = torch.arange(G, device=dev).repeat_interleave(G)
    unb_lo = torch.stack([gx == 0, gy == 0], -1)  # [GG, 2]
    unb_hi = torch.stack([gx == G - 1, gy == G - 1], -1)
    inner = ~(unb_lo.any(-1) | unb_hi.any(-1))
    ii, ee = inner.nonzero().squeeze(1), (~inner).nonzero().squeeze(1)
    Kc = min(int(prefilter), K) if prefilter else 0
    if not ii.numel():  # G <= 2: every cell is a border cell, the prefilter has nothing to do
        Kc = 0
    kept = torch.empty(S, G * G, K, dtype=torch.bool, device=dev)
    for s0 in range(0, S, chunk):
        s1 = min(S, s0 + chunk)
        cc = cd64[s0:s1]  # [s, K, 2]
        e0 = lo[s0:s1, None, :] + w[s0:s1, None, :] * (gi[None, :, None] - margin)  # [s, G, 2]
        e1 = lo[s0:s1, None, :] + w[s0:s1, None, :] * (gi[None, :, None] + 1 + margin)
        clo = torch.stack([e0[:, gx, 0], e0[:, gy, 1]], -1)  # [s, GG, 2]
        chi = torch.stack([e1[:, gx, 0], e1[:, gy, 1]], -1)
        ctr = 0.5 * (clo + chi)
        d2 = ((ctr[:, :, None, :] - cc[:, None, :, :]) ** 2).sum(-1)  # [s, GG, K]
        dom = d2.topk(min(n_dom, K), dim=-1, largest=False).indices  # [s, GG, D]
        cp = torch.gather(cc[:, None].expand(-1, G * G, -1, -1), 2, dom[..., None].expand(-1, -1, -1, 2))  # [s, GG, D, 2]
        full = torch.arange(G * G, device=dev) if not Kc or Kc >= K else ee
        if Kc and Kc < K:
            # inner cells: the rule on the Kc centroids nearest to the box, if that covers every survivor
            lo_i, hi_i, cp_i = clo[:, ii], chi[:, ii], cp[:, ii]
            gap = torch.clamp(torch.maximum(lo_i[:, :, None, :] - cc[:, None], cc[:, None] - hi_i[:, :, None, :]), min=0)
            L = (gap * gap).sum(-1)  # [s, Gi, K]: min over the box of d^2(p, c)
            cs = cp_i[:, :, 0]  # [s, Gi, 2]: the centroid nearest to the centre
            U = torch.maximum((lo_i - cs) ** 2, (hi_i - cs) ** 2).sum(-1)  # max over the box of d^2(p, c*)
            nc, ns = (cc * cc).sum(-1), (cs * cs).sum(-1)
            box = torch.maximum(lo_i.abs(), hi_i.abs()).amax(-1)  # [s, Gi]
            am_c, am_s = cc.abs().amax(-1), cs.abs().amax(-1)
            scale = nc[:, None, :] + ns[..., None] + 2 * box[..., None] * (am_c[:, None, :] + am_s[..., None])
            out = (L - U[..., None]) > 2 * tol * scale  # surely dropped by the rule
            if int((~out).sum(-1).max()) <= Kc:
                idx = L.masked_fill(out, float("inf")).topk(Kc, dim=-1, largest=False).indices  # [s, Gi, Kc]
                cand = torch.gather(cc[:, None].expand(-1, ii.numel(), -1, -1), 2, idx[..., None].expand(-1, -1, -1, 2))
                drop = _dropped(cand, cp_i, lo_i, hi_i, unb_lo[ii], unb_hi[ii], tol)
                k_i = torch.zeros(s1 - s0, ii.numel(), K, dtype=torch.bool, device=dev)
                k_i.scatter_(2, idx, ~drop)
                kept[s0:s1, ii] = k_i
            else:
                full = torch.arange(G * G, device=dev)
        allc = cc[:, None].expand(-1, full.numel(), -1, -1)
        kept[s0:s1, full] = ~_dropped(allc, cp[:, full], clo[:, full], chi[:, full], unb_lo[full], unb_hi[full], tol)
    return kept, lo32, inv_w32


def grid_cells(points: torch.Tensor, lo: torch.Tensor, inv_w: torch.Tensor, G: int = GRID) -> torch.Tensor:
    """Cell ids ``[S, N]`` of ``points [S, N, 2]`` exactly as the kernel computes them (fp32)."""
    p = points.float()
    f = ((p - lo[:, None, :]) * inv_w[:, None, :]).clamp(0, G - 1).nan_to_num(0.0)
    ij = f.to(torch.int64)
    return ij[..., 1] * G + ij[..., 0]


_PACK_FLAGS = 1 << 26  # flags per step of _pack_lists (64 M: at most 512 MB of int64 counts at a time)


def _pack_lists(kept: torch.Tensor):
    """kept ``[S, GG, K]`` -> cells ``[S, GG]`` int32 (offset | len << 16), lists ``[S, lcap]`` uint8."""
    S, GG, K = kept.shape
    # a few subspaces at a time (about 64 M flags): over a whole 7B-shaped layer-head tensor (537 M flags) the
    # counts alone took 4 GB on an H100 (the sum reads the flags as int64), an earlier cumsum over every flag 10 GB
    step = max(1, _PACK_FLAGS // max(1, GG * K))
    lens = torch.empty(S, GG, dtype=torch.int64, device=kept.device)
    for a in range(0, S, step):
        lens[a : a + step] = kept[a : a + step].sum(-1)
    offs = lens.cumsum(-1) - lens
    counts = lens.sum(-1)
    total = int(counts.max().item()) if S else 0
    lcap = max(16, -(-total // 16) * 16)
    flat = kept.reshape(S, GG * K)
    lists = torch.zeros(S, lcap, dtype=torch.uint8, device=kept.device)
    for a in range(0, S, step):
        si, fi = flat[a : a + step].nonzero(as_tuple=True)  # row-major: by subspace, then cell, then centroid
        n = counts[a : a + step]
        # a kept flag's place in its subspace's list: its rank among the subspace's flags
        pos = torch.arange(si.numel(), device=kept.device) - (n.cumsum(0) - n)[si]
        lists[a + si, pos] = (fi % K).to(torch.uint8)
    cells = (offs | (lens << 16)).to(torch.int32)
    return cells, lists, lcap


# ----------------------------------------------------------------------------------------------
# tables


def _tab8(c: torch.Tensor) -> torch.Tensor:
    """``[S, 256, 8]`` fp32: (-2c (dsub values), ||c||^2 at 4, and at 2 for dsub 2)."""
    S, K, dsub = c.shape
    cf = c.float()
    t = torch.zeros(S, K, 8, dtype=torch.float32, device=c.device)
    t[..., :dsub] = -2.0 * cf
    n = (cf * cf).sum(-1)
    t[..., 4] = n
    if dsub == 2:
        t[..., 2] = n
    return t


def _frags(c: torch.Tensor) -> torch.Tensor | None:
    """mma B fragments ``[S, 32 blocks, 32 lanes, 2]`` int32 for dsub 4, or None if fp16 overflows."""
    S, K, dsub = c.shape
    m2 = -2.0 * c.float()
    hi = m2.half()
    lo = (m2 - hi.float()).half()
    n = (c.float() ** 2).sum(-1)
    nhi = n.half()
    nlo = (n - nhi.float()).half()
    if not (torch.isfinite(hi).all() and torch.isfinite(nhi).all()):
        return None
    z = torch.zeros_like(nhi)
    # [S, K, q=4, reg=2, 2 halves]
    q0 = torch.stack([hi[..., 0:2], hi[..., 0:2]], -2)
    q1 = torch.stack([hi[..., 2:4], hi[..., 2:4]], -2)
    q2 = torch.stack([lo[..., 0:2], torch.stack([nhi, nlo], -1)], -2)
    q3 = torch.stack([lo[..., 2:4], torch.stack([z, z], -1)], -2)
    f = torch.stack([q0, q1, q2, q3], 2)  # [S, K, 4, 2, 2]
    f = f.view(S, 32, 8, 4, 2, 2)  # k = 8 blk + g; lane = 4 g + q
    return f.contiguous().view(torch.int32).reshape(S, 32, 32, 2)


_TABLES: dict = {}  # (id(centroids), kind) -> (weakref to the centroids, version, tables)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors carry no version counter
        return -1


def _cached(centroids: torch.Tensor, kind: str) -> dict | None:
    hit = _TABLES.get((id(centroids), kind))
    if hit is not None and hit[0]() is centroids and hit[1] == _version(centroids):
        return hit[2]
    return None


def tables(centroids: torch.Tensor, kind: str) -> dict:
    """Device tables of ``centroids [Hc, M, 256, dsub]`` for ``kind``, cached per live centroid tensor (same object,
    same version counter): a model's cache holds one centroid tensor per layer and role, and every one of them must
    stay cached (a bounded cache that cycles through 2 x layers tensors rebuilds tables at every encode)."""
    hit = _cached(centroids, kind)
    if hit is not None:
        return hit
    Hc, M, K, dsub = centroids.shape
    c = centroids.detach().reshape(Hc * M, K, dsub)
    t: dict = {"tab": _tab8(c), "kind": kind}
    if kind == "pruned":
        kept, lo, inv_w = grid_lists(c, GRID)
        cells, lists, lcap = _pack_lists(kept)
        smem = _MG * (256 * 16 + GRID * GRID * 4 + lcap) + _MG * 16
        if lcap > 65535 or smem > _SMEM_MAX:
            t["kind"] = "brute"
        else:
            t.update(tab=t["tab"][..., :4].contiguous(), cells=cells, lists=lists, lcap=lcap,
                     grid=torch.cat([lo, inv_w], -1).contiguous())
    elif kind == "mma":
        f = _frags(c)
        if f is None:
            t["kind"] = "brute"
        else:
            t["frags"] = f
    for k in [k for k, v in _TABLES.items() if v[0]() is None]:  # drop the tables of dead tensors
        del _TABLES[k]
    _TABLES[(id(centroids), kind)] = (weakref.ref(centroids), _version(centroids), t)
    return t


def has_tables(centroids: torch.Tensor, kind: str) -> bool:
    """Whether ``tables(centroids, kind)`` is cached now."""
    return _cached(centroids, kind) is not None


def small_encode() -> int:
    """Encodes of at most this many tokens (batch x tokens) whose centroids have no grid lists yet take the brute
    kernel instead of building the lists (a one-time cost of about 0.1 s per 32-head codebook tensor on an H100 with
    the fused build, so about 6 s for the 64 tensors of a 7B-shaped model; 1.3 s and a minute with the torch rule): a
    decode loop encodes R-token blocks, for which the brute kernel takes well under a millisecond; a long prefill
    builds the lists once. ``$MILLION_ENCODE_PRUNE_MIN`` (default 4096) sets it."""
    return _env_setting("MILLION_ENCODE_PRUNE_MIN", "4096", int, lambda n: n >= 0, "a token count >= 0")


@functools.lru_cache(maxsize=None)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _x_ok(x: torch.Tensor) -> torch.Tensor:
    es = x.element_size()
    if x.stride(3) != 1 or x.data_ptr() % 16 or any((s * es) % 16 for s in x.stride()[:3]):
        x = x.contiguous()
    return x


def default_kind(dsub: int) -> str:
    return "pruned" if dsub == 2 else "mma"


def pq_encode(x: torch.Tensor, centroids: torch.Tensor, kind: str | None = None, chunks: int | None = None,
              opt: int | None = None) -> torch.Tensor:
    """Nearest-centroid codes ``[B, H, T, M]`` uint8 of ``x [B, H, T, D]`` for ``centroids
    [Hc, M, 256, dsub]`` (see :func:`million.ops.naive.pq_encode`). ``kind``: ``"pruned"`` (dsub 2),
    ``"mma"`` (dsub 4) or ``"brute"``; default by dsub. ``chunks``: token chunks per (head, group);
    ``opt`` bit 0: the pruned kernel interleaves two subspaces' scans; bit 1: the mma kernel takes two
    16-token tiles per B fragment load and ``||x||^2`` through the MMA (``enc_mma2_kernel``);
    bit 2: ``enc_mma3_kernel`` (mma2 with the candidate keys built by IMAD / LEA and a three-way DPX
    minimum instead of LOP3 + FMNMX per candidate; takes precedence over bit 1); bit 3 (with bit 2): its
    subspace loop rolled (1/8 of the code); bit 4 (with bit 2): registers budgeted for 3 blocks per SM;
    bit 5: ``enc_wg_kernel`` (mma3's keys, distances from warpgroup MMAs, 64 tokens x 128 centroids per
    instruction; needs :func:`wgmma_available`; takes precedence over bits 1-4); bit 6 (the wg kernel, or mma3
    with bit 3 and without bit 4): keys with the centroid index in their low 8 bits (a shorter quad reduction);
    bit 7 (same kernels): keys by IMAD instead of LEA; bit 8: ``enc_staged_kernel`` (mma3's MMAs and keys with each
    row's values computed once by one lane and handed to the MMA lanes by ``ldmatrix``; the same codes as mma3; bit 4
    budgets registers for 3 blocks per SM, bits 6 and 7 choose the keys as above; bit 5 takes precedence); bit 9 (with
    bit 8): its column-block loop unrolled whole, registers for 3 blocks per SM (every tag a constant); bit 10 (with bit
    8 and 6; implies bit 9): the row's offset through the MMA's K dimension instead of its C input (codes may differ
    from mma3's at near-ties within an ulp); bit 11 (with bits 8 and 6; implies bit 9): even and odd columns in separate
    minima, one tag per column block; bit 12 (with bits 8 and 6; implies bit 9): blocks of 16 warps, 2 per SM, registers
    budgeted at 64 (32 warps per SM instead of 24; no spills with bit 11 off, sm_90a, nvcc 13.0). Bits 9-12 without
    bit 8 raise ``ValueError``; bits 10-12 without bit 6 raise ``RuntimeError`` from the library.
    Default ``opt``: 6080 = the staged kernel with the offset through K (bit 10) in blocks of 16 warps (bit 12), keys
    by IMAD with the index in their low 8 bits (H100, 2026-12-06 00:03-00:05 UTC, three rounds: 1.110-1.144 ms per
    32K x 32-head tensor against 1.370-1.388 for 960 and 1.773-1.806 for 76; bit 10 alone, 1984, 1.157-1.169; bits 10
    and 11, 4032, 1.151-1.178; bit 11 alone, 3008, and bit 12 alone, 5056, 1.438-1.477, slower than 960; a 32K 2-bit
    prefill of the 7B shape encoded in 69-71 ms, 4.8-4.9% of its cache-free time). Before it,
    960 = the staged kernel, its column-block loop unrolled whole, keys by IMAD with the index in
    their low 8 bits (H100, 2026-12-05 21:37 UTC, two rounds: 1.369-1.381 ms per 32K x 32-head tensor against
    1.407-1.410 for 320, the same kernel with the loop unrolled 8 and keys by LEA, and 1.779-1.781 for 76; at 21:32 UTC
    320 took 1.407-1.441 against 1.776-1.805 for 76; bit 4 no faster, keys without bit 6 1.48-1.51 ms). Before it,
    76 = mma3 with the rolled loop and the index in the keys' low 8 bits
    (2026-12-05 19:47 UTC, two rounds: 1.764-1.789 ms against 1.836-1.861 for 12, mma3 alone; 12 itself measured
    1.85 ms on 2026-11-23 against 2.26-2.31 for mma2 and 2.04-2.07 for mma3 unrolled; 3 blocks per SM no faster;
    keys by IMAD, bit 7, 1.862-1.889; the wg kernel, bit 5, 2.14-2.31 and with both key bits 1.91-1.99);
    the pruned kernel ignores bits 2-7 (the interleaved scan, bit 0, was no faster: 0.92-0.93 vs
    0.92-0.99 ms)."""
    opt = default_opt() if opt is None else int(opt)
    if not 0 <= opt < 8192:
        raise ValueError(f"opt={opt} is not allowed; use a bit mask in [0, 8192) (see the docstring)")
    if opt & 0x1E00 and not opt & 256:
        raise ValueError(f"opt={opt}: bits 9-12 (512, 1024, 2048, 4096) choose variants of the staged kernel and need "
                         f"bit 8 (256), e.g. opt={opt | 256}")
    if x.dim() != 4 or centroids.dim() != 4:
        raise ValueError(f"x must be [B, H, T, D] and centroids [Hc, M, ksub, dsub]; got {tuple(x.shape)}, {tuple(centroids.shape)}")
    if not supports(x, centroids):
        raise ValueError(
            f"CUDA encode does not handle x {tuple(x.shape)} {x.dtype} on {x.device} with centroids "
            f"{tuple(centroids.shape)} {centroids.dtype}: needs CUDA tensors, ksub == 256, dsub in (2, 4), "
            f"Hc in (1, H), M * dsub == D, dtypes float16/bfloat16/float32")
    B, H, T, D = x.shape
    Hc, M, K, dsub = centroids.shape
    if kind is None:
        kind = default_kind(dsub)
        if kind == "pruned" and B * T <= small_encode() and not has_tables(centroids, "pruned"):
            kind = "brute"
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not allowed; use one of {KINDS}")
    if (kind == "pruned" and dsub != 2) or (kind == "mma" and dsub != 4):
        raise ValueError(f"kind={kind!r} does not handle dsub={dsub}")
    codes = torch.empty(B, H, T, M, dtype=torch.uint8, device=x.device)
    if codes.numel() == 0:
        return codes
    t = tables(centroids, kind)
    x = _x_ok(x)
    dev = x.device
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    N = B * T
    groups = -(-M // _MG)
    if chunks is None:
        if t["kind"] == "mma" and opt & 32:
            # the wg kernel: 3 resident blocks per SM, so about one full wave (H100, H = 32, 2-bit: 3 chunks
            # 2.19-2.23 ms, 2 chunks 2.57-2.62, 6 chunks 2.14-2.20; not tuned further, the kernel is opt-in)
            chunks = max(1, min(3 * _sms(idx) // (H * groups), -(-N // 256)))
        else:
            # pruned: ~2 blocks per SM in all (each block copies ~90 KB of tables; measured 0.91-0.96 ms
            # with 2 chunks vs 1.0 with 5 at H=32); mma / brute: ~8 blocks per SM
            per_sm = 2 if t["kind"] == "pruned" else 8
            chunks = max(1, min(-(-per_sm * _sms(idx) // (H * groups)), -(-N // 512)))
    null = lambda k: t[k].data_ptr() if k in t else None  # noqa: E731
    a = _Args(
        x.data_ptr(), codes.data_ptr(), t["tab"].data_ptr(), null("cells"), null("lists"), null("grid"), null("frags"),
        *x.stride()[:3], *codes.stride()[:3],
        B, H, T, M, Hc, dsub, _DTYPES[x.dtype], KINDS.index(t["kind"]), int(chunks), GRID, int(t.get("lcap", 0)), int(opt),
    )
    lib = _lib()
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        rc = lib.million_pq_encode(ctypes.byref(a), ctypes.c_void_p(stream))
    if rc != 0:
        raise RuntimeError(f"million CUDA encode failed ({rc}): {lib.million_pq_encode_last_error().decode()}")
    return codes
