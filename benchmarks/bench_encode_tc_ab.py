"""A/B of the Triton tensor-core encode kernel (``pq_encode_launch(kernel="tc")``, the default for fp16 x and centroids
with ksub <= 16) in this tree against another version of ``million/ops/triton_encode.py`` (``--old FILE``, e.g. from
``git show bcb5d00:src/million/ops/triton_encode.py``), at the shape where it is the default: fp16 K of one layer of a
LLaMA-2-7B-shaped model, 32 heads x 32K tokens x 128 dims, dsub 4, 16 centroids per subspace (per-head codebooks).
Prints both times (CUDA-event medians), their ratio in this run, and whether the codes agree; ``--out`` writes JSON.

    PYTHONPATH=src python benchmarks/bench_encode_tc_ab.py --old /tmp/triton_encode_old.py --out tc_ab.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys

import torch


def load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cuda_ms(fn) -> float:
    from bench_encode import cuda_time  # (benchmarks/ is the script's directory, first on sys.path)

    return 1e3 * cuda_time(fn, warmup=3, iters=11)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="another triton_encode.py to compare with")
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply x and centroids (fp16 range checks)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    from million.ops import naive
    from million.ops import triton_encode as new

    old = load_module(a.old, "triton_encode_old")
    g = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(1, a.heads, a.tokens, 128, device="cuda", generator=g) * a.scale).half()
    c = (torch.randn(a.heads, 32, 16, 4, device="cuda", generator=g) * a.scale).half()
    t_new = cuda_ms(lambda: new.pq_encode_launch(x, c, kernel="tc"))
    t_old = cuda_ms(lambda: old.pq_encode_launch(x, c, kernel="tc"))
    t_new2 = cuda_ms(lambda: new.pq_encode_launch(x, c, kernel="tc"))
    ref = naive.pq_encode(x[:, :, :2048].float(), c.float())
    agree = {n: float((m.pq_encode_launch(x[:, :, :2048], c, kernel="tc") == ref).float().mean())
             for n, m in (("new", new), ("old", old))}
    r = {"shape": [1, a.heads, a.tokens, 128], "dsub": 4, "ksub": 16, "scale": a.scale, "old_ms": t_old,
         "new_ms": [t_new, t_new2], "new_over_old": statistics.mean([t_new, t_new2]) / t_old, "agree_with_naive": agree,
         "device": torch.cuda.get_device_name(), "torch": torch.__version__}
    print(f"tc encode, fp16 [1, {a.heads}, {a.tokens}, 128], dsub 4, ksub 16 (scale {a.scale:g}): old {t_old:.3f} ms, "
          f"new {t_new:.3f} / {t_new2:.3f} ms (new/old {r['new_over_old']:.3f}); codes = naive on 2,048 tokens: "
          f"new {agree['new']:.4f}, old {agree['old']:.4f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(r, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
