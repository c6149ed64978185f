"""MillionCache on a CUDA GPU: the Triton path (with the side-stream encoder) against
dequantize-then-attention. Runs only with ``pytest -m gpu`` on a machine with a GPU."""

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import million
from million import MillionCache, PQConfig, ops
from million.codebook import Codebooks, model_identity
from million.compat import cache_arg
from million.calibrate import collect_kv, train_codebooks

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _model(dtype, kv_heads=2, head_dim=64):
    cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=kv_heads, head_dim=head_dim, max_position_embeddings=4096)
    million.register()
    cfg._attn_implementation = "million"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to("cuda", dtype).eval()


def _codebooks(model, bits, residual):
    pq = PQConfig.from_bits(model.config.head_dim, bits, nbits=8, residual_length=residual, granularity="layer_head")
    ids = torch.randint(0, 256, (1, 1024), device="cuda")
    rec = collect_kv(model, [ids], progress=False)
    kc, vc, _ = train_codebooks(rec.keys, rec.values, pq, samples=1024, iters=4, device="cuda", progress=False)
    return Codebooks(pq, kc, vc, model_identity(model.config))


def _with_transforms(cb, model, sinks):
    """The same centroids served with random well-conditioned key / value transforms (as `--transform` stores them)
    and ``sinks`` full-precision sink tokens: the decode kernel attends the codes and the mapped window in one call."""
    L, H, D = model.config.num_hidden_layers, model.config.num_key_value_heads, model.config.head_dim
    g = torch.Generator().manual_seed(3)
    A = torch.eye(D) + 0.2 * torch.randn(L, H, D, D, generator=g) / D**0.5
    Bm = torch.eye(D) + 0.2 * torch.randn(L, H, D, D, generator=g) / D**0.5
    tr = {"key": A, "key_inverse": torch.linalg.inv(A), "value": Bm, "value_inverse": torch.linalg.inv(Bm)}
    cfg = PQConfig(head_dim=D, M=cb.config.M, nbits=cb.config.nbits, residual_length=cb.config.residual_length,
                   granularity=cb.config.granularity, sink_length=sinks)
    return Codebooks(cfg, cb.key_centroids, cb.value_centroids, cb.model, cb.calibration, tr)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=["fp16", "bf16", "fp32"])
@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("kv_heads", [1, 2, 8], ids=["gqa8", "gqa4", "mha"])
@pytest.mark.parametrize("transformed", [False, True], ids=["plain", "transformed"])
def test_gpu_decode_matches_dequantized_attention(dtype, bits, kv_heads, transformed):
    model = _model(dtype, kv_heads)
    cb = _codebooks(model, bits, residual=16)
    if transformed:
        cb = _with_transforms(cb, model, sinks=1)
    B, T = 3, 700
    ids = torch.randint(0, 256, (B, T), device="cuda")
    am = torch.ones_like(ids)
    am[1, :37] = 0
    am[2, :300] = 0
    cache = MillionCache(cb, model.config)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, **cache_arg(model, cache), use_cache=True)
        for _ in range(40):  # crosses window flushes done on the side stream
            am = torch.cat([am, torch.ones(B, 1, dtype=am.dtype, device="cuda")], 1)
            model(input_ids=torch.randint(0, 256, (B, 1), device="cuda"), attention_mask=am, **cache_arg(model, cache), use_cache=True)
        torch.cuda.synchronize()
        ref = DynamicCache(config=model.config)
        for i, layer in enumerate(cache.layers):
            k, v = layer.dequantize()
            ref.update(k, v, i)
        tok = torch.randint(0, 256, (B, 1), device="cuda")
        am = torch.cat([am, torch.ones(B, 1, dtype=am.dtype, device="cuda")], 1)
        got = model(input_ids=tok, attention_mask=am, **cache_arg(model, cache), use_cache=True).logits.float()
        model.config._attn_implementation = "sdpa"
        want = model(input_ids=tok, attention_mask=am, **cache_arg(model, ref), use_cache=True).logits.float()
        model.config._attn_implementation = "million"
    assert torch.isfinite(got).all()
    rel = ((got - want).norm() / want.norm()).item()
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    assert rel < tol, rel


def test_gpu_kernels_are_used():
    assert ops.use_kernels(torch.zeros(1, device="cuda"))
