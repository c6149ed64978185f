"""Real-model decode on the GPU: SmolLM2-135M (fp16) on an essays prompt of ``--context`` tokens, then ``--steps`` greedy
tokens, timed per token, with

- ``dynamic``: transformers' ``model.generate`` with DynamicCache (eager; what users get by default);
- ``static-graph``: :func:`million.generate` with StaticCache, every step replayed from a CUDA graph;
- ``pq-eager``: ``model.generate`` with MillionCache (eager);
- ``pq-graph``: :func:`million.generate` with MillionCache, every step replayed from a CUDA graph.

Also checks that the graph and eager PQ runs produce the same greedy tokens (first ``--check`` tokens) and reports the
KV bytes held. Needs codebooks from ``million calibrate`` for the model.

    PYTHONPATH=src python benchmarks/bench_e2e_real.py --model smollm2 --codebooks runs/smollm2-4bit --context 4096 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--codebooks", required=True)
    ap.add_argument("--context", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--check", type=int, default=64)
    ap.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (a quick check of the script: float32, eager)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = args.device
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)

    from transformers import DynamicCache, StaticCache

    import million
    from million import MillionCache
    from million.codebook import Codebooks
    from million.compat import cache_arg
    from million.data import load_text
    from million.models import load_model, resolve_model

    model, tok = load_model(resolve_model(args.model), dtype=torch.float16 if dev != "cpu" else torch.float32,
                            device=dev, attn_implementation="million")
    cb = Codebooks.load(args.codebooks)
    ids = tok(load_text("essays"), return_tensors="pt").input_ids[:, : args.context].to(dev)
    T, n = ids.shape[1], args.steps
    runs, toks = {}, {}
    def make(name):
        if name == "dynamic":
            return DynamicCache(config=model.config)
        if name == "static-graph":
            return StaticCache(config=model.config, max_cache_len=T + n)
        return MillionCache(cb, model.config)

    for name in ("dynamic", "static-graph", "pq-eager", "pq-graph"):
        for rep in range(2):  # the first run warms up (kernel builds, graph pools); the second is timed
            cache = make(name)
            sync()
            t0 = time.perf_counter()
            if name in ("dynamic", "pq-eager"):
                with torch.no_grad():
                    out = model.generate(ids, attention_mask=torch.ones_like(ids), **cache_arg(model, cache, generate=True),
                                         max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
            else:
                out = million.generate(model, cache, ids, max_new_tokens=n)
            sync()
            total = time.perf_counter() - t0
        # prefill alone, to separate it from the steps
        pre = make(name)
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            model(input_ids=ids, **cache_arg(model, pre), use_cache=True, logits_to_keep=1)
        sync()
        prefill = time.perf_counter() - t0
        runs[name] = {"total_s": total, "prefill_s": prefill, "ms_per_token": (total - prefill) * 1e3 / (out.shape[1] - T),
                      "new_tokens": int(out.shape[1] - T)}
        if hasattr(cache, "kv_bytes"):
            runs[name]["kv_bytes"] = cache.kv_bytes()
        toks[name] = out[0, T:].tolist()
        print(f"{name:>13}: {runs[name]['ms_per_token']:.3f} ms/token over {runs[name]['new_tokens']} tokens "
              f"(total {total:.2f} s, prefill {prefill:.3f} s)", flush=True)
    k = min(args.check, len(toks["pq-graph"]), len(toks["pq-eager"]))
    same = sum(a == b for a, b in zip(toks["pq-graph"][:k], toks["pq-eager"][:k]))
    first_diff = next((i for i in range(k) if toks["pq-graph"][i] != toks["pq-eager"][i]), None)
    fp_same = sum(a == b for a, b in zip(toks["static-graph"][:k], toks["dynamic"][:k]))
    print(f"greedy tokens, first {k}: pq graph vs pq eager {same}/{k} equal (first difference at {first_diff}); "
          f"fp16 static graph vs dynamic {fp_same}/{k}")
    base = runs["dynamic"]["ms_per_token"]
    print("\n| run | ms/token | x dynamic |\n|---|---|---|")
    for name, r in runs.items():
        print(f"| {name} | {r['ms_per_token']:.3f} | {base / r['ms_per_token']:.2f}x |")
    print("\nPQ continuation (graph):", repr(tok.decode(toks["pq-graph"][:48])))
    print("fp16 continuation (dynamic):", repr(tok.decode(toks["dynamic"][:48])))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if dev != "cpu" else "cpu", "context": T, "steps": n, "runs": runs,
                       "pq_graph_vs_eager_equal": same, "checked": k, "first_difference": first_diff,
                       "fp16_graph_vs_dynamic_equal": fp_same, "codebooks": cb.describe() if hasattr(cb, "describe") else None},
                      f, indent=2)


if __name__ == "__main__":
    main()
