"""End-to-end decode step time of a 7B-shaped LLaMA (random weights, fp16, on the GPU) with
transformers' DynamicCache + SDPA against MillionCache (PQ codes + Triton kernels), at long context.

Speed does not depend on weight or centroid values, so both are random; the numbers are speed only.

    PYTHONPATH=src python benchmarks/bench_e2e.py --contexts 4096,16384,32768 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="4096,16384,32768")
    ap.add_argument("--shape", choices=["llama2-7b", "llama3-8b"], default="llama2-7b")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--bits", type=float, default=4)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--residual", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=8, help="untimed decode steps first (kernel compilation)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, StaticCache

    import million
    from million import MillionCache, PQConfig
    from million.codebook import Codebooks, model_identity
    from million.compat import cache_arg

    kv = 32 if args.shape == "llama2-7b" else 8
    vocab = 32000 if args.shape == "llama2-7b" else 128256
    inter = 11008 if args.shape == "llama2-7b" else 14336
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=4096, intermediate_size=inter, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=kv, head_dim=128, max_position_embeddings=131072)
    million.register()
    cfg._attn_implementation = "million"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    pq = PQConfig.from_bits(128, args.bits, nbits=8, residual_length=args.residual, granularity="layer_head")
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (args.layers, kv, pq.M, pq.ksub, pq.dsub)
    cb = Codebooks(pq, torch.randn(shape, device="cuda", generator=gen), torch.randn(shape, device="cuda", generator=gen), model_identity(cfg))

    rows = []
    for ctx in [int(c) for c in args.contexts.split(",")]:
        res = {"context": ctx, "shape": args.shape, "layers": args.layers, "bits": args.bits}
        for name in ("fp16", "fp16static", "pq"):
            if name == "fp16":
                cache = DynamicCache(config=cfg)
            elif name == "fp16static":
                cache = StaticCache(config=cfg, max_cache_len=ctx + args.steps + args.warmup + 1)
            else:
                cache = MillionCache(cb, cfg)
            ids = torch.randint(0, vocab, (1, ctx), device="cuda")
            with torch.no_grad():
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(input_ids=ids, **cache_arg(model, cache), use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
                res[f"{name}_prefill_s"] = time.perf_counter() - t0
                tok = torch.randint(0, vocab, (1, 1), device="cuda")
                for _ in range(args.warmup):
                    model(input_ids=tok, **cache_arg(model, cache), use_cache=True)
                times = []
                for _ in range(args.steps):
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    model(input_ids=tok, **cache_arg(model, cache), use_cache=True)
                    e.record()
                    e.synchronize()
                    times.append(s.elapsed_time(e))
            res[f"{name}_step_ms"] = statistics.median(times)
            res[f"{name}_step_mean_ms"] = statistics.mean(times)
            del cache
            torch.cuda.empty_cache()
        res["speedup"] = res["fp16_step_ms"] / res["pq_step_ms"]
        res["speedup_vs_static"] = res["fp16static_step_ms"] / res["pq_step_ms"]
        rows.append(res)
        print(f"ctx {ctx:>6}: DynamicCache {res['fp16_step_ms']:.2f} ms/step, StaticCache {res['fp16static_step_ms']:.2f}, "
              f"PQ {res['pq_step_ms']:.2f} (mean {res['pq_step_mean_ms']:.2f}); prefill fp16 {res['fp16_prefill_s']:.2f} s, "
              f"PQ {res['pq_prefill_s']:.2f} s", flush=True)
    print("\n| context | DynamicCache fp16 ms/step | StaticCache fp16 ms/step | PQ ms/step (median) | PQ mean | x Dynamic | x Static |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['context']} | {r['fp16_step_ms']:.2f} | {r['fp16static_step_ms']:.2f} | {r['pq_step_ms']:.2f} | "
              f"{r['pq_step_mean_ms']:.2f} | {r['speedup']:.2f}x | {r['speedup_vs_static']:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
