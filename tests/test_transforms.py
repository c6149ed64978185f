"""Transformed PQ codes in MillionCache: the codes quantize ``k @ A`` / ``v @ B`` and attention folds
``A^-T`` into the query and ``B^-1`` into the output; checked against SDPA over the dequantized cache,
and against the evaluation-side PQ round trip of the same trained variant."""

import pytest
import torch
from test_cache import _step_logits, assert_step_matches_dequantized, left_padded, tiny_codebooks, tiny_model
from transformers import DynamicCache

from million import MillionCache
from million.codebook import Codebooks
from million.compat import cache_arg


def _random_transforms(L, H, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(D) + 0.3 * torch.randn(L, H, D, D, generator=g)
    B = torch.eye(D) + 0.3 * torch.randn(L, H, D, D, generator=g)
    return {"key": A, "key_inverse": torch.linalg.inv(A), "value": B, "value_inverse": torch.linalg.inv(B)}


def _with_transforms(cb, model, seed=0):
    c = model.config
    return Codebooks(cb.config, cb.key_centroids, cb.value_centroids, cb.model, cb.calibration,
                     _random_transforms(c.num_hidden_layers, c.num_key_value_heads, cb.config.head_dim, seed))


@pytest.mark.parametrize("granularity,sinks,pads", [("layer", 0, (0, 7)), ("layer_head", 3, (0, 2)), ("merged", 2, (9, 0))])
def test_transformed_decode_equals_dequantize_then_attention(granularity, sinks, pads):
    model = tiny_model()
    cb = _with_transforms(tiny_codebooks(model, residual=4, granularity=granularity, sinks=sinks), model)
    ids, am = left_padded(length=23, pad=pads)
    cache = MillionCache(cb, model.config)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, **cache_arg(model, cache), use_cache=True)
    tok = torch.randint(0, 96, (2, 1), generator=torch.Generator().manual_seed(5))
    for _ in range(6):
        am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
        _step_logits(model, cache, tok, am)
    assert cache.layers[0].pq_len > 0 and cache.layers[0].res_len >= 1
    assert_step_matches_dequantized(model, cache, tok, am)


def test_transforms_change_the_codes_and_round_trip_through_disk(tmp_path):
    model = tiny_model()
    plain = tiny_codebooks(model, residual=4)
    cb = _with_transforms(plain, model)
    cb.save(tmp_path / "cb")
    back = Codebooks.load(tmp_path / "cb")
    for n, t in cb.transforms.items():
        assert torch.equal(back.transforms[n], t)
    ids = torch.randint(0, 96, (1, 20), generator=torch.Generator().manual_seed(3))
    codes = []
    for c in (plain, back):
        cache = MillionCache(c, model.config)
        with torch.no_grad():
            model(input_ids=ids, **cache_arg(model, cache), use_cache=True)
        codes.append(cache.layers[0].k_codes[:, :, : cache.layers[0].pq_len].clone())
    assert codes[0].shape == codes[1].shape and not torch.equal(codes[0], codes[1])
    bad = dict(cb.transforms)
    bad["key"] = bad["key"][:, :, :4]
    with pytest.raises(ValueError, match="transforms must all be"):
        Codebooks(cb.config, cb.key_centroids, cb.value_centroids, cb.model, cb.calibration, bad)
    with pytest.raises(ValueError, match="exactly the keys"):
        Codebooks(cb.config, cb.key_centroids, cb.value_centroids, cb.model, cb.calibration, {"key": cb.transforms["key"]})


@pytest.mark.parametrize("transform,alloc", [("metric", "uniform"), ("metric", "balanced"), ("none", "balanced_k")])
def test_variant_codebooks_serve_in_the_cache_as_evaluated(transform, alloc):
    """A transformed variant trained by million.pq_variants (the metric transform, the balanced PCA rotation or
    both), converted with to_codebooks: the cache's stored keys/values (dequantized) equal the evaluation's
    quantize-dequantize of the same K/V."""
    from eval_helpers import TEXT, CharTokenizer
    from eval_helpers import tiny_model as eval_tiny_model

    import million
    from million.eval.calibdata import collect
    from million.pq_variants import PQVariant, to_codebooks, train_variant

    model = eval_tiny_model()
    million.register()
    calib = collect(model, CharTokenizer(), TEXT, tokens=1024, window=256)
    var = PQVariant(k_nbits=6, k_dsub=4, v_nbits=6, v_dsub=4, transform=transform, alloc=alloc, sinks=1, iters=3, samples=512)
    vcb = train_variant(calib, var)
    cb = to_codebooks(vcb, model.config, residual_length=8)
    assert cb.config.sink_length == 1 and cb.transforms is not None and cb.calibration["window"] == 256
    model.config._attn_implementation = "million"
    cache = MillionCache(cb, model.config)
    keys = {}
    hook = model.model.layers[0].self_attn.k_proj.register_forward_hook(lambda m, i, o: keys.setdefault("k", o))
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(4))
    try:
        with torch.no_grad():
            model(input_ids=ids, **cache_arg(model, cache), use_cache=True)
    finally:
        hook.remove()
    lay = cache.layers[0]
    n = lay.pq_len
    assert n >= 8
    k_hat, v_hat = lay.dequantize()
    # the same K/V, quantized the evaluation's way: recover them from a plain cache
    ref = DynamicCache(config=model.config)
    model.config._attn_implementation = "sdpa"
    try:
        with torch.no_grad():
            model(input_ids=ids, **cache_arg(model, ref), use_cache=True)
    finally:
        model.config._attn_implementation = "million"
    k, v = ref.layers[0].keys, ref.layers[0].values
    torch.testing.assert_close(k_hat[:, :, :n], vcb.qdq_keys(0, k[:, :, :n], 0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(v_hat[:, :, :n], vcb.qdq_values(0, v[:, :, :n], 0), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="evaluation-only"):
        to_codebooks(train_variant(calib, PQVariant(k_nbits=6, k_dsub=4, v_nbits=6, v_dsub=4, alloc="pca", iters=2, samples=512)),
                     model.config)


def test_balanced_rotation_is_orthonormal_and_evens_out_the_subspaces():
    """balanced_rotation: orthonormal columns (distances kept) and, on an anisotropic input, subspaces whose
    log-variance sums are far more even than with the principal axes in order (the spread of the greedy
    allocation, checked against the sorted-PCA split)."""
    from million.pq_variants import balanced_rotation

    g = torch.Generator().manual_seed(0)
    scale = torch.logspace(1.5, -1.5, 16)
    x = torch.randn(2, 4000, 16, generator=g) * scale
    x = x @ torch.linalg.qr(torch.randn(16, 16, generator=g))[0]  # correlated coordinates
    R = balanced_rotation(x, 4)
    assert R.shape == (2, 16, 16)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, torch.eye(16).expand(2, 16, 16), rtol=0, atol=1e-5)
    xr = torch.einsum("hnd,hde->hne", x, R)
    cov = torch.einsum("hnd,hne->hde", xr, xr) / x.shape[1]
    off = cov - torch.diag_embed(torch.diagonal(cov, dim1=-2, dim2=-1))
    assert off.abs().max() < 1e-3 * cov.abs().max()  # decorrelated
    logs = torch.diagonal(cov, dim1=-2, dim2=-1).log().view(2, 4, 4).sum(-1)
    sorted_logs = (scale**2).log().view(4, 4).sum(-1)  # principal axes in order: 4 consecutive per subspace
    assert (logs.amax(-1) - logs.amin(-1)).max() < 0.25 * (sorted_logs.max() - sorted_logs.min())
