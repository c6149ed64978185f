"""Per-kernel GPU times of one decode-attention call (torch.profiler), for attributing time to the
LUT, partial and combine kernels and to the score/value halves (``PART`` 1/2 configs).

    PYTHONPATH=src python benchmarks/profile_decode.py --shape mha --ctx 32768 --configs '[{}, {"PART": 1}]'
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from bench_decode import BITS, SHAPES, make_inputs


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="mha")
    ap.add_argument("--ctx", type=int, default=32768)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--configs", default="[{}]")
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args(argv)
    from million.ops.triton_attention import pq_decode_attention_launch

    Hq, Hkv, D = SHAPES[args.shape]
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    sets, kcen, vcen, pq_lens, res_lens, nbytes = make_inputs(args.batch, Hq, Hkv, D, args.ctx, BITS[args.bits], 8,
                                                              128, torch.float16, 1, gen)
    q, kc, vc, kr, vr = sets[0]
    for cfg in json.loads(args.configs):
        f = lambda: pq_decode_attention_launch(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, config=cfg)
        for _ in range(3):
            f()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(args.iters):
                f()
            torch.cuda.synchronize()
        tot = collections.defaultdict(float)
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                tot[e.name] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
        parts = ", ".join(f"{k[:28]}={v / args.iters:.1f}us" for k, v in sorted(tot.items(), key=lambda kv: -kv[1]))
        print(f"{args.shape} B={args.batch} ctx={args.ctx} {args.bits}b {cfg}: {parts}", flush=True)


if __name__ == "__main__":
    main()
