"""What encoding costs a long prefill, end to end: a 7B-shaped LLaMA (random weights, fp16, on the GPU) prefills
``--context`` tokens with no cache, with transformers' DynamicCache (fp16) and with MillionCache (which encodes each
layer's K and V as the layer runs). The cost of the codes is the MillionCache prefill's time over the cache-free
prefill's and over the DynamicCache prefill's, measured in the same process, rounds interleaved; the serialized encode
(``ops.pq_encode`` of every layer's K and V at that length, CUDA events) is timed too, as ``bench_encode.py`` counts
it.

Speed does not depend on weight or centroid values, so both are random (``granularity="layer_head"``, as the
default recipe stores them). Every variant's first prefill is untimed (kernel set-up; at 4 bits the encode's grid
lists are built then, about a minute for the 64 centroid tensors).

    PYTHONPATH=src python benchmarks/bench_prefill_encode.py --context 32768 --bits 2,4 --rounds 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

VARIANTS = ("nocache", "dynamic", "pq")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--bits", default="2,4", help="comma-separated bit widths (4: M = d/2, 2: M = d/4; 8-bit codes)")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="timed prefills per variant, interleaved")
    ap.add_argument("--residual", type=int, default=128)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    bits = [float(b) for b in args.bits.split(",")]
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if not torch.cuda.is_available():
        raise SystemExit("bench_prefill_encode.py needs a CUDA GPU")

    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    import million
    from million import MillionCache, PQConfig, ops
    from million.codebook import Codebooks, model_identity
    from million.compat import cache_arg

    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=32, head_dim=128,
                      max_position_embeddings=max(4096, args.context + 16))
    million.register()
    cfg._attn_implementation = "million"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    T = args.context
    ids = torch.randint(0, cfg.vocab_size, (1, T), device="cuda")
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, context=T, layers=args.layers,
                residual=args.residual, rounds=args.rounds, date=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    print(json.dumps(meta), flush=True)
    results = []
    for b in bits:
        pq = PQConfig.from_bits(128, b, nbits=8, residual_length=args.residual, granularity="layer_head")
        gen = torch.Generator(device="cuda").manual_seed(0)
        shape = (args.layers, 32, pq.M, pq.ksub, pq.dsub)
        cb = Codebooks(pq, torch.randn(shape, device="cuda", generator=gen), torch.randn(shape, device="cuda", generator=gen),
                       model_identity(cfg))

        def prefill(name):
            if name == "nocache":
                kw, use = {}, False
            elif name == "dynamic":
                kw, use = cache_arg(model, DynamicCache(config=cfg)), True
            else:
                kw, use = cache_arg(model, MillionCache(cb, cfg)), True
            with torch.no_grad():
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(input_ids=ids, use_cache=use, logits_to_keep=1, **kw)
                torch.cuda.synchronize()
                t = time.perf_counter() - t0
            del kw
            torch.cuda.empty_cache()
            return t

        times = {v: [] for v in variants}
        for v in variants:  # untimed: set-up (grid lists of the 4-bit encode, libraries)
            t = prefill(v)
            print(f"bits {b:g} {v}: warm-up {t * 1e3:.0f} ms", flush=True)
        for r in range(args.rounds):
            for v in variants:
                times[v].append(prefill(v))
            print(f"bits {b:g} round {r}: " + ", ".join(f"{v} {times[v][-1] * 1e3:.0f} ms" for v in variants), flush=True)

        # the serialized encode of every layer's K and V at this length (the share bench_encode.py reports)
        x = torch.randn(1, 32, T, 128, device="cuda", dtype=torch.float16)
        # the caches' own device centroids (K and V of every layer), whose encode tables the warm-up built
        cents = list(cb.__dict__.get("_placed", {}).values())  # empty when no MillionCache variant ran
        for c in cents:
            ops.pq_encode(x, c)
        enc = []
        for _ in range(3):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            for c in cents:
                ops.pq_encode(x, c)
            e.record()
            e.synchronize()
            enc.append(s.elapsed_time(e) / 1e3)
        ncent = len(cents)
        del x, cents

        med = {v: statistics.median(times[v]) for v in variants}
        row = dict(bits=b, M=pq.M, times_s=times, median_s=med, encode_all_layers_s=statistics.median(enc) if ncent else None,
                   encode_all_layers_runs_s=enc, centroid_tensors=ncent)
        base = med.get("nocache")
        if base and ncent:
            row["encode_share_serialized"] = row["encode_all_layers_s"] / base
            for v in variants:
                row[f"{v}_over_nocache"] = med[v] / base - 1
        if "dynamic" in med:
            if "pq" in med:
                row["pq_over_dynamic"] = med["pq"] / med["dynamic"] - 1
        results.append(row)

    print(f"\n{T}-token prefill, {args.layers} layers, median of {args.rounds} (ms); cost = time over the cache-free prefill")
    print("| bits | " + " | ".join(variants) + " | encode alone (all layers, K+V) | PQ over no cache | PQ over DynamicCache |")
    print("|---|" + "---|" * len(variants) + "---|---|---|")
    for r in results:
        med = r["median_s"]
        cells = " | ".join(f"{med[v] * 1e3:.0f}" for v in variants)
        enc = (f"{r['encode_all_layers_s'] * 1e3:.0f} ({100 * r.get('encode_share_serialized', float('nan')):.1f}%)"
               if r["encode_all_layers_s"] else "-")
        pct = lambda key: f"{100 * r[key]:+.1f}%" if key in r else "-"
        print(f"| {r['bits']:g} | {cells} | {enc} | {pct('pq_over_nocache')} | {pct('pq_over_dynamic')} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, rows=results), f, indent=2)


if __name__ == "__main__":
    main()
