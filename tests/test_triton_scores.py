"""Accumulated attention per key (the prefill scores of eviction): the Triton kernels against the naive
specification, and the specification against a brute-force loop over queries, at odd shapes (one query, a chunk
after context, a whole prefill, lengths off the block, GQA 1/3/4, batch 2 with left padding, empty inputs); fp32.
Without a GPU the kernels run in Triton's interpreter."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from million.ops import naive  # noqa: E402
from million.ops import triton_scores as ts  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _brute(q, k, pad, scale):
    B, Hq, C, D = q.shape
    H, N = k.shape[1], k.shape[2]
    G = Hq // H
    out = torch.zeros(B, H, N, dtype=torch.float64)
    for b in range(B):
        for hq in range(Hq):
            for c in range(C):
                pos = N - C + c
                if pos < pad[b]:
                    continue
                keys = torch.arange(pad[b], pos + 1)
                s = (k[b, hq // G, keys].double() @ q[b, hq, c].double()) * scale
                out[b, hq // G, keys] += s.softmax(0)
    return out.float()


@pytest.mark.parametrize("B,Hq,H,C,N,pad", [
    (1, 4, 4, 1, 1, (0,)), (1, 3, 1, 1, 37, (0,)), (2, 8, 2, 5, 40, (0, 3)), (2, 6, 2, 23, 23, (0, 7)),
    (1, 4, 1, 17, 70, (0,)), (2, 4, 4, 33, 33, (4, 0)),
])
def test_naive_is_the_definition(B, Hq, H, C, N, pad):
    g = torch.Generator().manual_seed(1)
    q, k = torch.randn(B, Hq, C, 16, generator=g), torch.randn(B, H, N, 16, generator=g)
    got = naive.attention_column_sums(q, k, torch.tensor(pad), 0.3, chunk_elems=257)  # several chunks
    torch.testing.assert_close(got, _brute(q, k, pad, 0.3), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("B,Hq,H,C,N,pad", [
    (1, 4, 4, 1, 1, (0,)), (1, 3, 1, 1, 37, (0,)), (2, 8, 2, 5, 40, (0, 3)), (2, 6, 2, 23, 23, (0, 7)),
    (1, 4, 1, 17, 70, (0,)), (2, 4, 4, 33, 33, (4, 0)), (1, 8, 1, 40, 90, (0,)), (2, 2, 2, 0, 9, (0, 0)),
    (1, 2, 1, 0, 0, (0,)),
])
def test_triton_kernels_equal_the_specification(B, Hq, H, C, N, pad):
    if C > N:
        pytest.skip("queries are the last C keys")
    g = torch.Generator().manual_seed(2)
    q = torch.randn(B, Hq, C, 16, generator=g).to(DEV)
    k = torch.randn(B, H, N, 16, generator=g).to(DEV)
    pad_t = torch.tensor(pad, dtype=torch.int32)
    got = ts.attention_column_sums(q, k, pad_t, 0.3, block_q=16, block_k=16)
    want = naive.attention_column_sums(q, k, pad_t, 0.3)
    assert got.shape == (B, H, N)
    torch.testing.assert_close(got.cpu(), want.cpu(), rtol=1e-4, atol=1e-5)
    if C and N:  # every valid query spreads a mass of 1 per query head
        valid = sum(max(0, C - max(0, p - (N - C))) for p in pad)
        assert abs(float(got.sum()) - valid * Hq) < 1e-3 * max(1, valid * Hq)


def test_triton_rejects_a_head_dim_tl_dot_cannot_take():
    q, k = torch.randn(1, 2, 3, 24), torch.randn(1, 2, 3, 24)
    with pytest.raises(ValueError, match="power of two"):
        ts.attention_column_sums(q, k)


def _true_lse(q, k, pad, scale):
    """Each query's natural-log log-sum-exp over the keys it sees (+inf for a query that sees none)."""
    B, Hq, C, D = q.shape
    H, N = k.shape[1], k.shape[2]
    G = Hq // H
    out = torch.full((B, Hq, C), float("inf"))
    for b in range(B):
        for hq in range(Hq):
            for c in range(C):
                pos = N - C + c
                if pos >= pad[b]:
                    s = (k[b, hq // G, pad[b] : pos + 1].double() @ q[b, hq, c].double()) * scale
                    out[b, hq, c] = float(s.logsumexp(0))
    return out


@pytest.mark.parametrize("B,Hq,H,C,N,pad", [
    (1, 4, 4, 1, 1, (0,)), (1, 3, 1, 1, 37, (0,)), (2, 8, 2, 5, 40, (0, 3)), (2, 6, 2, 23, 23, (0, 7)),
    (1, 4, 1, 17, 70, (0,)), (2, 4, 4, 33, 33, (4, 0)), (2, 2, 2, 0, 9, (0, 0)),
])
def test_given_lse_gives_the_same_sums(B, Hq, H, C, N, pad):
    """With each query's own log-sum-exp handed in (decode steps scored later), the naive twin and the kernel's
    column pass give the sums of the full computation; a query whose lse is +inf adds nothing."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(B, Hq, C, 16, generator=g), torch.randn(B, H, N, 16, generator=g)
    pad_t = torch.tensor(pad, dtype=torch.int32)
    lse = _true_lse(q, k, pad, 0.3)
    want = naive.attention_column_sums(q, k, pad_t, 0.3)
    got_naive = naive.attention_column_sums(q, k, pad_t, 0.3, lse, chunk_elems=300)
    torch.testing.assert_close(got_naive, want, rtol=1e-4, atol=1e-5)
    got = ts.attention_column_sums(q.to(DEV), k.to(DEV), pad_t, 0.3, lse.to(DEV), block_q=16, block_k=16)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)
    if C:
        # a larger lse scales that query's contribution by exp(-delta); +inf removes it
        lse2 = lse.clone()
        lse2[:, :, -1] = float("inf")
        lse2[:, 0, 0] += 1.0
        ref = naive.attention_column_sums(q, k, pad_t, 0.3, lse2)
        torch.testing.assert_close(ts.attention_column_sums(q.to(DEV), k.to(DEV), pad_t, 0.3, lse2.to(DEV), block_q=16,
                                                            block_k=16).cpu(), ref, rtol=1e-4, atol=1e-5)
        assert float(ref.sum()) < float(want.sum()) - 0.5  # the last query's mass (Hq per valid batch row) is gone


def test_lse_of_the_wrong_shape_is_refused():
    q, k = torch.randn(1, 2, 3, 16), torch.randn(1, 1, 5, 16)
    for f in (naive.attention_column_sums, ts.attention_column_sums):
        with pytest.raises(ValueError, match="lse has shape"):
            f(q, k, None, None, torch.zeros(1, 2, 4))


@pytest.mark.parametrize("B,Hq,H,C,P,W,pad,M,ksub,Hc,ctype", [
    (1, 4, 4, 1, 0, 1, (0,), 8, 16, 1, torch.uint8),          # no codes yet, one window slot
    (1, 3, 1, 1, 37, 5, (0,), 8, 256, 1, torch.uint8),        # one query, GQA 3, tile tail
    (2, 8, 2, 5, 40, 7, (0, 3), 4, 16, 2, torch.uint8),       # GQA 4, per-head centroids, padding, dsub 4
    (2, 4, 4, 17, 70, 17, (4, 0), 16, 256, 4, torch.uint8),   # MHA, dsub 1, window = the queries
    (1, 4, 1, 9, 33, 20, (0,), 8, 1024, 1, torch.int16),      # 10-bit codes in int16
    (2, 2, 2, 0, 5, 0, (0, 0), 8, 16, 1, torch.uint8),        # no queries
])
def test_coded_column_sums_equal_the_specification(B, Hq, H, C, P, W, pad, M, ksub, Hc, ctype):
    """Keys held as codes (decoded in the kernel's registers) then a full-precision window: the kernel against the
    naive twin, which decodes to memory; the twin against the plain column sums over the decoded keys."""
    if C > P + W:
        pytest.skip("queries are the last C keys")
    g = torch.Generator().manual_seed(4)
    D = 16
    q = torch.randn(B, Hq, C, D, generator=g)
    codes = torch.randint(0, ksub, (B, H, P, M), generator=g).to(ctype)
    cen = torch.randn(Hc, M, ksub, D // M, generator=g)
    win = torch.randn(B, H, W, D, generator=g)
    pad_t = torch.tensor(pad, dtype=torch.int32)
    keys = torch.cat([naive.pq_decode(codes, cen), win], 2)
    lse = _true_lse(q, keys, pad, 0.3)
    want = naive.attention_column_sums_coded(q, codes, cen, win, pad_t, 0.3, lse)
    torch.testing.assert_close(want, naive.attention_column_sums(q, keys, pad_t, 0.3), rtol=1e-4, atol=1e-5)
    got = ts.attention_column_sums_coded(q.to(DEV), codes.to(DEV), cen.to(DEV), win.to(DEV), pad_t, 0.3, lse.to(DEV),
                                         block_q=16, block_k=16)
    assert got.shape == (B, H, P + W)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


def test_coded_column_sums_read_strided_codes_and_window():
    """The cache hands views into its buffers (capacity beyond the live length): the kernel follows the strides."""
    g = torch.Generator().manual_seed(5)
    B, Hq, H, C, P, W, M, ksub, D = 2, 4, 2, 6, 50, 9, 8, 16, 16
    q = torch.randn(B, Hq, C, D, generator=g)
    codes = torch.randint(0, ksub, (B, H, P + 30, M), generator=g).to(torch.uint8)[:, :, :P]
    cen = torch.randn(H, M, ksub, D // M, generator=g)
    win = torch.randn(B, H, W + 11, D, generator=g)[:, :, :W]
    pad_t = torch.tensor([0, 5], dtype=torch.int32)
    keys = torch.cat([naive.pq_decode(codes, cen), win], 2)
    lse = _true_lse(q, keys, (0, 5), 0.25)
    want = naive.attention_column_sums_coded(q, codes, cen, win, pad_t, 0.25, lse)
    got = ts.attention_column_sums_coded(q.to(DEV), codes.to(DEV), cen.to(DEV), win.to(DEV), pad_t, 0.25, lse.to(DEV),
                                         block_q=16, block_k=32)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5)


def test_coded_column_sums_refuse_what_they_cannot_take():
    q, codes = torch.randn(1, 2, 3, 16), torch.zeros(1, 1, 4, 8, dtype=torch.uint8)
    win, lse = torch.randn(1, 1, 2, 16), torch.zeros(1, 2, 3)
    with pytest.raises(ValueError, match="lse must have shape"):
        ts.attention_column_sums_coded(q, codes, torch.randn(1, 8, 16, 2), win, None, None, None)
    with pytest.raises(ValueError, match="M \\* dsub"):
        ts.attention_column_sums_coded(q, codes, torch.randn(1, 8, 16, 3), win, None, None, lse)
