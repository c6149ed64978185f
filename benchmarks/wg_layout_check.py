"""One check of the 2-bit wgmma encode kernel (``opt`` bit 5) against the naive encode, for each order of the
B descriptor's two core-matrix offsets (K-adjacent, N-adjacent): the layout the kernel ships with is (128, 256); the
swapped one is tried only so that a wrong reading of the descriptor shows as such. Prints one JSON line per layout.

    PYTHONPATH=src python benchmarks/wg_layout_check.py
"""

from __future__ import annotations

import json

import torch

from million.ops import cuda_encode as ce
from million.ops import naive


def main():
    lib = ce._lib()
    print(json.dumps(dict(wgmma_available=ce.wgmma_available())), flush=True)
    if not ce.wgmma_available():
        return
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(2, 4, 1000, 128, device="cuda", generator=g) * 1.5).half()
    c = torch.randn(4, 32, 256, 4, device="cuda", generator=g)
    ref = naive.pq_encode(x, c)
    for lbo, sbo in ((128, 256), (256, 128)):
        lib.million_pq_encode_set_wg_layout(lbo, sbo)
        try:
            got = ce.pq_encode(x, c, opt=32)
            torch.cuda.synchronize()
            out = dict(lbo=lbo, sbo=sbo, match=(got == ref).float().mean().item(),
                       mma3_match=(ce.pq_encode(x, c, opt=12) == ref).float().mean().item())
        except Exception as e:  # noqa: BLE001 - report and go on to the other layout
            out = dict(lbo=lbo, sbo=sbo, error=f"{type(e).__name__}: {str(e)[:300]}")
        print(json.dumps(out), flush=True)
    lib.million_pq_encode_set_wg_layout(128, 256)


if __name__ == "__main__":
    main()
