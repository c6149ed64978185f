"""Probe: two-stage residual codes on 4-dim subspaces against PQ on 2-dim subspaces, at the same 4 bits per element.

Both spend 16 bits per 4 dims, and both cost two table lookups per 4 dims in attention on codes (a score table per
stage and subspace, centroids summed for values). PQ (million's 4-bit format): two 2-dim subspaces with 8-bit codes
each. Residual: one 4-dim codebook of 256 centroids, then 256 centroids for what it leaves. The question is whether the
residual form's lower held-out error (if any) is large enough for the 4-bit perplexity target (about a third of
today's error). Error: relative squared error in the codes' space of the default codebooks (their key and value
transforms), held-out SQuAD tokens (from token 65,536), k-means on the first ``--train`` calibration tokens. Encodings
of the residual form: greedy (stage 1 nearest, then stage 2), beam (the ``--beam`` nearest stage-1 centroids each
completed by its best stage 2), and beam after ``--refine`` rounds of joint centroid updates (each stage's centroids
re-estimated given the other's codes).

    PYTHONPATH=src python benchmarks/quality_rvq_probe.py --codebooks runs/cb4-s32k --out rvq.json
"""

from __future__ import annotations

import argparse
import time

import torch

from million.eval.calibdata import collect
from million.eval.methods import load_pq_codebooks
from million.kmeans import _assign, kmeans
from probe_io import smollm2_squad, write_rows  # noqa: E402  (benchmarks/, the script's own folder)


def groups(y, dsub):
    """``y [H, N, D]`` -> ``[H * D / dsub, N, dsub]`` (one row per head and subspace)."""
    H, N, D = y.shape
    return y.reshape(H, N, D // dsub, dsub).permute(0, 2, 1, 3).reshape(H * (D // dsub), N, dsub)


def gather(c, lab):
    return c.gather(1, lab[..., None].expand(-1, -1, c.shape[-1]))


def sqdist(x, c):
    """``x [G, N, d]``, ``c [G, k, d]`` -> squared distances ``[G, N, k]``."""
    return (x.pow(2).sum(-1, keepdim=True) - 2 * x @ c.transpose(1, 2) + c.pow(2).sum(-1)[:, None]).clamp_min(0)


def beam_encode(x, c1, c2, beam, chunk=1024):
    """Codes ``(l1, l2)`` ``[G, N]``: the best of the ``beam`` nearest stage-1 centroids, each with its best stage 2."""
    l1s, l2s = [], []
    for s in range(0, x.shape[1], chunk):
        xs = x[:, s : s + chunk]
        cand = sqdist(xs, c1).topk(beam, -1, largest=False).indices  # [G, n, B]
        G, n, B = cand.shape
        r = xs[:, :, None] - c1.gather(1, cand.reshape(G, n * B, 1).expand(-1, -1, c1.shape[-1])).view(G, n, B, -1)
        d2 = sqdist(r.reshape(G, n * B, -1), c2).view(G, n, B, -1)  # [G, n, B, 256]
        best, arg2 = d2.min(-1)
        b = best.argmin(-1)  # [G, n]
        l1s.append(cand.gather(2, b[..., None])[..., 0])
        l2s.append(arg2.gather(2, b[..., None])[..., 0])
    return torch.cat(l1s, 1), torch.cat(l2s, 1)


def refit(x, other, lab, k):
    """Centroids ``[G, k, d]``: the mean of ``x - other`` over the vectors with each code (empty codes keep 0)."""
    G, N, d = x.shape
    s = torch.zeros(G, k, d).scatter_add_(1, lab[..., None].expand(-1, -1, d), x - other)
    n = torch.zeros(G, k).scatter_add_(1, lab, torch.ones(G, N))
    return s / n.clamp_min(1)[..., None], n


def rel(rec, x):
    return float((rec - x).pow(2).sum() / x.pow(2).sum())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codebooks", default="runs/cb4-s32k", help="the transforms of these codebooks define the space")
    ap.add_argument("--layers", default="1,5,12,23,29")
    ap.add_argument("--train", type=int, default=8192)
    ap.add_argument("--test", type=int, default=2048)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--beam", type=int, default=8)
    ap.add_argument("--refine", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    model, tok, ids = smollm2_squad(a.threads)
    torch.manual_seed(0)
    tr = collect(model, tok, tok.decode(ids[: a.train]), tokens=a.train, window=a.train, attention=False)
    te = collect(model, tok, tok.decode(ids[65536 : 65536 + a.test]), tokens=a.test, window=a.test, attention=False)
    cb = load_pq_codebooks(a.codebooks, model.config)
    rows = []
    for l in (int(x) for x in a.layers.split(",")):
        for side in ("k", "v"):
            get = (lambda c: c.keys_post(l)) if side == "k" else (lambda c: c.values[l])
            A = cb.key_transform[l] if side == "k" else cb.value_transform[l]
            ytr = torch.einsum("hnd,hde->hne", get(tr)[:, 1:].float(), A.float())  # the sink token is kept in fp16
            yte = torch.einsum("hnd,hde->hne", get(te)[:, 1:].float(), A.float())
            t0 = time.time()
            # PQ, 2-dim subspaces, 256 centroids each
            x2, t2 = groups(ytr, 2), groups(yte, 2)
            c = kmeans(x2, 256, iters=a.iters).centroids
            pq = rel(gather(c, _assign(t2, c)[0]), t2)
            # residual, 4-dim subspaces, 256 + 256 centroids
            x4, t4 = groups(ytr, 4), groups(yte, 4)
            c1 = kmeans(x4, 256, iters=a.iters).centroids
            r = x4 - gather(c1, _assign(x4, c1)[0])
            c2 = kmeans(r, 256, iters=a.iters).centroids
            g1 = _assign(t4, c1)[0]
            g2 = _assign(t4 - gather(c1, g1), c2)[0]
            greedy = rel(gather(c1, g1) + gather(c2, g2), t4)
            b1, b2 = beam_encode(t4, c1, c2, a.beam)
            beam = rel(gather(c1, b1) + gather(c2, b2), t4)
            for _ in range(a.refine):  # joint updates on the training vectors, beam codes
                l1, l2 = beam_encode(x4, c1, c2, a.beam)
                c1n, n1 = refit(x4, gather(c2, l2), l1, 256)
                c1 = torch.where(n1[..., None] > 0, c1n, c1)
                c2n, n2 = refit(x4, gather(c1, l1), l2, 256)
                c2 = torch.where(n2[..., None] > 0, c2n, c2)
            b1, b2 = beam_encode(t4, c1, c2, a.beam)
            refined = rel(gather(c1, b1) + gather(c2, b2), t4)
            row = {"layer": l, "side": side, "pq2": pq, "rvq4_greedy": greedy, "rvq4_beam": beam, "rvq4_beam_refined": refined,
                   "seconds": time.time() - t0}
            rows.append(row)
            print(f"layer {l:2d} {side}: PQ 2-dim {pq:.5f} | residual 4-dim greedy {greedy:.5f} ({100 * (greedy / pq - 1):+.1f}%), "
                  f"beam {beam:.5f} ({100 * (beam / pq - 1):+.1f}%), refined {refined:.5f} ({100 * (refined / pq - 1):+.1f}%)",
                  flush=True)
    write_rows(a.out, a, rows)


if __name__ == "__main__":
    main()
