"""Side-by-side table of bench_decode_cuda.py JSONs (one per library or setting, each timed in its own process with
SDPA re-measured there): PQ kernel time per cell and its speed relative to the first JSON (> 1: faster), then the
first JSON's own ratio to SDPA.

    python benchmarks/decode_ab_table.py DIR NAME1 NAME2 ...   # DIR/NAME1.json, DIR/NAME2.json, ...
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(d: Path, names: list[str]) -> str:
    rows: dict = {}
    for n in names:
        for r in json.loads((d / f"{n}.json").read_text())["bench"]:
            rows.setdefault((r["shape"], r["B"], r["context"], r["bits"]), {})[n] = (r["cuda_us"], r["sdpa_us"])
    out = ["shape:B:context:bits".ljust(22) + "".join(n[-13:].rjust(15) for n in names) + f"   xSDPA({names[0]})"]
    for k, v in sorted(rows.items()):
        base = v.get(names[0])
        line = ":".join(map(str, k)).ljust(22)
        for n in names:
            line += f"{v[n][0]:9.1f} {base[0] / v[n][0]:5.3f}" if n in v and base else "-".rjust(15)
        out.append(line + (f"   {base[1] / base[0]:.2f}" if base else ""))
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    print(table(Path(sys.argv[1]), sys.argv[2:]))
