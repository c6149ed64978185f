"""k-means training speed on the CPU (or a GPU) at the calibration's shape, per size of the distance blocks.

``million calibrate`` trains ``L x H_kv x M`` codebooks per side (SmolLM2, 4 bits: 30 x 3 x 32 = 2880) in batches of
independent problems; this times one such batch (default: 64 problems of 8,192 2-D points, 256 centroids, 12 Lloyd
iterations, the command's defaults) with the assignment step materializing at most ``--chunks`` distance entries at
once, and prints a table (seconds, median of ``--repeats``; ratio to the first chunk size) and writes JSON.

    PYTHONPATH=src python benchmarks/bench_kmeans.py --chunks 33554432,2097152,524288,262144 --out kmeans.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

import million.kmeans as km


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=64)
    ap.add_argument("--points", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=2)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--chunks", default="33554432,2097152,524288,262144", help="distance entries per block, comma-separated")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    x = torch.randn(a.problems, a.points, a.dim, generator=torch.Generator().manual_seed(0)).to(a.device)
    rows = []
    for ce in [int(c) for c in a.chunks.split(",") if c]:
        km._CHUNK_ELEMS = km._CHUNK_ELEMS_CPU = ce
        ts = []
        for _ in range(a.repeats):
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t = time.perf_counter()
            km.kmeans(x, a.k, iters=a.iters, tol=0.0)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
        rows.append({"chunk_elems": ce, "seconds": statistics.median(ts), "all": ts})
    base = rows[0]["seconds"]
    print(f"{'chunk entries':>14} {'s (median)':>11} {'x first':>8}")
    for r in rows:
        print(f"{r['chunk_elems']:>14} {r['seconds']:>11.3f} {base / r['seconds']:>8.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"args": vars(a), "rows": rows, "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "machine": platform.processor() or platform.machine(), "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())},
                      f, indent=1)


if __name__ == "__main__":
    main()
