"""Calibration on a tiny random Llama: the recorded K/V are what a DynamicCache stores (post-RoPE) or
what k_proj emits (pre-RoPE); train_codebooks lays centroids out per granularity; calibrate end to end."""

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from million import PQConfig
from million.calibrate import KVRecorder, calibrate, collect_kv, resolve_recipe, tokenize_windows, train_codebooks
from million.codebook import Codebooks
from million.compat import cache_arg

L, HQ, HKV, D, VOCAB = 2, 4, 2, 16, 128


def tiny_config(**over):
    kw = dict(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=L, num_attention_heads=HQ,
        num_key_value_heads=HKV, head_dim=D, max_position_embeddings=1024,
    )
    kw.update(over)
    return LlamaConfig(**kw)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_config()).eval()


def windows_of(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, s, generator=g) for s in shapes]


@torch.no_grad()
def dynamic_cache_kv(model, ids):
    """(keys, values) per layer, each [B, H_kv, T, D], as a transformers DynamicCache stores them."""
    cache = DynamicCache(config=model.config)
    model(input_ids=ids, **cache_arg(model, cache), use_cache=True)
    return [(lay.keys.clone(), lay.values.clone()) for lay in cache.layers]


def flat(x):
    # [B, H, T, D] -> [H, B*T, D], the recorder's layout
    return x.float().transpose(0, 1).flatten(1, 2)


class FakeTokenizer:
    """Whitespace words -> ids below VOCAB; the only call calibrate makes."""

    def __call__(self, text, return_tensors=None, add_special_tokens=True):
        assert return_tensors == "pt" and add_special_tokens is False
        ids = [sum(w.encode()) * 31 % VOCAB for w in text.split()]
        return SimpleNamespace(input_ids=torch.tensor([ids], dtype=torch.long))


def some_text(n_words, seed=0):
    g = torch.Generator().manual_seed(seed)
    return " ".join(f"w{int(i)}" for i in torch.randint(0, 5000, (n_words,), generator=g))


# ---------------------------------------------------------------- recording


def test_recorded_post_rope_kv_equal_dynamic_cache(model):
    wins = windows_of((1, 24), (2, 10), (1, 1))
    rec = collect_kv(model, wins, progress=False)
    ref = [dynamic_cache_kv(model, w) for w in wins]
    assert len(rec.keys) == len(rec.values) == L
    for li in range(L):
        want_k = torch.cat([flat(r[li][0]) for r in ref], 1)
        want_v = torch.cat([flat(r[li][1]) for r in ref], 1)
        assert rec.keys[li].shape == (HKV, 24 + 20 + 1, D) and rec.keys[li].dtype == torch.float32
        assert torch.equal(rec.keys[li], want_k)
        assert torch.equal(rec.values[li], want_v)


def test_pre_rope_keys_equal_k_proj_output(model):
    wins = windows_of((1, 17), (2, 6), seed=1)
    captured = {li: [] for li in range(L)}
    hooks = [
        layer.self_attn.k_proj.register_forward_hook(lambda m, i, o, li=li: captured[li].append(o.detach().clone()))
        for li, layer in enumerate(model.model.layers)
    ]
    try:
        with torch.no_grad():
            for w in wins:
                model(input_ids=w)
    finally:
        for h in hooks:
            h.remove()
    rec = collect_kv(model, wins, pre_rope=True, progress=False)
    post = collect_kv(model, wins, pre_rope=False, progress=False)
    for li in range(L):
        want = torch.cat([flat(o.view(o.shape[0], o.shape[1], HKV, D).transpose(1, 2)) for o in captured[li]], 1)
        assert torch.equal(rec.keys[li], want)
        assert torch.equal(rec.values[li], post.values[li])  # values are the same either way
        # position 0 is not rotated; later positions are
        assert torch.allclose(rec.keys[li][:, 0], post.keys[li][:, 0], atol=1e-6)
        assert not torch.allclose(rec.keys[li][:, 1:17], post.keys[li][:, 1:17], atol=1e-3)
    # the hooks are gone afterwards
    assert all(not layer.self_attn.k_proj._forward_hooks for layer in model.model.layers)


def test_pre_rope_keys_rotated_give_post_rope_keys(model):
    (w,) = windows_of((1, 33), seed=2)
    pre = collect_kv(model, [w], pre_rope=True, progress=False).keys
    post = collect_kv(model, [w], progress=False).keys
    pos = torch.arange(33)[None]
    for li in range(L):
        k = pre[li].unsqueeze(0)  # [1, H, T, D]
        cos, sin = model.model.rotary_emb(k, pos)
        _, k_rot = apply_rotary_pos_emb(k, k, cos, sin)
        torch.testing.assert_close(k_rot[0], post[li], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pre_rope", [False, True], ids=["post_rope", "pre_rope"])
def test_subsampling_keeps_the_same_tokens_for_k_and_v(model, pre_rope):
    wins = windows_of((1, 40), (1, 40), seed=3)
    full = collect_kv(model, wins, pre_rope=pre_rope, progress=False)
    part = collect_kv(model, wins, keep=0.25, seed=5, pre_rope=pre_rope, progress=False)
    # find each kept token among all tokens by its last-layer value (depends on the context: unique), then
    # every layer's keys and values must be the full ones at those tokens
    fv, pv = full.values[L - 1], part.values[L - 1]
    assert pv.shape == (HKV, 20, D)  # round(40 * 0.25) per window
    idx = torch.tensor([int(((fv[0] - row) ** 2).sum(-1).argmin()) for row in pv[0]])
    assert len(set(idx.tolist())) == 20
    assert (idx[:10] < 40).all() and (idx[10:] >= 40).all()  # 10 from each window, in order
    assert (idx[:10].diff() > 0).all() and (idx[10:].diff() > 0).all()
    for li in range(L):
        assert torch.equal(full.values[li][:, idx], part.values[li])
        assert torch.equal(full.keys[li][:, idx], part.keys[li])
    again = collect_kv(model, wins, keep=0.25, seed=5, pre_rope=pre_rope, progress=False)
    assert torch.equal(again.keys[0], part.keys[0])


def test_recorder_cache_is_a_working_cache(model):
    """The recording cache must still behave like a DynamicCache (the forward's logits are unchanged)."""
    (w,) = windows_of((1, 12), seed=4)
    rec = KVRecorder(L)
    with torch.no_grad():
        a = model(input_ids=w, **cache_arg(model, rec.cache()), use_cache=True).logits
        b = model(input_ids=w, **cache_arg(model, DynamicCache(config=model.config)), use_cache=True).logits
    assert torch.equal(a, b)


def test_tokenize_windows():
    tok = FakeTokenizer()
    wins = tokenize_windows(tok, some_text(50), n_tokens=45, window=20)
    assert [tuple(w.shape) for w in wins] == [(1, 20), (1, 20), (1, 5)]
    with pytest.raises(ValueError, match="empty"):
        tokenize_windows(tok, "   ", 10, 5)


# ---------------------------------------------------------------- train_codebooks


def fake_kv(N=300, noise=0.01, seed=0):
    """Per layer [H, N, D] keys and values; subspace m of head h of layer l sits near a known base value."""
    g = torch.Generator().manual_seed(seed)

    def base(kv, li, h, m):
        return 1000.0 * kv + 100.0 * li + 10.0 * h + m

    def make(kv):
        out = []
        for li in range(L):
            x = torch.randn(HKV, N, D, generator=g) * noise
            for h in range(HKV):
                for m in range(4):  # 4 subspaces of 4 dims
                    x[h, :, 4 * m : 4 * m + 4] += base(kv, li, h, m)
            out.append(x)
        return out

    return make(0), make(1), base


@pytest.mark.parametrize("granularity,Lg,Hg", [("merged", 1, 1), ("layer", L, 1), ("layer_head", L, HKV)])
def test_train_codebooks_shapes_and_layout(granularity, Lg, Hg):
    keys, values, base = fake_kv()
    pq = PQConfig(head_dim=D, M=4, nbits=4, granularity=granularity)
    kc, vc, stats = train_codebooks(keys, values, pq, samples=200, iters=3, progress=False)
    assert kc.shape == vc.shape == (Lg, Hg, 4, 16, 4)
    assert kc.dtype == torch.float32 and kc.is_contiguous() and vc.is_contiguous()
    assert torch.isfinite(kc).all() and torch.isfinite(vc).all()
    assert stats["samples"] == 200
    for kv, cent in ((0, kc), (1, vc)):
        for lg in range(Lg):
            for hg in range(Hg):
                for m in range(4):
                    layers = range(L) if granularity == "merged" else [lg]
                    heads = range(HKV) if granularity != "layer_head" else [hg]
                    allowed = torch.tensor([base(kv, li, h, m) for li in layers for h in heads])
                    c = cent[lg, hg, m]  # [ksub, dsub]: every centroid sits near one allowed base
                    dist = (c[..., None] - allowed).abs().min(-1).values
                    assert dist.max() < 0.1, (kv, lg, hg, m, c)
    # relative MSE: tiny noise around far-away bases
    assert 0 <= stats["distortion_k"] < 1e-6 and 0 <= stats["distortion_v"] < 1e-6


def test_train_codebooks_layer_head_trains_on_each_head():
    keys, values, base = fake_kv(noise=0.0)
    pq = PQConfig(head_dim=D, M=4, nbits=4, granularity="layer_head")
    kc, vc, _ = train_codebooks(keys, values, pq, samples=100, iters=2, progress=False)
    for li in range(L):
        for h in range(HKV):
            for m in range(4):
                assert torch.equal(kc[li, h, m], torch.full((16, 4), base(0, li, h, m)))
                assert torch.equal(vc[li, h, m], torch.full((16, 4), base(1, li, h, m)))


def test_train_codebooks_distortion_is_relative_mse():
    g = torch.Generator().manual_seed(6)
    keys = [torch.randn(HKV, 400, D, generator=g) for _ in range(L)]
    values = [torch.randn(HKV, 400, D, generator=g) * 5 for _ in range(L)]
    pq = PQConfig(head_dim=D, M=8, nbits=5, granularity="layer")
    kc, vc, stats = train_codebooks(keys, values, pq, samples=10_000, iters=8, progress=False)
    assert stats["samples"] == HKV * 400
    # recompute on all vectors (samples >= N keeps every vector): sum ||x - c(x)||^2 / sum ||x||^2
    for name, xs, cent in (("k", keys, kc), ("v", values, vc)):
        num = den = 0.0
        for li in range(L):
            x = xs[li].reshape(-1, 8, 2).double()  # [n, M, dsub]
            c = cent[li, 0].double()  # [M, ksub, dsub]
            d = ((x[:, :, None, :] - c[None]) ** 2).sum(-1).min(-1).values  # [n, M]
            num += d.sum().item()
            den += (x**2).sum().item()
        assert stats[f"distortion_{name}"] == pytest.approx(num / den, rel=1e-3)
        assert stats[f"distortion_{name}"] < 0.2


def test_train_codebooks_errors():
    keys, values, _ = fake_kv(N=10)
    with pytest.raises(ValueError, match="head_dim"):
        train_codebooks(keys, values, PQConfig(head_dim=32, M=4, nbits=4), progress=False)
    with pytest.raises(ValueError, match="ksub=16"):
        train_codebooks(keys, values, PQConfig(head_dim=D, M=4, nbits=4, granularity="layer_head"), progress=False)


# ---------------------------------------------------------------- calibrate


@pytest.mark.parametrize(
    "granularity,bits,nbits", [("merged", 4, 8), ("layer", 3, 6), ("layer_head", 3, 6)], ids=["merged", "layer", "layer_head"]
)
def test_calibrate_end_to_end(model, granularity, bits, nbits):
    cb = calibrate(
        model, FakeTokenizer(), some_text(700), bits=bits, nbits=nbits, granularity=granularity, tokens=600, window=256,
        samples=512, iters=3, seed=1, text_name="fake", model_name="tiny", progress=False,
    )
    assert isinstance(cb, Codebooks)
    assert (cb.config.M, cb.config.dsub, cb.config.nbits, cb.config.granularity) == (8, 2, nbits, granularity)
    cb.check_model(model.config)
    cal = cb.calibration
    assert cal["tokens"] == 600 and cal["window"] == 256 and cal["iters"] == 3 and cal["text"] == "fake"
    assert cal["pre_rope"] is False
    for k in ("distortion_k", "distortion_v"):
        assert math.isfinite(cal[k]) and 0 <= cal[k] < 1
    assert cb.model["name"] == "tiny" and cb.model["head_dim"] == D and cb.model["num_key_value_heads"] == HKV
    Lg, Hg = {"merged": (1, 1), "layer": (L, 1), "layer_head": (L, HKV)}[granularity]
    assert cb.key_centroids.shape == (Lg, Hg, 8, 2**nbits, 2)
    assert torch.isfinite(cb.key_centroids).all() and torch.isfinite(cb.value_centroids).all()


def test_calibrate_with_explicit_config_and_pre_rope(model, tmp_path):
    pq = PQConfig(head_dim=D, M=4, nbits=5, granularity="layer", residual_length=9)
    cb = calibrate(model, FakeTokenizer(), some_text(300), config=pq, tokens=256, window=64, samples=256, iters=2, pre_rope=True, progress=False)
    assert cb.config == pq and cb.calibration["pre_rope"] is True
    assert cb.key_centroids.shape == (L, 1, 4, 32, 4)
    got = Codebooks.load(cb.save(tmp_path / "cb"))
    got.check_model(model.config)
    assert got.calibration == cb.calibration


def test_calibrate_errors(model):
    tok = FakeTokenizer()
    with pytest.raises(ValueError, match="head_dim"):
        calibrate(model, tok, some_text(50), config=PQConfig(head_dim=32, M=4, nbits=4), progress=False)
    with pytest.raises(ValueError, match="positive"):
        calibrate(model, tok, some_text(50), iters=0, progress=False)
    with pytest.raises(ValueError, match="bits"):
        calibrate(model, tok, some_text(50), bits=0.1, progress=False)
    with pytest.raises(ValueError, match="empty"):
        calibrate(model, tok, "", progress=False)
    with pytest.raises(ValueError, match="too few"):
        calibrate(model, tok, some_text(40), bits=4, nbits=8, tokens=40, progress=False)


# ---------------------------------------------------------------- recipes


def test_resolve_recipe_defaults_and_overrides():
    assert resolve_recipe() == {"granularity": "layer_head", "sinks": 1, "transform": "metric", "rotation": "balanced-keys",
                                "recipe": "recommended"}
    assert resolve_recipe("plain") == {"granularity": "layer", "sinks": 0, "transform": "none", "rotation": "none", "recipe": "plain"}
    r = resolve_recipe(pre_rope=True)  # post-RoPE options give way
    assert (r["transform"], r["rotation"], r["granularity"]) == ("none", "none", "layer_head")
    r = resolve_recipe(granularity="merged")  # the rotation needs one codebook per layer and head
    assert (r["transform"], r["rotation"]) == ("metric", "none")
    r = resolve_recipe("plain", rotation="balanced", granularity="layer_head", sinks=3)
    assert (r["granularity"], r["sinks"], r["transform"], r["rotation"]) == ("layer_head", 3, "none", "balanced")


@pytest.mark.parametrize("kw,needle", [
    (dict(recipe="best"), "recipe 'best' is not one of ['plain', 'recommended']"),
    (dict(granularity="head"), "granularity 'head' is not one of"),
    (dict(transform="opq"), "transform 'opq' is not one of"),
    (dict(rotation="pca"), "rotation 'pca' is not one of"),
    (dict(sinks=-2), "sinks must be a non-negative integer, got -2"),
    (dict(rotation="balanced", pre_rope=True), "rotation 'balanced' works on post-RoPE keys"),
    (dict(transform="metric", pre_rope=True), "transform 'metric' works on post-RoPE keys"),
    (dict(rotation="balanced", granularity="layer"), "needs granularity 'layer_head', got 'layer'"),
])
def test_resolve_recipe_errors(kw, needle):
    recipe = kw.pop("recipe", "recommended")
    with pytest.raises(ValueError) as ei:
        resolve_recipe(recipe, **kw)
    assert needle in str(ei.value)


def test_calibrate_recipes_from_python(model):
    """The library's default is the recommended recipe (transforms folded into the codebooks); 'plain' is raw k-means;
    a given config brings its own granularity and sinks, and a disagreeing explicit value is refused."""
    kw = dict(bits=3, nbits=6, tokens=600, window=256, samples=512, iters=2, progress=False)
    rec = calibrate(model, FakeTokenizer(), some_text(700), **kw)
    assert (rec.config.granularity, rec.config.sink_length, rec.calibration["recipe"]) == ("layer_head", 1, "recommended")
    assert rec.transforms is not None and rec.calibration["variant"]["alloc"] == "balanced_k"
    plain = calibrate(model, FakeTokenizer(), some_text(700), recipe="plain", **kw)
    assert (plain.config.granularity, plain.config.sink_length, plain.transforms) == ("layer", 0, None)
    pq = PQConfig(head_dim=D, M=8, nbits=6, granularity="layer")
    cb = calibrate(model, FakeTokenizer(), some_text(700), config=pq, **{k: v for k, v in kw.items() if k not in ("bits", "nbits")})
    assert cb.config == pq and cb.calibration["transform"] == "metric" and cb.calibration["rotation"] == "none"
    with pytest.raises(ValueError, match="granularity='layer_head' disagrees with config"):
        calibrate(model, FakeTokenizer(), some_text(700), config=pq, granularity="layer_head", progress=False)


def test_million_calibrate_stays_callable_after_the_module_is_imported(model):
    """`import million.calibrate` binds the package attribute to the module; `million.calibrate(...)` (the README's
    call) must still train codebooks rather than fail with "'module' object is not callable"."""
    import million
    import million.calibrate as mod

    assert million.calibrate is mod and callable(million.calibrate)
    cb = million.calibrate(model, FakeTokenizer(), some_text(700), bits=3, nbits=6, recipe="plain", tokens=600, window=256,
                           samples=512, iters=2, progress=False)
    assert isinstance(cb, Codebooks) and cb.config.granularity == "layer"


def test_calibrate_with_finetune_from_python(model):
    kw = dict(bits=3, nbits=6, tokens=600, window=256, samples=512, iters=2, progress=False)
    cb = calibrate(model, FakeTokenizer(), some_text(700), finetune_steps=2, finetune_window=128, **kw)
    ft = cb.calibration["finetune"]
    assert (ft["steps"], ft["windows"], ft["window"], ft["lr"]) == (2, 4, 128, 5e-3)
    assert cb.calibration["recipe"] == "recommended" and cb.transforms is not None
    plain = calibrate(model, FakeTokenizer(), some_text(700), recipe="plain", finetune_steps=1, finetune_window=128, **kw)
    assert plain.calibration["finetune"]["steps"] == 1 and plain.transforms is None  # tuning alone adds no transforms
    with pytest.raises(ValueError, match="finetune_lr > 0"):
        calibrate(model, FakeTokenizer(), some_text(700), finetune_steps=1, finetune_lr=0.0, **kw)
    with pytest.raises(ValueError, match="tunes post-RoPE codebooks"):
        calibrate(model, FakeTokenizer(), some_text(700), finetune_steps=1, pre_rope=True, **kw)
    with pytest.raises(ValueError, match="one full 256-token window"):  # the tuning window is at most the window
        calibrate(model, FakeTokenizer(), some_text(700), finetune_steps=1, finetune_window=512, **{**kw, "tokens": 200})
