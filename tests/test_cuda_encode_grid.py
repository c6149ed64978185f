"""CPU checks of the exact dsub-2 pruning lists used by the CUDA encode kernel
(:func:`million.ops.cuda_encode.build_grid_lists`): the exact (float64 brute-force) nearest
centroid of every test point is in the candidate list of the cell the kernel would assign it to,
for random, clustered and degenerate codebooks, with points inside, on cell borders, on centroids
and far outside the bounding box. Also: the packed (offset, length) lists reproduce the kept sets,
and a torch emulation of the kernel's search matches ``naive.pq_encode``.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from million.ops import naive
from million.ops.cuda_encode import _pack_lists, build_grid_lists, grid_cells

G = 16  # smaller than the kernel's 32 to keep the CPU test fast; the construction is the same


def _codebooks(kind: str, S: int, gen: torch.Generator) -> torch.Tensor:
    if kind == "gauss":
        return torch.randn(S, 256, 2, generator=gen)
    if kind == "aniso":  # one axis 100x narrower, offset
        return torch.randn(S, 256, 2, generator=gen) * torch.tensor([3.0, 0.03]) + torch.tensor([5.0, -2.0])
    if kind == "clusters":  # tight clusters and exact duplicates
        base = torch.randn(S, 8, 2, generator=gen) * 4
        c = base.repeat_interleave(32, 1) + 1e-3 * torch.randn(S, 256, 2, generator=gen)
        c[:, 1::7] = c[:, 0::7][:, : c[:, 1::7].shape[1]]
        return c
    if kind == "line":  # all centroids on a vertical line (zero x-span), fp16-rounded values
        c = torch.zeros(S, 256, 2)
        c[..., 1] = torch.randn(S, 256, generator=gen)
        return c.half().float()
    raise ValueError(kind)


def _points(c: torch.Tensor, lo: torch.Tensor, inv_w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    S = c.shape[0]
    span = c.amax(1) - c.amin(1)
    ctr = 0.5 * (c.amax(1) + c.amin(1))
    pts = [ctr[:, None] + span[:, None] * (torch.rand(S, 4000, 2, generator=gen) - 0.5) * 1.2]
    pts.append(ctr[:, None] + span[:, None].clamp_min(1) * 1e3 * torch.randn(S, 500, 2, generator=gen))  # far outside
    pts.append(ctr[:, None] + span[:, None] * 3 * torch.randn(S, 500, 2, generator=gen))  # just outside
    # exactly on cell borders (and the float32 neighbours of border coordinates)
    i = torch.randint(0, G + 1, (S, 500, 2), generator=gen).float()
    b = lo[:, None] + i / inv_w[:, None]
    j = torch.rand(S, 500, 2, generator=gen) * span[:, None] + c.amin(1)[:, None]
    mix = torch.where(torch.rand(S, 500, 1, generator=gen) < 0.5, torch.stack([b[..., 0], j[..., 1]], -1),
                      torch.stack([j[..., 0], b[..., 1]], -1))
    pts += [b, mix, torch.nextafter(b, b + 1), torch.nextafter(b, b - 1)]
    pts.append(c + 0.0)  # on the centroids
    pts.append(0.5 * (c + c.roll(1, 1)))  # midpoints between centroids (ties)
    return torch.cat(pts, 1).float()


@pytest.mark.parametrize("q", [0.0, 0.05], ids=["box", "quantile-frame"])
@pytest.mark.parametrize("kind", ["gauss", "aniso", "clusters", "line"])
def test_exact_argmin_is_in_the_cell_list(kind, q, monkeypatch):
    """Every exact nearest centroid is in the list of its point's cell, for the library's grid over the centroids'
    bounding box and for a grid over their inner quantiles (``$MILLION_ENCODE_GRID_Q``: more points in the border
    cells)."""
    monkeypatch.setenv("MILLION_ENCODE_GRID_Q", str(q))
    gen = torch.Generator().manual_seed(1)
    c = _codebooks(kind, 3, gen)
    kept, lo, inv_w = build_grid_lists(c, G=G)
    assert kept.shape == (3, G * G, 256)
    p = _points(c, lo, inv_w, gen)
    cell = grid_cells(p, lo, inv_w, G)  # [S, N]
    d = ((p.double()[:, :, None, :] - c.double()[:, None, :, :]) ** 2).sum(-1)  # [S, N, K]
    dmin = d.min(-1, keepdim=True).values
    # every exact minimiser (all of them on ties) must be a candidate
    is_min = d <= dmin
    cand = torch.gather(kept, 1, cell[..., None].expand(-1, -1, 256))  # [S, N, K]
    missing = is_min & ~cand
    assert not missing.any(), f"{int(missing.any(-1).sum())} points lost their nearest centroid"
    # and the lists are short where the points are (the point of the exercise)
    if kind == "gauss":
        inner = p.shape[1] and cand[:, :4000].sum(-1).float().mean().item()
        assert inner < 24, inner


def test_packed_lists_and_emulated_search_match_naive():
    gen = torch.Generator().manual_seed(2)
    c = torch.randn(1, 4, 256, 2, generator=gen)  # [Hc, M, K, 2]
    x = torch.randn(2, 1, 300, 8, generator=gen) * 1.3
    x[0, 0, :5] *= 1e3
    kept, lo, inv_w = build_grid_lists(c[0], G=G)
    cells, lists, lcap = _pack_lists(kept)
    assert lcap % 16 == 0 and cells.dtype == torch.int32
    lens = cells >> 16
    offs = cells & 0xFFFF
    assert torch.equal(lens, kept.sum(-1))
    ref = naive.pq_encode(x, c)
    xs = x.reshape(-1, 4, 2).transpose(0, 1)  # [M, N, 2]
    cell = grid_cells(xs, lo, inv_w, G)
    cf = c[0].float()
    got = torch.empty(4, xs.shape[1], dtype=torch.long)
    for m in range(4):
        for n in range(xs.shape[1]):
            ci = cell[m, n]
            cand = lists[m, offs[m, ci]: offs[m, ci] + lens[m, ci]].long()
            assert torch.equal(cand, kept[m, ci].nonzero().flatten())  # ascending: ties go low
            dist = (cf[m, cand] ** 2).sum(-1) - 2 * (cf[m, cand] * xs[m, n]).sum(-1)
            got[m, n] = cand[dist.argmin()]
    got = got.transpose(0, 1).reshape(2, 1, 300, 4)
    assert (got == ref.long()).float().mean() >= 0.999


@pytest.mark.parametrize("flags", [1, 3 * 16 * 256 + 5, 1 << 40], ids=["one-subspace", "uneven", "one-call"])
def test_pack_in_chunks_gives_every_cell_its_list(flags, monkeypatch):
    """``_pack_lists`` counts and packs a few subspaces at a time: any chunking gives every cell its kept
    centroids, ascending, at its own offset; random densities, empty cells and no subspaces at all."""
    import million.ops.cuda_encode as ce

    monkeypatch.setattr(ce, "_PACK_FLAGS", flags)
    gen = torch.Generator().manual_seed(3)
    for S, dens in ((7, 0.05), (5, 0.6), (0, 0.1)):
        kept = torch.rand(S, 16, 256, generator=gen) < dens
        kept[:, 3] = False  # an empty cell
        cells, lists, lcap = _pack_lists(kept)
        assert cells.shape == (S, 16) and lists.shape == (S, lcap) and lcap % 16 == 0
        for s in range(S):
            for g in range(16):
                off, n = int(cells[s, g]) & 0xFFFF, int(cells[s, g]) >> 16
                assert torch.equal(lists[s, off : off + n].long(), kept[s, g].nonzero().flatten())


def test_grid_frame_rejects_a_bad_quantile(monkeypatch):
    from million.ops.cuda_encode import grid_frame

    for bad in (-0.1, 0.5):
        with pytest.raises(ValueError, match=f"q={bad}: expected a quantile in"):
            grid_frame(torch.zeros(1, 256, 2), 8, q=bad)
    for bad in ("0.7", "x"):
        monkeypatch.setenv("MILLION_ENCODE_GRID_Q", bad)
        with pytest.raises(ValueError, match=f"MILLION_ENCODE_GRID_Q='{bad}': expected a quantile"):
            grid_frame(torch.zeros(1, 256, 2), 8)


def test_grid_frame_default_comes_from_the_environment(monkeypatch):
    from million.ops.cuda_encode import grid_frame

    c = torch.randn(2, 256, 2, generator=torch.Generator().manual_seed(5))
    box = grid_frame(c, 8, q=0.0)
    q01 = grid_frame(c, 8, q=0.01)
    inner = grid_frame(c, 8, q=0.02)
    monkeypatch.delenv("MILLION_ENCODE_GRID_Q", raising=False)
    assert all(torch.equal(a, b) for a, b in zip(grid_frame(c, 8), q01))  # the default: the inner 98%
    monkeypatch.setenv("MILLION_ENCODE_GRID_Q", "0")
    assert all(torch.equal(a, b) for a, b in zip(grid_frame(c, 8), box))
    monkeypatch.setenv("MILLION_ENCODE_GRID_Q", "0.02")
    assert all(torch.equal(a, b) for a, b in zip(grid_frame(c, 8), inner))
    assert (inner[4] > q01[4]).all() and (q01[4] > box[4]).all()  # finer cells over the inner quantiles


def test_import_without_cuda():
    code = (
        "import torch\n"
        "from million.ops import cuda_encode as ce\n"
        "assert callable(ce.pq_encode) and callable(ce.available) and callable(ce.supports)\n"
        "assert not torch.cuda.is_initialized()\n"
        "print(ce.available())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if not torch.cuda.is_available():
        assert r.stdout.strip() == "False"


@pytest.mark.parametrize("kind", ["gauss", "aniso", "clusters", "line"])
@pytest.mark.parametrize("g", [16, 32])
def test_prefilter_gives_the_same_lists(kind, g):
    """The inner cells' prefilter only leaves out centroids the exact rule drops: the lists are unchanged."""
    gen = torch.Generator().manual_seed(3)
    c = _codebooks(kind, 2, gen)
    ref = build_grid_lists(c, G=g, prefilter=0)
    for kc in (64, 8):  # 8: chunks whose cells keep more than 8 fall back to the full rule
        got = build_grid_lists(c, G=g, prefilter=kc)
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])


def test_default_encode_opt_comes_from_the_environment(monkeypatch):
    from million.ops.cuda_encode import default_opt

    monkeypatch.delenv("MILLION_ENCODE_OPT", raising=False)
    assert default_opt() == 6080
    monkeypatch.setenv("MILLION_ENCODE_OPT", "76")
    assert default_opt() == 76
    for bad in ("8192", "-1", "x"):
        monkeypatch.setenv("MILLION_ENCODE_OPT", bad)
        with pytest.raises(ValueError, match=f"MILLION_ENCODE_OPT='{bad}': expected an opt bit mask"):
            default_opt()


@pytest.mark.parametrize("opt", [512, 1024, 2048, 4096, 4096 + 1024 + 64])
def test_staged_variant_bits_without_the_staged_kernel_are_refused(opt):
    """opt bits 9-12 only select variants of the staged kernel (bit 8): without it the call is refused with a message
    naming the bits and the value with bit 8 added, instead of silently running another kernel."""
    from million.ops.cuda_encode import pq_encode

    x = torch.zeros(1, 1, 4, 8)
    c = torch.zeros(1, 2, 256, 4)
    with pytest.raises(ValueError, match=rf"opt={opt}: bits 9-12 .* need bit 8 \(256\), e.g. opt={opt | 256}"):
        pq_encode(x, c, opt=opt)


@pytest.mark.parametrize("g", [1, 2, 3])
def test_coarse_grids_keep_every_nearest_centroid(g):
    """Grids with no inner cell (G <= 2) or one: lists built (no prefilter to run) and still exact."""
    gen = torch.Generator().manual_seed(5)
    c = _codebooks("gauss", 2, gen)
    kept, lo, inv_w = build_grid_lists(c, G=g)
    assert kept.shape == (2, g * g, 256)
    ctr = 0.5 * (c.amax(1) + c.amin(1))
    p = ctr[:, None] + (c.amax(1) - c.amin(1))[:, None] * (torch.rand(2, 2000, 2, generator=gen) - 0.5) * 1.5
    cell = grid_cells(p, lo, inv_w, g)
    d = ((p.double()[:, :, None, :] - c.double()[:, None, :, :]) ** 2).sum(-1)
    cand = torch.gather(kept, 1, cell[..., None].expand(-1, -1, 256))
    assert not ((d <= d.min(-1, keepdim=True).values) & ~cand).any()
    if g == 1:
        assert kept.all()  # one cell: it must keep everything
