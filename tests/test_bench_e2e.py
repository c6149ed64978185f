"""benchmarks/bench_e2e.py's ``fp16static-gqa`` baseline (CPU): under ``sdpa_gqa()`` transformers' SDPA attention
reads each KV head once (``enable_gqa``), neither repeating the KV heads (``repeat_kv``, transformers 5.17 with a mask)
nor folding the query group (``pack_gqa``, later versions at decode), and gives the same logits."""

import importlib.util
from pathlib import Path

import torch

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_e2e.py"
_spec = importlib.util.spec_from_file_location("bench_e2e", _path)
bench_e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_e2e)


def _decode(model, cfg, ids, steps=4):
    from transformers import StaticCache

    from million.compat import cache_arg

    cache = StaticCache(config=cfg, max_cache_len=ids.shape[1] + steps + 1)
    kw = cache_arg(model, cache)
    out = []
    with torch.no_grad():
        logits = model(ids, **kw, use_cache=True).logits[:, -1]
        for _ in range(steps):
            out.append(logits)
            logits = model(logits.argmax(-1, keepdim=True), **kw, use_cache=True).logits[:, -1]
    return torch.stack(out)


def test_sdpa_gqa_reads_kv_heads_once_and_matches(monkeypatch):
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.integrations import sdpa_attention as sa

    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=64)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, 97, (2, 11))
    calls = []
    for fn in ("repeat_kv", "pack_gqa"):  # whichever this transformers has
        if hasattr(sa, fn):
            orig = getattr(sa, fn)
            monkeypatch.setattr(sa, fn, lambda *a, _o=orig, _n=fn, **k: calls.append(_n) or _o(*a, **k))
    plain = _decode(model, cfg, ids)
    grouped_plain = len(calls)
    calls.clear()
    check = sa.use_gqa_in_sdpa
    with bench_e2e.sdpa_gqa():
        gqa = _decode(model, cfg, ids)
    assert calls == []  # every layer and step took SDPA's enable_gqa
    assert grouped_plain > 0  # ... where plain transformers repeated or folded heads at the decode steps
    assert sa.use_gqa_in_sdpa is check  # restored
    torch.testing.assert_close(gqa, plain, atol=1e-5, rtol=0)
