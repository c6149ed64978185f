"""Time of the 4-bit encode kernel's grid lists (``cuda_encode.build_grid_lists``) with and without the inner-cell
prefilter, on random Gaussian centroids and on the centroids of a codebook directory; checks the lists are equal.

    PYTHONPATH=src python benchmarks/bench_grid_build.py --codebooks runs/cb4-default --subspaces 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codebooks", default=None, help="a million calibrate directory (4-bit, dsub 2)")
    ap.add_argument("--subspaces", type=int, default=64)
    ap.add_argument("--prefilters", default="0,64")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from million.ops.cuda_encode import build_grid_lists

    sets = {"gauss": torch.randn(args.subspaces, 256, 2, generator=torch.Generator().manual_seed(0))}
    if args.codebooks:
        from million.codebook import Codebooks

        cb = Codebooks.load(args.codebooks)
        if cb.config.dsub != 2:
            raise SystemExit(f"{args.codebooks}: dsub {cb.config.dsub}; the grid lists are for dsub 2 (4-bit)")
        sets["keys"] = cb.key_centroids.reshape(-1, 256, 2)[: args.subspaces].float()
        sets["values"] = cb.value_centroids.reshape(-1, 256, 2)[: args.subspaces].float()
    rows = []
    for name, c in sets.items():
        c = c.to(args.device)
        ref = None
        for pf in [int(x) for x in args.prefilters.split(",")]:
            if c.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            kept = build_grid_lists(c, prefilter=pf)[0]
            if c.is_cuda:
                torch.cuda.synchronize()
            t = time.perf_counter() - t0
            ref = kept if ref is None else ref
            rows.append({"centroids": name, "subspaces": c.shape[0], "prefilter": pf, "seconds": t,
                         "mean_list": kept.float().sum(-1).mean().item(), "same_as_first": bool(torch.equal(ref, kept))})
            print(f"{name:>6} S={c.shape[0]} prefilter={pf:>3}: {t:7.2f} s, mean list {rows[-1]['mean_list']:.3f}, "
                  f"same lists {rows[-1]['same_as_first']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
