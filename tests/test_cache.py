"""MillionCache inside transformers: exactness inside the window, PQ decode attention equal to
dequantize-then-attention, batching with left padding, sampling, and the model families."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

import million
from million import MillionCache, PQConfig
from million.calibrate import train_codebooks, collect_kv
from million.codebook import Codebooks, model_identity
from million.compat import cache_arg

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
}


def tiny_model(family="llama", kv_heads=2, layers=2):
    cfg_cls, model_cls = FAMILIES[family]
    cfg = cfg_cls(
        vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=kv_heads, head_dim=16, max_position_embeddings=512,
    )
    million.register()
    cfg._attn_implementation = "million"
    torch.manual_seed(0)
    return model_cls(cfg).eval()


def tiny_codebooks(model, residual=4, granularity="layer", nbits=6, M=8, sinks=0):
    pq = PQConfig(head_dim=16, M=M, nbits=nbits, residual_length=residual, granularity=granularity, sink_length=sinks)
    ids = torch.randint(0, 96, (1, 256), generator=torch.Generator().manual_seed(1))
    rec = collect_kv(model, [ids], progress=False)
    kc, vc, stats = train_codebooks(rec.keys, rec.values, pq, samples=256, iters=4, progress=False)
    ident = model_identity(model.config)
    return Codebooks(pq, kc, vc, ident, stats)


def left_padded(batch=2, length=12, pad=(0, 5)):
    ids = torch.randint(0, 96, (batch, length), generator=torch.Generator().manual_seed(2))
    am = torch.ones_like(ids)
    for b, p in enumerate(pad[:batch]):
        am[b, :p] = 0
    return ids, am


@pytest.mark.parametrize("family", list(FAMILIES))
def test_inside_window_generation_equals_dynamic_cache(family):
    model = tiny_model(family)
    cb = tiny_codebooks(model, residual=64)
    ids, am = left_padded()
    kw = dict(attention_mask=am, max_new_tokens=20, do_sample=False)
    ref = model.generate(ids, **cache_arg(model, DynamicCache(config=model.config), generate=True), **kw)
    cache = MillionCache(cb, model.config)
    out = model.generate(ids, **cache_arg(model, cache, generate=True), **kw)
    assert cache.layers[0].pq_len == 0  # nothing was quantized
    assert torch.equal(ref, out)


def _step_logits(model, cache, tok, am):
    with torch.no_grad():
        return model(input_ids=tok, attention_mask=am, **cache_arg(model, cache), use_cache=True).logits[:, -1].float()


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("granularity,sinks,pads", [
    ("merged", 0, (0, 7)), ("layer", 0, (0, 7)), ("layer_head", 0, (0, 7)),
    ("layer", 3, (0, 2)), ("layer_head", 4, (9, 0)),
], ids=["merged", "layer", "layer_head", "sinks3-pad2", "sinks4-pad9"])
def test_pq_decode_equals_dequantize_then_attention(family, granularity, sinks, pads):
    model = tiny_model(family)
    cb = tiny_codebooks(model, residual=4, granularity=granularity, sinks=sinks)
    ids, am = left_padded(length=23, pad=pads)
    cache = MillionCache(cb, model.config)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, **cache_arg(model, cache), use_cache=True)
    # decode a few steps so that blocks are flushed while decoding, then compare one step
    tok = torch.randint(0, 96, (2, 1))
    for _ in range(6):
        am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
        _step_logits(model, cache, tok, am)
    lay = cache.layers[0]
    assert lay.pq_len > 0 and lay.res_len >= 1
    assert_step_matches_dequantized(model, cache, tok, am)


@pytest.mark.parametrize("pads", [(0, 7), (5, 0), (9, 3), (21, 0)], ids=["pad7", "pad5", "both", "short"])
def test_sinks_are_each_sequences_first_valid_tokens(pads):
    # with left padding, a sequence's attention sinks are its own first S tokens, kept in full precision (the rows
    # of the padding in front of them are not sinks); "short": a 2-token sequence whose sinks are committed later
    S = 3
    model = tiny_model()
    cb = tiny_codebooks(model, residual=4, granularity="layer_head", sinks=S)
    ids, am = left_padded(length=23, pad=pads)
    cache, ref = MillionCache(cb, model.config), DynamicCache(config=model.config)
    tok = torch.randint(0, 96, (2, 1), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for c in (cache, ref):
            model(input_ids=ids, attention_mask=am, **cache_arg(model, c), use_cache=True)
        for _ in range(8):  # the step checked at the end commits no block (its snapshot would be stale)
            am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
            for c in (cache, ref):
                model(input_ids=tok, attention_mask=am, **cache_arg(model, c), use_cache=True)
    for i, layer in enumerate(cache.layers):
        k_ref, v_ref = ref.layers[i].keys, ref.layers[i].values
        kd, vd = layer.dequantize()
        assert layer._pad == list(pads) and layer._sfill == [S, S] and layer.sink_lens.tolist() == [S, S]
        for b, p in enumerate(pads):
            # prompt positions: the same K/V in both caches; decoded ones only in layer 0 (later layers saw PQ attention)
            n = S if i == 0 else min(S, 23 - p)
            assert torch.equal(layer.k_sink[b, :, :n], k_ref[b, :, p : p + n])
            assert torch.equal(layer.v_sink[b, :, :n], v_ref[b, :, p : p + n])
            assert torch.equal(kd[b, :, p : p + n], k_ref[b, :, p : p + n])  # what attention sees (see below)
            if p + S < layer.pq_pos:  # the next token comes from its codes
                assert not torch.equal(kd[b, :, p + S], k_ref[b, :, p + S])
    assert_step_matches_dequantized(model, cache, tok, am)


@pytest.mark.parametrize("pads", [(0, 17), (0, 21), (19, 0)])
def test_padding_past_the_committed_codes_leaves_no_stale_sink(pads):
    """A sequence whose padding reaches past the codes its prefill commits has no sink committed yet: the device's
    sink count says 0 too (before the fix it kept the 1 of the prefill, whose copy was a pad token's K/V), so its next
    step attends only its own tokens, all still in full precision: as DynamicCache."""
    model = tiny_model()
    cb = tiny_codebooks(model, residual=4, granularity="layer", sinks=1)
    ids, am = left_padded(length=23, pad=pads)
    cache, ref = MillionCache(cb, model.config), DynamicCache(config=model.config)
    tok = torch.tensor([[5], [5]])
    with torch.no_grad():
        for c in (cache, ref):
            model(input_ids=ids, attention_mask=am, **cache_arg(model, c), use_cache=True)
    short = 1 if pads[1] else 0
    for layer in cache.layers:
        assert layer.pq_pos <= pads[short]  # nothing of the short sequence is committed
        assert layer.sink_lens.tolist() == layer._sfill and layer._sfill[short] == 0
    am = torch.cat([am, torch.ones(2, 1, dtype=am.dtype)], 1)
    got, want = _step_logits(model, cache, tok, am), _step_logits(model, ref, tok, am)
    assert torch.allclose(got[short], want[short], atol=1e-4), (got[short] - want[short]).abs().max()


def assert_step_matches_dequantized(model, cache, tok, am):
    """One more decode step on ``cache`` equals SDPA over a DynamicCache holding exactly its dequantized contents."""
    ref_cache = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        k, v = layer.dequantize()
        ref_cache.update(k, v, i)
    am = torch.cat([am, torch.ones(am.shape[0], 1, dtype=am.dtype)], 1)
    got = _step_logits(model, cache, tok, am)
    model.config._attn_implementation = "sdpa"
    try:
        want = _step_logits(model, ref_cache, tok, am)
    finally:
        model.config._attn_implementation = "million"
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_window_bookkeeping_and_device_lengths():
    model = tiny_model()
    cb = tiny_codebooks(model, residual=4)
    cache = MillionCache(cb, model.config)
    ids = torch.randint(0, 96, (1, 10))
    with torch.no_grad():
        model(input_ids=ids, **cache_arg(model, cache), use_cache=True)
        n = 10
        for _ in range(13):
            model(input_ids=torch.randint(0, 96, (1, 1)), **cache_arg(model, cache), use_cache=True)
            n += 1
            for lay in cache.layers:
                assert lay.pq_len + lay.res_len == n
                assert lay.pq_len % 4 == 0
                assert 1 <= lay.res_len <= 8
                assert int(lay.pq_lens[0]) == lay.pq_len and int(lay.res_lens[0]) == lay.res_len
                assert cache.get_seq_length() == n


def test_quantized_generation_sampling_batch_and_return_sequences():
    model = tiny_model()
    cb = tiny_codebooks(model, residual=4)
    ids, am = left_padded(length=9, pad=(3, 0))
    torch.manual_seed(0)
    out = model.generate(ids, attention_mask=am, max_new_tokens=12, do_sample=True, top_k=20,
                         num_return_sequences=2, **cache_arg(model, MillionCache(cb, model.config), generate=True))
    assert out.shape == (4, 21)
    assert int(out.min()) >= 0 and int(out.max()) < 96


def test_kv_bytes_quarter_of_fp16_at_4_bits():
    model = tiny_model()
    pq = PQConfig.from_bits(16, 4, nbits=8, residual_length=4)
    rec = collect_kv(model, [torch.randint(0, 96, (1, 300))], progress=False)
    kc, vc, _ = train_codebooks(rec.keys, rec.values, pq, samples=300, iters=2, progress=False)
    cb = Codebooks(pq, kc, vc, model_identity(model.config))
    cache = MillionCache(cb, model.config)
    with torch.no_grad():
        model(input_ids=torch.randint(0, 96, (1, 200)), **cache_arg(model, cache), use_cache=True)
    lay = cache.layers[0]
    fp16 = 2 * 2 * 2 * 16 * 2  # layers * (K,V) * heads * head_dim * bytes
    codes_per_token = cache.kv_bytes() - 2 * 2 * 2 * lay.res_len * 16 * 4  # window is fp32 here
    assert codes_per_token / lay.pq_len == pytest.approx(fp16 / 4)


def test_cache_rejects_wrong_attention_and_wrong_model():
    model = tiny_model()
    cb = tiny_codebooks(model)
    model.config._attn_implementation = "sdpa"
    with pytest.raises(ValueError, match="million"):
        MillionCache(cb, model.config)
    other = tiny_model(kv_heads=4)
    with pytest.raises(ValueError, match="num_key_value_heads"):
        MillionCache(cb, other.config)


def test_sinks_are_kept_in_full_precision():
    model = tiny_model()
    cb = tiny_codebooks(model, residual=4, sinks=2)
    cache = MillionCache(cb, model.config)
    ids = torch.randint(0, 96, (1, 30))
    ref = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, **cache_arg(model, cache), use_cache=True)
        model.config._attn_implementation = "sdpa"
        model(input_ids=ids, **cache_arg(model, ref), use_cache=True)
        model.config._attn_implementation = "million"
    k, v = cache.layers[1].dequantize()
    assert torch.equal(k[:, :, :2], ref.layers[1].keys[:, :, :2])  # sinks exact
    assert not torch.equal(k[:, :, 2:10], ref.layers[1].keys[:, :, 2:10])  # the rest quantized


def test_warns_once_past_the_calibration_window():
    model = tiny_model()
    cb = tiny_codebooks(model, residual=4)
    cb.calibration = {**cb.calibration, "window": 16, "pre_rope": False}
    ids, am = left_padded(batch=1, length=12, pad=(0,))
    with pytest.warns(UserWarning, match="calibrated on") as rec:
        model.generate(ids, attention_mask=am, **cache_arg(model, MillionCache(cb, model.config), generate=True), max_new_tokens=12, do_sample=False)
    assert sum("calibrated on" in str(w.message) for w in rec) == 1  # once per cache
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the window, or pre-RoPE codebooks: no warning
        model.generate(ids, attention_mask=am, **cache_arg(model, MillionCache(cb, model.config), generate=True), max_new_tokens=3, do_sample=False)
        cb.calibration = {**cb.calibration, "pre_rope": True}
        model.generate(ids, attention_mask=am, **cache_arg(model, MillionCache(cb, model.config), generate=True), max_new_tokens=12, do_sample=False)


def test_cache_arg_names_a_parameter_the_installed_transformers_takes():
    import inspect

    from million.compat import cache_kw

    model = tiny_model()
    name = cache_kw(model)
    assert name in ("cache", "past_key_values") and name in inspect.signature(type(model).forward).parameters
    assert cache_kw(model, generate=True) == name  # the built-in models follow the generation API of their transformers


def test_cache_arg_falls_back_to_past_key_values_for_older_signatures():
    from million.compat import cache_arg

    class OldModel:  # the forward signature of transformers before 5.24
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return past_key_values

    class NewModel:
        def forward(self, input_ids=None, cache=None, use_cache=None):
            return cache

    sentinel = object()
    assert cache_arg(OldModel(), sentinel) == {"past_key_values": sentinel}
    assert cache_arg(NewModel(), sentinel) == {"cache": sentinel}
    assert OldModel().forward(**cache_arg(OldModel(), sentinel)) is sentinel
