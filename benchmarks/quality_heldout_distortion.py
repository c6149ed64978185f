"""Quantization error of trained codebooks on calibration text and on held-out text.

For each codebook directory, the relative errors of :func:`million.pq_variants.distortion` (plain MSE of K and V, the
score error of the keys in ``E[q^T q]``, the value error in the ``o_proj`` metric) on 8,192-token SQuAD spans: one
inside the calibration tokens (from token 0) and two held out (from 65,536, where perplexity is scored, and 98,304).
A gap between the two says how much of the training error is fit to the calibration text. Prints one line per
(codebooks, span) and writes JSON.

    PYTHONPATH=src python benchmarks/quality_heldout_distortion.py runs/cb4-default runs/cb4-s32k --out d.json
"""

from __future__ import annotations

import argparse

from million.eval.calibdata import collect
from million.eval.methods import load_pq_codebooks
from million.pq_variants import distortion
from probe_io import smollm2_squad, write_rows  # noqa: E402  (benchmarks/, the script's own folder)

SPANS = (("calibration", 0), ("heldout", 65536), ("heldout2", 98304))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("codebooks", nargs="+", help="`million calibrate` directories")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per span (one window)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    model, tok, ids = smollm2_squad(a.threads)
    cbs = {d: load_pq_codebooks(d, model.config) for d in a.codebooks}
    rows = []
    for name, start in SPANS:
        span = ids[start : start + a.tokens]
        # the span's tokens, as text: collect() tokenizes its text argument
        cd = collect(model, tok, tok.decode(span), tokens=a.tokens, window=a.tokens, text_name=name, attention=False)
        for d, cb in cbs.items():
            r = distortion(cb, cd, max_tokens=a.tokens)
            rows.append({"codebooks": d, "span": name, "start": start, **r})
            print(f"{d:<28} {name:<12} " + "  ".join(f"{k} {v:.6f}" for k, v in r.items()), flush=True)
    write_rows(a.out, a, rows)


if __name__ == "__main__":
    main()
