"""million.decode: the static decode loop (what a CUDA graph captures) run eagerly on the CPU must give what
``model.generate`` gives with the same cache, for MillionCache (plain and transformed codebooks, sinks, left
padding, window commits inside the loop, prompts shorter than the window) and for transformers' StaticCache."""

import pytest
import torch
from transformers import DynamicCache, StaticCache

import million
from million import MillionCache
from million.compat import cache_arg
from million.decode import Decoder, generate

from test_cache import left_padded, tiny_codebooks, tiny_model
from test_transforms import _with_transforms


def _reference(model, cache, ids, am, n):
    return model.generate(ids, attention_mask=am, **cache_arg(model, cache, generate=True), max_new_tokens=n,
                          do_sample=False, pad_token_id=0)


@pytest.mark.parametrize("transformed,sinks,pads,length", [
    (False, 0, (0, 0), 23), (False, 2, (0, 5), 23), (True, 1, (0, 7), 23), (True, 1, (3, 0), 5),
    (False, 2, (0, 0), 23), (True, 1, (0, 0), 23),
], ids=["plain", "sinks2-pad5", "transformed-pad7", "short-prompt", "sinks2-folded", "transformed-folded"])
def test_static_decode_equals_generate(transformed, sinks, pads, length, monkeypatch):
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4, granularity="layer_head", sinks=sinks)
    if transformed:
        cb = _with_transforms(cb, model)
    ids, am = left_padded(length=length, pad=pads)
    n = 30  # crosses several window commits (R = 4)
    want = _reference(model, MillionCache(cb, model.config), ids, am, n)
    cache = MillionCache(cb, model.config)
    seen = []
    begin = type(cache.layers[0]).begin_static

    def spy(layer):
        begin(layer)
        seen.append(layer._fold)

    monkeypatch.setattr(type(cache.layers[0]), "begin_static", spy)
    got = generate(model, cache, ids, attention_mask=am, max_new_tokens=n, graph=False,
                   eos_token_id=model.generation_config.eos_token_id, pad_token_id=0)
    assert seen and cache.layers[0].pq_len > 0  # the loop did run in static mode
    assert seen[0] == (sinks > 0 and pads == (0, 0))  # sinks handed to the kernel with the window
    assert not cache.layers[0].static  # and the cache is back in its ordinary mode
    assert torch.equal(got, want)


@pytest.mark.parametrize("transformed", [False, True], ids=["plain", "transformed"])
@pytest.mark.parametrize("pads", [(0, 4), (0, 0)], ids=["padded", "folded-sinks"])
def test_static_steps_match_eager_logits_and_state(pads, transformed):
    model = tiny_model(kv_heads=1)
    cb = tiny_codebooks(model, residual=4, granularity="layer", sinks=1)
    if transformed:
        cb = _with_transforms(cb, model)
    ids, am = left_padded(length=17, pad=pads)
    eager, static = MillionCache(cb, model.config), MillionCache(cb, model.config)
    dec = Decoder(model, static, graph=False)
    pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)  # the decoder's positions (as model.generate's)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, position_ids=pos, **cache_arg(model, eager), use_cache=True)
    dec.prefill(ids, am, max_new_tokens=40)
    g = torch.Generator().manual_seed(5)
    for _ in range(21):
        tok = torch.randint(0, 96, (2, 1), generator=g)
        am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
        with torch.no_grad():
            want = model(input_ids=tok, attention_mask=am, position_ids=dec.pos.clone(),
                         **cache_arg(model, eager), use_cache=True).logits[:, -1].float()
        got = dec.step(tok)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(eager.layers, static.layers):
        assert (a.pq_len, a.res_len) == (b.pq_len, b.res_len)
        if pads != (0, 0):  # same operations: the same bits
            assert torch.equal(a.k_codes[:, :, : a.pq_len], b.k_codes[:, :, : b.pq_len])
            assert torch.equal(a.k_window[:, :, : a.res_len], b.k_window[:, :, : b.res_len])
        else:  # folded sinks: one kernel call instead of a separate sink merge, so the last bits may differ
            assert (a.k_codes[:, :, : a.pq_len] == b.k_codes[:, :, : b.pq_len]).float().mean() > 0.99
            torch.testing.assert_close(a.k_window[:, :, : a.res_len], b.k_window[:, :, : b.res_len], rtol=1e-5, atol=1e-5)
        assert torch.equal(a.res_lens, b.res_lens) and torch.equal(a.pq_lens, b.pq_lens)
        assert int(b._wpos) == b.res_len - 1  # the window row of the last step
        assert b._fold == (pads == (0, 0))
    # the layers' step counters are rows of one tensor each, advanced by the first layer only
    l0, l1 = static.layers[:2]
    assert l1.res_lens._base is l0.res_lens._base and l1._wpos._base is l0._wpos._base
    assert len(l0._bump) == 2 + l0._fold and l1._bump == []


@pytest.mark.parametrize("transformed", [False, True], ids=["plain", "transformed"])
@torch.no_grad()
def test_a_chunk_between_static_steps_keeps_the_device_lengths(transformed):
    # static steps, then a 3-token chunk on the same cache, then static steps again, against an eager cache: the
    # chunk moves the window on the host, and the device's step row and sinks-and-window lengths must follow it
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4, sinks=1)
    if transformed:
        cb = _with_transforms(cb, model)
    eager, static = MillionCache(cb, model.config), MillionCache(cb, model.config)
    ids = torch.randint(0, 96, (2, 17), generator=torch.Generator().manual_seed(2))
    for c in (eager, static):
        model(input_ids=ids, **cache_arg(model, c), use_cache=True)
    static.begin_static()
    assert static.layers[0]._fold
    g, nxt = torch.Generator().manual_seed(7), 17
    for n, kind in [(1, "s")] * 3 + [(3, "chunk")] + [(1, "s")] * 6:
        tok = torch.randint(0, 96, (2, n), generator=g)
        pos = torch.arange(nxt, nxt + n)[None].expand(2, n)
        nxt += n
        want = model(input_ids=tok, position_ids=pos, **cache_arg(model, eager), use_cache=True).logits[:, -1]
        if kind == "s":
            static.before_static_step()
        got = model(input_ids=tok, position_ids=pos, **cache_arg(model, static), use_cache=True).logits[:, -1]
        if kind == "s":
            static.after_static_step()
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for l in static.layers:
        assert torch.equal(l._res_lens_s, l.res_lens + 1) and int(l._wpos) == l.res_len - 1


@pytest.mark.parametrize("sinks", [0, 1], ids=["window", "folded-sinks"])
def test_a_static_step_advances_its_counters_once_for_all_layers(sinks):
    # the window row and lengths of every layer are advanced by one in-place add each per step, whatever the depth
    from torch.profiler import ProfilerActivity, profile

    adds = []
    for layers in (2, 5):
        model = tiny_model(kv_heads=2, layers=layers)
        cache = MillionCache(tiny_codebooks(model, residual=4, sinks=sinks), model.config)
        dec = Decoder(model, cache, graph=False)
        ids = torch.randint(0, 96, (1, 13), generator=torch.Generator().manual_seed(3))
        dec.prefill(ids, torch.ones_like(ids), max_new_tokens=8)
        tok = torch.tensor([5])
        dec.step(tok)  # the first static step (begin_static)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            dec.step(tok)
        adds.append(sum(1 for e in prof.events() if e.name == "aten::add_" and e.cpu_parent is None))
        assert [int(l._wpos) for l in cache.layers] == [cache.layers[0].res_len - 1] * layers
        assert len({int(l.res_lens[0]) for l in cache.layers}) == 1
    assert adds[0] == adds[1] == 4 + sinks, adds  # the row, the lengths (and sinks-and-window lengths); pos, col


def test_static_cache_baseline_equals_dynamic_cache():
    model = tiny_model(kv_heads=2)
    model.config._attn_implementation = "sdpa"
    ids, am = left_padded(length=9, pad=(0, 3))
    want = _reference(model, DynamicCache(config=model.config), ids, am, 12)
    eos = dict(eos_token_id=model.generation_config.eos_token_id, pad_token_id=0)
    got = generate(model, StaticCache(config=model.config, max_cache_len=32), ids, attention_mask=am, max_new_tokens=12,
                   graph=False, **eos)
    assert torch.equal(got, want)
    got1 = generate(model, StaticCache(config=model.config, max_cache_len=32), ids[:1], max_new_tokens=12, graph=False, **eos)
    assert torch.equal(got1, _reference(model, DynamicCache(config=model.config), ids[:1], None, 12))


def test_eos_stops_and_pads():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4)
    ids, am = left_padded(length=12, pad=(0, 2))
    free = generate(model, MillionCache(cb, model.config), ids, attention_mask=am, max_new_tokens=10, graph=False)
    eos = int(free[0, 12 + 2])  # the first sequence's third new token
    out = generate(model, MillionCache(cb, model.config), ids, attention_mask=am, max_new_tokens=10, eos_token_id=eos,
                   pad_token_id=95, graph=False)
    row = out[0, 12:].tolist()
    k = row.index(eos)
    assert k <= 2 and all(t == 95 for t in row[k + 1:])
    assert out.shape[1] <= 22


def test_sampling_is_seeded_and_valid():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4)
    ids, _ = left_padded(length=12)
    kw = dict(max_new_tokens=8, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, graph=False)
    a = generate(model, MillionCache(cb, model.config), ids, generator=torch.Generator().manual_seed(0), **kw)
    b = generate(model, MillionCache(cb, model.config), ids, generator=torch.Generator().manual_seed(0), **kw)
    assert torch.equal(a, b) and a.shape == (2, 20) and int(a.max()) < 96


def test_bad_input_is_refused():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4)
    ids, _ = left_padded(length=12)
    with pytest.raises(ValueError, match="MillionCache or transformers' StaticCache"):
        Decoder(model, DynamicCache(config=model.config))
    with pytest.raises(ValueError, match="needs the model on a CUDA device"):
        Decoder(model, MillionCache(cb, model.config), graph=True)
    with pytest.raises(ValueError, match="max_new_tokens=0"):
        generate(model, MillionCache(cb, model.config), ids, max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature=0"):
        generate(model, MillionCache(cb, model.config), ids, do_sample=True, temperature=0)
    with pytest.raises(ValueError, match="top_p=1.5"):
        generate(model, MillionCache(cb, model.config), ids, do_sample=True, top_p=1.5)
    with pytest.raises(ValueError, match="attention_mask shape"):
        generate(model, MillionCache(cb, model.config), ids, attention_mask=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="max_cache_len=16"):
        model.config._attn_implementation = "sdpa"
        generate(model, StaticCache(config=model.config, max_cache_len=16), ids, max_new_tokens=8)
    dec = Decoder(model, StaticCache(config=model.config, max_cache_len=64))
    with pytest.raises(RuntimeError, match="call prefill"):
        dec.step(torch.zeros(2, dtype=torch.long))
    dec.prefill(ids)
    with pytest.raises(ValueError, match="got 3 tokens for a batch of 2"):
        dec.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(RuntimeError, match="already prefilled"):
        dec.prefill(ids)


def test_static_mode_needs_committed_codes_and_a_window_slot():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4)
    cache = MillionCache(cb, model.config)
    ids, _ = left_padded(length=6)
    with torch.no_grad():
        model(input_ids=ids, **cache_arg(model, cache), use_cache=True)
    assert not cache.static_ready()  # 6 tokens: all still in the window (R = 4 keeps 4..7)
    with pytest.raises(RuntimeError, match="pq_len > 0"):
        cache.begin_static()
    with torch.no_grad():
        model(input_ids=torch.randint(0, 96, (2, 4)), **cache_arg(model, cache), use_cache=True)
    assert cache.static_ready()
    cache.begin_static()
    layer = cache.layers[0]
    while layer.res_len < 8:
        cache.before_static_step()
        with torch.no_grad():
            model(input_ids=torch.zeros(2, 1, dtype=torch.long), position_ids=torch.full((2, 1), 10 + layer.res_len),
                  **cache_arg(model, cache), use_cache=True)
        cache.after_static_step()
    with pytest.raises(RuntimeError, match="before_static_step"):
        with torch.no_grad():
            model(input_ids=torch.zeros(2, 1, dtype=torch.long), position_ids=torch.full((2, 1), 30),
                  **cache_arg(model, cache), use_cache=True)


def test_generate_is_exported():
    assert million.generate is generate


def test_static_step_ignores_a_stale_mask():
    """While a CUDA graph is captured, transformers may build the causal mask (without the padding) instead of
    skipping it: a static step must take the padding from the cache's ``starts``, never from that mask."""
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4, sinks=1)
    ids, am = left_padded(length=19, pad=(0, 6))
    outs = []
    for mask in (None, "ones"):
        dec = Decoder(model, MillionCache(cb, model.config), graph=False)
        dec.prefill(ids, am, max_new_tokens=8)
        for _ in range(3):
            dec.step(torch.tensor([5, 7]))
        assert dec.cache.layers[0].static
        if mask == "ones":  # what a capture-time mask looks like: every key valid
            dec.mask = torch.ones(2, 19 + 4, dtype=torch.long)
            dec.col = torch.full((1,), 19 + 3, dtype=torch.long)
        outs.append(dec.step(torch.tensor([9, 11])))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_caches_of_one_codebooks_share_their_centroid_copies():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4, granularity="layer_head")
    ids, _ = left_padded(length=10)
    caches = [MillionCache(cb, model.config) for _ in range(2)]
    for c in caches:
        with torch.no_grad():
            model(input_ids=ids, **cache_arg(model, c), use_cache=True)
    for a, b in zip(caches[0].layers, caches[1].layers):
        assert a.k_centroids is b.k_centroids and a.v_centroids is b.v_centroids


def test_encode_tables_stay_cached_for_every_live_codebook_tensor():
    from million.ops import cuda_encode as ce

    g = torch.Generator().manual_seed(0)
    cents = [torch.randn(1, 2, 256, 2, generator=g) for _ in range(40)]  # more than a model's 2 x layers small LRU held
    for c in cents:
        ce.tables(c, "brute")
    assert all(ce.has_tables(c, "brute") for c in cents)
    t0 = ce.tables(cents[0], "brute")
    assert ce.tables(cents[0], "brute") is t0  # a hit, not a rebuild
    cents[1].add_(1.0)  # modified in place: stale
    assert not ce.has_tables(cents[1], "brute")
    del cents[2:], c
    ce.tables(torch.randn(1, 2, 256, 2, generator=g), "brute")  # an insert drops the dead tensors' entries
    assert len(ce._TABLES) == 3  # cents[0], cents[1] (stale but alive) and the new one


def test_cache_takes_ordinary_steps_after_generate():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4, sinks=1)
    ids, _ = left_padded(length=14)
    cache = MillionCache(cb, model.config)
    out = generate(model, cache, ids, max_new_tokens=9, graph=False)
    layer = cache.layers[0]
    seen = layer.get_seq_length()
    assert seen == out.shape[1] - 1  # the last new token was sampled, not fed
    with torch.no_grad():  # an ordinary eager step, then a multi-token chunk
        a = model(input_ids=out[:, -1:], position_ids=torch.full((2, 1), seen), **cache_arg(model, cache), use_cache=True)
        b = model(input_ids=out[:, :3], position_ids=torch.arange(seen + 1, seen + 4).expand(2, 3),
                  **cache_arg(model, cache), use_cache=True)
    assert torch.isfinite(a.logits).all() and torch.isfinite(b.logits).all()
    assert layer.get_seq_length() == seen + 4 and not layer.static


def test_a_cache_holding_an_earlier_sequence_is_refused_until_reset():
    """A second generate on the same cache would append the prompt to the first sequence's tokens with positions from
    0 (a silently wrong continuation): refused with what to do; after cache.reset() it equals a fresh cache."""
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4)
    ids, am = left_padded(length=12)
    cache = MillionCache(cb, model.config)
    first = generate(model, cache, ids, attention_mask=am, max_new_tokens=6)
    with pytest.raises(ValueError, match=r"already holds 1[0-9] tokens .*cache.reset\(\)"):
        generate(model, cache, ids, attention_mask=am, max_new_tokens=6)
    cache.reset()
    assert torch.equal(generate(model, cache, ids, attention_mask=am, max_new_tokens=6), first)
    model.config._attn_implementation = "sdpa"
    static = StaticCache(config=model.config, max_cache_len=64)
    generate(model, static, ids, attention_mask=am, max_new_tokens=4)
    with pytest.raises(ValueError, match="already holds"):
        generate(model, static, ids, attention_mask=am, max_new_tokens=4)
    static.reset()
    generate(model, static, ids, attention_mask=am, max_new_tokens=4)


def test_a_reset_cache_takes_another_batch_size():
    model = tiny_model(kv_heads=2)
    cb = tiny_codebooks(model, residual=4)
    ids, am = left_padded(length=12)
    cache = MillionCache(cb, model.config)
    generate(model, cache, ids, attention_mask=am, max_new_tokens=6)
    cache.reset()
    one = ids[:1]
    got = generate(model, cache, one, max_new_tokens=6)
    assert torch.equal(got, generate(model, MillionCache(cb, model.config), one, max_new_tokens=6))
    with pytest.raises(ValueError, match="holds a batch of 1 sequences; got a step of 2"):
        with torch.no_grad():
            model(input_ids=ids, attention_mask=am, **cache_arg(model, cache), use_cache=True)
