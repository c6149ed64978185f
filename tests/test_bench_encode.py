"""benchmarks/bench_encode.py's summary table: one row per timed variant, ratios against the default dispatch of the
same (bits, codebook heads) group, shares of the given prefill."""

import importlib.util
from pathlib import Path

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_encode.py"
_spec = importlib.util.spec_from_file_location("bench_encode", _path)
bench_encode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_encode)


def test_summary_table():
    rows = [dict(bits=4, M=64, Hc=1, variant={}, ms=1.0, share_of_prefill=0.05),
            dict(bits=2, M=32, Hc=32, variant={}, ms=2.0, share_of_prefill=0.1),
            dict(bits=2, M=32, Hc=32, variant={"kernel": "cuda", "kind": "mma", "opt": 32}, ms=2.5,
                 share_of_prefill=0.125)]
    lines = bench_encode.summary_table(rows, 32768, 32, 128, 1431).splitlines()
    assert "[1,32,32768,128]" in lines[1] and "1431 ms prefill" in lines[1]
    assert lines[2] == "| bits | Hc | variant | ms | x default | share |"
    assert lines[4] == "| 4 | 1 | default | 1.000 | 1.00x | 5.0% |"
    assert lines[5] == "| 2 | 32 | default | 2.000 | 1.00x | 10.0% |"
    assert lines[6] == '| 2 | 32 | {"kernel": "cuda", "kind": "mma", "opt": 32} | 2.500 | 0.80x | 12.5% |'
    assert len(lines) == 7
