"""End-to-end codebook tuning (million.finetune) measured on SmolLM2-135M: all-quantized perplexity
before and after, same codebooks, same scoring windows, fp16 in the same run.

    python benchmarks/quality_finetune.py --recipe served --bits 4 --out runs/ft/served4.json
    python benchmarks/quality_finetune.py --recipe best --bits 2 --steps 200 --device cuda --out ft.json

Calibration (k-means) uses the first ``--calib-tokens`` SQuAD tokens in ``--calib-window`` windows;
tuning uses windows of ``--ft-window`` tokens cut from the SQuAD tokens before 65,536 (the scoring
windows start at 65,536, as in ``bench_quality.py``); the essays are another domain, never trained on.
Prints a table and writes JSON (and the tuned codebooks with ``--save DIR``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", choices=["served", "best"], default="served",
                    help="served: layer_head + metric + 1 sink (what MillionCache serves); best: + PCA water-filled keys")
    ap.add_argument("--bits", type=int, choices=[4, 2], default=4)
    ap.add_argument("--rotation", choices=["none", "balanced", "balanced_k"], default="none",
                    help="served recipe: also the balanced PCA rotation (million calibrate --rotation; default none)")
    ap.add_argument("--samples", type=int, default=None, help="k-means samples per codebook (recipe default if omitted)")
    ap.add_argument("--iters", type=int, default=None, help="k-means iterations (recipe default if omitted)")
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--calib-window", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--objective", choices=["kl", "ce"], default="kl")
    ap.add_argument("--tune", choices=["kv", "k", "v"], default="kv")
    ap.add_argument("--schedule", choices=["cosine", "constant"], default="cosine")
    ap.add_argument("--configs", default=None,
                    help="several tunings from the same k-means codebooks, ';'-separated, each 'key=value,...' over "
                         "steps, lr, objective, tune, schedule (e.g. 'lr=2e-3,steps=200;lr=5e-3,steps=200'); 'none': k-means only; "
                         "default: the flags above")
    ap.add_argument("--time-budget", type=float, default=0, help="skip configs that would start after this many seconds")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--ft-window", type=int, default=1024)
    ap.add_argument("--ft-tokens", type=int, default=65536, help="tuning windows come from SQuAD tokens [0, this)")
    ap.add_argument("--squad-windows", type=int, default=2)
    ap.add_argument("--essays-windows", type=int, default=0)
    ap.add_argument("--window", type=int, default=2048, help="scoring window")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--needle-contexts", default="", help="also score needle retrieval (essays, --needle-protocol) at these "
                    "contexts, e.g. 1024,2048 (default: none)")
    ap.add_argument("--needle-protocol", choices=["all-quantized", "deployed"], default="all-quantized",
                    help="deployed: decode with the real caches (DynamicCache for fp16, MillionCache for PQ; needs the served "
                         "recipe) (default all-quantized)")
    ap.add_argument("--needle-depths", default="0.05,0.15,0.25,0.35,0.45,0.55,0.65,0.75,0.85,0.95")
    ap.add_argument("--save", default=None, help="save the tuned codebooks (PQ variant directory) here")
    ap.add_argument("--out", required=True, help="JSON output")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.ft_tokens > 65536:
        ap.error(f"--ft-tokens {a.ft_tokens} would overlap the SQuAD scoring windows (from token 65536); allowed: <= 65536")

    from million.data import load_text
    from million.eval.calibdata import load_or_collect
    from million.eval.methods import FP16, PQMethod, best_variant
    from million.eval.ppl import SQUAD_OFFSET, perplexity
    from million.finetune import finetune_codebooks
    from million.models import load_model
    from million.pq_variants import PQVariant, train_variant

    t_all = time.time()
    defaults = dict(steps=a.steps, lr=a.lr, objective=a.objective, tune=a.tune, schedule=a.schedule)
    configs = [defaults]
    if a.configs == "none":
        configs = []
    elif a.configs:
        configs = []
        for part in a.configs.split(";"):
            c = dict(defaults)
            for kv in filter(None, part.split(",")):
                k, _, val = kv.partition("=")
                if k not in c:
                    ap.error(f"--configs: unknown key {k!r}; allowed: {sorted(c)}")
                c[k] = type(c[k])(val)
            configs.append(c)
    model, tok = load_model(a.model, device=a.device)
    dsub = {4: 2, 2: 4}[a.bits]
    if a.rotation != "none" and a.recipe != "served":
        ap.error(f"--rotation {a.rotation} applies to --recipe served (the best recipe has its own key rotation)")
    if a.recipe == "served":
        v = PQVariant(k_nbits=8, k_dsub=dsub, v_nbits=8, v_dsub=dsub, granularity="layer_head", transform="metric", sinks=1,
                      samples=16384, iters=16, alloc="uniform" if a.rotation == "none" else a.rotation)
    else:
        v = best_variant(a.bits)
    v = PQVariant.from_dict({**v.to_dict(), **({"samples": a.samples} if a.samples else {}),
                             **({"iters": a.iters} if a.iters else {})})
    calib = load_or_collect(model, tok, "squad", tokens=a.calib_tokens, window=a.calib_window, model_name="smollm2",
                            progress=True, attention=False)
    t0 = time.time()
    cb = train_variant(calib, v, device=a.device if a.device != "cpu" else None)
    t_train = time.time() - t0
    print(f"k-means: {t_train:.0f} s", flush=True)
    del calib

    texts = {}
    squad = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    if a.squad_windows:
        texts["squad"] = (squad, SQUAD_OFFSET, a.squad_windows)
    if a.essays_windows:
        essays = tok(load_text("essays"), return_tensors="pt", add_special_tokens=False).input_ids[0]
        texts["essays"] = (essays, 0, a.essays_windows)

    ncontexts = [int(x) for x in a.needle_contexts.split(",") if x]
    ndepths = [float(x) for x in a.needle_depths.split(",") if x]
    hay = None
    if ncontexts:
        from million.eval.needle import needle_eval

        hay = tok(load_text("essays")[: 60 * max(ncontexts)], return_tensors="pt", add_special_tokens=False).input_ids[0]

    def score(method):
        out = {}
        if hay is not None:
            runner, attn = None, model.config._attn_implementation
            if a.needle_protocol == "deployed":  # decode with the real caches: DynamicCache / MillionCache
                from transformers import DynamicCache

                from million.cache import MillionCache
                from million.eval.runners import CacheRunner
                from million.pq_variants import to_codebooks

                if getattr(method, "cb", None) is None:
                    runner = CacheRunner(model, lambda: DynamicCache(config=model.config))
                else:
                    import million

                    million.register()  # MillionCache decodes through the 'million' attention function
                    model.set_attn_implementation("million")
                    served = to_codebooks(method.cb, model.config)
                    runner = CacheRunner(model, lambda: MillionCache(served, model.config))
            r = needle_eval(model, tok, method, hay, ncontexts, ndepths, a.needle_protocol, 10, runner=runner)
            model.set_attn_implementation(attn)  # perplexity below runs as before
            out["needle"] = {**{k: r[k] for k in ("accuracy", "accuracy_by_context")}, "protocol": a.needle_protocol}
            print(f"  {method.label:>14}  needle: {r['accuracy']:.3f} {r['accuracy_by_context']}", flush=True)
        for name, (ids, off, n) in texts.items():
            r = perplexity(model, ids, method, window=a.window, max_windows=n, offset=off, text_name=name)
            out[name] = {k: r[k] for k in ("ppl", "nll", "tokens", "windows", "bits_per_element", "bits_per_element_32k")}
            print(f"  {method.label:>14} {name:>7}: ppl {r['ppl']:.4f}", flush=True)
        return out

    res = {"fp16": score(FP16(16))}
    pq = PQMethod(a.bits, v, label=f"pq-{a.bits}-{a.recipe}")
    pq.cb = cb
    res["kmeans"] = score(pq)

    ft_ids = squad[: a.ft_tokens]
    wins = [ft_ids[i : i + a.ft_window][None] for i in range(0, ft_ids.numel() - a.ft_window + 1, a.ft_window)]
    g = torch.Generator().manual_seed(0)
    wins = [wins[int(j)] for j in torch.randperm(len(wins), generator=g)]
    out = {"args": vars(a), "variant": v.to_dict(), "kmeans_seconds": t_train, "results": res, "tunings": [],
           "torch": torch.__version__, "device": str(a.device),
           "machine": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu",
           "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:]))}

    def write():
        out["date_utc"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        out["seconds"] = time.time() - t_all
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")

    write()
    base = copy.deepcopy(cb)
    for i, c in enumerate(configs):
        if a.time_budget and time.time() - t_all > a.time_budget:
            print(f"time budget reached: skipping {c}", flush=True)
            continue
        cbi = copy.deepcopy(base)
        hist = finetune_codebooks(cbi, model, wins, progress=True, **c)
        print(f"tuning {c}: {hist['seconds']:.0f} s, loss {hist['loss_first']:.4g} -> {hist['loss_last']:.4g}", flush=True)
        m = PQMethod(a.bits, v, label=f"pq-{a.bits}-{a.recipe}-ft{i}")
        m.cb = cbi
        out["tunings"].append({"config": c, "finetune": hist, "results": score(m)})
        if a.save:
            cbi.save(Path(a.save) / f"ft{i}")
        write()

    print(f"\n{'text':>7} {'codebooks':>40} {'ppl':>9} {'dppl %':>8} {'bits@32K':>8}")
    if hay is not None:
        for label, r in [("fp16", res["fp16"]), ("k-means", res["kmeans"])] + [(str(t["config"]), t["results"]) for t in out["tunings"]]:
            print(f" needle {label:>40} {r['needle']['accuracy']:9.3f} {r['needle']['accuracy_by_context']}")
    for name in texts:
        f = res["fp16"][name]["ppl"]
        rows = [("k-means", res["kmeans"][name])] + [(str(t["config"]), t["results"][name]) for t in out["tunings"]]
        for label, r in rows:
            print(f"{name:>7} {label:>40} {r['ppl']:9.4f} {100 * (r['ppl'] / f - 1):+8.3f} {r['bits_per_element_32k']:8.3f}")


if __name__ == "__main__":
    main()
