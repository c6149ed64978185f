"""Where the time of MillionCache's eviction goes on a 7B-shaped model (random weights, fp16, CUDA graph decode loop):
the prefill's scoring (``observe_dense``), and per committed block the scoring of the queued decode queries
(``_score_queued``), the eviction itself (``_evict``) and the rest of the commit, each timed with a device
synchronization around it (so the numbers are upper bounds of what they cost inside the loop), next to the median
replayed step without a commit.

    PYTHONPATH=src python benchmarks/profile_evict.py --context 32768 --keep 0.4 --steps 256 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--keep", type=float, default=0.4)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--residual", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--torch-profile", action="store_true", help="also run torch.profiler over one commit step")
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    import million
    from million import Eviction, MillionCache, PQConfig
    from million.cache import MillionLayer
    from million.codebook import Codebooks, model_identity
    from million.decode import Decoder

    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=args.layers,
                      num_attention_heads=32, num_key_value_heads=32, head_dim=128, max_position_embeddings=131072)
    million.register()
    cfg._attn_implementation = "million"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.float16).eval()
    pq = PQConfig.from_bits(128, 4, nbits=8, residual_length=args.residual, granularity="layer_head")
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (args.layers, 32, pq.M, pq.ksub, pq.dsub)
    cb = Codebooks(pq, torch.randn(shape, device="cuda", generator=gen), torch.randn(shape, device="cuda", generator=gen),
                   model_identity(cfg))

    spent = defaultdict(float)
    calls = defaultdict(int)

    def timed(name):
        fn = getattr(MillionLayer, name)

        def wrapper(self, *a, **k):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn(self, *a, **k)
            torch.cuda.synchronize()
            spent[name] += time.perf_counter() - t0
            calls[name] += 1
            return out

        setattr(MillionLayer, name, wrapper)

    for name in ("observe_dense", "_score_queued", "_evict", "_commit_pending"):
        timed(name)

    cache = MillionCache(cb, cfg, evict=Eviction(keep=args.keep))
    dec = Decoder(model, cache, graph=True)
    ids = torch.randint(0, 32000, (1, args.context), device="cuda")
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    dec.prefill(ids, max_new_tokens=args.steps + 16)
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t0
    prefill_parts = {k: spent[k] for k in spent}
    spent.clear()
    calls.clear()
    tok = torch.randint(0, 32000, (1,), device="cuda")
    for _ in range(8):
        dec.step(tok)
    spent.clear()
    calls.clear()
    R = args.residual
    plain, commit = [], []
    for _ in range(args.steps):
        will_commit = cache.layers[0].res_len + 1 > 2 * R
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        dec.step(tok)
        torch.cuda.synchronize()
        (commit if will_commit else plain).append((time.perf_counter() - t0) * 1e3)
    n_commits = max(1, len(commit))
    if args.torch_profile:
        from torch.profiler import ProfilerActivity, profile

        while cache.layers[0].res_len + 1 <= 2 * R:
            dec.step(tok)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            dec.step(tok)
            torch.cuda.synchronize()
        ka = prof.key_averages()
        print(ka.table(sort_by="cuda_time_total", row_limit=18))
        print(ka.table(sort_by="self_cpu_time_total", row_limit=18))
    layer = cache.layers[0]
    res = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__, "context": args.context, "keep": args.keep,
        "layers": args.layers, "steps": args.steps, "prefill_s": prefill_s,
        "prefill_parts_s": prefill_parts, "kept_codes": layer.pq_len - layer._cs[0], "positions": layer.pq_pos,
        "step_ms_median": statistics.median(plain), "commit_steps": len(commit),
        "commit_step_ms_mean": statistics.mean(commit) if commit else None,
        "per_commit_ms": {k: v * 1e3 / n_commits for k, v in spent.items()},
        "amortized_commit_ms_per_step": (statistics.mean(commit) - statistics.median(plain)) * len(commit) / args.steps
        if commit else 0.0,
    }
    print(f"prefill {prefill_s:.2f} s (scoring {prefill_parts.get('observe_dense', 0):.2f} s, eviction "
          f"{prefill_parts.get('_evict', 0):.3f} s); kept {res['kept_codes']} of {res['positions']} code positions")
    print(f"step (no commit) median {res['step_ms_median']:.3f} ms; commit steps {len(commit)}, mean "
          f"{res['commit_step_ms_mean']} ms; per commit, summed over layers (synchronized): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in res["per_commit_ms"].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
