"""Probe: two precisions among the tokens that 2-bit PQ eviction keeps, at the same bits per element.

Question: the needles that ``pqsparse`` misses at 2.00 bits/element are kept and read wrong (digits of the number
decoded wrong from their 4-bit PQ codes), not evicted. Does storing the strongest kept tokens at a higher precision
(uniform int8 per token in groups of 32 with an fp16 scale and zero point, or full precision) fix them, when the
bits it costs are paid for by keeping fewer tokens?

A kept token is ``low`` (its PQ code, as ``pqsparse``) or ``high``. The tier is chosen when the token enters the cache
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
from transformers.cache_utils import Cache

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from million.eval.qhitter import PQHitter, QHitterRunner, _QHLayer  # noqa: E402
from million.eval.quant import uniform_qdq  # noqa: E402


class TierHitter(PQHitter):
    name = "pqsparse-tier"

    def __init__(self, bits, pq, hi: float = 0.0, hi_bits: int = 8, hi_by: str = "score", **kw):
        if not 0 <= hi < 1:
            raise ValueError(f"hi={hi!r} is out of range; allowed: [0, 1)")
        if hi_bits not in (8, 16):
            raise ValueError(f"hi_bits={hi_bits!r}; allowed: 8 (int8, groups of 32), 16 (kept as computed)")
        if hi_by not in ("score", "pooled"):
            raise ValueError(f"hi_by={hi_by!r}; allowed: score, pooled")
        self.hi, self.hi_bits, self.hi_by = hi, hi_bits, hi_by
        super().__init__(bits, pq, **kw)

    def high_bits(self, D: int) -> float:
        return 16.0 if self.hi_bits == 16 else 8.0 + 32.0 / min(32, D)

    def code_bits(self) -> float:
        return self.pq.variant.code_bits if self.pq.variant is not None else self.pq.bits

    def kept_bits(self, D: int) -> float:
        return self.code_bits() + 16.0 / (2 * D) + (1.0 / (2 * D) if self.hi > 0 else 0.0)

    def _set_keep(self, D):
        extra = self.hi * (self.high_bits(D) - self.code_bits())
        self.keep = min(1.0, (self.bits - extra) / self.kept_bits(D))
        if self.keep <= self.hi:
            raise ValueError(f"hi={self.hi} leaves keep={self.keep:.3f} at {self.bits} bits: no room")

    def fit(self, model, calib_fn):
        super().fit(model, calib_fn)
        self._set_keep(self.head_dim)
        return self

    def hi_budget(self, t: int) -> int:
        return min(self.budget(t), math.ceil(self.hi * t)) if self.hi > 0 else 0

    def make_runner(self, model, protocol="all-quantized"):
        return TierRunner(model, self, protocol)

    def bits_breakdown(self, shape, context, protocol="all-quantized"):
        parts = super().bits_breakdown(shape, context, protocol)
        f = self.budget(context) / context
        h = self.hi_budget(context) / context
        D = shape.D
        if self.hi > 0:
            parts["tier_flag"] = 1.0 / (2 * D) * f
            parts["high_extra"] = h * (self.high_bits(D) - self.code_bits())
        parts["total"] = sum(v for k, v in parts.items() if k != "total")
        return parts

    def describe(self):
        return {**super().describe(), "hi": self.hi, "hi_bits": self.hi_bits, "hi_by": self.hi_by}


class _TierLayer(_QHLayer):
    def __init__(self, layer_idx, owner):
        super().__init__(layer_idx, owner)
        self.kh = self.vh = self.tier = None

    def update(self, key_states, value_states, *args, **kwargs):
        o = self.owner
        m = o.method
        kq = m.qdq_key(self.layer_idx, key_states, o.seen)
        vq = m.qdq_value(self.layer_idx, value_states, o.seen)
        if m.hi_bits == 16:
            kh, vh = key_states, value_states
        else:
            kh, vh = (uniform_qdq(x, 8, "token", 32) for x in (key_states, value_states))
        B, H, C, D = key_states.shape
        err = ((kq - key_states).float().pow(2).sum(-1) / key_states.float().pow(2).sum(-1).clamp_min(1e-12)
               + (vq - value_states).float().pow(2).sum(-1) / value_states.float().pow(2).sum(-1).clamp_min(1e-12)) / 2
        pos = torch.arange(o.seen, o.seen + C, device=key_states.device).view(1, 1, C).expand(B, H, C)
        new_tier = torch.zeros(B, H, C, dtype=torch.bool, device=kq.device)
        if self.k is None:
            K, V, KH, VH, score, errs, P = kq, vq, kh, vh, torch.zeros(B, H, C, device=kq.device), err, pos
            T = new_tier
        else:
            K, V = torch.cat([self.k, kq], 2), torch.cat([self.v, vq], 2)
            KH, VH = torch.cat([self.kh, kh], 2), torch.cat([self.vh, vh], 2)
            score = torch.cat([self.score, torch.zeros(B, H, C, device=kq.device)], 2)
            errs, P = torch.cat([self.err, err], 2), torch.cat([self.pos, pos], 2)
            T = torch.cat([self.tier, new_tier], 2)
        n = K.shape[2]
        eligible = T.clone()
        eligible[..., n - C:] = True  # high already, or new in this step
        # accumulated attention of this chunk's queries, scored on the low codes (as pqsparse)
        from million.eval.calibdata import rope

        q = o.taps.pop(self.layer_idx)
        cos, sin = o.taps["rope"]
        Hq = q.shape[-1] // D
        q = rope(q.view(B, C, Hq, D).transpose(1, 2).float(), cos[:, None].float(), sin[:, None].float())
        G = Hq // H
        q = q.view(B, H, G, C, D)
        n_old = n - C
        causal = torch.ones(C, C, dtype=torch.bool, device=K.device).tril()
        allowed = torch.cat([torch.ones(C, n_old, dtype=torch.bool, device=K.device), causal], 1)
        w = m.rule.observe
        Kscore = torch.where(T[..., None], KH, K)
        if w is not None and C > w:
            q, allowed = q[:, :, :, C - w:], allowed[C - w:]
        s = torch.einsum("bhgcd,bhnd->bhgcn", q, Kscore.float()) * D**-0.5
        p = s.masked_fill(~allowed, float("-inf")).softmax(-1)
        score = score + p.sum((2, 3))
        budget = m.budget(o.seen + C)
        if n > budget:
            n_recent = min(budget, int(m.rule.recent * budget))
            n_heavy = budget - n_recent
            old = n - n_recent
            adj = score[..., :old] / (1 + errs[..., :old] / errs[..., :old].mean(-1, keepdim=True).clamp_min(1e-12))
            heavy = m.rule.heavy(adj, n_heavy)
            idx = torch.cat([heavy, torch.arange(old, n, device=K.device).expand(B, H, n_recent)], -1)
        else:
            idx = torch.arange(n, device=K.device).expand(B, H, n)
            adj = score / (1 + errs / errs.mean(-1, keepdim=True).clamp_min(1e-12))
        # the high tier among the kept tokens
        nh = m.hi_budget(o.seen + C)
        Tn = torch.zeros_like(T)
        if nh > 0:
            full_adj = score / (1 + errs / errs.mean(-1, keepdim=True).clamp_min(1e-12))
            rank = m.rule.pooled(full_adj) if m.hi_by == "pooled" else full_adj
            kept = torch.zeros_like(T).scatter(2, idx, True)
            cand = rank.masked_fill(~(kept & eligible), float("-inf"))
            top = cand.topk(min(nh, n), -1)
            Tn.scatter_(2, top.indices, torch.isfinite(top.values))
        Kout, Vout = torch.where(Tn[..., None], KH, K), torch.where(Tn[..., None], VH, V)
        g = lambda x: x.gather(2, idx[..., None].expand(-1, -1, -1, x.shape[-1]))  # noqa: E731
        self.k, self.v, self.kh, self.vh = g(K), g(V), g(KH), g(VH)
        self.score, self.err, self.pos, self.tier = score.gather(2, idx), errs.gather(2, idx), P.gather(2, idx), Tn.gather(2, idx)
        return Kout, Vout


class TierRunner(QHitterRunner):
    def _cache(self):
        self.seen = 0
        self.taps.clear()
        return Cache(layers=[_TierLayer(i, self) for i in range(self.L)])


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
    rule = dict(recent=float(rec), pool=int(pool), pool_side=side, observe=int(obs) or None, pool_share=float(share))
    src = resolve_model(a.model)
    model, tok = load_model(src, dtype=torch.float32, device=torch.device("cpu"))
    hay = tok(load_text("essays")[: 60 * 8192], return_tensors="pt", add_special_tokens=False).input_ids[0]

    def calib():
        return load_or_collect(model, tok, "squad", 16384, 2048, model_name=src.name, progress=False)

    rows = []
    for hi in [float(x) for x in a.hi.split(",")]:
        m = TierHitter(a.bits, PQMethod(4, None, a.codebooks), hi=hi, hi_bits=a.hi_bits, hi_by=a.hi_by, **rule)
        m.fit(model, calib)
        tag = f"hi{hi:g}-b{a.hi_bits}-{a.hi_by}"
        row = {"hi": hi, "hi_bits": a.hi_bits, "hi_by": a.hi_by, "keep": m.keep, "setting": rule}
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
                r = needle_eval(model, tok, m, hay, [1024, 2048, 4096, 8192],
                                [0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95], "all-quantized", 10, sd)
                r.update({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "run_seconds": time.time() - t0})
                p.write_text(json.dumps(r, indent=2) + "\n")
            row[f"needle-s{sd}"] = {"accuracy": r["accuracy"], "found": sorted((c["context"], c["depth"]) for c in r["cases"] if c["correct"])}
            print(f"{tag} needle set {sd}: {r['accuracy']:.3f} {r['accuracy_by_context']}", flush=True)
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
