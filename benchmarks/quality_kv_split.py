"""Which side of the cache costs the perplexity: keys only, values only, or both quantized.

Loads trained PQ codebooks (a ``pq_variant`` folder written by ``benchmarks/bench_quality.py`` or
``million.pq_variants``) and scores SmolLM2-135M on held-out SQuAD windows (all-quantized protocol) three
times: keys quantized and values in full precision, the reverse, and both. Prints a table and writes JSON.

    python benchmarks/quality_kv_split.py --codebooks runs/quality_cpu8k/codebooks/pq-4 --windows 4 --out kv.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


class SideOnly:
    """Wraps a fitted method: quantizes only ``side`` ('k' or 'v'); the other side stays as computed."""

    def __init__(self, inner, side: str):
        if side not in ("k", "v"):
            raise ValueError(f"side={side!r}: expected 'k' or 'v'")
        self.inner, self.side = inner, side
        self.name = f"{inner.name}-{side}only"
        self.label = f"{inner.label}-{side}only"
        self.bits = inner.bits

    def qdq_key(self, layer, k, pos0):
        return self.inner.qdq_key(layer, k, pos0) if self.side == "k" else k

    def qdq_value(self, layer, v, pos0):
        return self.inner.qdq_value(layer, v, pos0) if self.side == "v" else v

    def fp_start(self, t):
        return self.inner.fp_start(t)

    def window_tokens(self, context):
        return self.inner.window_tokens(context)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        b = self.inner.bits_breakdown(shape, context, protocol)
        return {**b, "total": (b["total"] + 16.0) / 2}  # the other side in 16 bits

    def describe(self):
        return {**self.inner.describe(), "quantized_side": self.side}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codebooks", required=True, help="a trained pq_variant folder")
    p.add_argument("--windows", type=int, default=4, help="held-out SQuAD windows of 2048 tokens")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="JSON results")
    a = p.parse_args(argv)
    if a.windows < 1:
        raise SystemExit(f"--windows={a.windows}: expected a positive integer")
    if not Path(a.codebooks).is_dir():
        raise SystemExit(f"--codebooks {a.codebooks}: not a folder")

    from million.data import load_text
    from million.eval.methods import FP16, PQMethod, load_pq_codebooks
    from million.eval.ppl import default_offset, perplexity
    from million.models import load_model

    torch.set_num_threads(a.threads)
    model, tok = load_model("smollm2", dtype=torch.float32, device=a.device)
    ids = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    cb = load_pq_codebooks(a.codebooks, model.config)
    pq = PQMethod(cb.variant.code_bits, None, a.codebooks)
    pq.fit(model, None)
    rows = []
    for label, m in (("keys only", SideOnly(pq, "k")), ("values only", SideOnly(pq, "v")), ("both", pq)):
        t0 = time.time()
        r = perplexity(model, ids, m, "all-quantized", 2048, a.windows, default_offset("squad"), "squad")
        rows.append({"quantized": label, "ppl": r["ppl"], "nll": r["nll"], "windows": r["windows"], "tokens": r["tokens"]})
        print(f"{label:12s} ppl {r['ppl']:.4f}  ({time.time() - t0:.0f} s)", flush=True)
    r = perplexity(model, ids, FP16(16), "all-quantized", 2048, a.windows, default_offset("squad"), "squad")
    base = r["ppl"]
    print(f"{'fp16':12s} ppl {base:.4f}")
    print("\n| quantized | ppl | Δ vs fp16 | share of the both-sides Δnll |\n| --- | --- | --- | --- |")
    dboth = rows[-1]["nll"] - math.log(base)
    for x in rows:
        x["delta_pct"] = 100 * (x["ppl"] / base - 1)
        x["nll_share"] = (x["nll"] - math.log(base)) / dboth if dboth else float("nan")
        print(f"| {x['quantized']} | {x['ppl']:.4f} | {x['delta_pct']:+.2f}% | {x['nll_share']:.2f} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"codebooks": a.codebooks, "variant": cb.variant.to_dict(), "fp16_ppl": base,
                                           "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
