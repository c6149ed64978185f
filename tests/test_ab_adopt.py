"""benchmarks/ab_adopt.py: the one-call A/B scripts' decision rule, on made-up bench_decode_cuda.py outputs (CPU)."""

import importlib.util
import json
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "ab_adopt.py"
_spec = importlib.util.spec_from_file_location("ab_adopt", _path)
ab_adopt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ab_adopt)
_spec_take = importlib.util.spec_from_file_location("ab_take", _path.parent / "ab_take.py")
ab_take = importlib.util.module_from_spec(_spec_take)
_spec_take.loader.exec_module(ab_take)


def _write(d, name, us, other=10.0):
    rows = [dict(shape="mha", B=1, context=32768, bits=4, cuda_us=us),
            dict(shape="mha", B=1, context=32768, bits=2, cuda_us=other)]
    (d / f"ab_{name}.json").write_text(json.dumps({"bench": rows}))


def test_adopts_only_when_every_round_beats_the_margin(tmp_path, capsys):
    _write(tmp_path, "col", 52.3)
    _write(tmp_path, "col_b", 52.4)
    _write(tmp_path, "pf", 51.5)
    _write(tmp_path, "pf_b", 51.5)
    assert ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4"]) is True
    assert (tmp_path / "adopt").read_text() == "1" and "adopt True" in capsys.readouterr().out
    _write(tmp_path, "pf_b", 52.2)  # 0.4% faster in round 2: under the 0.5% margin
    assert ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4"]) is False
    assert (tmp_path / "adopt").read_text() == "0"
    assert ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4", "--margin", "0.001"]) is True
    assert ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4", "--rounds", ""]) is True


def test_guard_refuses_a_cell_slower_in_every_round(tmp_path, capsys):
    _write(tmp_path, "col", 52.3, other=10.0)
    _write(tmp_path, "col_b", 52.4, other=10.0)
    _write(tmp_path, "pf", 51.5, other=10.5)  # the other cell 5% slower in both rounds
    _write(tmp_path, "pf_b", 51.5, other=10.5)
    args = [str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4"]
    assert ab_adopt.main(args) is True  # no guard: only the cell counts
    assert ab_adopt.main(args + ["--guard", "0.02"]) is False
    assert "slower: mha:1:32768:2" in capsys.readouterr().out
    assert ab_adopt.main(args + ["--guard", "0.06"]) is True
    _write(tmp_path, "pf_b", 51.5, other=10.1)  # 1% slower in round 2 only: not slower in every round
    assert ab_adopt.main(args + ["--guard", "0.02"]) is True


def test_guard_of_one_width(tmp_path, capsys):
    _write(tmp_path, "col", 52.3, other=10.0)
    _write(tmp_path, "col_b", 52.4, other=10.0)
    _write(tmp_path, "pf", 51.5, other=10.5)  # the 2-bit cell 5% slower in both rounds
    _write(tmp_path, "pf_b", 51.5, other=10.5)
    args = [str(tmp_path), "col", "pf", "--guard", "0.02"]
    assert ab_adopt.main(args + ["--cell", "mha:1:32768:4"]) is False  # every width guarded
    assert ab_adopt.main(args + ["--cell", "mha:1:32768:4", "--guard-bits"]) is True  # the 4-bit cells only
    _write(tmp_path, "pf", 52.3 * 1.03, other=9.0)  # the 2-bit cell 10% faster, the 4-bit one 3% slower
    _write(tmp_path, "pf_b", 52.4 * 1.03, other=9.0)
    assert ab_adopt.main(args + ["--cell", "mha:1:32768:2", "--guard-bits"]) is True
    assert ab_adopt.main(args + ["--cell", "mha:1:32768:2"]) is False
    assert "slower: mha:1:32768:4" in capsys.readouterr().out


def test_guard_of_some_shapes(tmp_path, capsys):
    def write(name, gqa_us, mha_us):
        rows = [dict(shape="gqa", B=1, context=32768, bits=4, cuda_us=gqa_us),
                dict(shape="mha", B=1, context=32768, bits=2, cuda_us=mha_us)]
        (tmp_path / f"ab_{name}.json").write_text(json.dumps({"bench": rows}))
    for r in ("", "_b"):
        write("lib" + r, 23.4, 30.7)
        write("m8" + r, 22.0, 32.0)  # the GQA cell 6% faster, the MHA cell 4% slower
    args = [str(tmp_path), "lib", "m8", "--cell", "gqa:1:32768:4", "--guard", "0.01"]
    assert ab_adopt.main(args) is False
    assert "slower: mha:1:32768:2" in capsys.readouterr().out
    assert ab_adopt.main(args + ["--shapes", "gqa,smollm2"]) is True  # the MHA cell is not guarded
    with pytest.raises(SystemExit):  # the decision cell's shape must be among the guarded ones
        ab_adopt.main(args + ["--shapes", "mha"])


def test_negative_margin_accepts_a_neutral_change(tmp_path):
    _write(tmp_path, "col", 52.3)
    _write(tmp_path, "mh", 52.5)  # 0.4% slower
    args = [str(tmp_path), "col", "mh", "--cell", "mha:1:32768:4", "--rounds", ""]
    assert ab_adopt.main(args) is False
    assert ab_adopt.main(args + ["--margin", "-0.005"]) is True
    assert ab_adopt.main(args + ["--margin", "-0.002"]) is False


def test_bad_input_is_named(tmp_path):
    _write(tmp_path, "col", 52.3)
    _write(tmp_path, "pf", 51.5)
    with pytest.raises(SystemExit, match="cell mha:8:32768:4 not in"):
        ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:8:32768:4", "--rounds", ""])
    with pytest.raises(SystemExit):
        ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768"])
    with pytest.raises(SystemExit):
        ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4", "--margin", "1.5"])
    with pytest.raises(SystemExit):
        ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4", "--margin", "-1"])
    with pytest.raises(SystemExit):
        ab_adopt.main([str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4", "--guard", "-0.1"])


def test_take_is_the_fastest_arm_that_passed(tmp_path, capsys):
    for name, us in (("lib", 30.0), ("a", 28.0), ("b", 27.0), ("c", 26.0)):
        _write(tmp_path, name, us)
        _write(tmp_path, name + "_b", us)
    (tmp_path / "adopt_a").write_text("1")
    (tmp_path / "adopt_b").write_text("1")
    (tmp_path / "adopt_c").write_text("0")  # the fastest, but refused by its rule
    assert ab_take.main([str(tmp_path), "a", "b", "c"]) == "b"
    assert (tmp_path / "take").read_text() == "b" and "total lib: 80.0 us" in capsys.readouterr().out
    (tmp_path / "adopt_b").write_text("0")
    assert ab_take.main([str(tmp_path), "a", "b", "c"]) == "a"
    (tmp_path / "adopt_a").unlink()  # an arm without a decision is not taken
    assert ab_take.main([str(tmp_path), "a", "b", "c"]) == "none"
    assert (tmp_path / "take").read_text() == "none"


def test_guard_refuses_a_cell_one_round_did_not_time(tmp_path, capsys):
    _write(tmp_path, "col", 52.3)
    _write(tmp_path, "col_b", 52.4)
    _write(tmp_path, "pf", 51.5, other=12.0)  # the other cell 20% slower in round 1 ...
    rows = [dict(shape="mha", B=1, context=32768, bits=4, cuda_us=51.5)]  # ... and not timed in round 2 (cut short)
    (tmp_path / "ab_pf_b.json").write_text(json.dumps({"bench": rows}))
    args = [str(tmp_path), "col", "pf", "--cell", "mha:1:32768:4"]
    assert ab_adopt.main(args) is True  # no guard: only the decision cell counts
    assert ab_adopt.main(args + ["--guard", "0.02"]) is False
    assert "missing: mha:1:32768:2" in capsys.readouterr().out
