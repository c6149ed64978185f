"""Sweep of eviction settings for 2-bit PQ eviction (``--method pqsparse``), all-quantized, one model load.

Question: is there one setting of the eviction rule that meets both 2-bit targets of the quality issue at once,
perplexity within 5% of fp16 on both texts and every needle fp16 finds? For each setting ``recent:pool:side:observe[:pool_share]``
(``side`` is ``after`` or ``both``, ``observe`` 0 for none, ``pool_share`` 1 when left out) the runs go from cheap to dear and stop at the first
failure: essays perplexity (the harder text) -> needle set 0 -> needle set 1 -> SQuAD perplexity (``--all``: all four). fp16 is measured
first in the same process (perplexity on both texts, both needle sets). Every run is written to ``OUT/<name>.json``
and skipped when that file exists, so a cut-off sweep resumes; ``OUT/summary.json`` and a table at the end.

    python benchmarks/quality_evict_sweep.py --codebooks runs/cb4-default --device cuda --out runs/sweep \\
        --settings "0.5:15:after:32,0.4:15:after:32"
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

DEPTHS = "0.05,0.15,0.25,0.35,0.45,0.55,0.65,0.75,0.85,0.95"


def parse_setting(s: str) -> dict:
    parts = s.split(":")
    if len(parts) not in (4, 5):
        raise ValueError(f"setting {s!r}: expected recent:pool:side:observe[:pool_share], e.g. 0.5:15:after:32")
    recent, pool, side, obs = float(parts[0]), int(parts[1]), parts[2], int(parts[3])
    if side not in ("after", "both"):
        raise ValueError(f"setting {s!r}: side {side!r} is not one of after, both")
    share = float(parts[4]) if len(parts) == 5 else 1.0
    return {"recent": recent, "pool": pool, "pool_side": side, "observe": obs or None, "pool_share": share}


def setting_name(st: dict) -> str:
    tail = "" if st["pool_share"] == 1.0 else f"-s{st['pool_share']:g}"
    return f"r{st['recent']:g}-p{st['pool']}{st['pool_side'][0]}-o{st['observe'] or 0}{tail}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--codebooks", required=True)
    ap.add_argument("--bits", type=float, default=1.83, help="nominal bits of pqsparse (default 1.83 = 2.00 at 32K)")
    ap.add_argument("--settings", required=True, help="comma-separated recent:pool:side:observe[:pool_share]")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-windows", type=int, default=8)
    ap.add_argument("--contexts", default="1024,2048,4096,8192")
    ap.add_argument("--depths", default=DEPTHS)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--limit", type=float, default=5.0, help="perplexity limit in %% over fp16 (default 5)")
    ap.add_argument("--all", action="store_true", help="run all four measurements of a setting, not stopping at a failure")
    ap.add_argument("--budget-s", type=float, default=1e9, help="start no run after this many seconds")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)

    from million.cli import _device
    from million.data import load_text
    from million.eval.calibdata import load_or_collect
    from million.eval.methods import make_method
    from million.eval.needle import needle_eval
    from million.eval.ppl import default_offset, perplexity
    from million.models import load_model, resolve_model

    settings = [parse_setting(s) for s in a.settings.split(",") if s]
    contexts = [int(x) for x in a.contexts.split(",")]
    depths = [float(x) for x in a.depths.split(",")]
    seeds = [int(x) for x in a.seeds.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    torch.set_num_threads(a.threads)
    src = resolve_model(a.model)
    model, tok = load_model(src, dtype=torch.float32, device=_device(a.device))
    texts = {t: tok(load_text(t), return_tensors="pt", add_special_tokens=False).input_ids[0] for t in ("essays", "squad")}
    hay = tok(load_text("essays")[: 60 * max(contexts)], return_tensors="pt", add_special_tokens=False).input_ids[0]

    def calib():
        return load_or_collect(model, tok, "squad", 16384, 2048, model_name=src.name, progress=False)

    def run(name, method, kind, arg):
        p = out / f"{name}.json"
        if p.exists():
            return json.loads(p.read_text())
        if time.time() - t_start > a.budget_s:
            return None
        t0 = time.time()
        if kind == "ppl":
            r = perplexity(model, texts[arg], method, "all-quantized", 2048, a.max_windows, default_offset(arg), arg)
        else:
            r = needle_eval(model, tok, method, hay, contexts, depths, "all-quantized", 10, arg)
        r.update({"model": src.name, "device": a.device, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                  "run": name, "run_seconds": time.time() - t0})
        p.write_text(json.dumps(r, indent=2) + "\n")
        what = f"ppl {r['ppl']:.4f}" if kind == "ppl" else f"needle {r['accuracy']:.3f} {r['accuracy_by_context']}"
        print(f"{name}: {what} ({time.time() - t0:.0f} s)", flush=True)
        return r

    fp16 = make_method("fp16", 16)
    fp16.fit(model, calib)
    ref = {t: run(f"fp16-ppl-{t}", fp16, "ppl", t) for t in ("essays", "squad")}
    ref.update({s: run(f"fp16-needle-s{s}", fp16, "needle", s) for s in seeds})
    if any(v is None for v in ref.values()):
        print("budget spent before the fp16 reference was complete", file=sys.stderr)
        return 1

    def found(r):
        return {(c["context"], c["depth"]) for c in r["cases"] if c["correct"]}

    rows = []
    for st in settings:
        name = setting_name(st)
        m = make_method("pqsparse", a.bits, a.codebooks, **st)
        m.fit(model, calib)
        row = {"setting": name, **st}
        for kind, arg in [("ppl", "essays")] + [("needle", s) for s in seeds] + [("ppl", "squad")]:
            key = f"{kind}-{arg}" if kind == "ppl" else f"needle-s{arg}"
            r = run(f"{name}-{key}", m, kind, arg)
            if r is None:
                row["stopped"] = "budget"
                break
            if kind == "ppl":
                d = 100 * (r["ppl"] / ref[arg]["ppl"] - 1)
                row[key] = {"ppl": r["ppl"], "delta_pct": d, "bits_32k": r["bits_per_element_32k"]}
                ok = d <= a.limit
            else:
                missed = sorted(found(ref[arg]) - found(r))
                row[key] = {"accuracy": r["accuracy"], "fp16_accuracy": ref[arg]["accuracy"], "missed_fp16_found": missed}
                ok = not missed
            if not ok:
                row.setdefault("failed", []).append(key)
                if not a.all:
                    break
        if "stopped" not in row and "failed" not in row:
            row["meets_both"] = True
        rows.append(row)
        (out / "summary.json").write_text(json.dumps({"fp16": {k: (v["ppl"] if "ppl" in v else v["accuracy"])
                                                                for k, v in ref.items()}, "rows": rows}, indent=2) + "\n")

    print(f"\n{'setting':<22} {'essays':>9} {'needle 0':>10} {'needle 1':>10} {'squad':>9}  result")
    for row in rows:
        def cell(k):
            v = row.get(k)
            if v is None:
                return "-"
            return f"{v['delta_pct']:+.2f}%" if "delta_pct" in v else f"{v['accuracy']:.3f}" + ("" if not v["missed_fp16_found"] else "*")
        res = "both targets" if row.get("meets_both") else f"failed {row.get('failed')}, stopped: {row.get('stopped')}"
        print(f"{row['setting']:<22} {cell('ppl-essays'):>9} {cell('needle-s0'):>10} {cell('needle-s1'):>10} {cell('ppl-squad'):>9}  {res}")
    print("(* = misses a needle fp16 finds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
