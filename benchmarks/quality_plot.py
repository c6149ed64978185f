"""Redraw docs/quality_ppl_vs_bits.png (Δppl against true bits per element, per method) from the saved result JSONs.

Collects the all-quantized perplexity JSONs of the GPU runs kept in docs/logs/quality (the main table: runs 2, 3, 6
and 8; the CPU quanto runs; the served recipe with the key rotation, 2026-12-04; the default settings of `million
calibrate` and the rotated + tuned 2-bit recipe from `quality_finetune.py` outputs, converted; the defaults with k-means
on every calibration vector, 2026-12-05, CPU) into one folder as
``ppl/<label>-<text>.json`` and draws the plot with ``bench_quality.report``.

    python benchmarks/quality_plot.py --out runs/quality_plot --plot docs/quality_ppl_vs_bits.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_quality import report  # noqa: E402

SERVED = "pq-served"  # the recipes MillionCache serves (rotated keys), drawn as their own series
LOGS = Path(__file__).resolve().parent.parent / "docs" / "logs" / "quality"
PPL = (["gpu_json/quality_gpu2-ppl-*.json", "gpu_json/quality_gpu3-ppl-*.json", "gpu_json/quality_gpu6-ppl-pq-*.json",
        "gpu_json/quality_gpu8-ppl-pq-*.json", "quanto-*-squad.json", "cpu_json/ppl-quanto-*-essays.json",
        "balanced/pq-*-served-balk-*.json"])


def _from_finetune(path: Path, label: str, tuned: bool) -> list[dict]:
    """bench_quality-style rows from a quality_finetune.py JSON (k-means result, or its first tuning)."""
    d = json.loads(path.read_text())
    res = d["tunings"][0]["results"] if tuned else d["results"]["kmeans"]
    bits = int(d["args"]["bits"])
    out = []
    for text in ("squad", "essays"):
        if text in res:
            r = res[text]
            out.append({"label": label, "method": SERVED, "bits": bits, "text": text, "protocol": "all-quantized",
                        "ppl": r["ppl"], "windows": r["windows"], "window": 2048, "tokens": r["tokens"],
                        "bits_per_element": r["bits_per_element"], "bits_per_element_32k": r["bits_per_element_32k"]})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/quality_plot")
    ap.add_argument("--plot", default="docs/quality_ppl_vs_bits.png")
    a = ap.parse_args(argv)
    ppl = Path(a.out) / "ppl"
    if ppl.exists():
        shutil.rmtree(ppl)
    ppl.mkdir(parents=True)
    for pat in PPL:
        for f in sorted(LOGS.glob(pat)):
            r = json.loads(f.read_text())
            if r.get("protocol", "all-quantized") != "all-quantized" or r.get("window") != 2048:
                continue
            if "served" in r["label"]:
                r["method"] = SERVED
            (ppl / f"{r['label']}-{r['text']}.json").write_text(json.dumps(r))
    extra = (_from_finetune(LOGS / "defaults" / "s16384_i16_w8192_t32768.json", "pq-4-default", False)
             + _from_finetune(LOGS / "defaults" / "b2_s16384_i16_w8192_t32768.json", "pq-2-default", False)
             + _from_finetune(LOGS / "balanced" / "gpu_ft2s_balk_needle_aq_1k8k.json", "pq-2-balk-tuned", True))
    for text in ("squad", "essays"):  # the defaults since 2026-12-05: k-means on every calibration vector (CPU run)
        f = LOGS / "samples32k" / f"ppl_cb4-s32k_{text}.json"
        if f.is_file():
            extra.append({**json.loads(f.read_text()), "label": "pq-4-every-vector", "method": SERVED})
    for r in extra:
        (ppl / f"{r['label']}-{r['text']}.json").write_text(json.dumps(r))
    report(Path(a.out), a.plot)


if __name__ == "__main__":
    main()
