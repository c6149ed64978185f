"""Probe for the 2-bit encode (4-dim subspaces, 256 centroids): how many candidates an exact cluster-bound search keeps.

The 2-bit encode kernel compares every token with all 256 centroids of each subspace (``docs/kernel_notes.md``: 1.85 ms
per 32K x 32-head tensor on the H100, 8.8% of a 7B-shaped 32K prefill on the H200 against the 5% target); only fewer
candidates can halve it. Here the centroids of each subspace are grouped by k-means into ``C`` clusters (centre ``mu``,
radius ``rho``); a token's squared distance to any member of cluster ``g`` is at least ``max(0, |x - mu_g| - rho_g)^2``,
so a cluster whose bound is not below the best distance found so far cannot hold the nearest centroid and is skipped:
the result is exact. Clusters are visited in order of their centre's distance. ``--tile T``: T tokens decide together
(a tensor-core tile scans a cluster when any of its tokens needs it). Counted per token: the C centre distances plus
the members of every scanned cluster, against 256 for the full search.

Data: the benchmark's (``bench_encode.py``: Gaussian tokens and Gaussian centroids) and SmolLM2's (2-bit codebooks of
``--codebooks``, K and V of held-out SQuAD tokens in the codebooks' space).

    PYTHONPATH=src python benchmarks/encode_prune_probe.py --codebooks runs/cb2-s32k --out prune.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from million.kmeans import kmeans


def sqdist(x, c):
    return (x.pow(2).sum(-1, keepdim=True) - 2 * x @ c.transpose(1, 2) + c.pow(2).sum(-1)[:, None]).clamp_min(0)


def clusters(c, C, iters=20):
    """``c [G, K, d]`` -> member labels ``[G, K]``, centres ``[G, C, d]``, radii ``[G, C]``, sizes ``[G, C]``."""
    G, K, d = c.shape
    cent = kmeans(c, C, iters=iters).centroids
    lab = sqdist(c, cent).argmin(-1)
    sizes = torch.zeros(G, C).scatter_add_(1, lab, torch.ones(G, K))
    s = torch.zeros(G, C, d).scatter_add_(1, lab[..., None].expand(-1, -1, d), c)
    mu = torch.where(sizes[..., None] > 0, s / sizes.clamp_min(1)[..., None], cent)
    r = (c - mu.gather(1, lab[..., None].expand(-1, -1, d))).norm(dim=-1)
    rho = torch.zeros(G, C).scatter_reduce_(1, lab, r, "amax", include_self=True)
    return lab, mu, rho, sizes


def scanned(x, c, C, tile, sort=False, pad=1):
    """Mean candidates per token (centre distances + scanned members) of the exact cluster search; checks exactness.
    ``sort``: the tokens of each subspace ordered by their nearest cluster centre before they are cut into tiles (a
    kernel would gather them in that order). ``pad``: each scanned cluster counts its size rounded up to a multiple of
    ``pad`` (8 = the n-block of an m16n8 MMA)."""
    G, N, d = x.shape
    lab, mu, rho, sizes = clusters(c, C)
    if pad > 1:
        sizes = torch.ceil(sizes / pad) * pad
    if sort:
        perm = sqdist(x, mu).argmin(-1).argsort(dim=-1, stable=True)  # [G, N]
        x = x.gather(1, perm[..., None].expand(-1, -1, d))
    D = sqdist(x, c)  # [G, N, K]
    exact = D.min(-1).values
    dmin = torch.full((G, N, C), float("inf")).scatter_reduce_(2, lab[:, None].expand(-1, N, -1), D, "amin", include_self=True)
    dc = sqdist(x, mu).sqrt()
    lb = (dc * (1 - 1e-4) - rho[:, None] * (1 + 1e-4)).clamp_min(0).pow(2)  # a margin for rounding: exact search
    n = N - N % tile
    T = n // tile
    dmin, dc, lb = (t[:, :n].reshape(G, T, tile, C) for t in (dmin, dc, lb))
    order = dc.mean(2).argsort(-1)  # [G, T, C]: the tile's clusters by mean centre distance
    best = torch.full((G, T, tile), float("inf"))
    count = torch.zeros(G, T)
    for i in range(C):
        g = order[..., i]  # [G, T]
        gi = g[..., None, None].expand(-1, -1, tile, 1)
        need = (lb.gather(3, gi)[..., 0] < best).any(-1)  # [G, T]: some token of the tile may find its nearest there
        best = torch.where(need[..., None], torch.minimum(best, dmin.gather(3, gi)[..., 0]), best)
        count += need * sizes.gather(1, g)
    assert torch.equal(best.reshape(G, n), exact[:, :n]), "the search must be exact"
    return float(C + count.mean())


def heldout_subspaces(codebooks: str, layers: list[int], tokens: int, dsub: int) -> dict:
    """SmolLM2's K and V of held-out SQuAD tokens (65,536 on, the sink left out) in the space of the codebook
    directory ``codebooks`` (its key and value transforms applied), per layer and side: ``{"smollm2 layer L k|v":
    (points [H*M, N, dsub], centroids [H*M, 256, dsub])}``, one row per (KV head, subspace)."""
    from million.data import load_text
    from million.eval.calibdata import collect
    from million.eval.methods import load_pq_codebooks
    from million.models import load_model

    model, tok = load_model("smollm2")
    ids = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    te = collect(model, tok, tok.decode(ids[65536 : 65536 + tokens]), tokens=tokens, window=tokens, attention=False)
    cb = load_pq_codebooks(codebooks, model.config)
    out = {}
    for l in layers:
        for side in ("k", "v"):
            y = te.keys_post(l) if side == "k" else te.values[l]
            A = cb.key_transform[l] if side == "k" else cb.value_transform[l]
            y = torch.einsum("hnd,hde->hne", y[:, 1:].float(), A.float()) if A is not None else y[:, 1:].float()
            c = (cb.key_centroids[l] if side == "k" else cb.value_centroids[l]).float()  # [Hc, M, 256, dsub]
            H, N, D = y.shape
            M = c.shape[1]
            if c.shape[3] != dsub or c.shape[2] != 256:
                raise SystemExit(f"--codebooks {codebooks}: subspaces of {c.shape[3]} dims and {c.shape[2]} centroids; "
                                 f"this probe is for {dsub} and 256")
            x = y.reshape(H, N, M, dsub).permute(0, 2, 1, 3).reshape(H * M, N, dsub)
            c = c.expand(H, -1, -1, -1).reshape(H * M, 256, dsub)
            out[f"smollm2 layer {l} {side}"] = (x, c)
    return out


def save_rows(path: str | None, args, rows: list) -> None:
    """A probe's result file (nothing when ``path`` is None): its arguments, rows, torch version and UTC date."""
    if path:
        with open(path, "w") as f:
            json.dump({"args": vars(args), "rows": rows, "torch": torch.__version__,
                       "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, f, indent=1)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codebooks", default="runs/cb2-s32k", help="2-bit codebooks (4-dim subspaces) of `million calibrate`")
    ap.add_argument("--layers", default="1,12,29")
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--clusters", default="8,16,32")
    ap.add_argument("--tiles", default="1,16,64")
    ap.add_argument("--sort", default="0", help="0, 1 or 0,1: tokens ordered by nearest cluster centre before tiling")
    ap.add_argument("--pad", type=int, default=1, help="scanned clusters counted in multiples of this (8: MMA n-blocks)")
    ap.add_argument("--gaussian-only", action="store_true", help="only the benchmark's data (no model, no codebooks)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(0)
    Cs = [int(v) for v in a.clusters.split(",")]
    tiles = [int(v) for v in a.tiles.split(",")]
    data = {"gaussian": (torch.randn(32, a.tokens, 4, generator=gen), torch.randn(32, 256, 4, generator=gen))}
    if not a.gaussian_only:
        data.update(heldout_subspaces(a.codebooks, [int(v) for v in a.layers.split(",")], a.tokens, dsub=4))
    sorts = [bool(int(v)) for v in a.sort.split(",")]
    rows = []
    for name, (x, c) in data.items():
        for C in Cs:
            for t in tiles:
                for so in sorts:
                    t0 = time.time()
                    v = scanned(x, c, C, t, sort=so, pad=a.pad)
                    rows.append({"data": name, "clusters": C, "tile": t, "sorted": so, "pad": a.pad, "candidates": v,
                                 "of": 256})
                    print(f"{name:<24} clusters {C:2d} tile {t:3d}{' sorted' if so else '       '}: {v:6.1f} candidates "
                          f"per token of 256 ({256 / v:.2f}x fewer)  [{time.time() - t0:.1f} s]", flush=True)
    save_rows(a.out, a, rows)


if __name__ == "__main__":
    main()
