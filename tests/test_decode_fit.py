"""benchmarks/decode_fit.py: rate and fixed cost recovered from times that follow a + b * T exactly."""

import importlib.util
import json
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "decode_fit.py"
_spec = importlib.util.spec_from_file_location("decode_fit", _path)
decode_fit = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(decode_fit)


def _rows(a_pq=12.0, b_pq=1e-3, a_sd=8.0, b_sd=5e-3, contexts=(1024, 4096, 32768, 131072)):
    return [{"shape": "mha", "B": 1, "bits": 4, "context": t, "cuda_us": a_pq + b_pq * t, "sdpa_us": a_sd + b_sd * t,
             "floor_us_at_3TBps": 0.9e-3 * t} for t in contexts]


def test_fit_recovers_rate_and_fixed_cost():
    (f,) = decode_fit.fit_rows(_rows(), 32768)
    assert f["pq_fixed_us"] == pytest.approx(12.0)
    assert f["pq_rate_us_per_32k"] == pytest.approx(1e-3 * 32768)
    assert f["sdpa_fixed_us"] == pytest.approx(8.0)
    assert f["rate_from"] == [32768, 131072]
    assert f["x_sdpa"] == pytest.approx((8.0 + 5e-3 * 32768) / (12.0 + 1e-3 * 32768))


def test_target_check():
    fits = decode_fit.fit_rows(_rows(), 32768)
    sdpa = 8.0 + 5e-3 * 32768
    (met,) = decode_fit.apply_targets(fits, [("mha", 1, 4, 3.0)])
    assert met["allowed_us"] == pytest.approx(sdpa / 3.0)
    assert met["met"] is True  # 44.8 us against 57.3 allowed
    assert met["fixed_allowed_at_rate_us"] == pytest.approx(sdpa / 3.0 - 1e-3 * 32768)
    assert met["fixed_allowed_at_floor_us"] == pytest.approx(sdpa / 3.0 - 0.9e-3 * 32768)
    (missed,) = decode_fit.apply_targets(fits, [("mha", 1, 4, 4.0)])
    assert missed["met"] is False
    (absent,) = decode_fit.apply_targets(fits, [("gqa", 1, 4, 2.5)])
    assert absent["missing"] is True


def test_one_context_or_non_finite_rows_give_no_fit():
    assert decode_fit.fit_rows(_rows(contexts=(32768,)), 32768) == []
    rows = _rows()
    rows[-1]["cuda_us"] = float("nan")  # the 128K row is dropped: rate from 4K-32K
    (f,) = decode_fit.fit_rows(rows, 32768)
    assert f["rate_from"] == [4096, 32768]


def test_copy_rate_rescales_the_floor():
    (f,) = decode_fit.fit_rows(_rows(), 32768, copy_gbps=4200.0)
    assert f["floor_us"] == pytest.approx(0.9e-3 * 32768 * 3000 / 4200)


def test_cli(tmp_path, capsys):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"bench": _rows()}))
    out = tmp_path / "fit.json"
    assert decode_fit.main([str(p), "--target", "mha:1:4:3", "--out", str(out)]) == 0
    assert "mha:1:4:3" in capsys.readouterr().out
    assert json.loads(out.read_text())["targets"][0]["met"] is True
    with pytest.raises(SystemExit):
        decode_fit.main([str(p), "--target", "mha:1:4"])
    assert "shape:batch:bits:ratio" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        decode_fit.main([str(p), "--context", "0"])
    assert decode_fit.main([str(p), "--context", "2048"]) == 1
