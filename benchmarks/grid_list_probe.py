"""How many candidates the 4-bit pruned encode scans per point on real K/V, against the Gaussian data the encode
benchmark (``bench_encode.py``, ``bench_prefill_encode.py``) times: the mean length of the grid list of the cell each
point falls in (``cuda_encode.build_grid_lists`` and ``grid_cells``, exactly as the kernel assigns cells), per layer
and side, for SmolLM2's held-out SQuAD K/V in the space of a ``million calibrate`` codebook directory (its key and
value transforms applied, the sink token left out), and for Gaussian points and centroids. CPU only.

    PYTHONPATH=src python benchmarks/grid_list_probe.py --codebooks runs/cb4-s32k --layers 1,12,29 --out probe.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encode_prune_probe import heldout_subspaces, save_rows  # noqa: E402


def list_lengths(x: torch.Tensor, c: torch.Tensor) -> dict:
    """``x [S, N, 2]`` points, ``c [S, 256, 2]`` centroids: mean / p90 / max list length at the points, and averaged
    over cells (every cell counted once)."""
    from million.ops.cuda_encode import build_grid_lists, grid_cells

    kept, lo, inv_w = build_grid_lists(c)
    lens = kept.sum(-1)  # [S, G*G]
    at = torch.gather(lens, 1, grid_cells(x, lo, inv_w))  # [S, N]
    n = at.shape[1] - at.shape[1] % 32
    warp = at[:, :n].reshape(at.shape[0], -1, 32).amax(-1)  # a warp's 32 consecutive tokens wait for the longest list
    return {"mean_at_points": at.float().mean().item(), "p90_at_points": at.float().quantile(0.9).item(),
            "max_at_points": int(at.max()), "mean_warp_max": warp.float().mean().item(),
            "mean_over_cells": lens.float().mean().item()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codebooks", default="runs/cb4-s32k", help="4-bit codebooks (2-dim subspaces) of `million calibrate`")
    ap.add_argument("--layers", default="1,12,29")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--frames", default="box", help="grid frames: box (the library's) and/or quantiles, e.g. box,0.01,0.05")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    data = {"gaussian (the benchmarks' data)": (torch.randn(96, a.tokens, 2, generator=gen), torch.randn(96, 256, 2, generator=gen))}
    data.update(heldout_subspaces(a.codebooks, [int(v) for v in a.layers.split(",")], a.tokens, dsub=2))
    rows = []
    for fr in a.frames.split(","):
        os.environ["MILLION_ENCODE_GRID_Q"] = "0" if fr == "box" else fr  # the frame of every grid the library builds
        for name, (x, c) in data.items():
            t0 = time.time()
            r = {"data": name, "frame": fr, **list_lengths(x, c)}
            rows.append(r)
            print(f"{name:<32} frame {fr:>5}: list length at the points: mean {r['mean_at_points']:6.2f}, p90 "
                  f"{r['p90_at_points']:6.1f}, max {r['max_at_points']:4d}, warp max {r['mean_warp_max']:6.2f}; "
                  f"over cells {r['mean_over_cells']:6.2f}"
                  f"  [{time.time() - t0:.1f} s]", flush=True)
    save_rows(a.out, a, rows)


if __name__ == "__main__":
    main()
