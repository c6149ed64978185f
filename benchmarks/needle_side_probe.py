"""Which side of a PQ cache loses a needle: one needle with keys only, values only (the other side in full
precision) or both quantized by dense PQ codebooks, all-quantized protocol, SmolLM2-135M on the CPU.

    python benchmarks/needle_side_probe.py --case runs/cb4-s32k-seed1@4096:0.05:0 --case runs/cb4-s32k-seed2@4096:0.45:0 \
        --out side.json

Each ``--case`` is ``CODEBOOKS@context:depth:seed`` (a needle of the essays set ``seed``, as ``million eval needle``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_kv_split import SideOnly  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", action="append", required=True, help="CODEBOOKS@context:depth:seed (repeatable)")
    ap.add_argument("--sides", default="k,v,both", help="comma-separated: k, v, both")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    cases = []
    for c in a.case:
        cb, _, spec = c.partition("@")
        parts = spec.split(":")
        if not cb or len(parts) != 3:
            raise SystemExit(f"--case {c!r}: expected CODEBOOKS@context:depth:seed")
        if not Path(cb).is_dir():
            raise SystemExit(f"--case {c!r}: {cb} is not a folder")
        cases.append((cb, int(parts[0]), float(parts[1]), int(parts[2])))
    sides = [s for s in a.sides.split(",") if s]
    if not sides or any(s not in ("k", "v", "both") for s in sides):
        raise SystemExit(f"--sides {a.sides!r}: expected a comma-separated subset of k, v, both")

    from million.data import load_text
    from million.eval.methods import PQMethod
    from million.eval.needle import needle_eval
    from million.models import load_model

    torch.set_num_threads(a.threads)
    model, tok = load_model("smollm2", dtype=torch.float32, device="cpu")
    hay = tok(load_text("essays")[: 60 * 8192], return_tensors="pt", add_special_tokens=False).input_ids[0]
    rows = []
    for cb, ctx, depth, seed in cases:
        pq = PQMethod(4, None, cb)
        pq.fit(model, None)
        for side in sides:
            m = pq if side == "both" else SideOnly(pq, side)
            t0 = time.time()
            case = needle_eval(model, tok, m, hay, [ctx], [depth], "all-quantized", 10, seed)["cases"][0]
            row = dict(codebooks=cb, context=ctx, depth=depth, seed=seed, quantized=side, correct=case["correct"],
                       answer=case["answer"], expected=case["expected"])
            rows.append(row)
            print(f"{cb} {ctx}:{depth}:{seed} {side}: {'found' if case['correct'] else 'missed'} {case['answer']!r} "
                  f"({time.time() - t0:.0f} s)", flush=True)
    Path(a.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
