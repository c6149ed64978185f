"""MillionCache with an Eviction: scores are the attention each token received, the kept tokens are the ones the rule
picks, attention over the packed codes is attention over exactly the kept tokens, static (CUDA-graph) steps equal
eager ones, and ``keep=1`` changes nothing."""

import math

import pytest
import torch
from transformers import DynamicCache

from million import Eviction, MillionCache
from million.attention import _pq_attention
from million.compat import cache_arg
from million.decode import Decoder, generate
from million.ops import naive

from test_cache import left_padded, tiny_codebooks, tiny_model
from test_transforms import _with_transforms


def _setup(kv_heads=2, sinks=0, transformed=False, residual=4):
    model = tiny_model(kv_heads=kv_heads)
    cb = tiny_codebooks(model, residual=residual, granularity="layer_head", sinks=sinks)
    if transformed:
        cb = _with_transforms(cb, model)
    return model, cb


def _feed(model, cache, ids, am, steps, seed=5):
    """Prefill ``ids`` then ``steps`` random tokens, eagerly (as ``model.generate`` steps)."""
    pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, position_ids=pos, **cache_arg(model, cache), use_cache=True)
        g = torch.Generator().manual_seed(seed)
        last = pos[:, -1:]
        for i in range(steps):
            tok = torch.randint(0, 96, (ids.shape[0], 1), generator=g)
            am = torch.cat([am, torch.ones_like(am[:, :1])], 1)
            model(input_ids=tok, attention_mask=am, position_ids=last + 1 + i, **cache_arg(model, cache), use_cache=True)
    return am


@pytest.mark.parametrize("sinks,transformed,pads", [(0, False, (0, 0)), (2, False, (0, 5)), (1, True, (0, 7))],
                         ids=["plain", "sinks-padded", "transformed-padded"])
def test_keep_one_generates_as_without_eviction(sinks, transformed, pads):
    model, cb = _setup(sinks=sinks, transformed=transformed)
    ids, am = left_padded(length=23, pad=pads)
    kw = dict(attention_mask=am, max_new_tokens=30, do_sample=False, pad_token_id=0)
    want = model.generate(ids, **cache_arg(model, MillionCache(cb, model.config), generate=True), **kw)
    cache = MillionCache(cb, model.config, evict=Eviction(keep=1.0))
    got = model.generate(ids, **cache_arg(model, cache, generate=True), **kw)
    assert cache.layers[0].pq_len > 0 and not cache.layers[0]._evicted
    assert torch.equal(got, want)


@pytest.mark.parametrize("pads", [(0, 0), (0, 5)], ids=["unpadded", "padded"])
@pytest.mark.parametrize("transformed", [False, True], ids=["plain", "transformed"])
def test_scores_are_the_attention_mass_of_every_valid_query(pads, transformed):
    # without eviction nothing is lost: every valid query spreads a mass of 1 per query head over the tokens it saw
    model, cb = _setup(kv_heads=2, transformed=transformed)
    ids, am = left_padded(length=23, pad=pads)
    cache = MillionCache(cb, model.config, evict=Eviction(keep=1.0))
    steps = 29
    _feed(model, cache, ids, am, steps)
    G = model.config.num_attention_heads // model.config.num_key_value_heads
    for layer in cache.layers:
        layer._score_queued()
        mass = layer.score[:, :, : layer.pq_len].sum(-1) + layer._wscore[:, :, : layer.res_len].sum(-1)
        queries = torch.tensor([23 - p + steps for p in pads], dtype=torch.float32)
        torch.testing.assert_close(mass, (G * queries)[:, None].expand_as(mass), rtol=1e-4, atol=1e-3)
        # no mass on padding slots
        for b, p in enumerate(pads):
            assert float(layer.score[b, :, :p].abs().sum()) == 0.0


@pytest.mark.parametrize("keep,recent,sinks,pads", [(0.5, 0.5, 0, (0, 0)), (0.3, 0.25, 2, (0, 5)), (0.7, 0.0, 1, (3, 0))])
def test_kept_counts_follow_the_budget(keep, recent, sinks, pads):
    model, cb = _setup(sinks=sinks)
    ids, am = left_padded(length=23, pad=pads)
    ev = Eviction(keep=keep, recent=recent)
    cache = MillionCache(cb, model.config, evict=ev)
    _feed(model, cache, ids, am, 37)
    for layer in cache.layers:
        assert layer._evicted and layer.pq_pos == 23 + 37 - layer.res_len
        for b, p in enumerate(pads):
            n = layer.pq_pos - (p + sinks)  # a sequence's sinks are its first valid positions
            assert layer.pq_len - layer._cs[b] == math.ceil(keep * n - 1e-9)
        assert layer.code_starts.tolist() == layer._cs
        assert int(layer.pq_lens[0]) == layer.pq_len
    full = MillionCache(cb, model.config)
    _feed(model, full, ids, am, 37)
    assert cache.kv_bytes() < full.kv_bytes()
    assert 0 < cache.bits_per_element() < full.bits_per_element() < 16


@pytest.mark.parametrize("friendliness,pool,side,share", [(False, 1, "both", 1.0), (True, 1, "both", 1.0), (False, 5, "both", 1.0),
                                                          (True, 5, "after", 1.0), (False, 5, "after", 0.5), (True, 3, "both", 0.3)])
def test_eviction_keeps_the_recent_share_and_the_top_scores(friendliness, pool, side, share):
    model, cb = _setup(kv_heads=2)
    ids, am = left_padded(batch=1, length=45, pad=(0,))
    cache = MillionCache(cb, model.config, evict=Eviction(keep=1.0))
    _feed(model, cache, ids, am, 0)
    layer = cache.layers[1]
    K = layer.pq_len
    assert K == 40
    g = torch.Generator().manual_seed(3)
    layer.score[:, :, :K] = torch.rand(1, 2, K, generator=g)  # distinct scores: they identify the slots
    layer.err[:, :, :K] = (torch.rand(1, 2, K, generator=g) * 0.2).half()
    before_codes = layer.k_codes[0, :, :K].clone()
    before_score, err = layer.score[0, :, :K].clone(), layer.err[0, :, :K].float()
    layer.evict = Eviction(keep=0.25, recent=0.3, friendliness=friendliness, pool=pool, pool_side=side, pool_share=share)
    layer._evict()
    bud = math.ceil(0.25 * 40)  # 10 tokens: 3 recent, 7 heavy
    assert layer.pq_len - layer._cs[0] == bud
    for h in range(2):
        adj = before_score[h, : K - 3]
        if friendliness:
            adj = adj / (1 + err[h, : K - 3] / err[h, : K - 3].mean())
        raw = adj.topk(7 - round(share * 7)).indices.tolist()  # with a pool share below 1, these come first, unpooled
        if pool > 1 and side == "both":  # a token's pooled score: the largest within pool // 2 on either side (old tokens only)
            adj = torch.stack([adj[max(0, i - pool // 2) : i + pool // 2 + 1].max() for i in range(adj.numel())])
        elif pool > 1:  # the largest of itself and the pool - 1 tokens before it
            adj = torch.stack([adj[max(0, i - pool + 1) : i + 1].max() for i in range(adj.numel())])
        adj[raw] = float("-inf")
        heavy = sorted(raw + adj.topk(7 - len(raw)).indices.tolist())
        want = heavy + [K - 3, K - 2, K - 1]
        kept = layer.score[0, h, layer._cs[0] : layer.pq_len]
        assert kept.tolist() == before_score[h, want].tolist()
        assert torch.equal(layer.k_codes[0, h, layer._cs[0] : layer.pq_len], before_codes[h, want])


def _dense_reference(layer, q, scale):
    """Attention of ``q [B, H_q, D]`` over exactly the kept tokens: valid sinks, the packed codes (decoded), the window."""
    B, Hq, D = q.shape
    H = layer.num_heads
    G = Hq // H
    outs = []
    for b in range(B):
        kd, vd = layer._decoded(layer._cs[b], layer.pq_len)
        s = layer._sfill[b]  # the sequence's own first positions, once committed
        ks = [layer.k_sink[b : b + 1, :, :s], kd[b : b + 1], layer.k_window[b : b + 1, :, : layer.res_len]]
        vs = [layer.v_sink[b : b + 1, :, :s], vd[b : b + 1], layer.v_window[b : b + 1, :, : layer.res_len]]
        k, v = torch.cat(ks, 2).float()[0], torch.cat(vs, 2).float()[0]  # [H, n, D]
        qb = q[b].float().view(H, G, D)
        p = (torch.einsum("hgd,hnd->hgn", qb, k) * scale).softmax(-1)
        outs.append(torch.einsum("hgn,hnd->hgd", p, v).reshape(Hq, D))
    return torch.stack(outs)


@pytest.mark.parametrize("sinks,transformed,pads", [(0, False, (0, 0)), (2, False, (0, 5)), (1, True, (0, 7)), (3, True, (4, 0))])
def test_attention_on_packed_codes_is_attention_on_the_kept_tokens(sinks, transformed, pads):
    model, cb = _setup(kv_heads=1, sinks=sinks, transformed=transformed)
    ids, am = left_padded(length=23, pad=pads)
    cache = MillionCache(cb, model.config, evict=Eviction(keep=0.4, recent=0.5))
    _feed(model, cache, ids, am, 21)
    q = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(9))
    for layer in cache.layers:
        assert layer._evicted
        st, _ = layer._state()
        st.observer = None
        got = _pq_attention(st, q, st.starts, 0.25)
        torch.testing.assert_close(got.float(), _dense_reference(layer, q, 0.25), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("pads,transformed", [((0, 4), False), ((0, 0), False), ((0, 0), True), ((0, 6), True),
                                               ((0, 14), False), ((14, 0), True)],
                         ids=["padded", "folded-sinks", "transformed-folded", "transformed-padded", "short-padded",
                              "transformed-short-padded"])
def test_static_steps_equal_eager_steps_with_eviction(pads, transformed, monkeypatch):
    # eager steps commit layer by layer; static steps score and evict all layers at once (MillionCache._commit_all)
    model, cb = _setup(kv_heads=1, sinks=1, transformed=transformed)
    ids, am = left_padded(length=17, pad=pads)
    ev = Eviction(keep=0.5)
    eager, static = MillionCache(cb, model.config, evict=ev), MillionCache(cb, model.config, evict=ev)
    batched = []
    commit_all = MillionCache._commit_all
    monkeypatch.setattr(MillionCache, "_commit_all", lambda self: (batched.append(1), commit_all(self)))
    dec = Decoder(model, static, graph=False)
    pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, position_ids=pos, **cache_arg(model, eager), use_cache=True)
    dec.prefill(ids, am, max_new_tokens=40)
    g = torch.Generator().manual_seed(5)
    for _ in range(25):
        tok = torch.randint(0, 96, (2, 1), generator=g)
        am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
        with torch.no_grad():
            want = model(input_ids=tok, attention_mask=am, position_ids=dec.pos.clone(),
                         **cache_arg(model, eager), use_cache=True).logits[:, -1].float()
        got = dec.step(tok)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert static.layers[0].static and static.layers[0]._evicted and len(batched) >= 3
    for a, b in zip(eager.layers, static.layers):
        assert (a.pq_len, a.pq_pos, a.res_len, a._cs) == (b.pq_len, b.pq_pos, b.res_len, b._cs)
        torch.testing.assert_close(a.score[:, :, : a.pq_len], b.score[:, :, : b.pq_len], rtol=1e-4, atol=1e-4)


def test_generate_runs_with_eviction():
    model, cb = _setup(sinks=1)
    ids, am = left_padded(length=23, pad=(0, 3))
    cache = MillionCache(cb, model.config, evict=Eviction(keep=0.5))
    out = generate(model, cache, ids, attention_mask=am, max_new_tokens=30, graph=False, pad_token_id=0)
    assert out.shape == (2, 53) and cache.layers[0]._evicted


def test_multi_token_step_after_eviction_attends_the_kept_tokens():
    # a chunk after eviction sees the sinks, the kept codes and the window (mask sizes with an offset): the same logits
    # as a DynamicCache holding exactly those keys and values, at the chunk's true positions
    model, cb = _setup(kv_heads=2, sinks=2)
    ids, am = left_padded(batch=1, length=40, pad=(0,))
    cache = MillionCache(cb, model.config, evict=Eviction(keep=0.5))
    _feed(model, cache, ids, am, 6)
    assert cache.layers[0]._evicted
    R = cache.layers[0].config.residual_length
    c = 2 * R - cache.layers[0].res_len  # a chunk that fits the window: no commit inside this step
    assert c >= 2
    ref = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        k, v = layer.dequantize()
        ref.update(k, v, i)
    n = cache.get_seq_length()
    chunk = torch.randint(0, 96, (1, c), generator=torch.Generator().manual_seed(4))
    pos = torch.arange(n, n + c)[None]
    with torch.no_grad():
        want = model(input_ids=chunk, position_ids=pos, **cache_arg(model, ref), use_cache=True).logits
        got = model(input_ids=chunk, position_ids=pos, **cache_arg(model, cache), use_cache=True).logits
    assert ref.get_seq_length() < n  # the reference holds fewer keys than positions seen
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert cache.get_seq_length() == n + c


@pytest.mark.parametrize("keep", [None, 0.4], ids=["no-eviction", "eviction"])
@pytest.mark.parametrize("sinks,transformed", [(2, False), (1, True)])
def test_chunks_dividing_the_window_equal_decode_steps(sinks, transformed, keep):
    # chunks of C | R commit (and evict) at the same positions as decode steps, before attending, and score the same
    # queries: the served evaluation with chunks equals token-by-token decoding
    model, cb = _setup(kv_heads=2, sinks=sinks, transformed=transformed)
    ids = torch.randint(0, 96, (1, 64), generator=torch.Generator().manual_seed(8))
    ev = None if keep is None else Eviction(keep=keep)
    step, chunked = MillionCache(cb, model.config, evict=ev), MillionCache(cb, model.config, evict=ev)
    with torch.no_grad():
        want = torch.cat([model(input_ids=ids[:, t : t + 1], **cache_arg(model, step), use_cache=True).logits
                          for t in range(64)], 1)
        got = torch.cat([model(input_ids=ids[:, t : t + 2], **cache_arg(model, chunked), use_cache=True).logits
                         for t in range(0, 64, 2)], 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    for a, b in zip(step.layers, chunked.layers):
        assert a._evicted == (keep is not None) and (a.pq_len, a.pq_pos, a.res_len) == (b.pq_len, b.pq_pos, b.res_len)


@pytest.mark.parametrize("sinks,transformed,pads", [(2, False, (0, 5)), (1, True, (6, 0)), (0, False, (3, 9))])
def test_chunks_after_eviction_with_padding_equal_decode_steps(sinks, transformed, pads):
    # a left-padded batch keeps a different number of codes per sequence: a multi-token step then gets its keys
    # right-aligned and its own mask, and chunks of C | R still equal token-by-token decoding
    model, cb = _setup(kv_heads=2, sinks=sinks, transformed=transformed)
    ids, am = left_padded(length=22, pad=pads)  # 22: the prefill leaves 6 window tokens, so chunks of 2 end where R does
    ev = Eviction(keep=0.4)
    step, chunked = MillionCache(cb, model.config, evict=ev), MillionCache(cb, model.config, evict=ev)
    more = torch.randint(0, 96, (2, 40), generator=torch.Generator().manual_seed(8))
    pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
    last = pos[:, -1:]
    with torch.no_grad():
        for c in (step, chunked):
            model(input_ids=ids, attention_mask=am, position_ids=pos, **cache_arg(model, c), use_cache=True)
        assert len(set(step.layers[0]._cs)) == 2  # the sequences keep different counts from here on
        want, got, a = [], [], am
        for t in range(40):
            a = torch.cat([a, torch.ones_like(a[:, :1])], 1)
            want.append(model(input_ids=more[:, t : t + 1], attention_mask=a, position_ids=last + 1 + t,
                              **cache_arg(model, step), use_cache=True).logits)
        a = am
        for t in range(0, 40, 2):
            a = torch.cat([a, torch.ones_like(a[:, :2])], 1)
            got.append(model(input_ids=more[:, t : t + 2], attention_mask=a, position_ids=last + 1 + t + torch.arange(2),
                             **cache_arg(model, chunked), use_cache=True).logits)
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(want, 1), rtol=1e-4, atol=1e-4)
    for x, y in zip(step.layers, chunked.layers):
        assert x._evicted and (x.pq_len, x.pq_pos, x.res_len, x._cs) == (y.pq_len, y.pq_pos, y.res_len, y._cs)
        x._score_queued()  # decode steps queue their queries until the next commit; chunks score theirs at once
        for b, c in enumerate(x._cs):  # the kept tokens' scores (slots in front of a sequence's first are unused)
            torch.testing.assert_close(y.score[b, :, c : x.pq_len], x.score[b, :, c : x.pq_len], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw,match", [
    (dict(keep=0), r"keep=0 .*\(0, 1\]"), (dict(keep=1.5), r"keep=1.5"), (dict(keep=0.5, recent=-0.1), r"recent=-0.1"),
    (dict(keep="half"), r"keep must be a number"), (dict(keep=0.5, friendliness=1), r"friendliness"),
    (dict(keep=0.5, observe=0), r"observe=0"), (dict(keep=0.5, observe=2.5), r"observe=2.5"),
    (dict(keep=0.5, pool=4), r"pool=4 must be an odd"), (dict(keep=0.5, pool=3, pool_side="before"), r"pool_side='before'"),
    (dict(keep=0.5, pool=3, pool_share=1.5), r"pool_share=1.5 .*\[0, 1\]"), (dict(keep=0.5, pool_share=-0.1), r"pool_share=-0.1"),
    (dict(keep=0.5, pool_share="half"), r"pool_share must be a number"),
])
def test_eviction_rejects_bad_settings(kw, match):
    with pytest.raises(ValueError, match=match):
        Eviction(**kw)


def test_cache_rejects_a_non_eviction():
    model, cb = _setup()
    with pytest.raises(ValueError, match="million.Eviction"):
        MillionCache(cb, model.config, evict=0.5)


def test_observation_window_scores_only_the_last_prompt_queries():
    # with observe=W a prompt adds the attention of its last W queries only: mass G * W per head after the prefill
    model, cb = _setup(kv_heads=2)
    ids, am = left_padded(batch=1, length=30, pad=(0,))
    cache = MillionCache(cb, model.config, evict=Eviction(keep=1.0, observe=5))
    _feed(model, cache, ids, am, 0)
    for layer in cache.layers:
        mass = layer.score[:, :, : layer.pq_len].sum(-1) + layer._wscore[:, :, : layer.res_len].sum(-1)
        torch.testing.assert_close(mass, torch.full_like(mass, 2 * 5.0), rtol=1e-4, atol=1e-4)
        # the last 5 queries see every key up to their own: the first keys got something
        assert float(layer.score[0, :, :5].sum()) > 0


@pytest.mark.parametrize("pool,side", [(5, "after"), (3, "both")])
def test_pool_share_keeps_the_strongest_first_then_their_neighbours(pool, side):
    g = torch.Generator().manual_seed(0)
    sc = torch.rand(2, 3, 40, generator=g)
    n = 12
    full = Eviction(keep=1.0, pool=pool, pool_side=side)
    # share 1: every heavy hitter by pooled score (the rule before the option); share 0: by the scores alone
    assert torch.equal(full.heavy(sc, n), full.pooled(sc).topk(n, -1).indices.sort(-1).values)
    none = Eviction(keep=1.0, pool=pool, pool_side=side, pool_share=0.0)
    assert torch.equal(none.heavy(sc, n), sc.topk(n, -1).indices.sort(-1).values)
    half = Eviction(keep=1.0, pool=pool, pool_side=side, pool_share=0.5)
    got = half.heavy(sc, n)
    assert got.shape == (2, 3, n) and bool((got.diff(dim=-1) > 0).all())  # ascending, distinct
    pooled = full.pooled(sc)
    for i in range(2):
        for h in range(3):
            raw = set(sc[i, h].topk(6).indices.tolist())  # the 6 strongest, whatever their neighbours
            kept = set(got[i, h].tolist())
            rest, others = kept - raw, set(range(40)) - kept
            assert raw <= kept and len(rest) == 6
            # the other 6 by pooled score among the rest (pooled scores tie: neighbours share their hitter's maximum)
            assert min(pooled[i, h, j] for j in rest) >= max(pooled[i, h, j] for j in others)
    assert none.heavy(sc, 0).shape == (2, 3, 0)


def _dense_reference_padded(layer, q, scale):
    """:func:`_dense_reference` for a left-padded batch: a sequence's window rows before its padding ends are not its
    tokens (its padding can reach into the window while a longer sequence has evicted)."""
    B, Hq, D = q.shape
    H = layer.num_heads
    G = Hq // H
    outs = []
    for b in range(B):
        kd, vd = layer._decoded(layer._cs[b], layer.pq_len)  # empty for a sequence with no code yet
        s, w0 = layer._sfill[b], max(layer._pad[b] - layer.pq_pos, 0)
        ks = [layer.k_sink[b : b + 1, :, :s], kd[b : b + 1], layer.k_window[b : b + 1, :, w0 : layer.res_len]]
        vs = [layer.v_sink[b : b + 1, :, :s], vd[b : b + 1], layer.v_window[b : b + 1, :, w0 : layer.res_len]]
        k, v = torch.cat(ks, 2).float()[0], torch.cat(vs, 2).float()[0]
        qb = q[b].float().view(H, G, D)
        p = (torch.einsum("hgd,hnd->hgn", qb, k) * scale).softmax(-1)
        outs.append(torch.einsum("hgn,hnd->hgd", p, v).reshape(Hq, D))
    return torch.stack(outs)


def _assert_attends_the_kept_tokens(cache, seed):
    q = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(seed))
    for layer in cache.layers:
        st, _ = layer._state()
        st.observer = None
        torch.testing.assert_close(_pq_attention(st, q, st.starts, 0.25).float(),
                                   _dense_reference_padded(layer, q, 0.25), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sinks,transformed", [(0, False), (1, False), (2, True)])
def test_a_short_padded_sequence_does_not_defer_the_others_eviction(sinks, transformed):
    """A batch of a long prompt and a 3-token one (left padding 37 of 40): the long one evicts from its prefill on, as
    it does alone (same logits at every step), while the short one keeps its tokens until its first code commits;
    attention over the packed codes is attention over exactly each sequence's kept tokens, and chunks equal steps."""
    model, cb = _setup(kv_heads=2, sinks=sinks, transformed=transformed)
    ids, am = left_padded(length=40, pad=(0, 37))
    ev = Eviction(keep=0.4)
    batch, alone, chunked = (MillionCache(cb, model.config, evict=ev) for _ in range(3))
    more = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(8))
    pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, position_ids=pos, **cache_arg(model, batch), use_cache=True)
        model(input_ids=ids[:1], position_ids=pos[:1], **cache_arg(model, alone), use_cache=True)
        model(input_ids=ids, attention_mask=am, position_ids=pos, **cache_arg(model, chunked), use_cache=True)
        l0 = batch.layers[0]
        assert l0._evicted and l0.pq_pos < 37 + sinks  # the long one evicted; the short one has no code yet
        assert l0._cs[1] > l0.pq_len
        assert alone.layers[0]._evicted and l0.pq_len == alone.layers[0].pq_len  # as many codes kept as alone
        want, a, last = [], am, pos[:, -1:]
        for t in range(24):
            a = torch.cat([a, torch.ones_like(a[:, :1])], 1)
            got = model(input_ids=more[:, t : t + 1], attention_mask=a, position_ids=last + 1 + t,
                        **cache_arg(model, batch), use_cache=True).logits
            solo = model(input_ids=more[:1, t : t + 1], position_ids=last[:1] + 1 + t,
                         **cache_arg(model, alone), use_cache=True).logits
            torch.testing.assert_close(got[:1], solo, rtol=1e-4, atol=1e-4)
            want.append(got)
            if t == 0:  # attention on the packed codes, the short sequence still without a code
                _assert_attends_the_kept_tokens(batch, seed=9)
        assert l0._cs[1] <= l0.pq_len  # by now the short one has codes (and evicts by its own budget)
        _assert_attends_the_kept_tokens(batch, seed=10)
        got, a = [], am
        for t in range(0, 24, 2):  # chunks of 2 (R = 4) from the same prefill: the same logits as the steps
            a = torch.cat([a, torch.ones_like(a[:, :2])], 1)
            got.append(model(input_ids=more[:, t : t + 2], attention_mask=a, position_ids=last + 1 + t + torch.arange(2),
                             **cache_arg(model, chunked), use_cache=True).logits)
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(want, 1), rtol=1e-4, atol=1e-4)
