"""What rounding the encode's input costs (CPU probe for the design "the centroid index carried by the MMA" in
docs/kernel_notes.md): 4-dim subspaces, 256 centroids by k-means, points x and centroids rounded to a fixed-point grid
g before the argmin; reported is the excess distortion of the codes so chosen, measured against the unrounded x, as a
share of the exact nearest-centroid distortion, and the share of codes that change. g = sqrt(P) / 2^(7.5 + extra),
P = 8 R^2, i.e. the grid on which 2^(8 - 2 extra) tag values fit below the distance bits (extra 0, 1, 2: 8-, 6- and
4-bit tags). R is the largest centroid norm (``max_c``) or the 99.9% quantile of the point norms (``q999``).

    PYTHONPATH=src python benchmarks/encode_round_probe.py --out round.json
"""

from __future__ import annotations

import argparse
import json

import torch

from million.kmeans import kmeans


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=40000)
    ap.add_argument("--points", type=int, default=200000)
    ap.add_argument("--iters", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    t4 = torch.distributions.StudentT(torch.tensor(4.0, dtype=torch.float64))
    data = {
        "gauss": lambda n: torch.randn(n, 4, dtype=torch.float64, generator=gen),
        "student-t4": lambda n: t4.sample((n, 4)),
    }
    torch.manual_seed(args.seed)  # the Student-t sampler draws from the global generator
    rows = []
    print("| data | R | g | excess distortion (% of exact) | codes changed (%) |")
    print("|---|---|---|---|---|")
    for name, draw in data.items():
        c = kmeans(draw(args.train)[None], 256, iters=args.iters, seed=args.seed).centroids[0].double()
        x = draw(args.points)
        d = torch.cdist(x, c) ** 2
        exact = d.min(1).values.mean()
        for rname in ("max_c", "q999"):
            r = (c * c).sum(1).max().sqrt() if rname == "max_c" else torch.quantile((x * x).sum(1), 0.999).sqrt()
            for extra in (0, 1, 2):
                g = (8 * r * r).sqrt() / 2 ** (7.5 + extra)
                idx = torch.cdist(torch.round(x / g) * g, torch.round(c / g) * g).argmin(1)
                got = ((x - c[idx]) ** 2).sum(1).mean()
                row = {"data": name, "R": rname, "tag_bits": 8 - 2 * extra, "g_over_R": (g / r).item(),
                       "excess_pct": ((got - exact) / exact).item() * 100,
                       "changed_pct": (idx != d.argmin(1)).double().mean().item() * 100}
                rows.append(row)
                print(f"| {name} | {rname} | R/{1 / row['g_over_R']:.0f} ({row['tag_bits']}-bit tag) | "
                      f"{row['excess_pct']:.3f} | {row['changed_pct']:.2f} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
