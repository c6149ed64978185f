"""Does left padding cost a sequence quality? Teacher-forced decoding of SmolLM2-135M in a padded batch against the same
sequence alone, with an fp16 cache and with MillionCache.

Two held-out SQuAD sequences form a batch: ``long`` (``--length`` tokens) and ``short`` (``--length - --pad`` tokens,
left-padded by ``--pad``). Each is prefilled up to its last ``--steps`` tokens, which are then fed one per decode step
(``million.decode.Decoder``, eager); the negative log-likelihood of every fed token is what is scored. Runs: fp16
(transformers' StaticCache) on the padded batch; MillionCache on the padded batch; MillionCache on each sequence alone.
Where a padded sequence is attended exactly as when alone (its sinks, its codes), its perplexity in the batch
matches its perplexity alone up to where the window's blocks fall (the batch commits blocks at shared positions).

    python benchmarks/quality_padding.py --codebooks runs/cb4-default --length 1024 --pad 384 --steps 256 --out pad.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch


def _nll(model, cache_fn, ids: torch.Tensor, am: torch.Tensor | None, steps: int) -> list[float]:
    """Mean nll per sequence of the last ``steps`` tokens of ``ids [B, T]``, fed one per step after a prefill."""
    from million.decode import Decoder

    B, T = ids.shape
    dec = Decoder(model, cache_fn(B, T), graph=False)
    P = T - steps
    logits = dec.prefill(ids[:, :P], attention_mask=None if am is None else am[:, :P], max_new_tokens=steps)
    tot = torch.zeros(B, dtype=torch.float64)
    for t in range(P, T):
        tot -= torch.log_softmax(logits.double(), -1).gather(1, ids[:, t : t + 1]).squeeze(1)
        if t + 1 < T:
            logits = dec.step(ids[:, t])
    return (tot / steps).tolist()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codebooks", required=True, help="a `million calibrate` folder")
    p.add_argument("--length", type=int, default=1024, help="tokens of the long sequence")
    p.add_argument("--pad", type=int, default=384, help="left padding of the short sequence (it is that much shorter)")
    p.add_argument("--steps", type=int, default=256, help="tokens fed one per decode step at the end of each sequence")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="JSON results")
    a = p.parse_args(argv)
    for name in ("length", "steps"):
        if getattr(a, name) < 1:
            raise SystemExit(f"--{name}={getattr(a, name)}: expected a positive integer")
    if not 0 < a.pad < a.length - a.steps:
        raise SystemExit(f"--pad={a.pad}: expected 0 < pad < length - steps = {a.length - a.steps}")

    from transformers import StaticCache

    import million
    from million import MillionCache
    from million.codebook import Codebooks
    from million.data import load_text
    from million.eval.ppl import default_offset
    from million.models import load_model

    torch.set_num_threads(a.threads)
    model, tok = load_model("smollm2", dtype=torch.float32, attn_implementation="million")
    million.register()
    cb = Codebooks.load(a.codebooks)
    text = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    o = default_offset("squad")
    L, S = a.length, a.length - a.pad
    long_ids, short_ids = text[o : o + L], text[o + L : o + L + S]
    ids = torch.stack([long_ids, torch.cat([torch.zeros(a.pad, dtype=long_ids.dtype), short_ids])])
    am = torch.ones_like(ids)
    am[1, : a.pad] = 0

    def pq(B, T):
        return MillionCache(cb, model.config)

    def fp16(B, T):
        return StaticCache(config=model.config, max_cache_len=T)

    rows = {}
    with torch.no_grad():
        for name, fn, args in (("fp16, padded batch", fp16, (ids, am)), ("PQ, padded batch", pq, (ids, am)),
                               ("PQ, long alone", pq, (long_ids[None], None)), ("PQ, short alone", pq, (short_ids[None], None))):
            t0 = time.time()
            rows[name] = _nll(model, fn, *args, a.steps)
            print(f"{name:20s} nll {['%.5f' % x for x in rows[name]]}  ({time.time() - t0:.0f} s)", flush=True)
    ref = rows["fp16, padded batch"]
    table = [("long", "fp16, padded batch", ref[0]), ("long", "PQ, padded batch", rows["PQ, padded batch"][0]),
             ("long", "PQ, alone", rows["PQ, long alone"][0]), ("short (padded)", "fp16, padded batch", ref[1]),
             ("short (padded)", "PQ, padded batch", rows["PQ, padded batch"][1]),
             ("short (padded)", "PQ, alone", rows["PQ, short alone"][0])]
    print("\n| sequence | run | ppl of the decoded tokens | Δ vs fp16 |\n| --- | --- | --- | --- |")
    out = []
    for seq, run, nll in table:
        base = ref[0] if seq == "long" else ref[1]
        d = 100 * (math.exp(nll - base) - 1)
        out.append({"sequence": seq, "run": run, "nll": nll, "ppl": math.exp(nll), "delta_pct": d})
        print(f"| {seq} | {run} | {math.exp(nll):.4f} | {d:+.2f}% |")
    if a.out:
        Path(a.out).write_text(json.dumps({"codebooks": a.codebooks, "length": L, "pad": a.pad, "steps": a.steps,
                                           "sink_length": cb.config.sink_length, "rows": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
