"""Host work of one decode step: the top-level aten operations (each one a kernel launch or more on a GPU) that one
MillionCache decode step dispatches (an eager `model(...)` step, and a static step of `million.decode.Decoder`, what a
captured CUDA graph replays), counted with torch.profiler on the CPU, for plain codebooks and for codebooks
with transforms (as the recommended recipe writes them), with one sink token. Tiny random 2-layer LLaMA (8 query /
2 KV heads x 64), 4-bit codes, window 16. Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/count_step_ops.py --out ops.json

On the CPU the PQ attention itself is the naive reference (many aten operations); on a GPU it is one or two kernels,
so compare rows with the same PQ attention, and read differences, not totals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

import million
from million import MillionCache, PQConfig
from million.calibrate import collect_kv, train_codebooks
from million.codebook import Codebooks, model_identity
from million.compat import cache_arg


def _transforms(L, H, D):
    g = torch.Generator().manual_seed(3)
    A = torch.eye(D) + 0.2 * torch.randn(L, H, D, D, generator=g) / D**0.5
    B = torch.eye(D) + 0.2 * torch.randn(L, H, D, D, generator=g) / D**0.5
    return {"key": A, "key_inverse": torch.linalg.inv(A), "value": B, "value_inverse": torch.linalg.inv(B)}


def _top(prof) -> int:
    return sum(1 for e in prof.events() if e.name.startswith("aten::") and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::")))


def count_static(model, cb) -> int:
    """The same for a static step (million.decode.Decoder without a graph: what a captured step replays)."""
    from million.decode import Decoder

    ids = torch.randint(0, 256, (1, 100), generator=torch.Generator().manual_seed(1))
    dec = Decoder(model, MillionCache(cb, model.config), graph=False)
    dec.prefill(ids, torch.ones_like(ids), max_new_tokens=8)
    tok = torch.tensor([5])
    dec.step(tok)  # the first static step
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        dec.step(tok)
    return _top(prof)


def count(model, cb) -> int:
    ids = torch.randint(0, 256, (1, 100), generator=torch.Generator().manual_seed(1))
    am = torch.ones_like(ids)
    cache = MillionCache(cb, model.config)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=am, **cache_arg(model, cache), use_cache=True)
        for _ in range(2):
            am = torch.cat([am, torch.ones(1, 1, dtype=am.dtype)], 1)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                model(input_ids=ids[:, :1], attention_mask=am, **cache_arg(model, cache), use_cache=True)
    return _top(prof)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    cfg = LlamaConfig(vocab_size=256, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, head_dim=64, max_position_embeddings=4096)
    million.register()
    cfg._attn_implementation = "million"
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    pq = PQConfig.from_bits(64, 4, nbits=8, residual_length=16, granularity="layer_head")
    rec = collect_kv(model, [torch.randint(0, 256, (1, 1024))], progress=False)
    kc, vc, _ = train_codebooks(rec.keys, rec.values, pq, samples=1024, iters=2, progress=False)
    pq1 = PQConfig(head_dim=64, M=pq.M, nbits=pq.nbits, residual_length=16, granularity="layer_head", sink_length=1)
    cbs = {"plain codebooks, 1 sink": Codebooks(pq1, kc, vc, model_identity(cfg)),
           "with transforms, 1 sink": Codebooks(pq1, kc, vc, model_identity(cfg), None, _transforms(2, 2, 64))}
    rows = {}
    for k, cb in cbs.items():
        rows[k] = count(model, cb)
        rows[k + ", static step"] = count_static(model, cb)
    for k, v in rows.items():
        print(f"{k:>40}: {v} top-level aten ops per decode step (2 layers)")
    if a.out:
        Path(a.out).write_text(json.dumps({"rows": rows, "torch": torch.__version__, "argv": sys.argv[1:],
                                           "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, indent=1) + "\n")


if __name__ == "__main__":
    main()
