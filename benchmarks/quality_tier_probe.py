"""Probe: two precisions among the tokens that 2-bit PQ eviction keeps, at the same bits per element.

Question: the needles that ``pqsparse`` misses at 2.00 bits/element are kept and read wrong (digits of the number
decoded wrong from their 4-bit PQ codes), not evicted. Does storing the strongest kept tokens at a higher precision
(uniform int8 per token in groups of 32 with an fp16 scale and zero point, or full precision) fix them, when the
bits it costs are paid for by keeping fewer tokens?

The tier is ``pqsparse``'s ``high`` option (``million eval --method pqsparse --high-share F``, :class:`million.eval.qhitter.PQHitter`).
A kept token is ``low`` (its PQ code) or ``high``. The tier is chosen when the token enters the cache
(its original K/V are at hand then, as at a prefill whose observation window scores the prompt before storing it):
after each step's selection the ``hi`` share of the tokens seen so far goes to the strongest kept tokens by score
(``--hi-by score``) or by pooled score (``--hi-by pooled``) among those that are high already or new in this step. A
high token can later be demoted to its low code; a low one is never promoted (its original is gone). Attention in a
step sees the tiers chosen in that step. Bits per element: ``keep * (code bits + score + tier flag) + hi * (high bits
- code bits)`` equals the target (the flag: one bit per kept token and head for K and V).

    python benchmarks/quality_tier_probe.py --codebooks runs/cb4-default --hi 0,0.02 --needles 1024:0.25:0 --out runs/tier

Evaluation-only (all-quantized protocol of ``million eval``); one model load; a table and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from million.eval.qhitter import PQHitter  # noqa: E402

DEPTHS = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--codebooks", required=True)
    ap.add_argument("--bits", type=float, default=1.83, help="nominal bits (default 1.83 = 2.00 at 32K with 4-bit codebooks)")
    ap.add_argument("--setting", default="0.2:15:after:32:0.15", help="recent:pool:side:observe:pool_share")
    ap.add_argument("--hi", default="0,0.02", help="comma-separated shares of the tokens seen kept in the high tier")
    ap.add_argument("--hi-bits", type=int, default=8, choices=(8, 16))
    ap.add_argument("--hi-by", default="score", choices=("score", "pooled"))
    ap.add_argument("--needles", default="", help="context:depth:seed,... (default: none)")
    ap.add_argument("--needle-sets", default="", help="seeds of whole 10-depth x 1K-8K sets, e.g. 0,1")
    ap.add_argument("--ppl", default="", help="texts for perplexity, e.g. essays,squad")
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp16-dir", default="docs/logs/quality/evict_sweep_h200", help="fp16-needle-s<seed>.json to compare with")
    ap.add_argument("--scope", default="head", choices=("head", "layer"),
                    help="eviction budget per KV head (default) or shared by the KV heads of a layer")
    ap.add_argument("--head-floor", type=float, default=0.0,
                    help="with --scope layer: share of a head's own heavy budget it always keeps (default 0)")
    ap.add_argument("--no-friendliness", action="store_true",
                    help="choose by accumulated attention alone (no discount by quantization error)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    from million.data import load_text
    from million.eval.calibdata import load_or_collect
    from million.eval.methods import PQMethod
    from million.eval.needle import needle_eval
    from million.eval.ppl import default_offset, perplexity
    from million.models import load_model, resolve_model

    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rec, pool, side, obs, share = a.setting.split(":")
    rule = dict(recent=float(rec), pool=int(pool), pool_side=side, observe=int(obs) or None, pool_share=float(share),
                scope=a.scope, head_floor=a.head_floor, friendliness=not a.no_friendliness)
    src = resolve_model(a.model)
    model, tok = load_model(src, dtype=torch.float32, device=torch.device("cpu"))
    hay = tok(load_text("essays")[: 60 * 8192], return_tensors="pt", add_special_tokens=False).input_ids[0]

    def calib():
        return load_or_collect(model, tok, "squad", 16384, 2048, model_name=src.name, progress=False)

    def fp16_found(seed):
        """The needles fp16 finds (the all-quantized fp16 runs of the docs; CPU and H200 agree where both ran)."""
        p = Path(a.fp16_dir) / f"fp16-needle-s{seed}.json"
        if not p.exists():
            return None
        return {(c["context"], c["depth"]) for c in json.loads(p.read_text())["cases"] if c["correct"]}

    rows = []
    for hi in [float(x) for x in a.hi.split(",")]:
        m = PQHitter(a.bits, PQMethod(4, None, a.codebooks), high=hi, high_bits=a.hi_bits, high_by=a.hi_by, **rule)
        m.fit(model, calib)
        tag = (f"hi{hi:g}-b{a.hi_bits}-{a.hi_by}" + (f"-layer{a.head_floor:g}" if a.scope == "layer" else "")
               + ("-nofriend" if a.no_friendliness else ""))
        row = {"hi": hi, "hi_bits": a.hi_bits, "hi_by": a.hi_by, "keep": m.keep, "setting": rule, "codebooks": a.codebooks}
        for spec in [s for s in a.needles.split(",") if s]:
            c, d, sd = spec.split(":")
            t0 = time.time()
            r = needle_eval(model, tok, m, hay, [int(c)], [float(d)], "all-quantized", 10, int(sd))
            case = r["cases"][0]
            row.setdefault("needles", {})[spec] = {"correct": case["correct"], "answer": case["answer"], "expected": case["expected"]}
            print(f"{tag} needle {spec}: {case['correct']} {case['answer']!r} (expected {case['expected']}, {time.time() - t0:.0f} s)", flush=True)
        for sd in [int(s) for s in a.needle_sets.split(",") if s]:
            p = out / f"{tag}-needle-s{sd}.json"
            if p.exists():
                r = json.loads(p.read_text())
            else:
                t0 = time.time()
                r = needle_eval(model, tok, m, hay, [1024, 2048, 4096, 8192], DEPTHS, "all-quantized", 10, sd)
                r.update({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "run_seconds": time.time() - t0})
                p.write_text(json.dumps(r, indent=2) + "\n")
            found = {(c["context"], c["depth"]) for c in r["cases"] if c["correct"]}
            ref = fp16_found(sd)
            missed = sorted(ref - found) if ref is not None else None
            row[f"needle-s{sd}"] = {"accuracy": r["accuracy"], "missed_fp16_found": missed, "found_beyond_fp16":
                                    sorted(found - ref) if ref is not None else None}
            print(f"{tag} needle set {sd}: {r['accuracy']:.3f} {r['accuracy_by_context']} missed vs fp16: {missed}", flush=True)
        for text in [s for s in a.ppl.split(",") if s]:
            p = out / f"{tag}-ppl-{text}.json"
            if p.exists():
                r = json.loads(p.read_text())
            else:
                ids = tok(load_text(text), return_tensors="pt", add_special_tokens=False).input_ids[0]
                t0 = time.time()
                r = perplexity(model, ids, m, "all-quantized", 2048, a.max_windows, default_offset(text), text)
                r.update({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "run_seconds": time.time() - t0})
                p.write_text(json.dumps(r, indent=2) + "\n")
            row[f"ppl-{text}"] = {"ppl": r["ppl"], "bits_32k": r.get("bits_per_element_32k")}
            print(f"{tag} ppl {text}: {r['ppl']:.4f} bits@32K {r.get('bits_per_element_32k')}", flush=True)
        rows.append(row)
        (out / "summary.json").write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
