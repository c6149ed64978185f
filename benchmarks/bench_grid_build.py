"""Time of the 4-bit encode kernel's grid lists (``cuda_encode.build_grid_lists``) with and without the inner-cell
prefilter, on random Gaussian centroids and on the centroids of a codebook directory; checks the lists are equal.
``--triton`` (CUDA): also the fused one-launch build (``triton_grid.build_grid_lists``, what the encode uses on a GPU;
compiled by an untimed call first).

    PYTHONPATH=src python benchmarks/bench_grid_build.py --codebooks runs/cb4-default --subspaces 64 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def timed(fn, cuda: bool):
    """``fn()``'s result, its wall time in s (synchronized on CUDA) and, on CUDA, the peak memory it added in MiB."""
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter() - t0
    return out, t, (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--codebooks", default=None, help="a million calibrate directory (4-bit, dsub 2)")
    ap.add_argument("--subspaces", type=int, default=64)
    ap.add_argument("--prefilters", default="0,64")
    ap.add_argument("--chunks", default="", help="subspaces per step of the build, e.g. 16,64,128 (default: the library's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--triton", action="store_true", help="also time the fused Triton build (CUDA)")
    ap.add_argument("--launches", default="4:2:1", help="--triton: cells_per_program:num_warps[:gather 0/1] items, e.g. 4:2,8:4:0,1:1 (1, 2, 4 or 8 cells)")
    ap.add_argument("--skip-torch", action="store_true", help="only the Triton build (its lists checked against the first launch's)")
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
    if args.triton:
        from million.ops import triton_grid

        triton_grid.build_grid_lists(torch.randn(2, 256, 2, device=args.device))  # compile
    for name, c in sets.items():
        c = c.to(args.device)
        ref = None
        chunks = [int(x) for x in args.chunks.split(",")] if args.chunks else [None]
        for pf in [] if args.skip_torch else [int(x) for x in args.prefilters.split(",")]:
            for ch in chunks:
                kept, t, peak = timed(lambda: build_grid_lists(c, prefilter=pf, chunk=ch)[0], c.is_cuda)
                ref = kept if ref is None else ref
                rows.append({"centroids": name, "subspaces": c.shape[0], "prefilter": pf, "chunk": ch, "seconds": t,
                             "peak_mib": peak, "mean_list": kept.float().sum(-1).mean().item(),
                             "same_as_first": bool(torch.equal(ref, kept))})
                print(f"{name:>6} S={c.shape[0]} prefilter={pf:>3} chunk={ch}: {t:7.3f} s"
                      + (f", peak {peak:.0f} MiB" if peak is not None else "")
                      + f", mean list {rows[-1]['mean_list']:.3f}, same lists {rows[-1]['same_as_first']}", flush=True)
        if args.triton:
            from million.ops.cuda_encode import _pack_lists

            for spec in args.launches.split(","):
                bc, nw, *gth = (int(v) for v in spec.split(":"))
                kw = dict(cells_per_program=bc, num_warps=nw, gather=bool(gth[0]) if gth else True)
                triton_grid.build_grid_lists(c[:2], **kw)  # compile this launch
                for _ in range(2):
                    kept, t, peak = timed(lambda: triton_grid.build_grid_lists(c, **kw)[0], True)
                    _, t_pack, pack_peak = timed(lambda: _pack_lists(kept), True)
                    peak = max(peak, kept.numel() * kept.element_size() / 2**20 + pack_peak)  # the lists stay held while packed
                    ref = kept if ref is None else ref
                    rows.append({"centroids": name, "subspaces": c.shape[0], "builder": "triton", "cells_per_program": bc,
                                 "num_warps": nw, "gather": kw["gather"], "seconds": t, "pack_seconds": t_pack, "peak_mib": peak,
                                 "mean_list": kept.float().sum(-1).mean().item(), "same_as_first": bool(torch.equal(ref, kept))})
                    print(f"{name:>6} S={c.shape[0]} triton {spec}: {t:7.3f} s (+ pack {t_pack:.3f} s), peak {peak:.0f} MiB, "
                          f"mean list {rows[-1]['mean_list']:.3f}, same lists {rows[-1]['same_as_first']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
