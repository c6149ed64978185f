"""How much of the PQ error sits in a few tokens? Keep the worst-quantized fraction of tokens in full precision.

Evaluation-only probe (all-quantized protocol): for each layer and KV head, the tokens whose quantization error is
largest in the metric the codes were trained in (``||(x - x^) A||^2`` with the codebooks' key / value transform ``A``)
keep their original K (or V); the rest use their codes. Reports the perplexity per kept fraction and the bits per
element it would cost (each kept token: 16 bits per element instead of its code, plus a 32-bit position), on held-out
SQuAD windows. Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/quality_outliers.py --codebooks DIR --fractions 0,0.01,0.02 --windows 4 --out outliers.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from million.data import load_text
from million.eval.methods import FP16, PQMethod
from million.eval.ppl import SQUAD_OFFSET, perplexity
from million.models import load_model


class KeepWorst(PQMethod):
    """PQ codes, except the ``frac`` worst-quantized tokens per (layer, head, side), kept as they are."""

    def __init__(self, base: PQMethod, frac: float, side: str = "kv"):
        super().__init__(base.bits, base.variant, None, label=f"{base.label}-keep{frac:g}{'' if side == 'kv' else side}")
        self.cb, self.frac, self.side = base.cb, frac, side

    def _keep(self, x, xq, t):
        n = int(round(self.frac * x.shape[-2]))
        if n == 0:
            return xq
        d = x - xq  # [B, H, T, D]
        if t is not None:
            d = torch.einsum("bhtd,hde->bhte", d, t.to(d))
        err = d.pow(2).sum(-1)  # [B, H, T]
        idx = err.topk(n, dim=-1).indices
        out = xq.clone()
        g = idx[..., None].expand(*idx.shape, x.shape[-1])
        out.scatter_(-2, g, x.gather(-2, g))
        return out

    def qdq_key(self, layer, k, pos0):
        kq = self.cb.qdq_keys(layer, k, pos0)
        return self._keep(k, kq, self.cb.key_transform[layer] if self.cb.key_transform else None) if "k" in self.side else kq

    def qdq_value(self, layer, v, pos0):
        vq = self.cb.qdq_values(layer, v, pos0)
        return self._keep(v, vq, self.cb.value_transform[layer] if self.cb.value_transform else None) if "v" in self.side else vq


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codebooks", required=True, help="a `million calibrate` directory (or a PQ variant directory)")
    ap.add_argument("--bits", type=float, default=4)
    ap.add_argument("--fractions", default="0,0.005,0.01,0.02")
    ap.add_argument("--sides", default="kv", help="comma-separated: kv, k, v (which side keeps its worst tokens)")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, tok = load_model("smollm2", dtype=torch.float32, device=a.device)
    ids = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    base = PQMethod(a.bits, None, a.codebooks).fit(model, lambda: None)
    D = model.config.hidden_size // model.config.num_attention_heads
    rows = []
    f16 = perplexity(model, ids, FP16(16), window=a.window, max_windows=a.windows, offset=SQUAD_OFFSET, text_name="squad")
    print(f"fp16 ppl {f16['ppl']:.4f}", flush=True)
    for side in a.sides.split(","):
        for frac in [float(x) for x in a.fractions.split(",")]:
            if frac == 0 and side != a.sides.split(",")[0]:
                continue
            m = KeepWorst(base, frac, side)
            t0 = time.time()
            r = perplexity(model, ids, m, window=a.window, max_windows=a.windows, offset=SQUAD_OFFSET, text_name="squad")
            nsides = len(side)
            extra = frac * nsides / 2 * (16 - a.bits + 32 / D)  # per element, averaged over K and V
            rows.append({"side": side, "fraction": frac, "ppl": r["ppl"], "delta_pct": 100 * (r["ppl"] / f16["ppl"] - 1),
                         "bits_32k": r["bits_per_element_32k"] + extra, "seconds": time.time() - t0})
            print(f"keep {frac:6.3f} of {side:>2}: ppl {r['ppl']:.4f} ({rows[-1]['delta_pct']:+.2f}%), "
                  f"{rows[-1]['bits_32k']:.3f} bits/element @32K", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "fp16": f16["ppl"], "rows": rows, "torch": torch.__version__,
                       "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, f, indent=1)


if __name__ == "__main__":
    main()
