"""Decision rule of the one-call A/B scripts (gpu_ab_mha.sh, gpu_pf_gqa.sh), written before a run:
adopt the variant where its time at one cell is below (1 - margin) x the base's in every round, and (with --guard G)
no cell that both runs timed is above (1 + G) x the base's in every round, and every cell was timed by both in every
round (a cell missing anywhere refuses).

    python benchmarks/ab_adopt.py DIR BASE VARIANT --cell mha:1:32768:4 [--margin 0.005] [--guard 0.02 [--guard-bits]]
        [--rounds ,_b] [--shapes gqa,smollm2]

reads DIR/ab_BASE{round}.json and DIR/ab_VARIANT{round}.json (bench_decode_cuda.py output), prints "adopt True" or
"adopt False" and writes 1 or 0 to DIR/adopt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cell_times(path: Path) -> dict:
    return {(r["shape"], r["B"], r["context"], r["bits"]): float(r["cuda_us"])
            for r in json.loads(path.read_text())["bench"]}


def cell_time(path: Path, cell: tuple) -> float:
    t = cell_times(path)
    if cell not in t:
        raise SystemExit(f"ab_adopt: cell {':'.join(map(str, cell))} not in {path}")
    return t[cell]


def slower_cells(d: Path, base: str, variant: str, guard: float, rounds: list[str], bits: int | None = None,
                 shapes: set | None = None) -> list:
    """The cells timed by both in every round (of ``bits`` bits only, of ``shapes`` only, where given) where the
    variant is above (1 + guard) x the base in every round."""
    pairs = [(cell_times(d / f"ab_{base}{r}.json"), cell_times(d / f"ab_{variant}{r}.json")) for r in rounds]
    common = set.intersection(*(set(b) & set(v) for b, v in pairs))
    seen = set.union(*(set(b) | set(v) for b, v in pairs))
    if bits is not None:
        common, seen = {c for c in common if c[3] == bits}, {c for c in seen if c[3] == bits}
    if shapes is not None:
        common, seen = {c for c in common if c[0] in shapes}, {c for c in seen if c[0] in shapes}
    # a cell one round or arm did not time (a run cut short) cannot be shown not slower: it counts against adoption
    missing = sorted(seen - common)
    for c in missing:
        print("missing:", ":".join(map(str, c)))
    return missing + sorted(c for c in common if all(v[c] > (1 + guard) * b[c] for b, v in pairs))


def decide(d: Path, base: str, variant: str, cell: tuple, margin: float, rounds: list[str],
           guard: float | None = None, guard_bits: bool = False, shapes: set | None = None) -> bool:
    faster = all(cell_time(d / f"ab_{variant}{r}.json", cell) < (1 - margin) * cell_time(d / f"ab_{base}{r}.json", cell)
                 for r in rounds)
    if not faster or guard is None:
        return faster
    bad = slower_cells(d, base, variant, guard, rounds, cell[3] if guard_bits else None, shapes)
    for c in bad:
        print("slower:", ":".join(map(str, c)))
    return not bad


def parse_cell(s: str) -> tuple:
    parts = s.split(":")
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(f"cell {s!r}: expected shape:B:context:bits")
    try:
        return parts[0], int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        raise argparse.ArgumentTypeError(f"cell {s!r}: B, context and bits must be integers") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("base")
    ap.add_argument("variant")
    ap.add_argument("--cell", type=parse_cell, required=True, help="shape:B:context:bits")
    ap.add_argument("--margin", type=float, default=0.005, help="fraction the variant must be faster by (default 0.005); negative for a change meant to be neutral "
                    "(-0.005: at most 0.5%% slower)")
    ap.add_argument("--guard", type=float, default=None,
                    help="refuse where any cell is slower than (1 + guard) x the base in every round (default: off)")
    ap.add_argument("--guard-bits", action="store_true",
                    help="the guard looks at the cells of --cell's width only (a change decided per width)")
    ap.add_argument("--shapes", default=None,
                    help="comma-separated shapes the guard looks at (default: every shape both timed)")
    ap.add_argument("--rounds", default=",_b", help="comma-separated suffixes of the rounds' JSON names (default ',_b')")
    args = ap.parse_args(argv)
    if not -1 < args.margin < 1:
        ap.error(f"--margin {args.margin}: expected -1 < margin < 1 (negative: the variant may be that much slower)")
    if args.guard is not None and not 0 <= args.guard < 1:
        ap.error(f"--guard {args.guard}: expected 0 <= guard < 1")
    shapes = set(args.shapes.split(",")) if args.shapes else None
    if shapes is not None and args.cell[0] not in shapes:
        ap.error(f"--shapes {args.shapes}: the decision cell's shape {args.cell[0]!r} is not among them")
    ok = decide(args.dir, args.base, args.variant, args.cell, args.margin, args.rounds.split(","), args.guard,
                args.guard_bits, shapes)
    print("adopt", ok)
    (args.dir / "adopt").write_text("1" if ok else "0")
    return ok


if __name__ == "__main__":
    main()
