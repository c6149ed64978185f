"""Inputs for an Nsight Compute run of the CUDA decode kernels (B=1, 64 valid residual tokens).

    MILLION_CUDA_PDL=0 ncu --clock-control none --metrics <list> -k regex:pq_ python3 benchmarks/ncu_decode.py [SHAPES]

SHAPES: comma-separated name:context[:bits] items (bits 4 or 2, default 4), default
mha:4096,mha:32768,gqa:4096,gqa:32768,smollm2:4096.
Each shape runs the full call twice (the first builds the tables' caches); profile the second with
``--launch-skip`` / ``--launch-count`` or read both.
"""

import sys

import torch

sys.path.insert(0, "benchmarks")
from bench_decode_cuda import make  # noqa: E402

from million.ops import cuda_attention as ca  # noqa: E402

SHAPES = {"mha": (32, 32, 128), "gqa": (32, 8, 128), "smollm2": (9, 3, 64)}
want = sys.argv[1] if len(sys.argv) > 1 else "mha:4096,mha:32768,gqa:4096,gqa:32768,smollm2:4096"
for item in want.split(","):
    parts = item.split(":")
    ok = len(parts) in (2, 3) and parts[0] in SHAPES and all(p.isdigit() for p in parts[1:])
    if not ok or (len(parts) == 3 and parts[2] not in ("2", "4")):
        raise SystemExit(f"bad item {item!r}: expected name:context[:bits], name one of {sorted(SHAPES)}, bits 4 or 2")
    name, T, bits = parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 4
    Hq, Hkv, D = SHAPES[name]
    q, kc, vc, kcen, vcen, kr, vr = make(1, Hq, Hkv, D, bits, T, 128, torch.float16, "cuda")
    pl = torch.full((1,), T - 64, dtype=torch.int32, device="cuda")
    rl = torch.full((1,), 64, dtype=torch.int32, device="cuda")
    for _ in range(2):
        ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl)
    torch.cuda.synchronize()
    print(name, T, bits, flush=True)
