"""The rule of gpu_next25.sh for more tensor-core warps in bfloat16, written before its run.

    python benchmarks/bf16_warps_rule.py DIR [--rounds ,_b]

reads DIR/bfa{round}.json (bf16, ``MILLION_CUDA_MMA_WARPS=auto``: 8 warps for bf16), DIR/bf12{round}.json (12 warps
forced) and DIR/bf16w{round}.json (16 warps forced), all bench_decode_cuda.py output. Per class, the cells fp16's
``auto`` gives more warps to (``million.ops.cuda_attention.mma_warps_for``; for bf16 without the packed-LUT kernel's
upper bound): d = 64 (the SmolLM2 shape) at 12 warps from 2^15 tokens of work (batch x context), and d = 128 at 2 bits
(the GQA shape) at 16 warps from 2^15. A class is taken if no cell of it is more than 1% slower than 8 warps in every
round and at least one is more than 1% faster in every round. Prints each cell's times and "take CLASS True/False".
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ab_adopt import cell_times  # noqa: E402

CLASSES = {"d64_w12": ("smollm2", None, "bf12"), "d128_2bit_w16": ("gqa", 2, "bf16w")}
WORK_MIN = 1 << 15


def times(path: Path) -> dict:
    rows = json.loads(path.read_text())["bench"]
    if rows and rows[0].get("q_op") is None:
        raise SystemExit(f"{path}: not bench_decode_cuda.py output")
    return cell_times(path)


def decide(d: Path, rounds: list[str], margin: float = 0.01) -> dict:
    out = {}
    for cls, (shape, bits, arm) in CLASSES.items():
        pairs = [(times(d / f"bfa{r}.json"), times(d / f"{arm}{r}.json")) for r in rounds]
        cells = sorted(c for c in set.intersection(*(set(b) & set(v) for b, v in pairs))
                       if c[0] == shape and (bits is None or c[3] == bits) and c[1] * c[2] >= WORK_MIN)
        if not cells:
            raise SystemExit(f"{cls}: no cell of the class in {d}")
        slower = [c for c in cells if all(v[c] > (1 + margin) * b[c] for b, v in pairs)]
        faster = [c for c in cells if all(v[c] < (1 - margin) * b[c] for b, v in pairs)]
        for c in cells:
            print(f"{cls} {':'.join(map(str, c))}: 8 warps " + " / ".join(f"{b[c]:.2f}" for b, _ in pairs)
                  + f", {arm} " + " / ".join(f"{v[c]:.2f}" for _, v in pairs)
                  + (" slower" if c in slower else " faster" if c in faster else ""))
        out[cls] = not slower and bool(faster)
        print(f"take {cls} {out[cls]}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--rounds", default=",_b", help="comma-separated suffixes of the rounds' JSON names (default ',_b')")
    args = ap.parse_args(argv)
    decide(args.dir, args.rounds.split(","))


if __name__ == "__main__":
    main()
