"""Batched k-means against brute force on tiny problems, Lloyd invariants, empty-cluster reseeding,
seeding, weights and argument errors."""

import itertools

import numpy as np
import pytest
import torch

import million.kmeans as km
from million.kmeans import kmeans


# ---------------------------------------------------------------- references (float64, numpy)


def brute_force(x: np.ndarray, k: int, w: np.ndarray | None = None):
    """Exhaustive optimum of (weighted) k-means on one tiny problem x [N, D].

    Returns (sum of weighted squared errors, centroids [k', D] of the non-empty clusters).
    """
    N, D = x.shape
    w = np.ones(N) if w is None else w.astype(np.float64)
    labels = np.array(list(itertools.product(range(k), repeat=N)))  # [P, N]
    onehot = (labels[..., None] == np.arange(k)).astype(np.float64) * w[None, :, None]  # [P, N, k]
    cnt = onehot.sum(1)  # [P, k]
    S = np.einsum("pnk,nd->pkd", onehot, x)  # [P, k, D]
    sse = (w * (x**2).sum(1)).sum() - ((S**2).sum(-1) / np.where(cnt > 0, cnt, 1)).sum(-1)
    best = int(np.argmin(sse))
    keep = cnt[best] > 0
    return float(sse[best]), S[best][keep] / cnt[best][keep][:, None]


def fp32_tol(x: np.ndarray) -> float:
    """Absolute error of a float32 squared distance computed as ||x||^2 - 2 x.c + ||c||^2."""
    return 1e-6 * float((x**2).sum(-1).mean())


def assign64(x: np.ndarray, c: np.ndarray):
    """Exact nearest centroid in float64: x [N, D], c [k, D] -> labels [N], squared distances [N]."""
    d = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)
    return d.argmin(1), d.min(1)


def assert_same_centroid_set(got: np.ndarray, want: np.ndarray, atol: float):
    """Every wanted centroid has its own got centroid within atol (a bijection)."""
    assert got.shape == want.shape, (got.shape, want.shape)
    d = np.sqrt(((want[:, None, :] - got[None, :, :]) ** 2).sum(-1))  # [k, k]
    match = d.argmin(1)
    assert sorted(match.tolist()) == list(range(len(want))), f"not a bijection: {match}\n{got}\n{want}"
    assert d[np.arange(len(want)), match].max() <= atol, f"\n{got}\n{want}"


def blobs(rng: np.random.Generator, sizes, D: int, spread: float = 0.5, sep: float = 20.0) -> np.ndarray:
    """Well-separated blobs: centres on a coarse grid around 0, ``sep`` apart, points within ``spread``."""
    n_blobs = len(sizes)
    grid = np.array(list(itertools.product(range(4), repeat=D)), dtype=np.float64) - 1.5
    centres = grid[rng.choice(len(grid), n_blobs, replace=False)] * sep
    pts = [c + rng.uniform(-spread, spread, size=(n, D)) for c, n in zip(centres, sizes)]
    x = np.concatenate(pts, 0)
    return x[rng.permutation(len(x))]


# ---------------------------------------------------------------- brute force


@pytest.mark.parametrize(
    "D,k,sizes",
    [(1, 2, (4, 3)), (1, 3, (3, 2, 3)), (2, 3, (3, 3, 2)), (2, 4, (2, 2, 2, 2)), (3, 2, (5, 3))],
    ids=lambda v: str(v).replace(" ", ""),
)
def test_reaches_brute_force_optimum_on_separated_blobs(D, k, sizes):
    rng = np.random.default_rng(100 + 10 * D + k)
    B = 4  # several independent problems in one batch
    xs = np.stack([blobs(rng, sizes, D) for _ in range(B)])  # [B, N, D]
    res = kmeans(torch.from_numpy(xs), k, iters=50, seed=0)
    assert res.centroids.shape == (B, k, D) and res.centroids.dtype == torch.float32
    N = xs.shape[1]
    sq, opt = [], []
    for b in range(B):
        opt_sse, opt_c = brute_force(xs[b], k)
        assert_same_centroid_set(res.centroids[b].double().numpy(), opt_c, atol=1e-3)
        sq.append(assign64(xs[b], res.centroids[b].double().numpy())[1])
        opt.append(opt_sse)
    # the reported distortion is the mean squared error per point over the whole batch
    assert res.distortion[-1] == pytest.approx(np.mean(sq), rel=1e-4, abs=fp32_tol(xs))
    assert res.distortion[-1] == pytest.approx(sum(opt) / (B * N), rel=1e-4, abs=fp32_tol(xs))


@pytest.mark.parametrize("D,k,N", [(1, 2, 8), (1, 3, 8), (2, 3, 8), (2, 2, 9)], ids=lambda v: str(v))
def test_never_below_brute_force_optimum_on_random_data(D, k, N):
    """On unstructured data k-means may end in a local optimum, never below the global one."""
    rng = np.random.default_rng(7 + D + k + N)
    B = 6
    xs = rng.normal(size=(B, N, D))
    res = kmeans(torch.from_numpy(xs), k, iters=30, seed=3)
    for b in range(B):
        opt_sse, _ = brute_force(xs[b], k)
        _, d = assign64(xs[b], res.centroids[b].double().numpy())
        assert d.sum() >= opt_sse * (1 - 1e-5) - 1e-9


def test_large_n_uses_subsampled_init_and_still_finds_blobs():
    rng = np.random.default_rng(5)
    k, D = 4, 2
    xs = np.stack([blobs(rng, (300, 250, 200, 250), D, spread=2.0) for _ in range(3)])  # N = 1000 > 8k
    res = kmeans(torch.from_numpy(xs).float(), k, iters=30, seed=1)
    for b in range(3):
        # the optimum of separated blobs is the blob partition; its centroids are the blob means
        lab = np.round(xs[b] / 20.0 + 1.5).astype(int) @ np.array([1, 10])
        want = np.stack([xs[b][lab == v].mean(0) for v in np.unique(lab)])
        assert_same_centroid_set(res.centroids[b].double().numpy(), want, atol=1e-3)


# ---------------------------------------------------------------- Lloyd invariants


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("B,N,D,k", [(3, 300, 2, 6), (2, 129, 5, 16), (1, 64, 1, 7)], ids=lambda v: str(v))
def test_distortion_non_increasing(B, N, D, k, weighted):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(B, N, D, generator=g)
    w = torch.rand(B, N, generator=g) if weighted else None
    res = kmeans(x, k, iters=40, seed=2, weights=w, tol=0.0)
    dist = np.array(res.distortion)
    assert len(dist) == res.iterations + 1
    assert np.isfinite(dist).all()
    assert (np.diff(dist) <= 1e-5 * dist[:-1] + 1e-7).all(), dist


@pytest.mark.parametrize("B,N,D,k", [(3, 300, 2, 6), (2, 200, 3, 9), (4, 50, 1, 5)], ids=lambda v: str(v))
def test_final_centroids_are_means_of_their_points(B, N, D, k):
    """Run to convergence: every centroid is the mean of the points nearest to it (Lloyd fixed point)."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(B, N, D, generator=g, dtype=torch.float64)
    res = kmeans(x, k, iters=300, seed=4, tol=0.0)
    assert res.iterations < 300, "did not converge"
    sq = []
    for b in range(B):
        xb, cb = x[b].numpy(), res.centroids[b].double().numpy()
        lab, d = assign64(xb, cb)
        for j in range(k):
            pts = xb[lab == j]
            assert len(pts) > 0, f"cluster {j} of problem {b} is empty at convergence"
            np.testing.assert_allclose(cb[j], pts.mean(0), rtol=1e-5, atol=1e-5)
        sq.append(d)
    assert res.distortion[-1] == pytest.approx(np.mean(sq), rel=1e-4)


def test_weighted_fixed_point_is_weighted_mean():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 120, 2, generator=g, dtype=torch.float64)
    w = torch.rand(2, 120, generator=g, dtype=torch.float64) + 0.1
    res = kmeans(x, 4, iters=300, seed=0, weights=w, tol=0.0)
    wsq = 0.0
    for b in range(2):
        xb, wb, cb = x[b].numpy(), w[b].numpy(), res.centroids[b].double().numpy()
        lab, d = assign64(xb, cb)
        for j in range(4):
            m = lab == j
            np.testing.assert_allclose(cb[j], (xb[m] * wb[m, None]).sum(0) / wb[m].sum(), rtol=1e-5, atol=1e-5)
        wsq += (d * wb).sum()
    # weighted mean squared error over the whole batch
    assert res.distortion[-1] == pytest.approx(wsq / w.sum().item(), rel=1e-4)


# ---------------------------------------------------------------- empty clusters


@pytest.mark.parametrize(
    "values,k",
    [
        ([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 3.0], 8),  # N == k, only 4 distinct points
        ([5.0] * 6, 6),  # N == k, all points identical
        ([5.0] * 6, 3),
        ([0.0, 0.0, 0.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0, 7.0], 5),
    ],
    ids=["N==k_4distinct", "N==k_identical", "identical_k3", "2distinct_k5"],
)
def test_duplicates_leave_no_nan_and_centroids_on_data(values, k):
    x1 = torch.tensor(values).view(1, -1, 1)
    x = torch.cat([x1, x1 * -2 + 1], 0)  # two problems in one batch
    res = kmeans(x, k, iters=10, seed=0)
    c = res.centroids
    assert torch.isfinite(c).all()
    assert all(np.isfinite(res.distortion))
    for b in range(2):
        pts = set(x[b, :, 0].tolist())
        assert set(c[b, :, 0].tolist()) <= pts, "a centroid is not a data point"
        assert set(c[b, :, 0].tolist()) == pts or len(pts) > k, "a distinct point has no centroid"
    assert res.distortion[-1] == pytest.approx(0.0, abs=1e-12)


def test_reseeds_empty_clusters_with_worst_served_points(monkeypatch):
    """With an init whose clusters go empty, one iteration moves every empty centroid onto one of the
    worst-served points (distinct points for distinct empty clusters) and every other centroid onto its mean."""
    x = torch.tensor(
        [
            [[0.0], [1.0], [2.0], [10.0], [20.0], [40.0]],  # problem 0: clusters 1 and 2 start empty
            [[0.0], [1.0], [5.0], [6.0], [9.0], [12.0]],  # problem 1: nothing empty
        ]
    )
    init = torch.tensor([[[1.0], [1000.0], [-1000.0]], [[0.5], [5.5], [11.0]]])
    monkeypatch.setattr(km, "_kmeans_pp", lambda x, k, gen, w: init.clone())
    res = kmeans(x, 3, iters=1, seed=0)
    c = res.centroids
    # problem 0: all points went to centroid 0 (mean 73/6); the two worst-served points are 40 and 20
    assert c[0, 0, 0].item() == pytest.approx(73 / 6)
    assert sorted(c[0, 1:, 0].tolist()) == [20.0, 40.0]
    # problem 1: plain Lloyd step
    assert c[1, :, 0].tolist() == pytest.approx([0.5, 5.5, 10.5])
    assert res.distortion[0] == pytest.approx(((1**2 + 0 + 1 + 81 + 361 + 39**2) / 6 + (0.25 * 2 + 0.25 * 2 + 4 + 1) / 6) / 2)


def test_reseeding_recovers_from_a_bad_init(monkeypatch):
    """Both initial centroids far from the data on the same side: one cluster is empty at first, reseeding
    and Lloyd must still split the two blobs."""
    rng = np.random.default_rng(0)
    xa = rng.uniform(-0.5, 0.5, size=(5, 2))
    xb = rng.uniform(-0.5, 0.5, size=(4, 2)) + np.array([50.0, 0.0])
    x = torch.from_numpy(np.concatenate([xa, xb])[None]).float()
    init = torch.tensor([[[-100.0, 0.0], [-200.0, 0.0]]])
    monkeypatch.setattr(km, "_kmeans_pp", lambda x, k, gen, w: init.clone())
    res = kmeans(x, 2, iters=20, seed=0)
    assert_same_centroid_set(res.centroids[0].double().numpy(), np.stack([xa.mean(0), xb.mean(0)]), atol=1e-4)


# ---------------------------------------------------------------- seeding


def test_same_seed_same_result_different_seed_differs():
    g = torch.Generator().manual_seed(14)
    x = torch.randn(2, 200, 3, generator=g)
    a = kmeans(x, 10, iters=1, seed=123)
    b = kmeans(x, 10, iters=1, seed=123)
    assert torch.equal(a.centroids, b.centroids) and a.distortion == b.distortion
    others = [kmeans(x, 10, iters=1, seed=s).centroids for s in (1, 2, 3)]
    assert any(not torch.equal(a.centroids, o) for o in others)


def test_seed_independent_of_global_rng():
    g = torch.Generator().manual_seed(15)
    x = torch.randn(1, 100, 2, generator=g)
    torch.manual_seed(1)
    a = kmeans(x, 5, iters=3, seed=9)
    torch.manual_seed(2)
    torch.rand(17)
    b = kmeans(x, 5, iters=3, seed=9)
    assert torch.equal(a.centroids, b.centroids)


def test_chunked_assignment_gives_the_same_result(monkeypatch):
    g = torch.Generator().manual_seed(16)
    x = torch.randn(3, 97, 2, generator=g)
    ref = kmeans(x, 8, iters=5, seed=0)
    for chunk in (97 * 8 * 2, 50, 7):  # batch-chunked, point-chunked, tiny
        monkeypatch.setattr(km, "_CHUNK_ELEMS", chunk)  # the GPU's setting
        monkeypatch.setattr(km, "_CHUNK_ELEMS_CPU", chunk)  # what these CPU tensors use
        got = kmeans(x, 8, iters=5, seed=0)
        torch.testing.assert_close(got.centroids, ref.centroids, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- weights


def test_zero_weight_outlier_is_ignored():
    rng = np.random.default_rng(1)
    xa = rng.uniform(-0.5, 0.5, size=(6, 2))
    xb = rng.uniform(-0.5, 0.5, size=(6, 2)) + np.array([20.0, 0.0])
    outlier = np.array([[1000.0, 1000.0]])
    x = torch.from_numpy(np.concatenate([xa, outlier, xb])[None]).float()
    w = torch.ones(1, 13)
    w[0, 6] = 0.0
    want = np.stack([xa.mean(0), xb.mean(0)])
    for seed in range(5):
        res = kmeans(x, 2, iters=30, seed=seed, weights=w)
        assert_same_centroid_set(res.centroids[0].double().numpy(), want, atol=1e-4)
        # the distortion is weighted: the outlier costs nothing
        _, d = assign64(x[0].double().numpy(), res.centroids[0].double().numpy())
        assert res.distortion[-1] == pytest.approx((d * w[0].numpy()).sum() / 12, rel=1e-4)
    # without weights the outlier takes a centroid of its own
    res = kmeans(x, 2, iters=30, seed=0)
    assert (res.centroids[0] == torch.tensor([1000.0, 1000.0])).all(-1).any()


def test_weighted_reaches_weighted_brute_force_optimum():
    rng = np.random.default_rng(2)
    xs = np.stack([blobs(rng, (3, 3, 2), 2) for _ in range(3)])
    ws = rng.integers(1, 5, size=xs.shape[:2]).astype(np.float64)
    res = kmeans(torch.from_numpy(xs), 3, iters=50, seed=0, weights=torch.from_numpy(ws))
    opt = 0.0
    for b in range(3):
        opt_sse, opt_c = brute_force(xs[b], 3, ws[b])
        assert_same_centroid_set(res.centroids[b].double().numpy(), opt_c, atol=1e-3)
        opt += opt_sse
    assert res.distortion[-1] == pytest.approx(opt / ws.sum(), rel=1e-4, abs=fp32_tol(xs))


def test_integer_weights_equal_duplicated_points():
    rng = np.random.default_rng(3)
    x = blobs(rng, (3, 2, 3), 2)
    reps = np.array([1, 3, 2, 1, 1, 2, 4, 1])
    dup = np.repeat(x, reps, axis=0)
    a = kmeans(torch.from_numpy(x[None]), 3, iters=50, seed=0, weights=torch.from_numpy(reps[None].astype(np.float64)))
    b = kmeans(torch.from_numpy(dup[None]), 3, iters=50, seed=0)
    assert_same_centroid_set(a.centroids[0].double().numpy(), b.centroids[0].double().numpy(), atol=1e-4)
    assert a.distortion[-1] == pytest.approx(b.distortion[-1], rel=1e-4, abs=fp32_tol(x))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "shape,k,wshape,needle",
    [
        ((2, 3, 2), 4, None, "N=3"),  # N < k
        ((1, 0, 2), 1, None, "N=0"),
        ((10, 2), 2, None, "[B, N, D]"),
        ((1, 2, 10, 2), 2, None, "[B, N, D]"),
        ((2, 10, 2), 0, None, "k"),
        ((2, 10, 2), -1, None, "k"),
        ((2, 10, 2), 2.0, None, "k"),
        ((2, 10, 2), 2, (10,), "weights"),
        ((2, 10, 2), 2, (2, 9), "weights"),
        ((2, 10, 2), 2, (1, 10), "weights"),
    ],
    ids=["N<k", "N=0", "2d", "4d", "k0", "k-1", "k_float", "w_1d", "w_shortN", "w_B1"],
)
def test_errors(shape, k, wshape, needle):
    x = torch.randn(*shape)
    w = None if wshape is None else torch.ones(*wshape)
    with pytest.raises(ValueError) as ei:
        kmeans(x, k, weights=w)
    assert needle in str(ei.value)


def test_float64_and_half_inputs_give_float32_centroids():
    g = torch.Generator().manual_seed(17)
    x = torch.randn(2, 40, 3, generator=g)
    for dt in (torch.float64, torch.float16, torch.bfloat16):
        r = kmeans(x.to(dt), 4, iters=3)
        assert r.centroids.dtype == torch.float32 and r.centroids.shape == (2, 4, 3)
        assert torch.isfinite(r.centroids).all()
