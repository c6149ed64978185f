"""CUDA C++ PQ encode (``million.ops.cuda_encode``) vs the naive specification (``-m gpu``).

Odd shapes (T = 0, 1, 37, 1000, 4099; B = 1, 3), shared and per-head codebooks, fp16 / bf16 / fp32
x, 4-bit (dsub 2: pruned and brute) and 2-bit (dsub 4: mma and brute). Every chosen centroid must
be as close to x as the naive one up to float rounding, and >= 99.99% of the codes must be equal.
"""

from __future__ import annotations

import pytest
import torch

from million.ops import naive

pytestmark = pytest.mark.gpu
CUDA = torch.cuda.is_available()


def _dist(x: torch.Tensor, codes: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distance per (token, subspace) of x to the chosen centroids, float64 [B, H, T, M]."""
    B, H, T, D = x.shape
    Hc, M, K, dsub = c.shape
    dec = naive.pq_decode(codes, c.double(), dtype=torch.float64).view(B, H, T, M, dsub)
    return ((x.double().view(B, H, T, M, dsub) - dec) ** 2).sum(-1)


def _check(x, c, got, min_match=0.9999):
    ref = naive.pq_encode(x, c)
    assert got.shape == ref.shape and got.dtype == torch.uint8
    if ref.numel() == 0:
        return
    d_ref, d_got = _dist(x, ref, c), _dist(x, got, c)
    B, H, T, D = x.shape
    M, dsub = c.shape[1], c.shape[3]
    xn = (x.double().view(B, H, T, M, dsub) ** 2).sum(-1)
    excess = d_got - d_ref
    tol = 1e-4 * (1.0 + xn + d_ref)
    assert (excess <= tol).all(), f"worst excess {excess.max().item():.3g}"
    mism = int((got != ref).sum())
    assert mism <= max(2, (1 - min_match) * ref.numel()), f"{mism} of {ref.numel()} codes differ"


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("kind,dsub,opt", [("pruned", 2, 0), ("pruned", 2, 1), ("brute", 2, 0), ("mma", 4, 0),
                                            ("mma", 4, 2), ("mma", 4, 4), ("mma", 4, 12), ("mma", 4, 20),
                                            ("mma", 4, 28), ("mma", 4, 32), ("mma", 4, 96),
                                            ("mma", 4, 160), ("mma", 4, 224), ("mma", 4, 76),
                                            ("mma", 4, 140), ("mma", 4, 204), ("mma", 4, 256),
                                            ("mma", 4, 320), ("mma", 4, 336), ("mma", 4, 448), ("mma", 4, 832),
                                            ("mma", 4, 960), ("mma", 4, 1984), ("mma", 4, 3008), ("mma", 4, 3904),
                                            ("mma", 4, 4032), ("mma", 4, 5056), ("mma", 4, 6080),
                                            ("mma", 4, 8128), ("brute", 4, 0)])
@pytest.mark.parametrize("T", [0, 1, 37, 1000, 4099])
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_matches_naive(kind, dsub, opt, T, B, shared, dtype):
    from million.ops import cuda_encode as ce

    if not ce.available():
        pytest.skip("CUDA encode library not available")
    if opt & 32 and not ce.wgmma_available():
        pytest.skip("the wgmma kernel needs sm_90a")
    g = torch.Generator(device="cuda").manual_seed(T * 7 + B)
    H, D = 4, 128
    M = D // dsub
    x = (torch.randn(B, H, T, D, device="cuda", generator=g) * 1.5).to(dtype)
    c = torch.randn(1 if shared else H, M, 256, dsub, device="cuda", generator=g)
    if dtype != torch.float32:
        c = c.to(dtype)
    got = ce.pq_encode(x, c, kind=kind, opt=opt)
    _check(x, c, got)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_dispatch_strided_and_outliers():
    from million import ops
    from million.ops import cuda_encode as ce

    if not ce.available():
        pytest.skip("CUDA encode library not available")
    g = torch.Generator(device="cuda").manual_seed(5)
    base = torch.randn(2, 100, 6, 128, device="cuda", generator=g, dtype=torch.float16)
    x = base.transpose(1, 2)  # [2, 6, 100, 128] non-contiguous
    x[0, 0, :3] *= 300  # far outside the codebook's box
    for dsub in (2, 4):
        c = torch.randn(6, 128 // dsub, 256, dsub, device="cuda", generator=g)
        _check(x, c, ops.pq_encode(x, c))
        for opt in (1, 2, 4, 12, 204, 320, 960, 6080) + ((32, 224) if ce.wgmma_available() else ()):
            _check(x, c, ce.pq_encode(x, c, opt=opt))
    # bf16 / fp32 values outside the fp16 range take the exact fix-up path of the mma kernel
    xf = torch.randn(1, 2, 64, 128, device="cuda", generator=g)
    xf[0, 1, 5, :8] = 1e6
    c = torch.randn(1, 32, 256, 4, device="cuda", generator=g) * 10
    assert ce.tables(c, "mma")["kind"] == "mma"
    for opt in (0, 2, 4, 12, 204, 320, 960, 6080) + ((32, 224) if ce.wgmma_available() else ()):
        _check(xf, c, ce.pq_encode(xf, c, kind="mma", opt=opt))
        _check(xf.bfloat16(), c, ce.pq_encode(xf.bfloat16(), c, kind="mma", opt=opt))
    # unsupported inputs fall back (ksub 16)
    c16 = torch.randn(1, 64, 16, 2, device="cuda", generator=g)
    assert not ce.supports(x, c16)
    _check(x, c16, ops.pq_encode(x, c16), min_match=0.999)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_large_offsets_and_graph_capture():
    from million.ops import cuda_encode as ce

    if not ce.available():
        pytest.skip("CUDA encode library not available")
    g = torch.Generator(device="cuda").manual_seed(9)
    # codes past 2**31 elements: B * H * T * M = 1 * 2 * 2**25 * 64 = 2**32
    x = torch.randn(1, 2, 1 << 25, 128, device="cuda", dtype=torch.float16, generator=g)
    c = torch.randn(1, 64, 256, 2, device="cuda", generator=g)
    got = ce.pq_encode(x, c)
    tail = x[:, :, -4096:]
    assert torch.equal(got[:, :, -4096:], ce.pq_encode(tail.contiguous(), c))
    _check(tail, c, got[:, :, -4096:])
    if ce.wgmma_available():  # 2-bit, the wgmma kernel: codes of 2**31 elements (the last at 2**31 - 1)
        c4 = torch.randn(1, 32, 256, 4, device="cuda", generator=g)
        got4 = ce.pq_encode(x, c4, opt=32)
        assert torch.equal(got4[:, :, -4096:], ce.pq_encode(tail.contiguous(), c4, opt=32))
        _check(tail, c4, got4[:, :, -4096:])
        del got4
    del x, got
    # CUDA-graph capture after one eager call (tables cached)
    xs = torch.randn(1, 4, 512, 128, device="cuda", dtype=torch.float16, generator=g)
    ce.pq_encode(xs, c)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ce.pq_encode(xs, c)
    xs.copy_(torch.randn(1, 4, 512, 128, device="cuda", dtype=torch.float16, generator=g))
    graph.replay()
    torch.cuda.synchronize()
    _check(xs, c, out)
    if ce.wgmma_available():  # the 2-bit wgmma kernel captured too
        c4 = torch.randn(4, 32, 256, 4, device="cuda", generator=g)
        ce.pq_encode(xs, c4, opt=32)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out4 = ce.pq_encode(xs, c4, opt=32)
        xs.copy_(torch.randn(1, 4, 512, 128, device="cuda", dtype=torch.float16, generator=g))
        graph.replay()
        torch.cuda.synchronize()
        _check(xs, c4, out4)


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("T,M", [(1, 32), (45, 32), (4099, 32), (300, 13), (77, 9)])
def test_staged_equals_mma3(dtype, T, M):
    """The staged kernel (opt bit 8) feeds the MMAs the same A, B and C as mma3, so its codes are the same bits,
    also at group tails (M not a multiple of 8) and on rows that take the exact path."""
    from million.ops import cuda_encode as ce

    if not ce.available():
        pytest.skip("CUDA encode library not available")
    g = torch.Generator(device="cuda").manual_seed(T + M)
    x = (torch.randn(2, 3, T, M * 4, device="cuda", generator=g) * 2).to(dtype)
    if dtype != torch.float16 and T > 2:
        x[1, 2, 1, :4] = 1e6  # outside the fp16 range: the exact path
    c = torch.randn(3, M, 256, 4, device="cuda", generator=g).to(dtype if dtype != torch.float32 else torch.float32)
    ref = ce.pq_encode(x, c, kind="mma", opt=76)
    for opt in (320, 336, 256, 448, 832, 960, 3008, 5056, 7104):
        got = ce.pq_encode(x, c, kind="mma", opt=opt)
        assert torch.equal(got, ref), f"opt {opt}: {(got != ref).sum().item()} codes differ"
    # captured in a CUDA graph
    ce.pq_encode(x, c, kind="mma", opt=336)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = ce.pq_encode(x, c, kind="mma", opt=336)
    x.copy_((torch.randn(x.shape, device="cuda", generator=g) * 2).to(dtype))
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, ce.pq_encode(x, c, kind="mma", opt=76))


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("D,dsub", [(80, 4), (52, 4), (36, 4), (80, 2), (52, 2), (26, 2), (36, 2)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_head_dims_off_the_vector_width(D, dsub, dtype):
    """Head dims whose rows are not a multiple of the kernels' vector width (codes rows of M % 8 != 0 bytes, x rows
    of D * size % 16 != 0 bytes; e.g. head_dim 80 at 2 bits): every kernel writes and reads them element-wise there."""
    from million.ops import cuda_encode as ce

    if not ce.available():
        pytest.skip("CUDA encode library not available")
    g = torch.Generator(device="cuda").manual_seed(D * 3 + dsub)
    M = D // dsub
    x = (torch.randn(2, 3, 1037, D, device="cuda", generator=g) * 1.5).to(dtype)
    c = torch.randn(3, M, 256, dsub, device="cuda", generator=g)
    if dsub == 2:
        runs = [dict(kind="pruned", opt=0), dict(kind="pruned", opt=1), dict(kind="brute", opt=0)]
    else:
        runs = [dict(kind="mma", opt=o) for o in (0, 2, 12, 76, 320, 960, 5056, 6080)] + [dict(kind="brute", opt=0)]
        if ce.wgmma_available():
            runs.append(dict(kind="mma", opt=32))
    for r in runs:
        _check(x, c, ce.pq_encode(x, c, **r))
    torch.cuda.synchronize()


@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_staged_variant_bits_need_index_keys():
    """opt bits 10, 11 and 12 (the staged kernel's offset through K, parity-split minima, 16 warps) take the key
    multiplier from bit 6:
    without it the call is refused with a message naming the bits, not run with mismatched keys."""
    from million.ops import cuda_encode as ce

    if not ce.available():
        pytest.skip("CUDA encode library not available")
    x = torch.randn(1, 2, 40, 128, device="cuda", dtype=torch.float16)
    c = torch.randn(1, 32, 256, 4, device="cuda")
    for opt in (256 + 1024, 256 + 2048, 256 + 128 + 1024, 256 + 4096, 256 + 512 + 128 + 4096):
        with pytest.raises(RuntimeError, match="bits 10, 11 and 12 need bit 6"):
            ce.pq_encode(x, c, kind="mma", opt=opt)
