"""Probe: which of a needle's tokens 2-bit PQ eviction (``pqsparse``) keeps, and in how many layers and KV heads.

For one needle prompt (context, depth, seed of ``million eval needle``) and each setting ``CODEBOOKS:HIGH:HIGH_BY:HIGH_BITS``
(the high-precision tier of ``pqsparse``; ``HIGH`` 0 for none), the greedy answer, then the share of (layer, KV head)
pairs that hold each token around the needle's number after the prompt step, and the share that hold it in the high
tier. The eviction rule is the 2-bit one of ``docs/quality.md`` (recent 0.2, observe 32, pool 15 after, pool share
0.15) at 2.00 bits/element.

    python benchmarks/needle_kept_probe.py 4096:0.45:0 runs/cb4-s32k:0:score:8 runs/cb4-s32k:0.01:score:8
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from million.data import load_text  # noqa: E402
from million.eval.calibdata import load_or_collect  # noqa: E402
from million.eval.methods import PQMethod  # noqa: E402
from million.eval.needle import build_prompt  # noqa: E402
from million.eval.qhitter import PQHitter  # noqa: E402
from million.models import load_model, resolve_model  # noqa: E402


def main(argv) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    src = resolve_model("smollm2")
    model, tok = load_model(src, dtype=torch.float32, device=torch.device("cpu"))
    hay = tok(load_text("essays")[: 60 * 8192], return_tensors="pt", add_special_tokens=False).input_ids[0]

    def calib():
        return load_or_collect(model, tok, "squad", 16384, 2048, model_name=src.name, progress=False)

    c, d, s = argv[0].split(":")
    ids, num = build_prompt(tok, hay, int(c), float(d), int(s))
    nt = tok(" " + num, add_special_tokens=False).input_ids
    toks = ids[0].tolist()
    start = next(i for i in range(len(toks)) if toks[i : i + len(nt)] == nt)
    span = list(range(start - 3, start + len(nt) + 2))
    print("needle tokens:", [tok.decode([toks[i]]) for i in span])
    for spec in argv[1:]:
        cb, hi, by, hb = spec.split(":")
        m = PQHitter(1.83, PQMethod(4, None, cb), high=float(hi), high_by=by, high_bits=int(hb), recent=0.2, pool=15,
                     pool_side="after", observe=32, pool_share=0.15).fit(model, calib)
        r = m.make_runner(model)
        out = r.greedy(ids, 10, tok.eos_token_id)
        cache, hs = r._cache(), r._hooks()
        try:
            with torch.no_grad():
                r._step(cache, ids)
        finally:
            for h in hs:
                h.remove()
        kept, high, n = torch.zeros(len(span)), torch.zeros(len(span)), 0
        for layer in cache.layers:
            P = layer.pos[0]
            for h in range(P.shape[0]):
                n += 1
                for j, i in enumerate(span):
                    k = P[h] == i
                    kept[j] += float(k.any())
                    if layer.tier is not None:
                        high[j] += float((k & layer.tier[0, h]).any())
        print(spec, repr(tok.decode(out)), "expected", num, "keep", round(m.keep, 4))
        print("  kept share:", [round(float(x) / n, 2) for x in kept])
        print("  high share:", [round(float(x) / n, 2) for x in high])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
