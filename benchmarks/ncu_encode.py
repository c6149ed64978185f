"""Inputs for an Nsight Compute run of the CUDA encode kernels: x [1, 32, 32768, 128] fp16, ksub 256.

    ncu --set full -k regex:enc_ --launch-skip 1 --launch-count 1 python3 benchmarks/ncu_encode.py [BITS] [OPT]

BITS: 2 (M = 32, dsub 4; default) or 4 (M = 64, dsub 2). OPT: the ``opt`` launch field (default: the
library's). Each configuration runs twice (the first builds the cached tables); profile the second.
"""

import sys

import torch

from million.ops import cuda_encode as ce

bits = int(sys.argv[1]) if len(sys.argv) > 1 else 2
opt = int(sys.argv[2]) if len(sys.argv) > 2 else None
M = 32 if bits == 2 else 64
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(1, 32, 32768, 128, device="cuda", generator=g).half()
c = torch.randn(1, M, 256, 128 // M, device="cuda", generator=g).half()
for _ in range(2):
    ce.pq_encode(x, c, opt=opt)
torch.cuda.synchronize()
print("encoded", bits, "bits", flush=True)
