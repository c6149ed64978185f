"""Gain-shape value codes: does a per-token norm in front of the value codes lower the 4-bit perplexity cost?

Evaluation-only probe (all-quantized protocol). Values are coded in the codebooks' value space (``y = v A``, ``A`` the
stored value transform). ``plain``: PQ of ``y`` (8-bit codes on 2-dim subspaces, as the cache stores them). ``gain``:
the norm ``||y||`` of every token and KV head is kept as a log-uniform ``--scale-bits`` scalar (range per layer and
head from the calibration values), and the direction ``y / ||y||`` is coded by PQ with codebooks trained on
directions. Both are trained here with the same k-means budget on the same calibration values; keys are either kept
(``values only``) or coded with the given codebooks (``both``). Bits: the scale costs ``scale_bits / head_dim`` per
value element, i.e. half that averaged over keys and values. Prints a table and writes JSON.

    PYTHONPATH=src python benchmarks/quality_gainshape.py --codebooks runs/cb4-default --samples 8192 --windows 4 --out gs.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from million.data import load_text
from million.eval.calibdata import load_or_collect
from million.eval.methods import FP16, PQMethod
from million.eval.ppl import SQUAD_OFFSET, perplexity
from million.kmeans import _assign, kmeans
from million.models import load_model
from million.pq_variants import _with_sinks


def _split(y: torch.Tensor, dsub: int) -> torch.Tensor:  # [H, N, D] -> [H * M, N, dsub]
    H, N, D = y.shape
    return y.reshape(H, N, D // dsub, dsub).permute(0, 2, 1, 3).reshape(H * (D // dsub), N, dsub)


def _qdq(y: torch.Tensor, cents: torch.Tensor) -> torch.Tensor:
    """PQ round trip of ``y [B, H, T, D]`` with ``cents [H, M, ksub, dsub]``."""
    B, H, T, D = y.shape
    _, M, k, dsub = cents.shape
    x = y.permute(1, 0, 2, 3).reshape(H, B * T, D)
    lab, _ = _assign(_split(x, dsub), cents.reshape(H * M, k, dsub))
    r = cents.reshape(H * M, k, dsub).gather(1, lab[..., None].expand(-1, -1, dsub))  # [H*M, B*T, dsub]
    return r.view(H, M, B * T, dsub).permute(0, 2, 1, 3).reshape(H, B, T, D).permute(1, 0, 2, 3)


def _qlog(s: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int) -> torch.Tensor:
    """Log-uniform scalar quantizer with ``2**bits`` levels on ``[exp(lo), exp(hi)]`` (``lo, hi`` broadcast)."""
    L = 2**bits - 1
    t = ((s.clamp_min(1e-30).log() - lo) / (hi - lo).clamp_min(1e-12) * L).round().clamp(0, L)
    return (lo + t / L * (hi - lo)).exp()


class ValueCodes(PQMethod):
    """Keys from ``base`` (or kept), values from codebooks trained here (``gain``: norm + direction codes)."""

    def __init__(self, base: PQMethod, cents: list, ranges: list | None, scale_bits: int, keys: bool, label: str):
        super().__init__(base.bits, base.variant, None, label=label)
        self.base, self.cents, self.ranges, self.scale_bits, self.keys = base, cents, ranges, scale_bits, keys
        self.cb = base.cb

    def qdq_key(self, layer, k, pos0):
        return self.base.qdq_key(layer, k, pos0) if self.keys else k

    def qdq_value(self, layer, v, pos0):
        A, Ai = self.cb.value_transform[layer], self.cb.value_inverse[layer]

        def f(x):
            y = torch.einsum("bhtd,hde->bhte", x, A)
            if self.ranges is None:
                return torch.einsum("bhtd,hde->bhte", _qdq(y, self.cents[layer]), Ai)
            s = y.norm(dim=-1, keepdim=True)
            lo, hi = self.ranges[layer]
            sq = _qlog(s, lo[None, :, None, None], hi[None, :, None, None], self.scale_bits)
            return torch.einsum("bhtd,hde->bhte", _qdq(y / s.clamp_min(1e-30), self.cents[layer]) * sq, Ai)

        return _with_sinks(v, pos0, self.variant.sinks, f)


def train(calib, cb, samples: int, iters: int, nbits: int, dsub: int, gain: bool, seed: int = 0):
    L = calib.num_layers
    keep = calib.positions >= cb.variant.sinks
    gen = torch.Generator().manual_seed(seed)
    cents, ranges, t0 = [], [], time.time()
    for l in range(L):
        y = torch.einsum("hnd,hde->hne", calib.values[l][:, keep], cb.value_transform[l])
        H, N, D = y.shape
        idx = torch.randperm(N, generator=gen)[: min(N, samples)]
        y = y[:, idx]
        if gain:
            s = y.norm(dim=-1, keepdim=True)
            ranges.append((s.log().amin((1, 2)), s.log().amax((1, 2))))
            y = y / s.clamp_min(1e-30)
        c = kmeans(_split(y, dsub), 2**nbits, iters=iters, seed=seed + l).centroids
        cents.append(c.view(H, D // dsub, 2**nbits, dsub))
        print(f"  layer {l}: {'gain' if gain else 'plain'} codebooks ({time.time() - t0:.0f} s)", flush=True)
    return cents, (ranges if gain else None)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--codebooks", required=True, help="a `million calibrate` directory (keys, transforms, sinks)")
    ap.add_argument("--bits", type=float, default=4)
    ap.add_argument("--calib-tokens", type=int, default=32768)
    ap.add_argument("--calib-window", type=int, default=8192)
    ap.add_argument("--samples", type=int, default=8192)
    ap.add_argument("--iters", type=int, default=16)
    ap.add_argument("--scale-bits", default="8", help="comma-separated widths of the norm (log-uniform levels)")
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--window", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model, tok = load_model("smollm2", dtype=torch.float32)
    ids = tok(load_text("squad"), return_tensors="pt", add_special_tokens=False).input_ids[0]
    base = PQMethod(a.bits, None, a.codebooks).fit(model, lambda: None)
    c = base.cb.variant
    if c.v_dsub * c.v_nbits == 0 or base.cb.value_transform is None:
        raise SystemExit(f"{a.codebooks}: needs codebooks with a value transform (million calibrate's recommended recipe)")
    calib = load_or_collect(model, tok, "squad", tokens=a.calib_tokens, window=a.calib_window, model_name="smollm2",
                            progress=True, attention=False)
    D = model.config.hidden_size // model.config.num_attention_heads
    run = lambda m: perplexity(model, ids, m, window=a.window, max_windows=a.windows, offset=SQUAD_OFFSET,  # noqa: E731
                               text_name="squad")
    f16 = run(FP16(16))["ppl"]
    print(f"fp16 ppl {f16:.4f}", flush=True)
    pc, _ = train(calib, base.cb, a.samples, a.iters, c.v_nbits, c.v_dsub, gain=False)
    gc, gr = train(calib, base.cb, a.samples, a.iters, c.v_nbits, c.v_dsub, gain=True)
    rows = []
    configs = [("plain", pc, None, 0)] + [(f"gain{b}", gc, gr, int(b)) for b in a.scale_bits.split(",")]
    for keys in (False, True):
        for name, cents, ranges, sb in configs:
            m = ValueCodes(base, cents, ranges, sb, keys, f"{name}-{'kv' if keys else 'v'}")
            t0 = time.time()
            r = run(m)
            extra = sb / D / 2  # the scale, per element averaged over K and V
            rows.append({"values": name, "keys_quantized": keys, "scale_bits": sb, "ppl": r["ppl"],
                         "delta_pct": 100 * (r["ppl"] / f16 - 1), "bits_32k": r["bits_per_element_32k"] + extra,
                         "seconds": time.time() - t0})
            print(f"{'keys+values' if keys else 'values only':>11} {name:>6}: ppl {r['ppl']:.4f} ({rows[-1]['delta_pct']:+.2f}%), "
                  f"{rows[-1]['bits_32k']:.3f} bits/element @32K", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "fp16": f16, "rows": rows, "torch": torch.__version__,
                       "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}, f, indent=1)


if __name__ == "__main__":
    main()
