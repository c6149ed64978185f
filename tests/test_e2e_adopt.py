"""benchmarks/e2e_adopt.py: the end-to-end A/B calls' decision rule, on made-up bench_e2e.py outputs (CPU)."""

import importlib.util
import json
from pathlib import Path

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "e2e_adopt.py"
_spec = importlib.util.spec_from_file_location("e2e_adopt", _path)
e2e_adopt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e_adopt)

CELL = ["--cell", "llama3-8b:1:4096:pq-tr"]


def _write(d, arm, part, ms, other=10.0, batch=1):
    rows = [{"context": 4096, "batch": batch, "shape": "llama3-8b", "pq-tr_step_ms": ms, "pq_step_ms": other,
             "pq-tr_prefill_s": 1.0}]
    (d / f"e2e_{arm}_{part}.json").write_text(json.dumps({"device": "x", "rows": rows}))


def _arms(d, old, new, old_o=10.0, new_o=10.0):
    for r, (o, n) in zip(("", "_b"), zip(old, new)):
        _write(d, "old" + r, "l1", o, old_o)
        _write(d, "new" + r, "l1", n, new_o)


def test_takes_only_when_every_round_beats_the_margin(tmp_path, capsys):
    _arms(tmp_path, (9.20, 9.21), (9.10, 9.12))
    assert e2e_adopt.main([str(tmp_path), "old", "new", *CELL]) is True
    assert (tmp_path / "adopt").read_text() == "1" and "adopt True" in capsys.readouterr().out
    _arms(tmp_path, (9.20, 9.21), (9.10, 9.19))  # 0.2% faster in round 2: under the 0.5% margin
    assert e2e_adopt.main([str(tmp_path), "old", "new", *CELL]) is False
    assert (tmp_path / "adopt").read_text() == "0"
    assert e2e_adopt.main([str(tmp_path), "old", "new", *CELL, "--margin", "0.001"]) is True


def test_guard_and_missing_cells_refuse(tmp_path, capsys):
    _arms(tmp_path, (9.20, 9.21), (9.10, 9.12), old_o=10.0, new_o=10.2)  # another cell 2% slower in both rounds
    assert e2e_adopt.main([str(tmp_path), "old", "new", *CELL]) is False
    assert "slower: llama3-8b:1:4096:pq" in capsys.readouterr().out
    _arms(tmp_path, (9.20, 9.21), (9.10, 9.12))
    _write(tmp_path, "new_b", "b8", 11.0, batch=8)  # timed by one arm in one round only
    assert e2e_adopt.main([str(tmp_path), "old", "new", *CELL]) is False
    assert "missing: llama3-8b:8:4096" in capsys.readouterr().out


def test_a_round_missing_its_file_is_not_filled_by_another_round(tmp_path, capsys):
    # e2e_new_l1.json absent: round '' of the variant must not read e2e_new_b_l1.json
    _arms(tmp_path, (9.20, 9.21), (9.10, 9.12))
    (tmp_path / "e2e_new_l1.json").unlink()
    assert e2e_adopt.main([str(tmp_path), "old", "new", *CELL]) is False
    assert "missing: llama3-8b:1:4096:pq-tr" in capsys.readouterr().out
