"""End-to-end decode step time of a 7B-shaped LLaMA (random weights, fp16, on the GPU): MillionCache (PQ codes,
the CUDA decode kernels) against transformers' fp16 caches, at long context.

Speed does not depend on weight or centroid values, so both are random; the numbers are speed only.

Eager (the default): one ``model(...)`` call per step, DynamicCache, StaticCache and MillionCache (``--caches``:
``fp16``, ``fp16static``, ``pq``, ``pq-tr``; the median step over ``--steps``).

    PYTHONPATH=src python benchmarks/bench_e2e.py --contexts 4096,16384,32768 --json out.json

``--graph``: the decode loop of :mod:`million.decode`, every step replayed from a captured CUDA graph, for
StaticCache (fp16, the baseline) and MillionCache with plain codebooks (``pq``) and with the default recipe's
form (``pq-tr``: key/value transforms and one fp16 sink, random). With grouped KV heads, transformers' SDPA attention
repeats the KV heads to the query heads whenever a mask is given (every StaticCache decode step has one);
``fp16static-gqa`` is StaticCache with SDPA's own GQA instead (``enable_gqa=True``, each KV head read once), the
stronger fp16 baseline. Time per step is the mean over ``--steps``
consecutive steps (a multiple of the window ``R`` covers the side-stream encodes and the commits), CUDA events
around the whole loop.

    PYTHONPATH=src python benchmarks/bench_e2e.py --graph --contexts 4096,32768,131072 --steps 128 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
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
    ap.add_argument("--steps", type=int, default=128, help="timed steps (default 128; a multiple of R covers its commits)")
    ap.add_argument("--residual", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=8,
                    help="untimed decode steps first: with --graph the Decoder's 2 eager steps, the capture, then replays")
    ap.add_argument("--graph", action="store_true", help="million.decode loop with CUDA-graph replay (see above)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--caches", default=None,
                    help="which caches to time. --graph: fp16static, fp16static-gqa (StaticCache with SDPA's enable_gqa "
                    "instead of repeated KV heads), pq, pq-tr, pq-ev (pq with million.Eviction(keep=--keep)); default "
                    "fp16static,pq,pq-tr. Eager: fp16 (DynamicCache), fp16static, pq, pq-tr; default fp16,fp16static,pq")
    ap.add_argument("--keep", type=float, default=0.4, help="pq-ev: share of the code tokens kept (default 0.4)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.batch != 1 and not args.graph:
        raise SystemExit(f"--batch {args.batch}: the eager loop runs one sequence; use --graph for batches")

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

    if args.graph:
        return graph_main(args, model, cfg, cb, vocab)
    names = (args.caches or "fp16,fp16static,pq").split(",")
    allowed = ("fp16", "fp16static", "pq", "pq-tr")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"--caches (eager): unknown {bad}; allowed: {', '.join(allowed)}")
    cb_tr = _transformed(cb, cfg) if "pq-tr" in names else None
    rows = []
    for ctx in [int(c) for c in args.contexts.split(",")]:
        res = {"context": ctx, "shape": args.shape, "layers": args.layers, "bits": args.bits, "mode": "eager"}
        for name in names:
            if name == "fp16":
                cache = DynamicCache(config=cfg)
            elif name == "fp16static":
                cache = StaticCache(config=cfg, max_cache_len=ctx + args.steps + args.warmup + 1)
            else:
                cache = MillionCache(cb_tr if name == "pq-tr" else cb, cfg)
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
        for name in names:  # ratios of each PQ cache to the fp16 caches timed beside it
            for base, key in (("fp16", "speedup"), ("fp16static", "speedup_vs_static")):
                if name.startswith("pq") and base in names:
                    res[key if name == "pq" else f"{name}_{key}"] = res[f"{base}_step_ms"] / res[f"{name}_step_ms"]
        rows.append(res)
        print(f"ctx {ctx:>6}: " + ", ".join(f"{n} {res[f'{n}_step_ms']:.2f} ms/step (mean {res[f'{n}_step_mean_ms']:.2f}, "
                                          f"prefill {res[f'{n}_prefill_s']:.2f} s)" for n in names), flush=True)
    ratios = [(n, base, key if n == "pq" else f"{n}_{key}") for n in names if n.startswith("pq")
              for base, key in (("fp16", "speedup"), ("fp16static", "speedup_vs_static")) if base in names]
    head = [f"{n} ms/step (median)" for n in names] + [f"{n} x {base}" for n, base, _ in ratios]
    print("\n| context | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(head))
    for r in rows:
        cells = [f"{r[f'{n}_step_ms']:.2f}" for n in names] + [f"{r[k]:.2f}x" for _, _, k in ratios]
        print(f"| {r['context']} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


def _transformed(cb, cfg):
    """The same centroids with random well-conditioned key/value transforms and one fp16 sink: the form of the
    default recipe's codebooks (its decode path maps the query, the window and the output)."""
    from million import PQConfig
    from million.codebook import Codebooks

    L, H, D = cfg.num_hidden_layers, cfg.num_key_value_heads, 128
    g = torch.Generator().manual_seed(3)
    A = torch.eye(D) + 0.2 * torch.randn(L, H, D, D, generator=g) / D**0.5
    Bm = torch.eye(D) + 0.2 * torch.randn(L, H, D, D, generator=g) / D**0.5
    tr = {"key": A, "key_inverse": torch.linalg.inv(A), "value": Bm, "value_inverse": torch.linalg.inv(Bm)}
    c = cb.config
    pq = PQConfig(head_dim=D, M=c.M, nbits=c.nbits, residual_length=c.residual_length, granularity=c.granularity, sink_length=1)
    return Codebooks(pq, cb.key_centroids, cb.value_centroids, cb.model, cb.calibration, tr)


def _sdpa_decode_us(B, cfg, T, reps=50):
    """One layer's fp16 decode attention over a T-token static buffer, as StaticCache runs it (a boolean mask over
    the whole buffer) and mask-free over the same keys (the kernel the decode benchmarks compare against)."""
    import torch.nn.functional as F

    H, kv, D = cfg.num_attention_heads, cfg.num_key_value_heads, 128
    q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.float16)
    k = torch.randn(B, kv, T, D, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    mask = torch.ones(B, 1, 1, T, dtype=torch.bool, device="cuda")
    mask[..., -3:] = False
    out = {}
    for name, m in (("sdpa_masked_us", mask), ("sdpa_nomask_us", None)):
        f = lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=kv != H)  # noqa: E731
        for _ in range(3):
            f()
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            f()
        e.record()
        e.synchronize()
        out[name] = s.elapsed_time(e) * 1e3 / reps
    return out


def graph_main(args, model, cfg, cb, vocab):
    names = (args.caches or "fp16static,pq,pq-tr").split(",")
    allowed = ("fp16static", "fp16static-gqa", "pq", "pq-tr", "pq-ev")
    bad = [n for n in names if n not in allowed]
    if bad:
        raise SystemExit(f"--caches: unknown {bad}; allowed: {', '.join(allowed)}")
    cb_tr = _transformed(cb, cfg) if "pq-tr" in names else None
    rows = []
    B = args.batch
    for ctx in [int(c) for c in args.contexts.split(",")]:
        res = {"context": ctx, "batch": B, "shape": args.shape, "layers": args.layers, "bits": args.bits, "steps": args.steps,
               "mode": "graph"}
        for name in names:
            try:
                _graph_row(args, res, name, model, cfg, cb_tr if name == "pq-tr" else cb, vocab, ctx)
            except torch.cuda.OutOfMemoryError as err:  # the row keeps the caches that fit (an fp16 cache may not)
                res[f"{name}_error"] = "out of memory: " + str(err).splitlines()[0][:160]
                torch.cuda.empty_cache()
                print(f"ctx {ctx:>6} B={B} {name:>10}: out of memory, left out of this row", flush=True)
        try:
            res.update(_sdpa_decode_us(B, cfg, ctx + args.warmup + args.steps + 2))
            print(f"ctx {ctx:>6} B={B} SDPA decode, one layer: masked (as StaticCache) {res['sdpa_masked_us']:.1f} us, "
                  f"mask-free {res['sdpa_nomask_us']:.1f} us", flush=True)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f"ctx {ctx:>6} B={B} SDPA decode, one layer: out of memory", flush=True)
        for name in names:
            for base, key in BASELINES:
                if name in FP16 or f"{base}_step_ms" not in res or f"{name}_step_ms" not in res:
                    continue
                res[f"{name}_{key}"] = res[f"{base}_step_ms"] / res[f"{name}_step_ms"]
        rows.append(res)
        _write_json(args.json, rows)  # after every row: a later failure keeps the rows done
    head = " | ".join(f"{n} ms/step" for n in names)
    ratios = [(n, base, key) for base, key in BASELINES if base in names for n in names if n not in FP16]
    print(f"\n| context | B | {head} | " + " | ".join(f"{n} x {base}" for n, base, _ in ratios) + " |")
    print("|---|---|" + "---|" * (len(names) + len(ratios)))
    for r in rows:
        cells = [f"{r[f'{n}_step_ms']:.3f}" if f"{n}_step_ms" in r else "OOM" for n in names]
        cells += [f"{r[f'{n}_{key}']:.2f}x" if f"{n}_{key}" in r else "-" for n, _, key in ratios]
        print(f"| {r['context']} | {r['batch']} | " + " | ".join(cells) + " |")


BASELINES = (("fp16static", "speedup"), ("fp16static-gqa", "speedup_gqa"))  # fp16 caches, key of the ratios to each
FP16 = tuple(base for base, _ in BASELINES)


@contextlib.contextmanager
def sdpa_gqa():
    """transformers' SDPA attention with ``enable_gqa=True`` whatever the mask: each KV head is read once instead of
    being repeated to the query heads (which transformers does on CUDA whenever a mask is given). Patches
    ``transformers.integrations.sdpa_attention.use_gqa_in_sdpa``, looked up at every call, for the ``with`` block."""
    from transformers.integrations import sdpa_attention as sa

    saved = sa.use_gqa_in_sdpa
    sa.use_gqa_in_sdpa = lambda *a, **k: True
    try:
        yield
    finally:
        sa.use_gqa_in_sdpa = saved


def _graph_row(args, res, name, model, cfg, cb, vocab, ctx):
    """One cache's prefill and replayed decode steps at one context, into res (keys ``{name}_...``)."""
    from transformers import StaticCache

    from million import Eviction, MillionCache
    from million.decode import Decoder

    B = args.batch
    n_new = args.warmup + args.steps + 2
    if name in FP16:
        cache = StaticCache(config=cfg, max_cache_len=ctx + n_new)
    else:
        cache = MillionCache(cb, cfg, evict=Eviction(keep=args.keep) if name == "pq-ev" else None)
    ids = torch.randint(0, vocab, (B, ctx), device="cuda")
    dec = Decoder(model, cache, graph=True)
    gqa = sdpa_gqa() if name == "fp16static-gqa" else contextlib.nullcontext()  # prefill, capture and replays
    try:
        with gqa:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dec.prefill(ids, max_new_tokens=n_new)
            torch.cuda.synchronize()
            res[f"{name}_prefill_s"] = time.perf_counter() - t0
            tok = torch.randint(0, vocab, (B,), device="cuda")
            for _ in range(args.warmup):  # eager warm-up steps, then the capture
                dec.step(tok)
            torch.cuda.synchronize()
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            s.record()
            for _ in range(args.steps):
                dec.step(tok)
            e.record()
            e.synchronize()
            res[f"{name}_step_ms"] = s.elapsed_time(e) / args.steps
            res[f"{name}_host_ms"] = (time.perf_counter() - t0) * 1e3 / args.steps
            res[f"{name}_graph"] = dec._graph is not None
            if name not in FP16:
                res[f"{name}_kv_bytes"] = cache.kv_bytes()
    finally:
        del cache, dec
        torch.cuda.empty_cache()
    print(f"ctx {ctx:>6} B={B} {name:>10}: {res[f'{name}_step_ms']:.3f} ms/step (graph {res[f'{name}_graph']}), "
          f"prefill {res[f'{name}_prefill_s']:.2f} s", flush=True)


def _write_json(path, rows):
    if path:
        with open(path, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
