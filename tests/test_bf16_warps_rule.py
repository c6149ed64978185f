"""benchmarks/bf16_warps_rule.py: the rule for more tensor-core warps in bf16, on made-up bench outputs (CPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "bf16_warps_rule.py"
_spec = importlib.util.spec_from_file_location("bf16_warps_rule", _path)
rule = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rule)


def _write(d, name, shapes, bits, f):
    rows = [dict(shape=s, B=B, context=c, bits=b, cuda_us=f(s, B, c, b), q_op=False)
            for s in shapes for B in (1, 8) for c in (4096, 32768, 131072) for b in bits]
    (d / f"{name}.json").write_text(json.dumps({"bench": rows}))


def _base(s, B, c, b):
    return 10.0 + B * c / 1e4


def _rounds(d, f12, f16):
    for r in ("", "_b"):
        _write(d, f"bfa{r}", ("gqa", "smollm2"), (4, 2), _base)
        _write(d, f"bf12{r}", ("smollm2",), (4, 2), f12)
        _write(d, f"bf16w{r}", ("gqa",), (2,), f16)


def test_takes_a_class_faster_somewhere_and_slower_nowhere(tmp_path, capsys):
    # 12 warps 5% faster at d=64 except where the work is short (B=1 4K, outside the class: 30% slower there);
    # 16 warps 3% faster at GQA 2-bit but 2% slower at B=8 128K
    _rounds(tmp_path, lambda s, B, c, b: _base(s, B, c, b) * (1.3 if B * c < 1 << 15 else 0.95),
            lambda s, B, c, b: _base(s, B, c, b) * (1.02 if (B, c) == (8, 131072) else 0.97))
    assert rule.decide(tmp_path, ["", "_b"]) == {"d64_w12": True, "d128_2bit_w16": False}
    out = capsys.readouterr().out
    assert "smollm2:1:4096" not in out  # short work is not in the class
    assert "gqa:8:131072:2: 8 warps 114.86 / 114.86, bf16w 117.15 / 117.15 slower" in out


def test_needs_every_round_and_a_gain(tmp_path):
    _rounds(tmp_path, _base, lambda s, B, c, b: _base(s, B, c, b) * 0.9)  # 12 warps equal: no gain, not taken
    rows = json.loads((tmp_path / "bf16w_b.json").read_text())  # round 2: 16 warps no faster
    for r in rows["bench"]:
        r["cuda_us"] = _base(r["shape"], r["B"], r["context"], r["bits"])
    (tmp_path / "bf16w_b.json").write_text(json.dumps(rows))
    assert rule.decide(tmp_path, ["", "_b"]) == {"d64_w12": False, "d128_2bit_w16": False}
    assert rule.decide(tmp_path, [""]) == {"d64_w12": False, "d128_2bit_w16": True}


def test_missing_class_cells_is_an_error(tmp_path):
    for r in ("", "_b"):
        _write(tmp_path, f"bfa{r}", ("gqa",), (4,), _base)
        _write(tmp_path, f"bf12{r}", ("smollm2",), (4, 2), _base)
        _write(tmp_path, f"bf16w{r}", ("gqa",), (2,), _base)
    with pytest.raises(SystemExit, match="d64_w12: no cell of the class"):
        rule.decide(tmp_path, ["", "_b"])
