"""Probe: has k-means converged at the default 16 iterations? Training distortion of SmolLM2's 2-D key and value
subspaces (layers 1, 12, 29, every KV head; raw post-RoPE K and V of SQuAD calibration tokens, no transform) after
8-64 Lloyd iterations, k = 256, as `million calibrate` runs them (k-means++ seeding, seed 0, no early stop).

    python benchmarks/quality_kmeans_iters.py --tokens 8192 --out kmeans_iters.json
"""
import argparse
import json
import time

import torch

from million.calibrate import collect_kv, tokenize_windows
from million.data import load_text
from million.kmeans import kmeans
from million.models import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--layers", default="1,12,29")
    ap.add_argument("--iters", type=int, default=64)
    ap.add_argument("--out", default="kmeans_iters.json")
    args = ap.parse_args()
    model, tok = load_model("smollm2")
    rec = collect_kv(model, tokenize_windows(tok, load_text("squad"), args.tokens, 2048), progress=False)
    out = {"tokens": args.tokens, "layers": args.layers, "distortion": {}}
    marks = [i for i in (8, 12, 16, 24, 32, 48, 64) if i <= args.iters]
    print("| tensor | problems x points | " + " | ".join(f"it {i}" for i in marks) + " | it 32 / it 16 | iterations run |")
    print("|---" * (len(marks) + 4) + "|")
    for name, per_layer in (("K", rec.keys), ("V", rec.values)):
        xs = []
        for layer in (int(s) for s in args.layers.split(",")):
            x = per_layer[layer]  # [H, N, D]
            H, N, D = x.shape
            xs.append(x.reshape(H, N, D // 2, 2).permute(0, 2, 1, 3).reshape(H * D // 2, N, 2))
        x = torch.cat(xs, 0)
        t = time.time()
        d = kmeans(x, 256, iters=args.iters, seed=0, tol=0.0).distortion
        at = lambda i: d[min(i, len(d) - 1)]  # an exact fixed point ends the loop early: later values equal the last
        out["distortion"][name] = d
        print(f"| {name} | {x.shape[0]} x {x.shape[1]} | " + " | ".join(f"{at(i):.5g}" for i in marks)
              + f" | {at(32) / at(16):.4f} | {len(d) - 1} ({time.time() - t:.0f} s) |", flush=True)
    json.dump(out, open(args.out, "w"))


if __name__ == "__main__":
    main()
