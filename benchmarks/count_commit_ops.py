"""Host work of one committed block with eviction: the top-level aten operations (each one a kernel launch or more on
a GPU) of a static decode step that commits, scores the queued queries and evicts, counted with torch.profiler on the
CPU, layer by layer (what eager steps do) against all layers at once (``MillionCache._commit_all``, what static
steps do). Random LLaMA with ``--layers`` layers (8 query / 8 KV heads x 64), random 4-bit codebooks, window 32,
keep 0.4. Prints the counts and writes JSON.

    PYTHONPATH=src python benchmarks/count_commit_ops.py --layers 8,32 --json ops.json
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.profiler import ProfilerActivity, profile
from transformers import LlamaConfig, LlamaForCausalLM

import million
from million import Eviction, MillionCache, PQConfig
from million.codebook import Codebooks, model_identity
from million.decode import Decoder


# aten operations that only make views or metadata (no kernel on a GPU)
_NO_KERNEL = {"aten::" + n for n in (
    "slice", "view", "select", "expand", "as_strided", "transpose", "unsqueeze", "squeeze", "permute", "t", "alias",
    "narrow", "detach", "lift_fresh", "empty", "empty_strided", "_reshape_alias", "resolve_conj", "resolve_neg",
    "unbind", "split", "reshape", "flatten", "expand_as", "view_as", "result_type", "_unsafe_view", "empty_like")}


def count(fn) -> int:
    """Leaf aten operations that compute (each a kernel launch on a GPU; views and metadata left out)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    evs = [e for e in prof.events() if e.name.startswith("aten::")]
    parents = {id(e.cpu_parent) for e in evs if e.cpu_parent is not None}
    return sum(1 for e in evs if id(e) not in parents and e.name not in _NO_KERNEL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", default="8,32")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for L in [int(x) for x in args.layers.split(",")]:
        cfg = LlamaConfig(vocab_size=256, hidden_size=512, intermediate_size=512, num_hidden_layers=L, num_attention_heads=8,
                          num_key_value_heads=8, head_dim=64, max_position_embeddings=4096)
        million.register()
        cfg._attn_implementation = "million"
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).eval()
        pq = PQConfig.from_bits(64, 4, nbits=8, residual_length=32, granularity="layer_head")
        g = torch.Generator().manual_seed(0)
        shape = (L, 8, pq.M, pq.ksub, pq.dsub)
        cb = Codebooks(pq, torch.randn(shape, generator=g), torch.randn(shape, generator=g), model_identity(cfg))
        res = {"layers": L}
        for mode in ("per_layer", "batched"):
            cache = MillionCache(cb, cfg, evict=Eviction(keep=0.4))
            dec = Decoder(model, cache, graph=False)
            dec.prefill(torch.randint(0, 256, (1, 500)), max_new_tokens=200)
            tok = torch.zeros(1, dtype=torch.long)
            while not (cache.layers[0].static and cache.layers[0].res_len + 1 > 64):
                dec.step(tok)
            if mode == "per_layer":
                res[mode] = count(lambda: [l.before_static_step() for l in cache.layers])
            else:
                res[mode] = count(cache.before_static_step)
            assert cache.layers[0].res_len == 32 and cache.layers[0]._evicted
        rows.append(res)
        print(f"{L} layers: computing aten operations (kernels) per commit with eviction: layer by layer {res['per_layer']}, "
              f"all layers at once {res['batched']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
