"""Probe: a per-centroid variance term in the score table (the expected weight of a key's cell, not its centre's).

A PQ key is replaced by its cell's centroid ``c``; its score is then ``q.c``, the cell's mean score. Softmax weights
are ``exp(score)``, and ``E[exp(q.k) | cell] ~= exp(q.c + q^T S_c q / 2)`` for a cell of covariance ``S_c``: keys in
wide cells (the outliers PQ leaves in sparse regions) are under-weighted by the plug-in score. The correction costs
nothing at decode time: ``q^T S_c q / 2`` is one more term of each score-table entry (three numbers per 2-dim
centroid, stored with the codebook). This probe asks whether it lowers the attention error enough to matter for the
4-bit target (a third of today's error), before any perplexity run.

Space: keys whitened by their queries' second moment (``k' = k L``, ``q' = q L^-T``, ``E[q q^T] = L L^T``), so q.k
is unchanged and k-means minimizes the expected score error, as million's metric transform does. k-means (2-dim
subspaces, 256 centroids) on the first ``--train`` SQuAD tokens; errors on ``--test`` held-out tokens from token
65,536, every query against its causal keys, the first (sink) token exact. Reported per layer: the mean KL(p || p_q)
over queries and heads with plug-in scores and with the variance term, and the relative error of the attention output
with the true values.

    PYTHONPATH=src python benchmarks/quality_jensen_probe.py --out jensen.json
"""

from __future__ import annotations

import argparse
import time

import torch

from million.eval.calibdata import geometry, projection_taps, rope
from million.kmeans import _assign, kmeans
from probe_io import smollm2_squad, write_rows  # noqa: E402  (benchmarks/, the script's own folder)


@torch.no_grad()
def capture(model, ids, window):
    """Post-RoPE queries ``[L][Hq, N, D]``, keys and values ``[L][H, N, D]`` (windows of ``window`` tokens, concatenated
    along N; each window's own positions)."""
    L, H, Hq, D = geometry(model.config)
    out = {n: [[] for _ in range(L)] for n in "qkv"}
    with projection_taps(model) as taps:
        for s in range(0, ids.numel(), window):
            w = ids[s : s + window]
            T = w.numel()
            model(input_ids=w[None], use_cache=False)
            cos, sin = (t[0].float() for t in taps["rope"])
            for li in range(L):
                q = taps[(li, "q_proj")][0].float().view(T, Hq, D).transpose(0, 1)
                k = taps[(li, "k_proj")][0].float().view(T, H, D).transpose(0, 1)
                v = taps[(li, "v_proj")][0].float().view(T, H, D).transpose(0, 1)
                out["q"][li].append(rope(q, cos, sin))
                out["k"][li].append(rope(k, cos, sin))
                out["v"][li].append(v)
            taps.clear()
    return {n: [torch.cat(x, 1) for x in xs] for n, xs in out.items()}


def groups(y):
    """``[H, N, D]`` -> ``[H * D / 2, N, 2]``."""
    H, N, D = y.shape
    return y.reshape(H, N, D // 2, 2).permute(0, 2, 1, 3).reshape(H * (D // 2), N, 2)


def attn(s, causal):
    return s.masked_fill(~causal, float("-inf")).softmax(-1)


def probe_setup(doc: str, argv=None):
    """The arguments every SmolLM2 PQ probe of this kind takes, parsed; then the model's geometry ``(L, H, Hq, D)`` and
    the captures of the first ``--train`` SQuAD tokens (2048-token windows) and of ``--test`` held-out tokens from
    token 65,536 (one window)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--layers", default="1,8,15,22,29")
    ap.add_argument("--train", type=int, default=8192)
    ap.add_argument("--test", type=int, default=1024)
    ap.add_argument("--iters", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    model, tok, ids = smollm2_squad(a.threads)
    t0 = time.time()
    tr = capture(model, ids[: a.train], 2048)
    te = capture(model, ids[65536 : 65536 + a.test], a.test)
    print(f"captured in {time.time() - t0:.0f} s", flush=True)
    return a, geometry(model.config), tr, te


def main(argv=None) -> None:
    a, (L, H, Hq, D), tr, te = probe_setup(__doc__, argv)
    G, M = Hq // H, D // 2
    layers = [int(x) for x in a.layers.split(",")]
    rows = []
    T = a.test
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for l in layers:
        qtr = tr["q"][l].reshape(H, G * tr["q"][l].shape[1], D)
        mom = torch.einsum("hnd,hne->hde", qtr, qtr) / qtr.shape[1] + 1e-6 * torch.eye(D)
        Lc = torch.linalg.cholesky(mom)  # [H, D, D], mom = Lc Lc^T
        ktr = tr["k"][l][:, 1:] @ Lc  # k' = k L (rows), the sink left out
        x = groups(ktr)  # [H*M, N, 2]
        c = kmeans(x, 256, iters=a.iters).centroids  # [H*M, 256, 2]
        lab = _assign(x, c)[0]
        r = x - c.gather(1, lab[..., None].expand(-1, -1, 2))
        # per-centroid residual second moment (2x2), from the training vectors
        outer = (r[..., :, None] * r[..., None, :]).reshape(*r.shape[:2], 4)
        S = torch.zeros(x.shape[0], 256, 4).scatter_add_(1, lab[..., None].expand(-1, -1, 4), outer)
        n = torch.zeros(x.shape[0], 256).scatter_add_(1, lab, torch.ones_like(lab, dtype=torch.float32))
        S = (S / n.clamp_min(1)[..., None]).view(x.shape[0], 256, 2, 2)
        # test
        kte = te["k"][l] @ Lc  # [H, T, D]
        xt = groups(kte)
        lt = _assign(xt, c)[0]  # [H*M, T]
        kh = c.gather(1, lt[..., None].expand(-1, -1, 2))  # [H*M, T, 2]
        kh = kh.view(H, M, T, 2).permute(0, 2, 1, 3).reshape(H, T, D)
        kh[:, 0] = kte[:, 0]  # the sink stays exact
        St = S.gather(1, lt[..., None, None].expand(-1, -1, 2, 2)).view(H, M, T, 2, 2)  # [H, M, T, 2, 2]
        St[:, :, 0] = 0
        qw = torch.linalg.solve_triangular(Lc.transpose(1, 2), te["q"][l].view(H, G, T, D).transpose(2, 3).reshape(H, D, G * T), upper=True)
        qw = qw.reshape(H, D, G, T).permute(0, 2, 3, 1)  # q' = q L^-T: [H, G, T, D]
        sc = D**-0.5
        s_true = torch.einsum("hgtd,hsd->hgts", qw, kte) * sc
        s_pq = torch.einsum("hgtd,hsd->hgts", qw, kh) * sc
        qm = qw.view(H, G, T, M, 2)
        # q'_m^T S_{m,c(s)} q'_m for every query t and key s: sum over m and the 2x2 entries
        qq = (qm[..., :, None] * qm[..., None, :]).reshape(H, G, T, M, 4)  # [H, G, T, M, 4]
        var = torch.einsum("hgtmf,hmsf->hgts", qq, St.reshape(H, M, T, 4)) * sc * sc
        v = te["v"][l]
        p = attn(s_true, causal)
        o = torch.einsum("hgts,hsd->hgtd", p, v)
        res = {"layer": l}
        for name, s in (("plugin", s_pq), ("variance", s_pq + 0.5 * var)):
            pq_ = attn(s, causal)
            kl = (p * (p.clamp_min(1e-30).log() - pq_.clamp_min(1e-30).log())).sum(-1).mean()
            oq = torch.einsum("hgts,hsd->hgtd", pq_, v)
            res[f"kl_{name}"] = float(kl)
            res[f"out_err_{name}"] = float((oq - o).pow(2).sum() / o.pow(2).sum())
        res["score_err_var"] = float((s_pq - s_true).masked_fill(~causal, 0).pow(2).sum() / causal.sum() / H / G)
        res["pred_var_mean"] = float(var.masked_fill(~causal, 0).sum() / causal.sum() / H / G)
        rows.append(res)
        print(f"layer {l:2d}: KL plug-in {res['kl_plugin']:.3e}, with variance {res['kl_variance']:.3e} "
              f"({100 * (res['kl_variance'] / res['kl_plugin'] - 1):+.1f}%); output error {res['out_err_plugin']:.3e} -> "
              f"{res['out_err_variance']:.3e} ({100 * (res['out_err_variance'] / res['out_err_plugin'] - 1):+.1f}%); "
              f"score error var {res['score_err_var']:.3e}, predicted {res['pred_var_mean']:.3e}", flush=True)
    write_rows(a.out, a, rows)


if __name__ == "__main__":
    main()
