"""The fused Triton build of the 4-bit encode's grid lists (:mod:`million.ops.triton_grid`) against its twin,
:func:`million.ops.cuda_encode.build_grid_lists`: the same lists on data without ties, and on every codebook kind of
``test_cuda_encode_grid`` (tight clusters with exact duplicates, a degenerate line) every exact nearest centroid of
every test point in the list of its cell. Without a GPU the kernel runs in Triton's interpreter."""

from __future__ import annotations

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton decorates the kernel
pytest.importorskip("triton")

from million.ops import cuda_encode  # noqa: E402
from million.ops import triton_grid as tg  # noqa: E402
from test_cuda_encode_grid import G, _codebooks, _points  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"

if DEV == "cpu":
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(tg._grid_kernel, InterpretedFunction):  # imported before TRITON_INTERPRET was set
        tg = importlib.reload(tg)


@pytest.mark.parametrize("kind", ["gauss", "aniso"])
@pytest.mark.parametrize("g", [8, 16])
def test_same_lists_as_the_twin(kind, g):
    c = _codebooks(kind, 2, torch.Generator().manual_seed(4)).to(DEV)
    got = tg.build_grid_lists(c, G=g)
    ref = cuda_encode.build_grid_lists(c.cpu(), G=g)
    assert got[0].dtype == torch.bool and got[0].shape == (2, g * g, 256)
    for a, b in zip(got, ref):
        assert torch.equal(a.cpu(), b)
    assert ref[0].any(-1).all()  # no empty list


@pytest.mark.parametrize("kind", ["gauss", "aniso", "clusters", "line"])
def test_exact_argmin_is_in_the_cell_list(kind):
    gen = torch.Generator().manual_seed(1)
    c = _codebooks(kind, 2, gen)
    kept, lo, inv_w = (t.cpu() for t in tg.build_grid_lists(c.to(DEV), G=G))
    p = _points(c, lo, inv_w, gen)
    cell = cuda_encode.grid_cells(p, lo, inv_w, G)
    d = ((p.double()[:, :, None, :] - c.double()[:, None, :, :]) ** 2).sum(-1)
    is_min = d <= d.min(-1, keepdim=True).values  # every exact minimiser, all of them on ties
    cand = torch.gather(kept, 1, cell[..., None].expand(-1, -1, 256))
    missing = is_min & ~cand
    assert not missing.any(), f"{int(missing.any(-1).sum())} points lost their nearest centroid"
    # as short as the twin's lists (the same rule; ties may pick other dominators)
    ref = cuda_encode.build_grid_lists(c, G=G)[0]
    assert abs(kept.float().sum(-1).mean().item() - ref.float().sum(-1).mean().item()) < 0.05 * ref.float().sum(-1).mean().item()


def test_bad_shapes_and_empty():
    with pytest.raises(ValueError, match="dsub=3"):
        tg.build_grid_lists(torch.zeros(1, 256, 3, device=DEV))
    with pytest.raises(ValueError, match="power-of-two number of centroids, got 200"):
        tg.build_grid_lists(torch.zeros(1, 200, 2, device=DEV))
    kept, lo, inv_w = tg.build_grid_lists(torch.zeros(0, 256, 2, device=DEV), G=4)
    assert kept.shape == (0, 16, 256) and lo.shape == (0, 2) and inv_w.shape == (0, 2)


def test_encode_tables_take_the_triton_build_on_cuda(monkeypatch):
    """``cuda_encode.grid_lists``: the fused build for CUDA centroids, the twin for CPU ones."""
    calls = []
    monkeypatch.setattr(tg, "build_grid_lists", lambda c, G: calls.append("triton") or cuda_encode.build_grid_lists(c.cpu(), G))
    c = torch.randn(1, 256, 2)
    cuda_encode.grid_lists(c, 4)
    assert calls == []
    if DEV == "cuda":
        cuda_encode.grid_lists(c.cuda(), 4)
        assert calls == ["triton"]


@pytest.mark.parametrize("bc,gather", [(8, True), (2, False), (1, True)])
def test_launch_options_give_the_same_lists(bc, gather):
    """The dominators' coordinates loaded by index or reduced out of registers, any cells per program: same lists."""
    c = _codebooks("gauss", 1, torch.Generator().manual_seed(6)).to(DEV)
    got = tg.build_grid_lists(c, G=8, cells_per_program=bc, gather=gather)
    ref = cuda_encode.build_grid_lists(c.cpu(), G=8)
    assert torch.equal(got[0].cpu(), ref[0])
    for bad in (3, 16):  # not a power of two; a launch whose float64 tiles spill (minutes of compile on a GPU)
        with pytest.raises(ValueError, match=f"cells_per_program={bad}: expected 1, 2, 4 or 8"):
            tg.build_grid_lists(c, G=8, cells_per_program=bad)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["gauss", "aniso", "clusters", "line"])
def test_gpu_full_grid_against_the_twin(kind):
    """On the GPU, the encode's own grid (32 x 32) over 64 subspaces: the twin's lists where there are no ties, and
    every exact nearest centroid kept on every kind; then the encode that uses them equals the brute-force kernel."""
    gen = torch.Generator().manual_seed(7)
    c = _codebooks(kind, 64, gen)
    got = tuple(t.cpu() for t in tg.build_grid_lists(c.cuda(), G=32))
    ref = cuda_encode.build_grid_lists(c, G=32)
    if kind in ("gauss", "aniso"):
        assert torch.equal(got[0], ref[0])
    assert torch.equal(got[1], ref[1]) and torch.equal(got[2], ref[2])
    p = (c[:, torch.randint(0, 256, (2000,), generator=gen)] + 0.3 * torch.randn(64, 2000, 2, generator=gen)).float()
    cell = cuda_encode.grid_cells(p, got[1], got[2], 32)
    d = ((p.double()[:, :, None, :] - c.double()[:, None, :, :]) ** 2).sum(-1)
    is_min = d <= d.min(-1, keepdim=True).values
    assert not (is_min & ~torch.gather(got[0], 1, cell[..., None].expand(-1, -1, 256))).any()
    if cuda_encode.available():
        x = p.transpose(0, 1).reshape(1, 1, 2000, 128).cuda()
        cen = c.reshape(1, 64, 256, 2).cuda()
        pruned = cuda_encode.pq_encode(x, cen, kind="pruned")
        brute = cuda_encode.pq_encode(x, cen, kind="brute")
        assert (pruned == brute).float().mean().item() > 0.9999
