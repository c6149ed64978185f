"""Probe: does OPQ (alternating k-means and orthogonal Procrustes) improve on the balanced PCA rotation of the keys?

Trains the recommended 4-bit recipe's key rotation (metric transform + balanced rotation, 4,096 samples x 8
iterations, on the cached 16,384-token SQuAD calibration in 2K windows), then, per listed layer and KV head, runs OPQ
rounds starting from it on 4,096 keys in that space and prints the relative quantization error of each round (round 0
is the balanced rotation itself).

    PYTHONPATH=src python benchmarks/probe_opq_refine.py
"""
import time, torch
from million.models import load_model
from million.eval.calibdata import load_or_collect
from million.pq_variants import PQVariant, train_variant, _train_group, balanced_rotation
from million.eval.quant import pq_qdq
torch.set_num_threads(2)
model, tok = load_model("smollm2")
calib = load_or_collect(model, tok, "squad", 16384, 2048, model_name="smollm2", attention=False)
LAY = [0, 1, 5, 12, 23, 29]
v = PQVariant(k_nbits=8, k_dsub=2, v_nbits=8, v_dsub=2, granularity="layer_head", transform="metric", sinks=1, alloc="balanced_k", samples=4096, iters=8)
cb = train_variant(calib, v)
keep = calib.positions >= 1
tot0 = tot = 0.0
for l in LAY:
    x = calib.keys_post(l)[:, keep] @ cb.key_transform[l]          # [H, N, D] in the rotated metric space
    g = torch.Generator().manual_seed(l)
    idx = torch.randperm(x.shape[1], generator=g)[:4096]
    xs = x[:, idx]
    H, n, D = xs.shape
    R = torch.eye(D).expand(H, D, D).clone()
    errs = []
    for it in range(6):
        xr = torch.einsum("hnd,hde->hne", xs, R)
        cent = _train_group(xr, None, 8, 2, v, 100 + it)
        rec = torch.stack([pq_qdq(xr[h][None, None], cent[h][None])[0, 0] for h in range(H)])
        errs.append(float((xr - rec).pow(2).sum() / xr.pow(2).sum()))
        Uu, _, Vh = torch.linalg.svd(torch.einsum("hnd,hne->hde", xs, rec).double())
        R = (Uu @ Vh).float()
    print(f"layer {l:2d}: metric-space relative error per OPQ round: " + " ".join(f"{e:.5f}" for e in errs), flush=True)
    tot0 += errs[0]; tot += min(errs)
print(f"mean over layers: balanced {tot0/len(LAY):.5f} -> OPQ best {tot/len(LAY):.5f} ({100*(tot/tot0-1):+.1f}%)")
