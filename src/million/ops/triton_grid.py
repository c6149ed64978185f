"""Grid lists of the 4-bit encode in one Triton launch: the drop rule of
:func:`million.ops.cuda_encode.build_grid_lists` (the specification and CPU twin, same signature and result) fused.

``build_grid_lists`` evaluates the rule with float64 tensors of size ``subspaces x cells x candidates x dominators``
in chunks of a few subspaces; on a GPU that is hundreds of launches and gigabytes of temporaries per codebook tensor
(0.8-0.9 s for one 2048-subspace tensor of a 7B-shaped model on an H100, about a minute for the 64 tensors, paid by
the first long prefill). Here one program owns one subspace and ``BC`` cells: it finds each cell's ``n_dom``
dominators (the centroids nearest to the cell's centre, by repeated argmin) and checks every candidate against each
of them in registers, in the same float64 arithmetic, and writes only the ``kept`` flags. The rule does not depend
on which dominators are chosen (each one it drops a candidate for is strictly closer over the whole cell), so ties in
the nearest-dominator order cannot make a list wrong; on data without ties the lists equal the twin's.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .cuda_encode import grid_frame


@triton.jit
def _grid_kernel(c_ptr, lo_ptr, w_ptr, prm_ptr, out_ptr, G,
                 K: tl.constexpr, NDOM: tl.constexpr, BC: tl.constexpr, GATHER: tl.constexpr):
    s = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1)
    GG = G * G
    kk = tl.arange(0, K)
    cx = tl.load(c_ptr + s * (2 * K) + 2 * kk)
    cy = tl.load(c_ptr + s * (2 * K) + 2 * kk + 1)
    nc = cx * cx + cy * cy
    amax_c = tl.maximum(tl.abs(cx), tl.abs(cy))
    lox = tl.load(lo_ptr + 2 * s)
    loy = tl.load(lo_ptr + 2 * s + 1)
    wx = tl.load(w_ptr + 2 * s)
    wy = tl.load(w_ptr + 2 * s + 1)
    margin = tl.load(prm_ptr)  # float64 from memory (a float argument would be rounded to float32)
    tol = tl.load(prm_ptr + 1)

    cid = pid * BC + tl.arange(0, BC)
    valid = cid < GG
    gx = cid % G
    gy = cid // G
    fx = gx.to(tl.float64)
    fy = gy.to(tl.float64)
    # the cell's box, margins included (as build_grid_lists: lo + w * (g - margin), lo + w * (g + 1 + margin))
    clx = lox + wx * (fx - margin)
    chx = lox + wx * (fx + 1 + margin)
    cly = loy + wy * (fy - margin)
    chy = loy + wy * (fy + 1 + margin)
    ulx = gx == 0
    uly = gy == 0
    uhx = gx == G - 1
    uhy = gy == G - 1
    box = tl.maximum(tl.maximum(tl.abs(clx), tl.abs(chx)), tl.maximum(tl.abs(cly), tl.abs(chy)))
    ctx = 0.5 * (clx + chx)
    cty = 0.5 * (cly + chy)
    dx = ctx[:, None] - cx[None, :]
    dy = cty[:, None] - cy[None, :]
    d2 = dx * dx + dy * dy  # [BC, K]

    dropped = tl.zeros([BC, K], dtype=tl.int32)
    for _ in tl.static_range(NDOM):
        j = tl.argmin(d2, axis=1)  # [BC]: the next-nearest centroid to each cell's centre
        pick = kk[None, :] == j[:, None]
        if GATHER:  # the dominator's coordinates loaded again (cached: this program's 4 KB of centroids)
            px = tl.load(c_ptr + s * (2 * K) + 2 * j)
            py = tl.load(c_ptr + s * (2 * K) + 2 * j + 1)
        else:  # or picked out of the registers by two reductions
            px = tl.sum(tl.where(pick, cx[None, :], 0.0), axis=1)
            py = tl.sum(tl.where(pick, cy[None, :], 0.0), axis=1)
        d2 = tl.where(pick, float("inf"), d2)
        ncp = px * px + py * py
        amax_p = tl.maximum(tl.abs(px), tl.abs(py))
        ax = px[:, None] - cx[None, :]  # (c' - c)
        ay = py[:, None] - cy[None, :]
        g = nc[None, :] - ncp[:, None]
        g = g + tl.minimum(2 * clx[:, None] * ax, 2 * chx[:, None] * ax)
        g = g + tl.minimum(2 * cly[:, None] * ay, 2 * chy[:, None] * ay)
        am = amax_c[None, :] + amax_p[:, None]
        eps = 1e-5 * am
        free = (ulx[:, None] & (ax > -eps)) | (uhx[:, None] & (ax < eps))
        free = free | (uly[:, None] & (ay > -eps)) | (uhy[:, None] & (ay < eps))
        scale = nc[None, :] + ncp[:, None] + 2 * box[:, None] * am
        dropped = dropped | ((g > tol * scale) & (free == 0)).to(tl.int32)
    keep = (dropped == 0).to(tl.int8)
    tl.store(out_ptr + s * GG * K + cid[:, None] * K + kk[None, :], keep, mask=valid[:, None])


def build_grid_lists(c: torch.Tensor, G: int = 32, n_dom: int = 16, margin: float = 0.02, tol: float = 1e-5,
                     chunk: int | None = None, prefilter: int = 64, *, cells_per_program: int = 4, num_warps: int = 2,
                     gather: bool = True):
    """Same contract as :func:`million.ops.cuda_encode.build_grid_lists` (``chunk`` and ``prefilter`` are accepted
    and have nothing to set here): ``c [S, K, 2]`` on a CUDA device (or any device under ``TRITON_INTERPRET=1``),
    ``K`` a power of two. Returns ``(kept [S, G*G, K] bool, lo [S, 2] fp32, inv_w [S, 2] fp32)``.
    ``cells_per_program`` (1, 2, 4 or 8), ``num_warps`` and ``gather`` (a dominator's coordinates loaded by index
    rather than reduced out of the registers): the launch; the defaults were the fastest measured on an H100 (2026-12-05:
    0.060 s per 2048-subspace tensor, against 0.074 s at 8 cells / 4 warps and 0.096 s with reductions)."""
    S, K, _ = c.shape
    if K < 1 or K & (K - 1):
        raise ValueError(f"the Triton grid build needs a power-of-two number of centroids, got {K}")
    if G < 1:
        raise ValueError(f"G={G}: expected at least one cell per axis")
    BC = int(cells_per_program)
    if BC < 1 or BC & (BC - 1) or BC > 8:
        # 16 and more cells per program hold [BC, K] float64 tiles that spill and take minutes to compile on a GPU
        raise ValueError(f"cells_per_program={cells_per_program}: expected 1, 2, 4 or 8")
    cd64, lo, w, lo32, inv_w32 = (t.contiguous() for t in grid_frame(c, G))
    prm = torch.tensor([margin, tol], dtype=torch.float64, device=c.device)
    kept = torch.empty(S, G * G, K, dtype=torch.int8, device=c.device)
    if S:
        grid = (S, triton.cdiv(G * G, BC))
        _grid_kernel[grid](cd64, lo, w, prm, kept, G, K=K, NDOM=min(int(n_dom), K), BC=BC,
                           GATHER=bool(gather), num_warps=int(num_warps))
    return kept.view(torch.bool), lo32, inv_w32
