"""Decision rule of the end-to-end A/B calls (gpu_next33.sh), written before a run: take the variant where its decode
step at one cell is below (1 - margin) x the base's in every round, no cell that both timed is above (1 + guard) x
the base's in every round, and every cell was timed by both in every round (a cell missing anywhere refuses).

    python benchmarks/e2e_adopt.py DIR BASE VARIANT --cell llama3-8b:1:4096:pq-tr [--margin 0.005] [--guard 0.01]
        [--rounds ,_b]

reads DIR/e2e_ARM{round}_PART.json (bench_e2e.py --json output: one file per command line of the arm's round, PART
without '_'), prints a line per cell with the ratio base / variant in each round and "adopt True" or "adopt False",
and writes 1 or 0 to DIR/adopt.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def step_times(d: Path, arm: str, rnd: str) -> dict:
    """``{(shape, batch, context, cache): ms per decode step}`` over the arm's files of one round."""
    out = {}
    name = re.compile(rf"e2e_{re.escape(arm + rnd)}_[^_]+\.json")  # this round's files only: e2e_new_l1, not e2e_new_b_l1
    for p in sorted(q for q in d.glob(f"e2e_{arm}{rnd}_*.json") if name.fullmatch(q.name)):
        for r in json.loads(p.read_text())["rows"]:
            for k, v in r.items():
                if k.endswith("_step_ms"):
                    out[(r["shape"], int(r["batch"]), int(r["context"]), k[: -len("_step_ms")])] = float(v)
    return out


def decide(d: Path, base: str, variant: str, cell: tuple, margin: float, guard: float, rounds: list[str]) -> bool:
    pairs = [(step_times(d, base, r), step_times(d, variant, r)) for r in rounds]
    common = set.intersection(*(set(b) & set(v) for b, v in pairs))
    seen = set.union(*(set(b) | set(v) for b, v in pairs))
    ok = True
    for c in sorted(seen - common):
        print("missing:", ":".join(map(str, c)))
        ok = False
    for c in sorted(common):
        ratios = [b[c] / v[c] for b, v in pairs]
        print(":".join(map(str, c)), " ".join(f"{b[c]:.3f}->{v[c]:.3f} ({x:.4f}x)" for (b, v), x in zip(pairs, ratios)))
        if all(v[c] > (1 + guard) * b[c] for b, v in pairs):
            print("slower:", ":".join(map(str, c)))
            ok = False
    if cell not in common:
        print("missing the deciding cell:", ":".join(map(str, cell)))
        return False
    faster = all(v[cell] < (1 - margin) * b[cell] for b, v in pairs)
    return ok and faster


def main(argv=None) -> bool:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("base")
    ap.add_argument("variant")
    ap.add_argument("--cell", required=True, help="shape:batch:context:cache, e.g. llama3-8b:1:4096:pq-tr")
    ap.add_argument("--margin", type=float, default=0.005)
    ap.add_argument("--guard", type=float, default=0.01)
    ap.add_argument("--rounds", default=",_b", help="comma-separated round suffixes (default: '' and '_b')")
    a = ap.parse_args(argv)
    parts = a.cell.split(":")
    if len(parts) != 4:
        raise SystemExit(f"e2e_adopt: --cell takes shape:batch:context:cache, got {a.cell!r}")
    cell = (parts[0], int(parts[1]), int(parts[2]), parts[3])
    take = decide(a.dir, a.base, a.variant, cell, a.margin, a.guard, a.rounds.split(","))
    print("adopt", take)
    (a.dir / "adopt").write_text("1" if take else "0")
    return take


if __name__ == "__main__":
    main()
