"""Quality benchmark: every KV method side by side on SmolLM2-135M (CPU, minutes to hours).

    python benchmarks/bench_quality.py --out runs/quality                       # everything
    python benchmarks/bench_quality.py --out runs/quality --parts ppl,deployed  # a subset
    python benchmarks/bench_quality.py --out runs/quality --report-only         # tables + plot from saved runs

Parts:
  ppl       all-quantized perplexity of every method, SQuAD (held-out windows after token 65536) and
            the Paul Graham essays
  ablation  the PQ options one at a time (SQuAD)
  deployed  the deployed protocol (fp16 residual windows as the real caches keep them)
  needle    needle-in-a-haystack accuracy, contexts 1K..8K

Every run writes ``OUT/<part>/<label>-<text>.json`` and is skipped when that file exists, so an
interrupted benchmark resumes. Codebooks are trained once into ``OUT/codebooks/``: the published
MILLION baseline with ``million.calibrate`` (merged granularity), the variants with
``million.pq_variants``. At the end a table is printed, ``OUT/summary.json`` written and (with
``--plot``) Delta-ppl against bits per element is plotted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

from million.pq_variants import PQVariant


def V(bits, **kw):
    """A PQ variant at 4 (dsub 2) or 2 (dsub 4) bits with 8-bit codes, then ``kw``."""
    d = {4: 2, 2: 4}[bits]
    return PQVariant(**{**dict(k_nbits=8, k_dsub=d, v_nbits=8, v_dsub=d, samples=4096, iters=10), **kw})


# label -> (method, bits, extra): extra is {"variant": PQVariant} or {"calibrate": granularity} or {}
MAIN = [
    ("fp16", "fp16", 16, {}),
    ("million-4", "million", 4, {"calibrate": "merged"}),
    ("million-2", "million", 2, {"calibrate": "merged"}),
    # post-RoPE codebooks must see every position the model will be run at: calibrated in 8K windows
    ("pq-4", "pq", 4, {"variant": "best", "calib_tokens": 32768, "calib_window": 8192}),
    ("pq-2", "pq", 2, {"variant": "best", "calib_tokens": 32768, "calib_window": 8192}),
    # the same recipe on all 61,440 held-out calibration tokens (scoring starts at token 65,536), 20 k-means iterations
    ("pq-4-c60k", "pq", 4, {"variant": "best-c60k", "calib_tokens": 61440, "calib_window": 8192}),
    ("pq-2-c60k", "pq", 2, {"variant": "best-c60k", "calib_tokens": 61440, "calib_window": 8192}),
    # 2 bits per element split unevenly between keys and values (retrieval leans on key precision):
    # keys 12-bit codes per 4 dims (3 bits/element) + values 4-bit per 4 dims (1), or 10 + 6 (2.5 + 1.5)
    ("pq-2-k12v4", "pq", 2, {"variant": "best-k12v4", "calib_tokens": 32768, "calib_window": 8192}),
    ("pq-2-k10v6", "pq", 2, {"variant": "best-k10v6", "calib_tokens": 32768, "calib_window": 8192}),
    # the other direction: more code bits to values than to keys at the same average (4 bits: keys 3.5 or 3,
    # values 4.5 or 5; 2 bits: keys 1.5, values 2.5)
    ("pq-4-k7v9", "pq", 4, {"variant": "best-k7v9", "calib_tokens": 32768, "calib_window": 8192}),
    ("pq-4-k6v10", "pq", 4, {"variant": "best-k6v10", "calib_tokens": 32768, "calib_window": 8192}),
    ("pq-2-k6v10", "pq", 2, {"variant": "best-k6v10", "calib_tokens": 32768, "calib_window": 8192}),
    # water-filled key subspaces allowed up to 12-bit codes (default 10)
    ("pq-4-a12", "pq", 4, {"variant": "best-a12", "calib_tokens": 32768, "calib_window": 8192}),
    # more bits for the same recipe (9- and 10-bit codes per 2 dims; k-means on 16,384 samples x 12 iterations, as
    # larger codebooks cost more to train): where PQ's quality curve crosses the +0.5% mark
    ("pq-4.5", "pq", 4.5, {"variant": "best-b9", "calib_tokens": 32768, "calib_window": 8192}),
    ("pq-5", "pq", 5, {"variant": "best-b10", "calib_tokens": 32768, "calib_window": 8192}),
    ("pq-4-s16k", "pq", 4, {"variant": "best-b8", "calib_tokens": 32768, "calib_window": 8192}),  # same k-means budget
    # the recipe MillionCache serves (million calibrate --granularity layer_head --sinks 1 --transform metric)
    ("pq-4-served", "pq", 4, {"variant": V(4, transform="metric", sinks=1, samples=16384, iters=16)}),
    ("pq-2-served", "pq", 2, {"variant": V(2, transform="metric", sinks=1, samples=16384, iters=16)}),
    # the same plus the balanced PCA rotation of the keys (million calibrate ... --rotation balanced-keys)
    ("pq-4-served-balk", "pq", 4, {"variant": V(4, transform="metric", sinks=1, alloc="balanced_k", samples=16384, iters=16)}),
    ("pq-2-served-balk", "pq", 2, {"variant": V(2, transform="metric", sinks=1, alloc="balanced_k", samples=16384, iters=16)}),
    ("kivi-4", "kivi", 4, {}),
    ("kivi-2", "kivi", 2, {}),
    ("kvquant-4", "kvquant", 4, {}),
    ("kvquant-3", "kvquant", 3, {}),
    ("kvquant-2", "kvquant", 2, {}),
    ("quanto-4", "quanto", 4, {}),
    ("quanto-2", "quanto", 2, {}),
    ("qhitter-4", "qhitter", 4, {}),
    ("qhitter-2", "qhitter", 2, {}),
    # heavy-hitter eviction with the kept tokens as 4-bit PQ codes (evaluation-only: MillionCache does not evict)
    ("pqsparse-2", "pqsparse", 2, {"variant": "best", "codebook_bits": 4, "calib_tokens": 32768, "calib_window": 8192}),
    ("pqsparse-3", "pqsparse", 3, {"variant": "best", "codebook_bits": 4, "calib_tokens": 32768, "calib_window": 8192}),
]

ABLATION = [
    # one option at a time, from the published recipe towards the chosen default (2 bits, then 4)
    ("pq2-merged", 2, V(2, granularity="merged", samples=65536)),
    ("pq2-layer", 2, V(2, granularity="layer", samples=16384)),
    ("pq2-layer_head", 2, V(2)),
    ("pq2-lh-sink1", 2, V(2, sinks=1)),
    ("pq2-lh-hadamard-sink1", 2, V(2, transform="hadamard", sinks=1)),
    ("pq2-lh-metric-sink1", 2, V(2, transform="metric", sinks=1)),
    ("pq2-lh-fisher-sink1", 2, V(2, transform="fisher", sinks=1)),
    ("pq2-lh-metric-sink1-attnw", 2, V(2, transform="metric", sinks=1, weighting="attn")),
    ("pq2-lh-metric-sink1-fisherw", 2, V(2, transform="metric", sinks=1, weighting="fisher")),
    ("pq2-lh-opq-sink1", 2, V(2, transform="opq", sinks=1)),
    ("pq2-lh-metric-sink1-s16k", 2, V(2, transform="metric", sinks=1, samples=16384, iters=25)),
    ("pq2-lh-metric-sink4", 2, V(2, transform="metric", sinks=4)),
    ("pq2-lh-metric-sink1-pcak", 2, V(2, transform="metric", sinks=1, alloc="pca_adaptive_k", samples=16384)),
    ("pq2-lh-metric-sink1-pca", 2, V(2, transform="metric", sinks=1, alloc="pca_adaptive", samples=16384)),
    ("pq2-lh-metric-sink1-k10v6", 2, V(2, transform="metric", sinks=1, k_nbits=10, v_nbits=6)),
    ("pq4-merged", 4, V(4, granularity="merged", samples=65536)),
    ("pq4-layer", 4, V(4, granularity="layer", samples=16384)),
    ("pq4-layer_head", 4, V(4)),
    ("pq4-lh-sink1", 4, V(4, sinks=1)),
    ("pq4-lh-metric-sink1", 4, V(4, transform="metric", sinks=1)),
    ("pq4-lh-fisher-sink1", 4, V(4, transform="fisher", sinks=1)),
    ("pq4-lh-metric-sink1-fisherw", 4, V(4, transform="metric", sinks=1, weighting="fisher")),
    ("pq4-lh-metric-sink1-s16k", 4, V(4, transform="metric", sinks=1, samples=16384, iters=25)),
    ("pq4-lh-metric-sink4", 4, V(4, transform="metric", sinks=4)),
    ("pq4-lh-metric-sink1-pcak", 4, V(4, transform="metric", sinks=1, alloc="pca_adaptive_k", samples=16384)),
    ("pq4-lh-metric-sink1-pca", 4, V(4, transform="metric", sinks=1, alloc="pca_adaptive", samples=16384)),
    ("pq4-lh-metric-sink1-k10v6", 4, V(4, transform="metric", sinks=1, k_nbits=10, v_nbits=6)),
    # more calibration data (61440 tokens, still held out: scoring starts at token 65536)
    ("pq4-lh-metric-sink1-c60k", 4, V(4, transform="metric", sinks=1, samples=61440, iters=20), 61440),
    ("pq4-lh-metric-sink1-pcak-c60k", 4, V(4, transform="metric", sinks=1, alloc="pca_adaptive_k", samples=61440, iters=20), 61440),
    ("pq4-lh-metric-sink1-pca-c60k", 4, V(4, transform="metric", sinks=1, alloc="pca_adaptive", samples=61440, iters=20), 61440),
    ("pq2-lh-metric-sink1-pcak-c60k", 2, V(2, transform="metric", sinks=1, alloc="pca_adaptive_k", samples=61440, iters=20), 61440),
    # the served recipe plus a PCA rotation with the variances balanced over uniform subspaces (servable)
    ("pq4-lh-metric-sink1-bal", 4, V(4, transform="metric", sinks=1, alloc="balanced")),
    ("pq4-lh-metric-sink1-balk", 4, V(4, transform="metric", sinks=1, alloc="balanced_k")),
    ("pq2-lh-metric-sink1-bal", 2, V(2, transform="metric", sinks=1, alloc="balanced")),
    ("pq2-lh-metric-sink1-balk", 2, V(2, transform="metric", sinks=1, alloc="balanced_k")),
    ("pq4-lh-metric-sink4-balk", 4, V(4, transform="metric", sinks=4, alloc="balanced_k")),
    ("pq2-lh-metric-sink4-balk", 2, V(2, transform="metric", sinks=4, alloc="balanced_k")),
    # the chosen recipe calibrated on 2K windows (positions < 2048 only), as the 2K rows above
    ("pq4-lh-metric-sink1-pcak-w2k", 4, V(4, transform="metric", sinks=1, alloc="pca_adaptive_k", samples=16384, iters=16)),
    ("pq2-lh-metric-sink1-pcak-w2k", 2, V(2, transform="metric", sinks=1, alloc="pca_adaptive_k", samples=16384, iters=16)),
]

DEPLOYED = ["fp16", "million-4", "million-2", "pq-4-served", "pq-2-served", "pq-4-served-balk", "pq-2-served-balk", "kivi-4", "kivi-2", "quanto-4", "quanto-2"]
NEEDLE = ["fp16", "pq-2", "pq-2-c60k", "pq-2-k12v4", "pq-2-k10v6", "pqsparse-2", "million-2", "kivi-2", "kvquant-2", "quanto-2", "qhitter-2", "pq-4", "pq-4-c60k"]


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out)
        self.model = self.tok = None
        self._ids = {}
        self._calib = {}

    # -- lazy resources ----------------------------------------------------------------------------
    def load(self):
        if self.model is None:
            from million.models import load_model

            torch.set_num_threads(self.args.threads)
            self.model, self.tok = load_model(self.args.model, dtype=torch.float32, device=self.args.device)
            log(f"model {self.args.model} on {self.args.device} (float32)")
        return self.model, self.tok

    def ids(self, name):
        if name not in self._ids:
            from million.data import load_text

            self._ids[name] = self.tok(load_text(name), return_tensors="pt", add_special_tokens=False).input_ids[0]
        return self._ids[name]

    def calib(self, tokens: int = 16384, window: int = 2048):
        """Calibration statistics on the first ``tokens`` SQuAD tokens (all held out from the scored
        windows), run in windows of ``window`` tokens (post-RoPE keys are seen at positions < window)."""
        if (tokens, window) not in self._calib:
            from million.eval.calibdata import load_or_collect

            # Fisher statistics (a backward pass keeping every layer's attention) only on short windows:
            # on 8K windows they need > 80 GB; the variants calibrated there use no Fisher statistics
            # (and no attention mass there either: only the 'attn'-weighted variants, all on 2K windows, use it)
            self._calib[tokens, window] = load_or_collect(self.model, self.tok, "squad", tokens, window, model_name="smollm2",
                                                          fisher=window <= 2048, attention=window <= 2048)
        return self._calib[tokens, window]

    # -- methods -------------------------------------------------------------------------------------
    def codebooks(self, label, bits, extra):
        """Directory of trained codebooks for a PQ label (trained once)."""
        d = self.out / "codebooks" / label
        if (d / "pq_variant.json").is_file() or (d / "codebooks.json").is_file():
            return d
        if "calibrate" in extra:
            from million.calibrate import calibrate
            from million.data import load_text

            log(f"million calibrate ({extra['calibrate']}, {bits} bits) -> {d}")
            cb = calibrate(self.model, self.tok, load_text("squad"), bits=bits, granularity=extra["calibrate"], recipe="plain",
                           tokens=16384, samples=65536, iters=10, text_name="squad", model_name="smollm2", progress=False)
            cb.save(d)
            return d
        from million.eval.methods import best_variant
        from million.pq_variants import train_variant

        v = extra["variant"]
        if v == "best":
            v = best_variant(bits)
        elif v == "best-c60k":
            v = dataclasses.replace(best_variant(bits), samples=61440, iters=20)
        elif v == "best-a12":
            v = dataclasses.replace(best_variant(bits), alloc_max_bits=12)
        elif isinstance(v, str) and (nb := re.fullmatch(r"best-b(\d+)", v)):  # code bits per 2 dims, keys and values
            v = dataclasses.replace(best_variant(4), k_nbits=int(nb[1]), v_nbits=int(nb[1]), samples=16384, iters=12,
                                    alloc_max_bits=max(10, int(nb[1])))
        elif isinstance(v, str) and (kv := re.fullmatch(r"best-k(\d+)v(\d+)", v)):  # key / value code bits
            v = dataclasses.replace(best_variant(bits), k_nbits=int(kv[1]), v_nbits=int(kv[2]))
        over = {k: getattr(self.args, f"pq_{k}") for k in ("samples", "iters") if getattr(self.args, f"pq_{k}")}
        if over:  # --pq-samples / --pq-iters: cheaper k-means for CPU comparisons (use a separate --out)
            v = dataclasses.replace(v, **over)
        tokens, window = extra.get("calib_tokens", 16384), extra.get("calib_window", 2048)
        log(f"training PQ variant {label} on {tokens} calibration tokens in windows of {window}: {v.to_dict()}")
        t0 = time.time()
        train_variant(self.calib(tokens, window), v, device=self.args.device).save(d)
        log(f"  trained in {time.time() - t0:.0f} s")
        return d

    def method(self, label, name, bits, extra):
        from million.eval.methods import make_method

        if name == "pqsparse":  # shares the dense PQ run's codebooks of the same width
            b = extra["codebook_bits"]
            cbdir = str(self.codebooks(f"pq-{b}", b, extra))
        else:
            cbdir = str(self.codebooks(label, bits, extra)) if name in ("pq", "million") else None
        m = make_method(name, bits, cbdir)
        return m.fit(self.model, lambda: self.calib())

    # -- runs ----------------------------------------------------------------------------------------
    def ppl(self, part, label, method_fn, text, windows, protocol="all-quantized"):
        from million.eval.ppl import default_offset, perplexity

        f = self.out / part / f"{label}-{text}.json"
        if f.is_file():
            return json.loads(f.read_text())
        self.load()
        m = method_fn()
        log(f"{part}: {label} on {text} ({windows} windows, {protocol})")
        r = perplexity(self.model, self.ids(text), m, protocol, 2048, windows, default_offset(text), text)
        r.update({"label": label, "part": part, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(r, indent=2) + "\n")
        log(f"  ppl {r['ppl']:.4f}  bits {r['bits_per_element']:.3f}  ({r['seconds']:.0f} s)")
        return r

    def needle(self, label, method_fn):
        from million.eval.needle import needle_eval

        f = self.out / "needle" / f"{label}-essays.json"
        if f.is_file():
            return json.loads(f.read_text())
        self.load()
        m = method_fn()
        a = self.args
        contexts = [int(x) for x in a.needle_contexts.split(",")]
        depths = [float(x) for x in a.needle_depths.split(",")]
        from million.data import load_text

        hay = self.tok(load_text("essays")[: 60 * max(contexts)], return_tensors="pt", add_special_tokens=False).input_ids[0]
        log(f"needle: {label}")
        r = needle_eval(self.model, self.tok, m, hay, contexts, depths, "all-quantized", 10,
                        progress=lambda c: log(f"  {c['context']} @ {c['depth']}: {'ok' if c['correct'] else 'MISS'} {c['answer'].strip()!r}"))
        r.update({"label": label, "date": time.strftime("%Y-%m-%d %H:%M:%S")})
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(r, indent=2) + "\n")
        log(f"  accuracy {r['accuracy']:.3f} {r['accuracy_by_context']}")
        return r

    def layerscan(self, mk):
        """Sensitivity per layer (SQuAD, all-quantized): only layer l quantized with pq-4 (and pq-2), the
        others fp16. Then bit allocations across layers at the pq-4 average (bits at 32K): the k layers most
        sensitive at 4 bits kept in fp16, paid for by the j layers least sensitive at 2 bits taken to pq-2
        (j = ceil(k (16 - b4) / (b4 - b2))), the rest pq-4; scored on SQuAD and the essays."""
        import math

        from million.eval.methods import LayerMix, Shape

        a = self.args
        model, _ = self.load()
        L = model.config.num_hidden_layers
        m4, m2 = mk("pq-4")(), mk("pq-2")()
        nw = a.layerscan_windows
        base = self.ppl("layerscan", "fp16-all", lambda: LayerMix([None] * L, "fp16-all"), "squad", nw)["ppl"]
        d = {}
        for tag, m in (("4", m4), ("2", m2)):
            d[tag] = []
            for l in range(L):
                mix = [None] * L
                mix[l] = m
                lab = f"pq{tag}-only-L{l:02d}"
                r = self.ppl("layerscan", lab, lambda mix=mix, lab=lab: LayerMix(mix, lab), "squad", nw)
                d[tag].append(r["ppl"] / base - 1)
        shape = Shape.of(model.config)
        b4 = m4.bits_breakdown(shape, 32768)["total"]
        b2 = m2.bits_breakdown(shape, 32768)["total"]
        order4 = sorted(range(L), key=lambda l: -d["4"][l])
        scan = {"base_ppl": base, "windows": nw, "dppl_only_layer_pq4": d["4"], "dppl_only_layer_pq2": d["2"],
                "bits32k_pq4": b4, "bits32k_pq2": b2, "mixes": []}
        for k in (1, 2, 3):
            top = order4[:k]
            j = math.ceil(k * (16 - b4) / (b4 - b2))
            low = [l for l in sorted(range(L), key=lambda l: d["2"][l]) if l not in top][:j]
            mix = [None if l in top else (m2 if l in low else m4) for l in range(L)]
            lab = f"mix-fp16x{k}-pq2x{j}"
            for text, n in (("squad", a.squad_windows), ("essays", a.essays_windows)):
                if n >= 1:
                    self.ppl("layerscan", lab, lambda mix=mix, lab=lab: LayerMix(mix, lab), text, n)
            scan["mixes"].append({"label": lab, "fp16_layers": top, "pq2_layers": low})
        f = self.out / "layerscan" / "scan.json"
        f.write_text(json.dumps(scan, indent=2) + "\n")
        log(f"layer scan: most sensitive at 4 bits {[(l, round(100 * d['4'][l], 2)) for l in order4[:5]]} (% dppl)")

    def _guard(self, fn, *args, **kw):
        """Run one measurement; with --keep-going a failure is logged (and written) instead of raised."""
        if not self.args.keep_going:
            return fn(*args, **kw)
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - a benchmark sweep reports and goes on
            import traceback

            log(f"FAILED {args[:2]}: {type(e).__name__}: {e}")
            traceback.print_exc()
            self.failures.append({"run": [str(a) for a in args[:2]], "error": f"{type(e).__name__}: {e}"})
            return None

    def run(self):
        a = self.args
        parts = a.parts.split(",")
        only = set(a.only.split(",")) if a.only else None
        skip = set(a.exclude.split(",")) if a.exclude else set()
        want = lambda lab: (only is None or lab in only) and lab not in skip  # noqa: E731
        self.failures = []
        main = {lab: (n, b, e) for lab, n, b, e in MAIN}
        mk = lambda lab: (lambda: (self.load(), self.method(lab, *main[lab]))[1])  # noqa: E731
        for part in parts:  # in the order given
            if part == "ppl":
                for text, nw in (("squad", a.squad_windows), ("essays", a.essays_windows)):
                    if nw < 1:  # --squad-windows 0 / --essays-windows 0: skip that text
                        continue
                    for lab in main:
                        if want(lab):
                            self._guard(self.ppl, "ppl", lab, mk(lab), text, nw)
            elif part == "ablation":
                for lab, bits, v, *ct in sorted(ABLATION, key=lambda r: -r[1]):  # 4 bits first
                    if want(lab):
                        extra = {"variant": v, "calib_tokens": ct[0] if ct else 16384}
                        fn = lambda lab=lab, v=v, extra=extra: (self.load(), self.method(lab, "pq", v.code_bits, extra))[1]
                        self._guard(self.ppl, "ablation", lab, fn, "squad", a.ablation_windows)
            elif part == "deployed":
                for lab in DEPLOYED:
                    if want(lab):
                        self._guard(self.ppl, "deployed", lab, mk(lab), "squad", a.squad_windows, "deployed")
            elif part == "needle":
                for lab in NEEDLE:
                    if want(lab):
                        self._guard(self.needle, lab, mk(lab))
            elif part == "layerscan":
                self._guard(self.layerscan, mk)
        if self.failures:
            (self.out / "failures.json").write_text(json.dumps(self.failures, indent=2) + "\n")


# -- report ------------------------------------------------------------------------------------------
def load_runs(out: Path) -> dict:
    runs = {}
    for f in sorted(out.glob("*/*.json")):
        if f.parent.name == "codebooks":
            continue
        runs[(f.parent.name, f.stem)] = json.loads(f.read_text())
    return runs


def report(out: Path, plot: str | None) -> dict:
    runs = load_runs(out)
    lines = []
    summary = {"ppl": [], "ablation": [], "deployed": [], "needle": []}

    def ref(part_text):
        r = runs.get(("ppl", f"fp16-{part_text}"))
        return r["ppl"] if r else None

    for part in ("ppl", "ablation", "deployed"):
        rows = [(k[1], r) for k, r in runs.items() if k[0] == part]
        if not rows:
            continue
        lines.append(f"\n## {part}\n")
        lines.append("| method | text | windows x tokens | ppl | Δppl vs fp16 | bits/elem @2K | bits/elem @32K |")
        lines.append("|---|---|---|---|---|---|---|")
        for name, r in rows:
            base = ref(r["text"])
            if part == "deployed":
                base = runs.get(("deployed", f"fp16-{r['text']}"), {}).get("ppl", base)
            if part != "deployed" and base and r.get("windows") != runs.get(("ppl", f"fp16-{r['text']}"), {}).get("windows"):
                # compare on the same windows only
                n = r["windows"]
                fr = runs.get(("ppl", f"fp16-{r['text']}"))
                base = math.exp(sum(fr["nll_per_window"][:n]) / n) if fr and len(fr["nll_per_window"]) >= n else None
            d = 100 * (r["ppl"] / base - 1) if base else float("nan")
            lines.append(f"| {r['label']} | {r['text']} | {r['windows']} x {r['window']} | {r['ppl']:.3f} | {d:+.2f}% | "
                         f"{r['bits_per_element']:.3f} | {r['bits_per_element_32k']:.3f} |")
            summary[part].append({k: r[k] for k in ("label", "method", "bits", "text", "protocol", "ppl", "windows", "window",
                                                    "tokens", "bits_per_element", "bits_per_element_32k")} | {"delta_ppl_pct": d})
    nrows = [r for k, r in runs.items() if k[0] == "needle"]
    if nrows:
        ctxs = nrows[0]["contexts"]
        lines.append("\n## needle (essays, all-quantized)\n")
        lines.append("| method | " + " | ".join(str(c) for c in ctxs) + " | all |")
        lines.append("|---|" + "---|" * (len(ctxs) + 1))
        for r in nrows:
            lines.append(f"| {r['label']} | " + " | ".join(f"{r['accuracy_by_context'][str(c)]:.2f}" for c in ctxs)
                         + f" | {r['accuracy']:.2f} |")
            summary["needle"].append({k: r[k] for k in ("label", "accuracy", "accuracy_by_context", "depths", "contexts")})
    text = "\n".join(lines)
    print(text)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(text + "\n")
    if plot:
        make_plot(summary, plot)
    return summary


def make_plot(summary: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["ppl"] if r["method"] != "fp16"]
    texts = sorted({r["text"] for r in rows})
    fig, axes = plt.subplots(1, len(texts), figsize=(6 * len(texts), 4.5), squeeze=False)
    markers = {"million": "s", "pq": "*", "pq-served": "X", "pqsparse": "P", "kivi": "o", "kvquant": "^", "quanto": "D",
               "qhitter": "v"}
    for ax, text in zip(axes[0], texts):
        for meth in sorted({r["method"] for r in rows}):
            pts = sorted((r["bits_per_element_32k"], r["delta_ppl_pct"], r["label"]) for r in rows if r["text"] == text and r["method"] == meth)
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [max(p[1], 1e-2) for p in pts], marker=markers.get(meth, "x"), label=meth,
                    markersize=11 if meth.startswith("pq") and meth != "pqsparse" else 7)
            for x, y, lab in pts:
                ax.annotate(lab, (x, max(y, 1e-2)), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_yscale("log")
        ax.axhline(5, color="gray", ls="--", lw=0.8)
        ax.axhline(0.5, color="gray", ls=":", lw=0.8)
        ax.set_xlabel("bits per K/V element (true; codebooks/levels amortized at 32K tokens)")
        ax.set_ylabel("Δppl vs fp16 (%)")
        ax.set_title(f"SmolLM2-135M, {text}, 2048-token windows, all-quantized")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    log(f"plot -> {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/quality")
    p.add_argument("--parts", default="ppl,ablation,deployed,needle")
    p.add_argument("--only", default=None, help="comma-separated labels to run")
    p.add_argument("--squad-windows", type=int, default=8)
    p.add_argument("--essays-windows", type=int, default=4)
    p.add_argument("--ablation-windows", type=int, default=4)
    p.add_argument("--layerscan-windows", type=int, default=8, help="SQuAD windows per layer of the layer scan")
    p.add_argument("--needle-contexts", default="1024,2048,4096,8192")
    p.add_argument("--needle-depths", default="0.1,0.5,0.9")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pq-samples", type=int, default=None,
                   help="override the k-means samples of every trained PQ variant (cheaper CPU comparisons; use its own --out)")
    p.add_argument("--pq-iters", type=int, default=None, help="override the k-means iterations of every trained PQ variant")
    p.add_argument("--model", default="smollm2", help="'smollm2' or a path to its .gguf file")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu (default) or cuda; codebooks train on the CPU")
    p.add_argument("--exclude", default=None, help="comma-separated labels to skip (e.g. quanto-4,quanto-2 where optimum-quanto is missing)")
    p.add_argument("--keep-going", action="store_true", help="log a failing run and go on with the next")
    p.add_argument("--plot", default=None, help="write the Δppl-vs-bits plot here (e.g. docs/quality_ppl_vs_bits.png)")
    p.add_argument("--report-only", action="store_true")
    a = p.parse_args(argv)
    for part in a.parts.split(","):
        if part not in ("ppl", "ablation", "deployed", "needle", "layerscan"):
            raise SystemExit(f"--parts: {part!r} is not one of ppl, ablation, deployed, needle, layerscan")
    for n in ("pq_samples", "pq_iters"):
        if getattr(a, n) is not None and getattr(a, n) < 1:
            raise SystemExit(f"--{n.replace('_', '-')}={getattr(a, n)}: expected a positive integer")
    out = Path(a.out)
    if not a.report_only:
        Bench(a).run()
    report(out, a.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
