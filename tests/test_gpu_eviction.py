"""MillionCache with an Eviction on a CUDA GPU: the decode kernels on packed codes attend exactly the kept tokens, and
steps replayed from a CUDA graph (scores kept by device-indexed writes, eviction between replays) give the logits of
the same steps run eagerly. Runs only with ``pytest -m gpu``."""

import pytest
import torch

from million import Eviction, MillionCache
from million.attention import _pq_attention

from test_gpu_cache import _codebooks, _model, _with_transforms
from test_gpu_decode import _run, _with_sinks
from test_eviction import _dense_reference

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("kv_heads", [2, 8], ids=["gqa4", "mha"])
@pytest.mark.parametrize("transformed", [False, True], ids=["plain", "transformed"])
@pytest.mark.parametrize("padded", [True, "short", False], ids=["padded", "short", "folded"])
def test_graph_replay_equals_eager_steps_with_eviction(kv_heads, transformed, padded):
    # "short": the third prompt's padding (140 of 150) reaches past the codes the prefill commits (128 positions), so
    # the others evict while it waits for its first code
    model = _model(torch.float16, kv_heads)
    cb = _codebooks(model, 4, residual=16)
    cb = _with_transforms(cb, model, sinks=1) if transformed else _with_sinks(cb, 0 if padded else 1)
    B, T = 3, 150
    ids = torch.randint(0, 256, (B, T), device="cuda")
    am = torch.ones_like(ids)
    if padded:
        am[1, :37] = 0
        am[2, : 140 if padded == "short" else 100] = 0
    ev = Eviction(keep=0.4)
    want, de = _run(model, lambda: MillionCache(cb, model.config, evict=ev), ids, am, 100, graph=False, reserve=True)
    got, dg = _run(model, lambda: MillionCache(cb, model.config, evict=ev), ids, am, 100, graph=True, reserve=True)
    assert dg._graph is not None
    for a, b in zip(de.cache.layers, dg.cache.layers):
        assert a._evicted and (a.pq_len, a.pq_pos, a._cs) == (b.pq_len, b.pq_pos, b._cs)
    assert torch.isfinite(got).all()
    rel = ((got - want).norm() / want.norm()).item()
    assert rel < 1e-3, rel


@pytest.mark.parametrize("kv_heads", [2, 8], ids=["gqa4", "mha"])
@pytest.mark.parametrize("transformed", [False, True], ids=["plain", "transformed"])
def test_kernel_on_packed_codes_attends_the_kept_tokens(kv_heads, transformed):
    model = _model(torch.float16, kv_heads)
    cb = _codebooks(model, 4, residual=16)
    cb = _with_transforms(cb, model, sinks=2) if transformed else _with_sinks(cb, 2)
    B, T = 2, 300
    ids = torch.randint(0, 256, (B, T), device="cuda")
    am = torch.ones_like(ids)
    am[1, :41] = 0
    cache = MillionCache(cb, model.config, evict=Eviction(keep=0.3))
    _run(model, lambda: cache, ids, am, 40, graph=False, reserve=True)
    Hq, D = model.config.num_attention_heads, model.config.head_dim
    q = torch.randn(B, Hq, D, device="cuda", dtype=torch.float16)
    for layer in cache.layers:
        assert layer._evicted
        st, _ = layer._state()
        st.observer = None
        got = _pq_attention(st, q, st.starts, D**-0.5).float()
        # the kept tokens: each sequence's own sinks (its first positions, stored from slot 0), codes, window
        want = _dense_reference(layer, q, D**-0.5)
        for b in range(B):
            err = (got[b] - want[b]).abs().max().item()
            assert err < 1e-2 * want[b].abs().max().item(), (b, err)


@pytest.mark.parametrize("kv_heads", [2, 8], ids=["gqa4", "mha"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("observe", [None, 24], ids=["all", "observe24"])
@pytest.mark.parametrize("kernels", [("cudnn", "flash"), ("flash",)], ids=["cudnn", "flash"])
def test_prefill_with_lse_gives_the_scores_and_logits_of_the_sdpa_path(kv_heads, dtype, observe, kernels, monkeypatch):
    """A prefill with eviction takes torch's cuDNN (else flash) kernel and its log-sum-exp (column pass only); the
    scores and the logits are those of transformers' SDPA path with the two-pass column sums."""
    import million.attention as att

    monkeypatch.setattr(att, "PREFILL_KERNELS", kernels)
    taken = []
    real = att._prefill_with_lse

    def spy(*a):
        r = real(*a)
        if att.LSE_PREFILL:
            taken.append(None if r is None else r[2])
        return r

    monkeypatch.setattr(att, "_prefill_with_lse", spy)

    model = _model(dtype, kv_heads)
    cb = _with_sinks(_codebooks(model, 4, residual=16), 1)
    ids = torch.randint(0, 256, (2, 200), device="cuda")
    runs = []
    for flash in (True, False):
        att.LSE_PREFILL = flash
        try:
            cache = MillionCache(cb, model.config, evict=Eviction(keep=0.4, observe=observe))
            with torch.no_grad():
                logits = model(input_ids=ids, past_key_values=cache, use_cache=True).logits.float()
        finally:
            att.LSE_PREFILL = True
        runs.append((logits, cache))
    (lf, cf), (ls, cs) = runs
    assert taken and set(taken) == {kernels[0]}, taken  # every layer of the first run took the first kernel asked for
    assert torch.isfinite(lf).all()
    assert ((lf - ls).norm() / ls.norm()).item() < 2e-2
    for a, b in zip(cf.layers, cs.layers):
        assert a._evicted and (a.pq_len, a._cs) == (b.pq_len, b._cs)
        sa, sb = a.score[:, :, : a.pq_len].float(), b.score[:, :, : b.pq_len].float()
        assert ((sa - sb).norm() / sb.norm()).item() < 2e-2
