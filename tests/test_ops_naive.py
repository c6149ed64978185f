"""Reference PQ ops (million.ops.naive) against independent float64 loops: encode, decode, inner-product
table, partial attention on codes, decode attention with residual window and left padding, merge_state."""

import math

import pytest
import torch

import million.ops.naive as naive
from million.ops.naive import (
    dense_attention_partial,
    inner_prod_table,
    merge_state,
    pq_attention_partial,
    pq_decode,
    pq_decode_attention,
    pq_encode,
)

D = 16


def gen(seed):
    return torch.Generator().manual_seed(seed)


def rel_rms(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    den = want.pow(2).mean().sqrt().item()
    return (got - want).pow(2).mean().sqrt().item() / max(den, 1e-30)


def assert_close_rel(got, want, tol=1e-5):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.isfinite(got).all()
    assert rel_rms(got, want) < tol, rel_rms(got, want)
    torch.testing.assert_close(got.double(), want.double(), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- independent references (float64 loops)


def ref_encode(x, cent):
    """Brute-force nearest centroid: x [B, H, T, D], cent [Hc, M, ksub, dsub] -> codes [B, H, T, M] (long)."""
    B, H, T, _ = x.shape
    Hc, M, ksub, dsub = cent.shape
    x, cent = x.double(), cent.double()
    codes = torch.empty(B, H, T, M, dtype=torch.long)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                for m in range(M):
                    sub = x[b, h, t, m * dsub : (m + 1) * dsub]
                    d = ((cent[h if Hc > 1 else 0, m] - sub) ** 2).sum(-1)  # [ksub]
                    codes[b, h, t, m] = int(d.argmin())
    return codes


def sq_dist_of(x, cent, codes):
    """Squared distance of every subvector to the centroid its code names: [B, H, T, M] float64."""
    B, H, T, M = codes.shape
    dsub = cent.shape[-1]
    out = torch.empty(B, H, T, M, dtype=torch.float64)
    for h in range(H):
        for m in range(M):
            c = cent[h if cent.shape[0] > 1 else 0, m].double()[codes[:, h, :, m].long()]  # [B, T, dsub]
            out[:, h, :, m] = ((x[:, h, :, m * dsub : (m + 1) * dsub].double() - c) ** 2).sum(-1)
    return out


def ref_dequant(codes, cent):
    """codes [B, H, T, M], cent [Hc, M, ksub, dsub] -> float64 [B, H, T, M * dsub], subspace by subspace."""
    B, H, T, M = codes.shape
    dsub = cent.shape[-1]
    out = torch.empty(B, H, T, M * dsub, dtype=torch.float64)
    for h in range(H):
        for m in range(M):
            out[:, h, :, m * dsub : (m + 1) * dsub] = cent[h if cent.shape[0] > 1 else 0, m].double()[codes[:, h, :, m].long()]
    return out


def ref_attention(q, keys, values, scale):
    """One query per head over explicit token lists.

    q [B, Hq, D]; keys / values: per batch a float64 [n_b, Hkv, D] (n_b may be 0).
    Returns float64 out [B, Hq, D] (zeros when n_b == 0) and lse [B, Hq] (-inf when n_b == 0).
    """
    B, Hq, Dq = q.shape
    out = torch.zeros(B, Hq, Dq, dtype=torch.float64)
    lse = torch.full((B, Hq), float("-inf"), dtype=torch.float64)
    for b in range(B):
        K, V = keys[b], values[b]
        if K.shape[0] == 0:
            continue
        G = Hq // K.shape[1]
        for hq in range(Hq):
            s = K[:, hq // G] @ q[b, hq].double() * scale  # [n]
            mx = s.max()
            e = torch.exp(s - mx)
            out[b, hq] = (e[:, None] * V[:, hq // G]).sum(0) / e.sum()
            lse[b, hq] = mx + torch.log(e.sum())
    return out, lse


def tokens_of(codes_k, codes_v, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts):
    """The valid (key, value) tokens of every sequence, as the decode-attention docstring defines them."""
    K, V = ref_dequant(codes_k, kcent), ref_dequant(codes_v, vcent)
    keys, values = [], []
    for b in range(K.shape[0]):
        ks, vs = [], []
        for t in range(int(pq_lens[b])):
            if t >= int(starts[b]):
                ks.append(K[b, :, t])
                vs.append(V[b, :, t])
        for j in range(int(res_lens[b]) if k_res is not None else 0):
            if int(pq_lens[b]) + j >= int(starts[b]):
                ks.append(k_res[b, :, j].double())
                vs.append(v_res[b, :, j].double())
        H = K.shape[1]
        keys.append(torch.stack(ks) if ks else torch.empty(0, H, K.shape[-1], dtype=torch.float64))
        values.append(torch.stack(vs) if vs else torch.empty(0, H, K.shape[-1], dtype=torch.float64))
    return keys, values


def random_centroids(Hc, M, nbits, seed, dim=D):
    return torch.randn(Hc, M, 2**nbits, dim // M, generator=gen(seed))


def random_codes(B, H, T, M, nbits, seed):
    dt = torch.uint8 if nbits <= 8 else torch.uint16
    return torch.randint(0, 2**nbits, (B, H, T, M), generator=gen(seed)).to(dt)


# ---------------------------------------------------------------- pq_encode / pq_decode


ENCODE_CASES = {
    # name: (B, H, T, M, nbits, Hc)
    "shared_Hc1": (2, 3, 5, 4, 4, 1),
    "per_head_HcH": (2, 3, 5, 4, 4, 3),
    "M1_full_dim": (1, 2, 7, 1, 6, 2),
    "M16_dsub1": (1, 2, 3, 16, 5, 1),
    "T1": (3, 2, 1, 8, 8, 2),
    "nbits10_uint16": (1, 2, 4, 2, 10, 2),
    "nbits12_shared": (1, 1, 3, 4, 12, 1),
}


@pytest.mark.parametrize("B,H,T,M,nbits,Hc", list(ENCODE_CASES.values()), ids=list(ENCODE_CASES))
def test_pq_encode_is_nearest_centroid(B, H, T, M, nbits, Hc):
    x = torch.randn(B, H, T, D, generator=gen(1))
    cent = random_centroids(Hc, M, nbits, seed=2)
    codes = pq_encode(x, cent)
    assert codes.shape == (B, H, T, M)
    assert codes.dtype == (torch.uint8 if nbits <= 8 else torch.uint16)
    want = ref_encode(x, cent)
    got_d, best_d = sq_dist_of(x, cent, codes), sq_dist_of(x, cent, want)
    # the chosen centroid is a nearest one (exact ties / fp32 near-ties may pick another index)
    assert (got_d <= best_d * (1 + 1e-5) + 1e-6).all()
    assert (codes.long() == want).float().mean() > 0.95


@pytest.mark.parametrize("B,T", [(2, 0), (0, 3), (0, 0)], ids=["T0", "B0", "B0_T0"])
def test_pq_encode_empty(B, T):
    cent = random_centroids(2, 4, 9, seed=0)
    codes = pq_encode(torch.randn(B, 2, T, D), cent)
    assert codes.shape == (B, 2, T, 4) and codes.dtype == torch.uint16


def test_pq_encode_half_input_and_chunking(monkeypatch):
    x = torch.randn(2, 2, 33, D, generator=gen(3))
    cent = random_centroids(1, 8, 6, seed=4)
    ref = pq_encode(x, cent)
    monkeypatch.setattr(naive, "_ENCODE_CHUNK_ELEMS", 2 * 2 * 8 * 64 * 5)  # 5 tokens per chunk
    assert torch.equal(pq_encode(x, cent), ref)
    monkeypatch.setattr(naive, "_ENCODE_CHUNK_ELEMS", 1)
    assert torch.equal(pq_encode(x, cent), ref)
    # bf16 input is encoded from its float32 value
    xb = x.bfloat16()
    assert torch.equal(pq_encode(xb, cent), pq_encode(xb.float(), cent))


@pytest.mark.parametrize("nbits", [4, 8, 10], ids=lambda n: f"nbits{n}")
@pytest.mark.parametrize("Hc", [1, 3], ids=lambda h: f"Hc{h}")
def test_decode_is_inverse_of_encode_on_centroid_points(Hc, nbits):
    B, H, T, M = 2, 3, 9, 4
    cent = random_centroids(Hc, M, nbits, seed=5)
    codes = random_codes(B, H, T, M, nbits, seed=6)
    x = ref_dequant(codes, cent).float()
    dec = pq_decode(codes, cent)
    assert dec.dtype == torch.float32 and dec.shape == (B, H, T, D)
    assert torch.equal(dec, x)
    enc = pq_encode(x, cent)
    assert torch.equal(enc.long(), codes.long())
    assert torch.equal(pq_decode(enc, cent), x)
    assert pq_decode(codes, cent, dtype=torch.float16).dtype == torch.float16


def test_pq_decode_empty():
    cent = random_centroids(1, 4, 4, seed=0)
    assert pq_decode(torch.zeros(2, 3, 0, 4, dtype=torch.uint8), cent).shape == (2, 3, 0, D)


# ---------------------------------------------------------------- inner_prod_table


@pytest.mark.parametrize("Hkv,G,Hc", [(2, 1, 2), (2, 3, 2), (2, 4, 1), (1, 4, 1), (3, 1, 1)], ids=lambda v: str(v))
def test_inner_prod_table_vs_loops(Hkv, G, Hc):
    B, M, nbits = 2, 4, 5
    Hq = Hkv * G
    q = torch.randn(B, Hq, D, generator=gen(7))
    cent = random_centroids(Hc, M, nbits, seed=8)
    lut = inner_prod_table(q, cent)
    assert lut.shape == (B, Hq, M, 2**nbits) and lut.dtype == torch.float32
    dsub = D // M
    want = torch.empty(B, Hq, M, 2**nbits, dtype=torch.float64)
    for b in range(B):
        for hq in range(Hq):
            hc = (hq // G) if Hc > 1 else 0
            for m in range(M):
                for k in range(2**nbits):
                    want[b, hq, m, k] = (q[b, hq, m * dsub : (m + 1) * dsub].double() * cent[hc, m, k].double()).sum()
    assert_close_rel(lut, want)
    # the table sums to q . decode(code) for any code
    codes = random_codes(B, Hkv, 1, M, nbits, seed=9)[:, :, 0]  # [B, Hkv, M]
    kvec = ref_dequant(codes[:, :, None], cent)[:, :, 0]  # [B, Hkv, D]
    for hq in range(Hq):
        s = lut[:, hq].double().gather(-1, codes[:, hq // G].long()[..., None]).sum((1, 2))
        torch.testing.assert_close(s, (q[:, hq].double() * kvec[:, hq // G]).sum(-1), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- attention on codes


# name: capacity T, window capacity R, per-sequence pq_lens, res_lens, starts
SCENARIOS = {
    "pq0_T0_res0_R0": (0, 0, [0], [0], [0]),
    "pq0_T0_res_partial": (0, 8, [0], [5], [0]),
    "pq0_capacity_res_full": (6, 8, [0], [8], [0]),
    "pq1_res0": (1, 4, [1], [0], [0]),
    "pq1_res_full": (3, 4, [1], [4], [0]),
    "pq37_res0": (37, 8, [37], [0], [0]),
    "pq37_res_partial": (40, 8, [37], [3], [0]),
    "pq37_R0_no_window": (37, 0, [37], [0], [0]),
    "batch3_unequal_left_pad": (40, 8, [37, 0, 20], [8, 3, 0], [4, 0, 5]),
    "batch3_starts_into_residual": (40, 8, [10, 5, 37], [8, 6, 2], [13, 7, 0]),
    "batch3_one_empty": (40, 8, [37, 9, 1], [5, 2, 8], [0, 11, 0]),
    "batch2_start_at_last_token": (8, 4, [6, 0], [4, 4], [9, 3]),
}


def make_problem(G, Hc_shared, scen, nbits=6, M=4, Hkv=2, B=None, seed=0, dtype=torch.float32):
    T, R, pq, res, st = scen
    B = len(pq)
    Hq = Hkv * G
    g = gen(seed)
    q = (torch.randn(B, Hq, D, generator=g) * 1.5).to(dtype)
    Hc = 1 if Hc_shared else Hkv
    kcent = torch.randn(Hc, M, 2**nbits, D // M, generator=g)
    vcent = torch.randn(Hc, M, 2**nbits, D // M, generator=g)
    kc = random_codes(B, Hkv, T, M, nbits, seed + 1)
    vc = random_codes(B, Hkv, T, M, nbits, seed + 2)
    k_res = torch.randn(B, Hkv, R, D, generator=g).to(dtype)
    v_res = torch.randn(B, Hkv, R, D, generator=g).to(dtype)
    i32 = lambda v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    return q, kc, vc, kcent, vcent, i32(pq), k_res, v_res, i32(res), i32(st)


@pytest.mark.parametrize("scen", list(SCENARIOS.values()), ids=list(SCENARIOS))
@pytest.mark.parametrize("shared", [True, False], ids=["Hc1", "HcHkv"])
@pytest.mark.parametrize("G", [1, 3, 4], ids=lambda g: f"G{g}")
def test_pq_attention_partial_vs_dequantized_attention(G, shared, scen):
    q, kc, vc, kcent, vcent, pq_lens, _, _, _, starts = make_problem(G, shared, scen)
    out, lse = pq_attention_partial(q, kc, vc, kcent, vcent, pq_lens, starts)
    assert out.dtype == torch.float32 and lse.dtype == torch.float32
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, None, None, None, starts)
    want, want_lse = ref_attention(q, keys, values, D**-0.5)
    for b in range(q.shape[0]):
        if keys[b].shape[0] == 0:
            assert torch.equal(out[b], torch.zeros_like(out[b]))
            assert torch.isneginf(lse[b]).all()
        else:
            assert_close_rel(out[b], want[b])
            assert_close_rel(lse[b], want_lse[b])


@pytest.mark.parametrize("scen", list(SCENARIOS.values()), ids=list(SCENARIOS))
@pytest.mark.parametrize("shared", [True, False], ids=["Hc1", "HcHkv"])
@pytest.mark.parametrize("G", [1, 3, 4], ids=lambda g: f"G{g}")
def test_pq_decode_attention_vs_dequantized_attention(G, shared, scen):
    q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts = make_problem(G, shared, scen, seed=G)
    out = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    assert out.dtype == q.dtype and out.shape == q.shape
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    want, _ = ref_attention(q, keys, values, D**-0.5)
    for b in range(q.shape[0]):
        if keys[b].shape[0] == 0:
            assert torch.equal(out[b], torch.zeros_like(out[b])), "a sequence with no valid token must give zeros"
        else:
            assert_close_rel(out[b], want[b])


def test_pq_decode_attention_explicit_scale_and_default_starts():
    scen = (20, 6, [20, 13, 3], [6, 1, 0], [0, 0, 0])
    q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, _ = make_problem(2, False, scen, nbits=5, seed=3)
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, torch.zeros(3, dtype=torch.int32))
    out = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, None, scale=0.7)
    assert_close_rel(out, ref_attention(q, keys, values, 0.7)[0])
    out0 = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens)
    assert_close_rel(out0, ref_attention(q, keys, values, D**-0.5)[0])


def test_pq_decode_attention_nbits10_uint16_codes():
    scen = (29, 5, [29, 17], [5, 2], [0, 3])
    q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts = make_problem(4, False, scen, nbits=10, M=8, seed=4)
    assert kc.dtype == torch.uint16
    out = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    assert_close_rel(out, ref_attention(q, keys, values, D**-0.5)[0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_pq_decode_attention_half_queries(dtype):
    scen = (16, 4, [16, 7], [4, 2], [0, 2])
    q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts = make_problem(3, True, scen, dtype=dtype, seed=5)
    out = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    assert out.dtype == dtype
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    want = ref_attention(q, keys, values, D**-0.5)[0]  # same (rounded) inputs, exact arithmetic
    assert rel_rms(out, want) < 1e-2


def test_pq_decode_attention_large_scores_are_stable():
    scen = (12, 4, [12], [4], [0])
    q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts = make_problem(1, True, scen, seed=6)
    q = q * 40  # scores in the hundreds: a naive exp would overflow
    out = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    assert_close_rel(out, ref_attention(q, keys, values, D**-0.5)[0], tol=1e-4)


def test_invalid_slots_do_not_leak_into_the_output():
    """Positions before ``starts`` and window slots past ``res_lens`` are ignored even when they hold inf/NaN."""
    scen = (12, 6, [8, 4], [3, 6], [2, 6])
    q, kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts = make_problem(2, False, scen, seed=7)
    keys, values = tokens_of(kc, vc, kcent, vcent, pq_lens, k_res, v_res, res_lens, starts)
    want = ref_attention(q, keys, values, D**-0.5)[0]
    k_bad, v_bad = k_res.clone(), v_res.clone()
    k_bad[0, :, 3:] = float("nan")  # past res_lens[0]
    v_bad[0, :, 3:] = float("inf")
    k_bad[1, :, :2] = float("inf")  # positions 4, 5 < starts[1] = 6
    v_bad[1, :, :2] = float("nan")
    out = pq_decode_attention(q, kc, vc, kcent, vcent, pq_lens, k_bad, v_bad, res_lens, starts)
    assert_close_rel(out, want)


# ---------------------------------------------------------------- dense partial and merge_state


def test_dense_attention_partial_vs_loops():
    B, Hkv, G, T = 3, 2, 3, 11
    g = gen(8)
    q = torch.randn(B, Hkv * G, D, generator=g)
    k = torch.randn(B, Hkv, T, D, generator=g)
    v = torch.randn(B, Hkv, T, D, generator=g)
    valid = torch.zeros(B, T, dtype=torch.bool)
    valid[0] = True
    valid[1, 3:7] = True  # sequence 2 has nothing valid
    out, lse = dense_attention_partial(q, k, v, valid)
    keys = [k[b].transpose(0, 1)[valid[b]].double() for b in range(B)]
    vals = [v[b].transpose(0, 1)[valid[b]].double() for b in range(B)]
    want, want_lse = ref_attention(q, keys, vals, D**-0.5)
    assert_close_rel(out[:2], want[:2])
    assert_close_rel(lse[:2], want_lse[:2])
    assert torch.equal(out[2], torch.zeros_like(out[2])) and torch.isneginf(lse[2]).all()


def split_attention(seed, sizes):
    """Attention of one query set over len(sizes) disjoint token chunks: partial (v, s) per chunk, and the
    float64 attention over all tokens."""
    B, H = 2, 3
    g = gen(seed)
    q = torch.randn(B, H, D, generator=g)
    parts, ks, vs = [], [], []
    for n in sizes:
        k = torch.randn(B, H, n, D, generator=g) * 2
        v = torch.randn(B, H, n, D, generator=g)
        parts.append(dense_attention_partial(q, k, v, torch.ones(B, n, dtype=torch.bool)))
        ks.append(k)
        vs.append(v)
    K, V = torch.cat(ks, 2), torch.cat(vs, 2)
    full = ref_attention(q, [K[b].transpose(0, 1).double() for b in range(B)], [V[b].transpose(0, 1).double() for b in range(B)], D**-0.5)
    return parts, full


@pytest.mark.parametrize("sizes", [(5, 1, 9), (0, 4, 3), (3, 0, 0), (7, 2, 0)], ids=lambda s: "-".join(map(str, s)))
def test_merge_state_is_associative_and_equals_full_attention(sizes):
    (a, b, c), (want_v, want_s) = split_attention(9, sizes)
    left = merge_state(*merge_state(*a, *b), *c)
    right = merge_state(*a, *merge_state(*b, *c))
    for v, s in (left, right):
        assert v.dtype == torch.float32 and s.dtype == torch.float32
        assert_close_rel(v, want_v)
        assert_close_rel(s, want_s)
    torch.testing.assert_close(left[0], right[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(left[1], right[1], rtol=1e-6, atol=1e-6)
    # commutative too
    torch.testing.assert_close(merge_state(*b, *a)[0], merge_state(*a, *b)[0], rtol=1e-5, atol=1e-6)


def test_merge_state_with_an_empty_side_returns_the_other():
    g = gen(10)
    v = torch.randn(4, 3, D, generator=g)
    s = torch.randn(4, 3, generator=g) * 50
    empty_v, empty_s = torch.zeros(4, 3, D), torch.full((4, 3), float("-inf"))
    for args in ((v, s, empty_v, empty_s), (empty_v, empty_s, v, s)):
        mv, ms = merge_state(*args)
        torch.testing.assert_close(mv, v, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ms, s, rtol=1e-6, atol=1e-5)


def test_merge_state_both_empty_gives_zero_and_neg_inf():
    v = torch.randn(2, 3, D)
    mv, ms = merge_state(v, torch.full((2, 3), float("-inf")), v * 2, torch.full((2, 3), float("-inf")))
    assert torch.equal(mv, torch.zeros_like(mv))
    assert torch.isneginf(ms).all()


def test_merge_state_mixed_rows_and_extreme_lse():
    v_a, v_b = torch.ones(4, D), torch.full((4, D), 3.0)
    s_a = torch.tensor([float("-inf"), 0.0, 1e4, float("-inf")])
    s_b = torch.tensor([2.0, float("-inf"), 1e4, float("-inf")])
    mv, ms = merge_state(v_a, s_a, v_b, s_b)
    torch.testing.assert_close(mv[:, 0], torch.tensor([3.0, 1.0, 2.0, 0.0]))
    torch.testing.assert_close(ms, torch.tensor([2.0, 0.0, 1e4 + math.log(2), float("-inf")]))
    # lse kept in float32 even for half inputs
    hv, hs = merge_state(v_a.half(), s_a.half(), v_b.half(), s_b.half())
    assert hs.dtype == torch.float32 and torch.isfinite(hv).all()


def test_merge_state_half_lse_differences_do_not_underflow():
    """Partial states far apart in lse: the smaller one gets weight exp(-diff), without overflow."""
    v_a, v_b = torch.zeros(1, D), torch.ones(1, D)
    s_a, s_b = torch.tensor([-80.0]), torch.tensor([-100.0])
    mv, ms = merge_state(v_a, s_a, v_b, s_b)
    torch.testing.assert_close(mv[0, 0].double(), torch.tensor(1 / (1 + math.exp(20)), dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(ms.double(), torch.tensor([-80 + math.log1p(math.exp(-20))], dtype=torch.float64), rtol=1e-6, atol=1e-5)
