"""PQ encoding speed: throughput of the encode kernels (CUDA C++ and Triton), and its cost when a 32K-token prefill of
a LLaMA-2-7B-shaped model encodes K and V of all 32 layers, against that prefill's own time.

The 7B-shaped model has RANDOM weights (speed does not depend on weight values), is built directly on
the GPU in fp16 and runs the prefill with ``attn_implementation="sdpa"``, ``use_cache=False`` and
``logits_to_keep=1`` (what generation needs). Timings are CUDA-event medians after warm-up.

    PYTHONPATH=src python benchmarks/bench_encode.py --out encode.json
    PYTHONPATH=src python benchmarks/bench_encode.py --no-prefill --variants '[{"kernel":"tc"},{"kernel":"v2","BT":1024,"num_warps":8}]'

``--variants`` entries: ``{"kernel": "cuda", "kind": "pruned" | "mma" | "brute", "chunks": n, "opt": 0|1}`` runs
the CUDA C++ kernel (``million.ops.cuda_encode``); other entries are keyword overrides of the Triton
``pq_encode_launch``: ``kernel`` ("v2", "v3", "tc", "triton-cuda" = Triton's fp32 block kernel),
``BT``, ``KB``, ``MB``, ``num_warps``; ``{}`` (always first) is the default dispatch
(``million.ops.pq_encode``: the CUDA kernel where supported). Without a prefill run (``--no-prefill``)
the share is computed against ``--prefill-ms`` (default: the 1425 ms measured on the H100). At the end it prints a
table of every timed variant with its ratio to the default dispatch in the same run; the JSON (``--out``) holds the
same rows (``rows``) and the best variant per (bits, codebook heads) (``encode``).

    PYTHONPATH=src python benchmarks/bench_encode.py --no-prefill --variants '[{"kernel":"cuda","kind":"brute"},{"kernel":"v2"}]'
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def cuda_time(fn, warmup: int = 2, iters: int = 5) -> float:
    """Median seconds of ``fn()`` measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        ts.append(a.elapsed_time(b) * 1e-3)
    return statistics.median(ts)


_KIND_DSUB = {"pruned": 2, "mma": 4}


def run_variant(x: torch.Tensor, c: torch.Tensor, v: dict) -> torch.Tensor:
    """Encode ``x [B, H, T, D]`` with ``c [Hc, M, ksub, dsub]`` by the kernel variant ``v`` (see module doc)."""
    v = dict(v)
    if not v:
        from million.ops import pq_encode

        return pq_encode(x, c)
    if v.get("kernel") == "cuda":
        from million.ops import cuda_encode

        return cuda_encode.pq_encode(x, c, kind=v.get("kind"), chunks=v.get("chunks"), opt=v.get("opt", 0))
    from million.ops.triton_encode import pq_encode_launch

    if v.get("kernel") == "triton-cuda":
        v["kernel"] = "cuda"
    return pq_encode_launch(x, c, **v)


def check_encode(gen) -> dict:
    """Default dispatch vs naive on a random fp16 input: fraction of equal codes, worst distance gap."""
    from million.ops import naive
    from million.ops import pq_encode as pq_encode_launch

    x = torch.randn(2, 4, 999, 128, device="cuda", dtype=torch.float16, generator=gen)
    out = {}
    for M, ksub in ((64, 256), (32, 256), (64, 1024)):
        c = torch.randn(4, M, ksub, 128 // M, device="cuda", generator=gen)
        ref = naive.pq_encode(x, c)
        got = pq_encode_launch(x, c)
        dec_ref = naive.pq_decode(ref, c)
        dec_got = naive.pq_decode(got, c)
        xs = x.float().view(2, 4, 999, M, -1)
        d_ref = ((xs - dec_ref.view_as(xs)) ** 2).sum(-1)
        d_got = ((xs - dec_got.view_as(xs)) ** 2).sum(-1)
        out[f"M{M}_k{ksub}"] = dict(match=(got == ref).float().mean().item(),
                                   max_excess_dist=(d_got - d_ref).max().item())
    return out


def summary_table(rows: list[dict], T: int, H: int, D: int, prefill_ms: float) -> str:
    """Markdown table of every timed variant: ms per ``[1, H, T, D]`` tensor, the ratio to the default dispatch's
    time in the same run (``{}``, the first variant of each row group) and the share of a ``prefill_ms`` prefill."""
    out = [f"\nencode, ms per [1,{H},{T},{D}] tensor; x default = the default dispatch's time / this one's (same run); "
           f"share = all layers, K and V, of a {prefill_ms:.0f} ms prefill",
           "| bits | Hc | variant | ms | x default | share |", "|---|---|---|---|---|---|"]
    base = {}
    for r in rows:
        key = (r["bits"], r["Hc"])
        if not r["variant"]:
            base[key] = r["ms"]
        ratio = f"{base[key] / r['ms']:.2f}x" if key in base else "-"
        name = json.dumps(r["variant"], sort_keys=True) if r["variant"] else "default"
        out.append(f"| {r['bits']} | {r['Hc']} | {name} | {r['ms']:.3f} | {ratio} | {100 * r['share_of_prefill']:.1f}% |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--variants", default="", help="JSON list of encode launch overrides (kernel, BT, KB, MB, num_warps)")
    ap.add_argument("--no-prefill", action="store_true")
    ap.add_argument("--prefill-ms", type=float, default=1425.0, help="prefill time for the share when --no-prefill")
    ap.add_argument("--out", default="bench_encode.json")
    args = ap.parse_args(argv)

    import triton

    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    meta = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                date=time.strftime("%Y-%m-%d %H:%M:%S %Z"), argv=sys.argv)
    print(f"# {meta['device']}  torch {meta['torch']}  triton {meta['triton']}", flush=True)
    checks = check_encode(gen)
    print("check", json.dumps(checks), flush=True)

    T, H, D = args.tokens, args.heads, args.head_dim
    x = torch.randn(1, H, T, D, device="cuda", dtype=torch.float16, generator=gen)
    variants = [{}] + (json.loads(args.variants) if args.variants else [])
    enc = {}
    rows = []  # every timed (bits, Hc, variant): the summary table and the JSON's "rows"
    for bits, M in ((4, D // 2), (2, D // 4)):
        for Hc in (1, H):
            c = torch.randn(Hc, M, 256, D // M, device="cuda", dtype=torch.float16, generator=gen)
            best = None
            for v in variants:
                if v.get("kind") in _KIND_DSUB and _KIND_DSUB[v["kind"]] != D // M:
                    continue  # a CUDA kernel for the other subspace size (pruned: dsub 2, mma: dsub 4)
                try:
                    t = cuda_time(lambda: run_variant(x, c, v), warmup=2, iters=5)
                except Exception as e:
                    print(f"  {bits}b Hc={Hc} {v}: {type(e).__name__}: {str(e)[:150]}", flush=True)
                    continue
                share = 2 * args.layers * t / (args.prefill_ms * 1e-3)
                rows.append(dict(bits=bits, M=M, Hc=Hc, variant=v, ms=t * 1e3, share_of_prefill=share))
                print(f"encode {bits}b M={M} Hc={Hc} {v}: {t * 1e3:.3f} ms per [1,{H},{T},{D}] tensor, "
                      f"{T / t / 1e6:.2f} M tokens/s ({T * H / t / 1e6:.1f} M token-heads/s); all layers K+V "
                      f"{100 * share:.1f}% of a {args.prefill_ms:.0f} ms prefill", flush=True)
                if best is None or t < best[0]:
                    best = (t, v)
            enc[f"{bits}b_Hc{Hc}"] = dict(seconds=best[0], config=best[1], tokens_per_s=T / best[0],
                                          all_layers_kv_seconds=2 * args.layers * best[0])
    for v in enc.values():
        v["fraction_of_prefill_ms"] = v["all_layers_kv_seconds"] / (args.prefill_ms * 1e-3)
    result = dict(meta=meta, checks=checks, encode=enc, rows=rows, prefill_ms_reference=args.prefill_ms)
    print(summary_table(rows, T, H, D, args.prefill_ms), flush=True)

    if not args.no_prefill:
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers,
                          num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                          max_position_embeddings=max(4096, T), attn_implementation="sdpa")
        torch.set_default_dtype(torch.float16)
        with torch.device("cuda"):
            model = LlamaForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        model.eval()
        ids = torch.randint(0, 32000, (1, T), device="cuda", generator=gen)
        with torch.no_grad():
            model(ids[:, :1024], use_cache=False, logits_to_keep=1)
            try:
                t_pre = cuda_time(lambda: model(ids, use_cache=False, logits_to_keep=1), warmup=1, iters=3)
                prefill = dict(tokens=T, seconds=t_pre, tokens_per_s=T / t_pre)
            except torch.OutOfMemoryError as e:
                prefill = dict(tokens=T, error="OOM: " + str(e)[:200])
        print("prefill (random-weight LLaMA-2-7B shape, fp16, sdpa):", json.dumps(prefill), flush=True)
        result["prefill"] = prefill
        if "seconds" in prefill:
            for k, v in enc.items():
                v["fraction_of_prefill"] = v["all_layers_kv_seconds"] / prefill["seconds"]
                print(f"encode {k}: all {args.layers} layers K+V {v['all_layers_kv_seconds'] * 1e3:.1f} ms = "
                      f"{100 * v['fraction_of_prefill']:.1f}% of the {T}-token prefill ({prefill['seconds'] * 1e3:.0f} ms)")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
