"""Quantizers of every compared method: error shrinks with bits, shapes and dtypes, bit accounting,
and the registry's errors. Tiny random LLaMA (hidden 64, 2 layers, 4 heads, 2 KV heads, head_dim 16)."""

import math

import pytest
import torch
from eval_helpers import TEXT, CharTokenizer, tiny_model

from million.eval.calibdata import collect, rope
from million.eval.methods import FP16, KIVI, KVQuant, METHOD_BITS, PQMethod, Quanto, Shape, make_method
from million.eval.qhitter import QHitter
from million.eval.quant import hadamard, nearest_level, nuq_token_qdq, pq_qdq, uniform_qdq
from million.pq_variants import PQVariant, train_variant


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def calib(model):
    return collect(model, CharTokenizer(), TEXT, tokens=1024, window=256)


def rel_err(a, b):
    return float((a - b).float().pow(2).sum() / b.float().pow(2).sum())


def kv(seed=0, T=96):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 2, T, 16, generator=g)
    x[..., 3] *= 8  # an outlier channel, as real keys have
    return x


# -- primitives ----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", ["channel", "token"])
def test_uniform_error_shrinks_with_bits(axis):
    x = kv()
    errs = [rel_err(uniform_qdq(x, b, axis, 32), x) for b in (2, 3, 4, 8)]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] < 1e-3


@pytest.mark.parametrize("T", [0, 1, 31, 33, 111])
def test_uniform_odd_lengths_keep_shape_and_dtype(T):
    x = kv(T=T).half()
    for axis in ("channel", "token"):
        y = uniform_qdq(x, 2, axis, 32)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert torch.isfinite(y.float()).all()


def test_uniform_bad_axis():
    with pytest.raises(ValueError, match="channel"):
        uniform_qdq(kv(), 2, "head", 32)


def test_nearest_level_and_nuq():
    lv = torch.tensor([-1.0, -0.2, 0.3, 1.0])
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.1, 0.9]])
    assert torch.allclose(nearest_level(x, lv.expand(5, 4)), torch.tensor([[-1.0, -0.2, -0.2, 0.3, 1.0]]))
    v = kv()
    out = torch.zeros_like(v, dtype=torch.bool)
    out[..., 3] = True
    y = nuq_token_qdq(v, torch.linspace(-1, 1, 16), out)
    assert torch.equal(y[..., 3], v[..., 3])  # outliers exact
    assert rel_err(y, v) < rel_err(nuq_token_qdq(v, torch.linspace(-1, 1, 4), out), v)


def test_hadamard_orthonormal_and_pq_transform_roundtrip():
    H = hadamard(16)
    assert torch.allclose(H @ H.t(), torch.eye(16), atol=1e-6)
    with pytest.raises(ValueError, match="power of two"):
        hadamard(12)
    x = kv()
    c = torch.randn(1, 4, 8, 4)
    I = torch.eye(16)[None]
    assert torch.allclose(pq_qdq(x, c, I, I), pq_qdq(x, c), atol=1e-5)


# -- methods -------------------------------------------------------------------------------------
def test_fp16_is_nearly_exact():
    x = kv()
    assert rel_err(FP16(16).qdq_key(0, x, 0), x) < 1e-6


@pytest.mark.parametrize("cls", [KIVI, Quanto])
def test_uniform_methods_error_shrinks(cls):
    if cls is Quanto:
        pytest.importorskip("optimum.quanto")
    x = kv()
    e2, e4 = (rel_err(cls(b).qdq_key(0, x, 0), x) for b in (2, 4))
    v2, v4 = (rel_err(cls(b).qdq_value(0, x, 0), x) for b in (2, 4))
    assert e4 < e2 and v4 < v2
    assert cls(2).qdq_key(0, x, 0).shape == x.shape


def test_kvquant_error_shrinks_and_keeps_outliers_and_sink(model, calib):
    k = calib.keys_pre[0][None, :, :200]  # [1, H, T, D] pre-RoPE keys
    v = calib.values[0][None, :, :200]
    errs = []
    for b in (2, 3, 4):
        m = KVQuant(b, weighting="none", samples=512, iters=6).fit(model, lambda: calib)
        kq = m.qdq_key(0, k, 0)
        assert torch.equal(kq[:, :, 0], k[:, :, 0])  # first token stays fp16
        errs.append((rel_err(kq, k), rel_err(m.qdq_value(0, v, 0), v)))
    assert errs[0][0] > errs[1][0] > errs[2][0]
    assert errs[0][1] > errs[1][1] > errs[2][1]
    assert 0 < m.outlier_fraction["k"] < 0.1


def test_pq_variant_error_shrinks_with_nbits(calib):
    errs = []
    for nb in (4, 6):
        cb = train_variant(calib, PQVariant(k_nbits=nb, k_dsub=4, v_nbits=nb, v_dsub=4, iters=4, samples=512))
        k = calib.keys_post(1)[None, :, :128]
        errs.append(rel_err(cb.qdq_keys(1, k), k))
    assert errs[1] < errs[0]


@pytest.mark.parametrize("transform", ["hadamard", "metric", "metric_hadamard", "opq"])
@pytest.mark.parametrize("granularity", ["layer_head", "merged"])
def test_pq_variant_options(calib, transform, granularity):
    if transform == "opq" and granularity != "layer_head":
        with pytest.raises(ValueError, match="layer_head"):
            train_variant(calib, PQVariant(k_nbits=4, k_dsub=4, v_nbits=4, v_dsub=4, granularity=granularity,
                                           transform=transform, iters=2, samples=256))
        return
    v = PQVariant(k_nbits=5, k_dsub=4, v_nbits=5, v_dsub=4, granularity=granularity, transform=transform, sinks=2,
                  weighting="attn", iters=3, samples=512)
    cb = train_variant(calib, v)
    k = calib.keys_post(0)[None, :, :64]
    kq = cb.qdq_keys(0, k, pos0=0)
    assert kq.shape == k.shape
    assert torch.equal(kq[:, :, :2], k[:, :, :2])  # sinks exact
    assert not torch.equal(kq[:, :, 2:], k[:, :, 2:])
    # the same tokens later in the sequence are quantized
    assert not torch.equal(cb.qdq_keys(0, k, pos0=5)[:, :, :2], k[:, :, :2])
    assert 0 < cb.info["rel_mse_k"] < 1 and 0 < cb.info["rel_score_err_k"] < 1


def test_metric_transform_lowers_the_score_error(calib):
    base = dict(k_nbits=4, k_dsub=4, v_nbits=4, v_dsub=4, iters=6, samples=1024)
    plain = train_variant(calib, PQVariant(**base)).info
    metric = train_variant(calib, PQVariant(**base, transform="metric")).info
    assert metric["rel_score_err_k"] < plain["rel_score_err_k"]


def test_pq_variant_save_load(tmp_path, calib):
    from million.pq_variants import PQVariantCodebooks

    cb = train_variant(calib, PQVariant(k_nbits=4, k_dsub=4, v_nbits=4, v_dsub=2, transform="metric", iters=2, samples=256))
    cb.save(tmp_path / "v")
    cb2 = PQVariantCodebooks.load(tmp_path / "v")
    assert cb2.variant == cb.variant
    k = calib.keys_post(0)[None, :, :32]
    assert torch.equal(cb.qdq_keys(0, k), cb2.qdq_keys(0, k))


def test_pq_method_loads_million_calibrate_codebooks(tmp_path, model):
    from million import PQConfig
    from million.calibrate import collect_kv, train_codebooks
    from million.codebook import Codebooks, model_identity

    pq = PQConfig(head_dim=16, M=4, nbits=6, granularity="layer")
    rec = collect_kv(model, [torch.randint(0, 128, (1, 256))], progress=False)
    kc, vc, st = train_codebooks(rec.keys, rec.values, pq, samples=256, iters=2, progress=False)
    Codebooks(pq, kc, vc, model_identity(model.config), st).save(tmp_path / "cb")
    m = make_method("pq", 1.5, str(tmp_path / "cb")).fit(model, lambda: None)
    assert m.variant.granularity == "layer" and m.variant.code_bits == 1.5
    with pytest.raises(ValueError, match="allowed: 1.5"):
        make_method("pq", 2, str(tmp_path / "cb")).fit(model, lambda: None)


@pytest.mark.parametrize("alloc", ["uniform", "balanced_k"])
def test_pq_method_applies_the_transforms_of_served_codebooks(tmp_path, model, calib, alloc):
    """Codebooks written by `million calibrate` with a transform (and rotation) evaluate exactly like the variant they
    were made from: the evaluation quantizes x @ A as MillionCache does (dropping A gave ppl in the thousands)."""
    from million.pq_variants import to_codebooks

    var = PQVariant(k_nbits=6, k_dsub=2, v_nbits=6, v_dsub=2, granularity="layer_head", transform="metric", sinks=1,
                    alloc=alloc, iters=2, samples=256)
    vcb = train_variant(calib, var)
    to_codebooks(vcb, model.config, 16).save(tmp_path / "cb")
    m = make_method("pq", 3, str(tmp_path / "cb")).fit(model, lambda: None)
    assert m.cb.key_transform is not None and (m.variant.transform, m.variant.alloc) == ("metric", alloc)
    assert m.variant.sinks == 1
    for layer in range(len(vcb.key_centroids)):
        k = calib.keys_post(layer)[None, :, :40]
        v = calib.values[layer][None, :, :40]
        torch.testing.assert_close(m.cb.qdq_keys(layer, k), vcb.qdq_keys(layer, k), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(m.cb.qdq_values(layer, v), vcb.qdq_values(layer, v), rtol=1e-3, atol=1e-3)
        assert rel_err(m.cb.qdq_keys(layer, k), k) < 0.5  # the codes decode near the keys, not in another space
    assert m.bits_breakdown(Shape(L=2, H=1, D=16), 2048)["total"] == pytest.approx(
        PQMethod(3, var).bits_breakdown(Shape(L=2, H=1, D=16), 2048)["total"])


# -- bits per element ------------------------------------------------------------------------------
S = Shape(L=30, H=3, D=64)  # SmolLM2-135M


def test_bits_fp16_and_kivi():
    assert FP16(16).bits_breakdown(S, 2048)["total"] == 16
    assert KIVI(2).bits_breakdown(S, 2048, "all-quantized")["total"] == pytest.approx(3.0)
    assert KIVI(4).bits_breakdown(S, 2048, "all-quantized")["total"] == pytest.approx(5.0)
    d = KIVI(2).bits_breakdown(S, 2048, "deployed")  # 128 fp16 tokens of 2048
    assert d["window_fp16"] == pytest.approx(16 * 128 / 2048)
    assert d["total"] == pytest.approx(3.0 * (1 - 128 / 2048) + 1.0)
    # head_dim 16: the values' groups along the channels hold 16, not 32 (the keys' still 32 tokens)
    assert KIVI(4).bits_breakdown(Shape(L=2, H=2, D=16), 2048)["total"] == pytest.approx(4 + 0.5 + 1.0)


def test_bits_quanto():
    assert Quanto(2).bits_breakdown(S, 2048)["total"] == pytest.approx(2.5)
    assert Quanto(4).bits_breakdown(S, 2048)["total"] == pytest.approx(4.5)


def test_bits_pq_codebooks_amortized():
    v = PQVariant(k_nbits=8, k_dsub=4, v_nbits=8, v_dsub=4, granularity="layer_head")
    b = v.bits_breakdown(30, 3, 64, 2048)
    assert b["codes"] == 2.0
    # per layer and head: 256 centroids x 64 values for K and for V, fp16
    assert b["codebooks_fp16"] == pytest.approx(16 * 30 * 3 * 2 * 256 * 64 / (2 * 30 * 3 * 64 * 2048))
    assert v.bits_breakdown(30, 3, 64, 32768)["codebooks_fp16"] == pytest.approx(b["codebooks_fp16"] / 16)
    merged = PQVariant(k_nbits=8, k_dsub=4, v_nbits=8, v_dsub=4, granularity="merged").bits_breakdown(30, 3, 64, 2048)
    assert merged["codebooks_fp16"] == pytest.approx(b["codebooks_fp16"] / 90)
    s = PQVariant(k_nbits=8, k_dsub=2, v_nbits=8, v_dsub=2, sinks=4).bits_breakdown(30, 3, 64, 2048)
    assert s["sinks_fp16"] == pytest.approx(16 * 4 / 2048) and s["codes"] == pytest.approx(4 * 2044 / 2048)
    assert PQVariant(k_nbits=12, k_dsub=4, v_nbits=8, v_dsub=8).code_bits == pytest.approx(2.0)


def test_bits_pq_method_deployed_window():
    m = PQMethod(2, PQVariant(k_nbits=8, k_dsub=4, v_nbits=8, v_dsub=4, granularity="merged"))
    a = m.bits_breakdown(S, 2048, "all-quantized")
    d = m.bits_breakdown(S, 2048, "deployed")
    assert a["window_fp16"] == 0
    # MillionCache holds R..2R tokens in full precision: 2R = 256 right after token 2048
    assert m.window_tokens(2048) == 256 and m.window_tokens(2049) == 129
    assert d["window_fp16"] == pytest.approx(16 * 256 / 2048)


def test_bits_qhitter_matched_memory():
    for bits in (2, 4):
        q = QHitter(bits)
        assert q.bits_breakdown(S, 2048)["total"] == pytest.approx(bits, abs=0.01)
        assert q.bits_breakdown(S, 32768)["total"] == pytest.approx(bits, abs=0.01)
    assert 0 < QHitter(2).keep < QHitter(4).keep < 1


def test_bits_kvquant(model, calib):
    m = KVQuant(2, weighting="none", samples=256, iters=2).fit(model, lambda: calib)
    b = m.bits_breakdown(S, 2048)
    assert b["codes"] == pytest.approx(2 * 2047 / 2048)
    assert b["scales_zeros_fp16"] == pytest.approx(0.25 * 2047 / 2048)
    assert b["outliers"] > 0.01 * 32
    assert b["total"] > 2.5


# -- registry ------------------------------------------------------------------------------------
def test_registry_errors():
    with pytest.raises(ValueError, match=r"--method 'gptq' is not one of"):
        make_method("gptq", 4)
    with pytest.raises(ValueError, match=r"allowed: \(4, 2\)"):
        make_method("kivi", 3)
    with pytest.raises(ValueError, match="allowed: \\(4, 3, 2\\)"):
        make_method("kvquant", 8)
    with pytest.raises(ValueError, match="--codebooks applies"):
        make_method("kivi", 2, codebooks="x")
    with pytest.raises(ValueError, match="no default PQ recipe"):
        make_method("pq", 3)
    for name, bits in METHOD_BITS.items():
        for b in bits or (4, 2):
            assert make_method(name, b).bits == b


def test_water_fill():
    from million.pq_variants import water_fill

    b = water_fill(torch.tensor([100.0, 10.0, 1.0, 0.01]), 4, 32, max_bits=12)
    assert int(b.sum()) == 32 and int(b.max()) <= 12
    assert b.tolist() == sorted(b.tolist(), reverse=True)  # more variance, more bits
    assert water_fill(torch.ones(4), 4, 32).tolist() == [8, 8, 8, 8]


def test_pq_alloc_variant(calib, tmp_path):
    from million.pq_variants import PQVariantCodebooks

    v = PQVariant(k_nbits=5, k_dsub=4, v_nbits=5, v_dsub=4, alloc="pca", alloc_max_bits=8, transform="metric",
                  sinks=1, iters=3, samples=256)
    cb = train_variant(calib, v)
    assert all(int(a[..., 0].sum(-1).max()) == 5 * 4 and int(a[..., 0].min()) >= 0 and int(a[..., 0].max()) <= 8
               and bool((a[..., 1] == 4).all()) for a in cb.key_alloc)
    k = calib.keys_post(0)[None, :, :40]
    kq = cb.qdq_keys(0, k)
    assert kq.shape == k.shape and torch.equal(kq[:, :, 0], k[:, :, 0])
    assert rel_err(kq, k) < 1
    cb.save(tmp_path / "a")
    assert torch.equal(PQVariantCodebooks.load(tmp_path / "a").qdq_keys(0, k), kq)
    b = v.bits_breakdown(30, 3, 64, 2048, cb.info["centroid_values"])
    assert b["codes"] == pytest.approx(1.25 * 2047 / 2048)
    with pytest.raises(ValueError, match="alloc 'pca' needs"):
        PQVariant(alloc="pca", granularity="merged")
    va = PQVariant(k_nbits=5, k_dsub=4, v_nbits=5, v_dsub=4, alloc="pca_adaptive", alloc_max_bits=8, iters=3, samples=256)
    cba = train_variant(calib, va)
    for a in cba.key_alloc:
        used = a[..., 0] >= 0
        assert int((a[..., 1] * used).sum(-1).max()) == 16 and int((a[..., 0] * used).sum(-1).max()) == 20
    assert cba.qdq_values(1, calib.values[1][None, :, :30]).shape == (1, 2, 30, 16)
    vk = PQVariant(k_nbits=5, k_dsub=4, v_nbits=4, v_dsub=4, alloc="pca_k", alloc_max_bits=8, iters=2, samples=256)
    cbk = train_variant(calib, vk)
    assert cbk.value_alloc is None and cbk.value_centroids[0].shape == (2, 4, 16, 4)
    assert cbk.info["centroid_values"] == sum(int(((2 ** a[..., 0]) * a[..., 1] * (a[..., 0] >= 0)).sum())
                                              for a in cbk.key_alloc) + 2 * 2 * 16 * 16


def test_adaptive_partition():
    from million.pq_variants import adaptive_partition

    var = torch.tensor([64.0, 8, 4, 2] + [0.01] * 12)
    p = adaptive_partition(var, 32, max_bits=10)
    assert sum(d for _, d in p) == 16 and sum(b for b, _ in p) == 32
    assert p[0][1] == 1 and p[0][0] >= p[-1][0]  # the dominant component alone, with the most bits


def test_fisher_variants_need_fisher(model, calib):
    from million.eval.calibdata import collect_fisher

    v = PQVariant(k_nbits=4, k_dsub=4, v_nbits=4, v_dsub=4, transform="fisher", weighting="fisher", iters=2, samples=256)
    with pytest.raises(ValueError, match="Fisher"):
        train_variant(calib, v)
    with pytest.raises(ValueError, match="Fisher"):
        KVQuant(2, samples=256, iters=2).fit(model, lambda: calib)
    calib.fisher = collect_fisher(model, CharTokenizer(), TEXT, tokens=1024, window=256)
    try:
        cb = train_variant(calib, v)
        assert cb.info["pred_dnll_k"] > 0 and cb.info["pred_dnll_v"] > 0
        kq = KVQuant(2, samples=256, iters=2).fit(model, lambda: calib)  # default: Fisher-weighted levels
        assert kq.weighting == "fisher" and kq.needs_fisher
        k = calib.keys_pre[0][None, :, :64]
        assert rel_err(kq.qdq_key(0, k, 0), k) < 0.5
    finally:
        del calib.fisher


def test_layer_mix_routes_layers_and_averages_bits():
    """LayerMix: each layer through its own method (None = fp16 rounding), bits = layer average of the
    methods' totals; bad layers, shapes, protocols and pre-RoPE methods are named."""
    from million.eval.methods import LayerMix

    k4, k2 = KIVI(4), KIVI(2)
    mix = LayerMix([k4, None, k2], "mix")
    x = torch.randn(1, 2, 40, 64, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mix.qdq_key(0, x, 0), k4.qdq_key(0, x, 0))
    torch.testing.assert_close(mix.qdq_value(2, x, 0), k2.qdq_value(2, x, 0))
    torch.testing.assert_close(mix.qdq_key(1, x, 0), x.half().float())
    assert not torch.equal(mix.qdq_key(2, x, 0), mix.qdq_key(0, x, 0))
    shape = Shape(3, 2, 64)
    b = mix.bits_breakdown(shape, 4096)
    want = [k4.bits_breakdown(shape, 4096)["total"], 16.0, k2.bits_breakdown(shape, 4096)["total"]]
    assert b["layers"] == pytest.approx(want) and b["total"] == pytest.approx(sum(want) / 3)
    assert mix.bits == pytest.approx((4 + 16 + 2) / 3) and mix.describe()["layers"] == ["kivi-4", "fp16", "kivi-2"]
    with pytest.raises(ValueError, match="layer 3 is outside"):
        mix.qdq_key(3, x, 0)
    with pytest.raises(ValueError, match="the mix has 3 layers, the model 4"):
        mix.bits_breakdown(Shape(4, 2, 64), 4096)
    with pytest.raises(ValueError, match="all-quantized protocol only"):
        mix.bits_breakdown(shape, 4096, "deployed")
    with pytest.raises(ValueError, match="post-RoPE methods only"):
        LayerMix([KVQuant(4)], "bad")
    with pytest.raises(ValueError, match="one entry per layer"):
        LayerMix([], "empty")
