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


def _score_queued_all_einsum(ls: list) -> None:
    """The scoring of committed decode queries before it became one attention_column_sums launch (commit 4765261):
    decoded keys, then ``exp(scale q.k - lse)`` as a float32 ``[layers, B, H, G, queries, keys]`` tensor, masked
    and summed. Kept here as the same-run reference of ``--score einsum``."""
    from million import ops

    def _layer_groups(n_layers: int, per_layer: int, budget: int = 1 << 29) -> list[range]:
        g = max(1, min(n_layers, budget // max(1, per_layer)))
        return [range(i, min(n_layers, i + g)) for i in range(0, n_layers, g)]

    l0 = ls[0]
    j0, j1 = l0._scored, l0.res_len
    for l in ls:
        l._scored = j1
    if j1 <= j0 or any(l._qbuf is None for l in ls):
        return
    B, Hq, _, D = l0._qbuf.shape
    H, P, dev = l0.num_heads, l0.pq_len, l0._qbuf.device
    G, n = Hq // H, j1 - j0
    cdt = l0.dtype
    qpos = torch.arange(j0, j1, device=dev)[None, None, :, None]
    cs = l0.code_starts.long()[None, :, None, None]
    slot = torch.arange(P + j1, device=dev)
    seen = torch.where(slot < P, slot >= cs, slot - P <= qpos)
    for grp in _layer_groups(len(ls), (B * H * (P + j1) * D + B * Hq * n * (P + j1) * 2) * 4):
        gl = [ls[i] for i in grp]
        q = torch.stack([l._qbuf[:, :, j0:j1] for l in gl]).view(len(gl), B, H, G, n, D)
        lse = torch.stack([l._lbuf[:, :, j0:j1] for l in gl]).view(len(gl), B, H, G, n, 1)
        if l0.transforms is not None:
            q = torch.einsum("lbhgnd,lhde->lbhgne", q.float(), torch.stack([l.transforms[4] for l in gl]))
        keys = torch.empty(len(gl), B, H, P + j1, D, dtype=cdt, device=dev)
        if P:
            codes = torch.stack([l.k_codes[:, :, :P] for l in gl])
            keys[:, :, :, :P] = ops.pq_decode(codes.transpose(0, 1).reshape(B, -1, P, codes.shape[-1]),
                                              torch.cat([l.k_centroids.expand(H, *l.k_centroids.shape[1:])
                                                         for l in gl]).to(cdt), cdt
                                              ).view(B, len(gl), H, P, D).transpose(0, 1)
        win = [l.k_window_t if l.transforms is not None else l.k_window for l in gl]
        keys[:, :, :, P:] = torch.stack([w[:, :, :j1] for w in win])
        p = torch.einsum("lbhgnd,lbhtd->lbhgnt", q.to(cdt), keys).float().mul_(l0._scale).sub_(lse).exp_()
        tok = p.mul_(seen[:, :, None, None]).nan_to_num_(0.0).sum((3, 4))
        for i, l in enumerate(gl):
            l.score[:, :, :P] += tok[i, :, :, :P]
            l._wscore[:, :, :j1] += tok[i, :, :, P:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--context", type=int, default=32768)
    ap.add_argument("--keep", type=float, default=0.4)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--residual", type=int, default=128)
    ap.add_argument("--json", default=None)
    ap.add_argument("--torch-profile", action="store_true", help="also run torch.profiler over one commit step")
    ap.add_argument("--score", choices=("kernel", "einsum"), default="kernel",
                    help="how committed decode queries are scored: the library's (one attention_column_sums launch "
                         "per group of layers) or the earlier einsum over a materialized [heads, queries, keys] tensor")
    ap.add_argument("--prefill", choices=("cudnn", "flash", "sdpa"), default="cudnn",
                    help="the prefill's attention: torch's cuDNN kernel (flash as the fallback) with its log-sum-exp, "
                         "the library's route, so the scores need only the column pass; 'flash': the flash kernel "
                         "only; 'sdpa': transformers' SDPA with both passes of the scores")
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

    import million.attention
    import million.cache as mc

    million.attention.LSE_PREFILL = args.prefill != "sdpa"
    if args.prefill == "flash":
        million.attention.PREFILL_KERNELS = ("flash",)

    if args.score == "einsum":
        mc._score_queued_all = _score_queued_all_einsum
    for name in ("_score_queued_all", "_evict_all"):  # what the batched commit of static steps calls
        fn = getattr(mc, name)

        def wrapper(ls, fn=fn, name=name):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn(ls)
            torch.cuda.synchronize()
            spent[name] += time.perf_counter() - t0
            calls[name] += 1

        setattr(mc, name, wrapper)
    commit_all = MillionCache._commit_all

    def commit_all_timed(self):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        commit_all(self)
        torch.cuda.synchronize()
        spent["_commit_all"] += time.perf_counter() - t0
        calls["_commit_all"] += 1

    MillionCache._commit_all = commit_all_timed

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
    # warm-up through one commit, so that no first-call compilation (Triton) is timed
    R = args.residual
    committed = False
    while not committed:
        committed = cache.layers[0].res_len + 1 > 2 * R
        dec.step(tok)
    for _ in range(8):
        dec.step(tok)
    spent.clear()
    calls.clear()
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
        "score": args.score, "prefill": args.prefill,
        "layers": args.layers, "steps": args.steps, "prefill_s": prefill_s,
        "prefill_parts_s": prefill_parts, "kept_codes": layer.pq_len - layer._cs[0], "positions": layer.pq_pos,
        "step_ms_median": statistics.median(plain), "commit_steps": len(commit),
        "commit_step_ms_mean": statistics.mean(commit) if commit else None,
        "commit_step_ms": commit,
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
