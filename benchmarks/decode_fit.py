"""Split measured decode times into a per-token rate and a per-call fixed cost, and say what each speed target needs.

Reads the JSON that ``benchmarks/bench_decode_cuda.py`` writes (its ``bench`` rows: shape, B, context, bits,
``cuda_us``, ``sdpa_us``, ``floor_us_at_3TBps``) and, for every (shape, batch, bits) measured at two or more
contexts, takes

- the **rate**: the time per token between the two largest contexts measured (the kernel's streaming speed once the
  per-call costs are amortized), given per 32K tokens;
- the **fixed cost** at a context T: ``t(T) - rate * T`` (table prologue, split merge, launches, the tail of the
  last chunks), for the PQ kernel and for SDPA fp16 alike;
- for a speed target ``X`` at context T (ratio to SDPA fp16 of the same run): the time allowed, ``sdpa(T) / X``, and
  the fixed cost that leaves at the measured rate and at the byte floor (every byte at the copy rate).

    python benchmarks/decode_fit.py docs/logs/decode_v5/run21_final/final_b1_b8.json --context 32768 \\
        --target mha:1:4:3.5 --target gqa:1:4:2.5 --target mha:8:4:3 --target mha:1:2:6 --out fit.json

A negative allowed fixed cost means the target cannot be met at that rate even with no per-call cost at all.
Analysis of measured numbers only: nothing is timed here.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def fit_rows(rows: list[dict], context: int, copy_gbps: float | None = None) -> list[dict]:
    """One record per (shape, B, bits) measured at ``context`` and at two or more contexts in all."""
    groups: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if not (_finite(r.get("cuda_us")) and _finite(r.get("sdpa_us"))):
            continue
        groups.setdefault((r["shape"], int(r["B"]), int(r["bits"])), {})[int(r["context"])] = r
    out = []
    for (shape, B, bits), by_t in sorted(groups.items()):
        ts = sorted(by_t)
        if len(ts) < 2 or context not in by_t:
            continue
        t1, t2 = ts[-2], ts[-1]
        rate = (by_t[t2]["cuda_us"] - by_t[t1]["cuda_us"]) / (t2 - t1)
        srate = (by_t[t2]["sdpa_us"] - by_t[t1]["sdpa_us"]) / (t2 - t1)
        r = by_t[context]
        floor = r.get("floor_us_at_3TBps")
        if _finite(floor) and copy_gbps:
            floor = floor * 3000.0 / copy_gbps
        out.append({
            "shape": shape, "B": B, "bits": bits, "context": context, "rate_from": [t1, t2],
            "pq_us": r["cuda_us"], "sdpa_us": r["sdpa_us"], "x_sdpa": r["sdpa_us"] / r["cuda_us"],
            "pq_rate_us_per_32k": rate * 32768, "pq_fixed_us": r["cuda_us"] - rate * context,
            "sdpa_rate_us_per_32k": srate * 32768, "sdpa_fixed_us": r["sdpa_us"] - srate * context,
            "floor_us": floor if _finite(floor) else None,
        })
    return out


def parse_target(s: str) -> tuple[str, int, int, float]:
    parts = s.split(":")
    if len(parts) != 4:
        raise ValueError(f"--target {s!r}: expected shape:batch:bits:ratio, e.g. mha:1:4:3.5")
    try:
        return parts[0], int(parts[1]), int(parts[2]), float(parts[3])
    except ValueError:
        raise ValueError(f"--target {s!r}: batch and bits must be integers and the ratio a number") from None


def apply_targets(fits: list[dict], targets: list[tuple[str, int, int, float]]) -> list[dict]:
    """For each target, the allowed time and the fixed cost it leaves at the measured rate and at the byte floor."""
    res = []
    for shape, B, bits, x in targets:
        f = next((f for f in fits if (f["shape"], f["B"], f["bits"]) == (shape, B, bits)), None)
        if f is None:
            res.append({"target": f"{shape}:{B}:{bits}:{x:g}", "missing": True})
            continue
        allowed = f["sdpa_us"] / x
        stream = f["pq_rate_us_per_32k"] * f["context"] / 32768
        res.append({
            "target": f"{shape}:{B}:{bits}:{x:g}", "context": f["context"], "allowed_us": allowed,
            "measured_us": f["pq_us"], "met": f["pq_us"] <= allowed,
            "fixed_allowed_at_rate_us": allowed - stream, "fixed_measured_us": f["pq_fixed_us"],
            "fixed_allowed_at_floor_us": (allowed - f["floor_us"]) if f["floor_us"] is not None else None,
            "sdpa_fixed_us": f["sdpa_fixed_us"],
        })
    return res


def _fmt(x, nd=1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="bench_decode_cuda.py output(s); rows of later files replace earlier ones")
    ap.add_argument("--context", type=int, default=32768, help="context at which to split and check (default 32768)")
    ap.add_argument("--target", action="append", default=[], help="shape:batch:bits:ratio, repeatable")
    ap.add_argument("--copy-gbps", type=float, default=None,
                    help="measured copy rate of that machine (GB/s, read + write) for the byte floor; default: 3000 "
                         "(the floor column of the JSON)")
    ap.add_argument("--out", default=None, help="write the fits and target checks here as JSON")
    a = ap.parse_args(argv)
    if a.context <= 0:
        ap.error(f"--context {a.context}: must be a positive number of tokens")
    try:
        targets = [parse_target(s) for s in a.target]
    except ValueError as e:
        ap.error(str(e))
    rows: dict[tuple, dict] = {}
    for p in a.json:
        try:
            bench = json.loads(Path(p).read_text())["bench"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            ap.error(f"{p}: not a bench_decode_cuda.py JSON ({e})")
        for r in bench:
            rows[(r["shape"], r["B"], r["context"], r["bits"])] = r
    fits = fit_rows(list(rows.values()), a.context, a.copy_gbps)
    if not fits:
        print(f"no (shape, batch, bits) measured at {a.context} and at another context", file=sys.stderr)
        return 1
    print(f"context {a.context}: us per call; rate = us per 32K tokens between the two largest contexts measured")
    print(f"{'shape':8} {'B':>3} {'bits':>4} {'pq':>8} {'x sdpa':>7} {'pq rate':>8} {'pq fixed':>9} "
          f"{'sdpa rate':>9} {'sdpa fixed':>10} {'floor':>7}")
    for f in fits:
        print(f"{f['shape']:8} {f['B']:>3} {f['bits']:>4} {f['pq_us']:8.1f} {f['x_sdpa']:7.2f} "
              f"{f['pq_rate_us_per_32k']:8.1f} {f['pq_fixed_us']:9.1f} {f['sdpa_rate_us_per_32k']:9.1f} "
              f"{f['sdpa_fixed_us']:10.1f} {_fmt(f['floor_us']):>7}")
    checks = apply_targets(fits, targets)
    if checks:
        print("\ntargets: allowed time = sdpa / ratio; fixed cost that leaves at the measured rate / at the byte floor")
        print(f"{'target':14} {'allowed':>8} {'measured':>9} {'met':>4} {'fixed now':>10} {'at rate':>8} "
              f"{'at floor':>9} {'sdpa fixed':>10}")
        for c in checks:
            if c.get("missing"):
                print(f"{c['target']:14} not measured at this context")
                continue
            print(f"{c['target']:14} {c['allowed_us']:8.1f} {c['measured_us']:9.1f} {'yes' if c['met'] else 'no':>4} "
                  f"{c['fixed_measured_us']:10.1f} {c['fixed_allowed_at_rate_us']:8.1f} "
                  f"{_fmt(c['fixed_allowed_at_floor_us']):>9} {c['sdpa_fixed_us']:10.1f}")
    if a.out:
        Path(a.out).write_text(json.dumps({"inputs": a.json, "context": a.context, "copy_gbps": a.copy_gbps,
                                           "fits": fits, "targets": checks}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
