# diagnostic: gain-shape PQ (per-token norm kept, PQ on the direction) vs plain PQ, held-out MSE in the codes' metric
import torch
from million.models import load_model
from million.data import load_text
from million.eval.calibdata import collect
from million.eval.methods import load_pq_codebooks
from million.kmeans import kmeans, _assign
torch.set_num_threads(1)
model, tok = load_model("smollm2")
text = load_text("squad")
ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
tr = collect(model, tok, tok.decode(ids[0:8192]), tokens=8192, window=8192, attention=False)
te = collect(model, tok, tok.decode(ids[65536:65536 + 2048]), tokens=2048, window=2048, attention=False)
cb = load_pq_codebooks("runs/cb4-s32k", model.config)

def pq_fit(y):  # y [H, N, 64] -> centroids [H*32, 256, 2]
    H, N, D = y.shape
    d = y.view(H, N, 32, 2).permute(0, 2, 1, 3).reshape(H * 32, N, 2)
    return kmeans(d, 256, iters=12).centroids

def pq_qdq(y, c):
    H, N, D = y.shape
    d = y.view(H, N, 32, 2).permute(0, 2, 1, 3).reshape(H * 32, N, 2)
    lab, _ = _assign(d, c)
    r = c.gather(1, lab[..., None].expand(-1, -1, 2))
    return r.view(H, 32, N, 2).permute(0, 2, 1, 3).reshape(H, N, D)

def qlog(s, lo, hi, bits):  # log-uniform scalar quantizer
    L = 2 ** bits
    t = ((s.log() - lo) / (hi - lo) * (L - 1)).round().clamp(0, L - 1)
    return (lo + t / (L - 1) * (hi - lo)).exp()

for l in (1, 5, 12, 23, 29):
    for side in ("k", "v"):
        get = (lambda c: c.keys_post(l)) if side == "k" else (lambda c: c.values[l])
        A = cb.key_transform[l] if side == "k" else cb.value_transform[l]
        ytr = torch.einsum("hnd,hde->hne", get(tr)[:, 1:], A)
        yte = torch.einsum("hnd,hde->hne", get(te)[:, 1:], A)
        base = ((pq_qdq(yte, pq_fit(ytr)) - yte).pow(2).sum() / yte.pow(2).sum()).item()
        ntr, nte = ytr.norm(dim=-1, keepdim=True), yte.norm(dim=-1, keepdim=True)
        c = pq_fit(ytr / ntr)
        res = []
        for bits in (4, 8, 16):
            lo, hi = ntr.log().amin(1, keepdim=True), ntr.log().amax(1, keepdim=True)
            s = nte if bits == 16 else qlog(nte.clamp(lo.exp(), hi.exp()), lo, hi, bits)
            rec = pq_qdq(yte / nte, c) * s
            res.append(((rec - yte).pow(2).sum() / yte.pow(2).sum()).item())
        print(l, side, "plain %.5f" % base, "gain-shape norm 4b/8b/16b", " ".join("%.5f (%+.1f%%)" % (r, 100 * (r / base - 1)) for r in res), flush=True)
