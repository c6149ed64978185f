"""Which arm of a multi-arm one-call A/B to take (benchmarks/gpu_gqa7.sh, gpu_next8.sh): of the arms whose
ab_adopt.py decision (DIR/adopt_ARM) is 1, the one with the lowest total time over both rounds' cells
(DIR/ab_ARM.json, DIR/ab_ARM_b.json); writes its name, or "none", to DIR/take.

    python3 benchmarks/ab_take.py DIR ARM [ARM ...]
"""

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> str:
    d, arms = Path(argv[0]), argv[1:]
    tot = {}
    for e in ["lib", *arms]:
        files = [d / f"ab_{e}{s}.json" for s in ("", "_b")]
        if all(f.exists() for f in files):
            tot[e] = sum(r["cuda_us"] for f in files for r in json.loads(f.read_text())["bench"])
    for e, t in tot.items():
        print(f"total {e}: {t:.1f} us")
    ok = [e for e in arms if e in tot and (d / f"adopt_{e}").exists() and (d / f"adopt_{e}").read_text() == "1"]
    take = min(ok, key=tot.get) if ok else "none"
    print("take", take)
    (d / "take").write_text(take)
    return take


if __name__ == "__main__":
    main(sys.argv[1:])
