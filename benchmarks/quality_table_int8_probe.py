"""Probe: centroid tables in int8 with a per-subspace affine map, against fp16 tables, at 4 bits.

The MHA decode kernel copies each head's K and V centroid tables (64 KB each at d = 128, fp16) into shared memory at
the start of every partial block; with per-KV-head codebooks that is 4 MB from HBM per call at 32 heads, and it cost
0.4-0.8 us at B=1 32K (docs/kernel_notes.md, 2026-12-07). Tables of half the bytes would halve that copy. fp8 (e4m3)
keeps 3 mantissa bits, a relative error comparable to a 256-centroid cell's width in 2 dims; int8 with a per-subspace,
per-dimension affine map (scale and offset over the subspace's 256 centroids) rounds to 1/255 of the centroid range.
This probe measures what each rounding adds to the held-out reconstruction error of PQ at 4 bits (2-dim subspaces,
256 centroids, k-means as in quality_jensen_probe.py: keys in their queries' metric, values plain) before any kernel
work.

    PYTHONPATH=src python benchmarks/quality_table_int8_probe.py --out table_int8.json
"""

from __future__ import annotations

import torch

from million.kmeans import _assign, kmeans
from probe_io import write_rows  # noqa: E402  (benchmarks/, the script's own folder)
from quality_jensen_probe import groups, probe_setup  # noqa: E402


def int8_affine(c):
    """``c [G, 256, 2]`` rounded to 255 steps between each subspace's per-dimension min and max."""
    lo, hi = c.amin(1, keepdim=True), c.amax(1, keepdim=True)
    step = ((hi - lo) / 255).clamp_min(1e-12)
    return torch.round((c - lo) / step) * step + lo


def fp8(c):
    return c.to(torch.float8_e4m3fn).float()


def main(argv=None) -> None:
    a, (L, H, Hq, D), tr, te = probe_setup(__doc__, argv)
    G = Hq // H
    rows = []
    for l in (int(x) for x in a.layers.split(",")):
        qtr = tr["q"][l].reshape(H, G * tr["q"][l].shape[1], D)
        Lc = torch.linalg.cholesky(torch.einsum("hnd,hne->hde", qtr, qtr) / qtr.shape[1] + 1e-6 * torch.eye(D))
        for side, xtr, xte in (("k", tr["k"][l][:, 1:] @ Lc, te["k"][l][:, 1:] @ Lc),
                               ("v", tr["v"][l][:, 1:], te["v"][l][:, 1:])):
            c = kmeans(groups(xtr), 256, iters=a.iters).centroids
            t = groups(xte)
            lab = _assign(t, c)[0]
            row = {"layer": l, "side": side}
            for name, cq in (("fp16", c.half().float()), ("int8_affine", int8_affine(c)), ("fp8_e4m3", fp8(c))):
                rec = cq.gather(1, lab[..., None].expand(-1, -1, 2))  # codes as encoded against the exact table
                row[name] = float((rec - t).pow(2).sum() / t.pow(2).sum())
            rows.append(row)
            print(f"layer {l:2d} {side}: relative error fp16 table {row['fp16']:.6f}, int8 affine {row['int8_affine']:.6f} "
                  f"({100 * (row['int8_affine'] / row['fp16'] - 1):+.2f}%), fp8 e4m3 {row['fp8_e4m3']:.6f} "
                  f"({100 * (row['fp8_e4m3'] / row['fp16'] - 1):+.2f}%)", flush=True)
    write_rows(a.out, a, rows)


if __name__ == "__main__":
    main()
