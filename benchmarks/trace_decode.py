"""Phase timeline of one PQ decode-attention call (CUDA kernels), from a diagnostic build of the library.

    nvcc -O3 -std=c++17 -DPQ_TRACE -gencode=arch=compute_90,code=sm_90 -Xcompiler -fPIC -shared \\
        -o attn_trace.so src/million/ops/cuda/pq_attention.cu
    PYTHONPATH=src MILLION_CUDA_LIB=attn_trace.so python benchmarks/trace_decode.py --out trace.json

With ``-DPQ_TRACE`` every partial block stamps ``%globaltimer`` (and ``clock64``) at its phases: entry, K table
in, tables ready (LUT built), loop start, all warps' loops done, partial written; every warp at the end of its
chunk loop; every merge block at entry, residual window done, ``griddepcontrol.wait`` returned, output written.
For each shape the script runs single calls (L2 flushed before each, inputs as in ``bench_decode_cuda.py``:
random codes, one centroid head, 64 valid residual tokens) or, with ``--graph``, CUDA-graph replays as the benchmark
times them (the stamps are the replay's last call's), reads the stamps back and prints where the call's time goes,
measured from the first partial block's entry:

- ``start``: spread of the partial blocks' entry times;
- ``tables`` / ``lut``: K table arrival and tables ready, per block (median, max);
- ``loop``: the chunk loop, per block; ``warp spread``: last minus first warp to finish its loop, per block;
- ``epi``: epilogue (warps merged, partial written);
- ``part end``: last partial block done; ``merge wait``: last merge block released by the dependent-launch
  wait; ``end``: last merge block done;
- ``gap from prev`` (``--graph``, trace builds since 2026-12-06 04:50 UTC): from the previous call's last merge block
  done to this call's first partial block's entry (negative: this call's partial grid started before the previous
  call ended, as a programmatic dependent launch may);
- ``floor``: the codes' bytes (K and V) at ``--gbps``.

All times in microseconds. Prints a table, writes JSON (summary and the raw per-block stamps of the last rep).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_decode_cuda import CALLS, capture_graph, make, with_zero_starts  # noqa: E402
from million.ops import cuda_attention as ca  # noqa: E402

SHAPES = {
    "mha": (32, 32, 128),
    "gqa": (32, 8, 128),
    "smollm2": (9, 3, 64),
}
R_VALID = 64


def parse_case(s: str):
    """``shape:B:bits:context``, e.g. ``mha:1:4:32768``."""
    parts = s.split(":")
    if len(parts) != 4 or parts[0] not in SHAPES:
        raise argparse.ArgumentTypeError(f"case {s!r}: expected shape:B:bits:context with shape in {sorted(SHAPES)}")
    B, bits, T = (int(x) for x in parts[1:])
    if bits not in (2, 4) or B < 1 or T < R_VALID + 1:
        raise argparse.ArgumentTypeError(f"case {s!r}: bits 2 or 4, B >= 1, context > {R_VALID}")
    return parts[0], B, bits, T


def read_trace(lib):
    n = lib.million_pq_trace_read(None, 0)
    buf = (ctypes.c_ulonglong * n)()
    rc = lib.million_pq_trace_read(buf, n)
    if rc != n:
        raise RuntimeError(f"million_pq_trace_read returned {rc}")
    t = torch.frombuffer(bytearray(buf), dtype=torch.int64)
    # 32 partial slots and 8 merge slots per block, then (builds since 2026-12-06 04:50 UTC) one slot per merge block:
    # its end stamp of the previous call
    per = 41 if n % 41 == 0 else 40
    nblk = n // per
    prev = t[nblk * 40:].view(nblk) if per == 41 else None
    return t[: nblk * 32].view(nblk, 32), t[nblk * 32: nblk * 40].view(nblk, 8), prev


def us(x):
    return round(float(x) / 1000.0, 2)


PART_STAMPS = list(range(0, 6)) + list(range(8, 24)) + [30, 31]  # slots of a partial block's row holding stamps (ns)
MERGE_STAMPS = [0, 1, 2, 3]
_OFFSET = 1 << 30  # ns: rebased stamps stay positive (0 keeps meaning "not stamped") and exact in a double


def _rebase(t, cols, base):
    """``t`` (int64) as float64 with its stamp columns ``cols`` moved to ``stamp - base + 2^30`` ns: the raw stamps
    (~1.8e18 ns) lose 8 bits in a double, which rounded every difference to 256 ns (summaries before 2026-12-07 17:40
    UTC have that resolution); unstamped slots (0) stay 0."""
    t = t.clone()
    sub = t[:, cols]
    t[:, cols] = torch.where(sub > 0, sub - base + _OFFSET, torch.zeros_like(sub))
    return t.double()


def summarize(part, merge, nparts, nmerge, prev=None, first_slots=False):
    """``first_slots``: the tensor-core kernel at 8 warps (trace builds since 2026-12-07) stamps each warp's first chunk
    end in the warp-end slots of warps 8-15."""
    p0 = part[:nparts]
    base = int(p0[p0[:, 0] > 0, 0].min())
    p, m = _rebase(p0, PART_STAMPS, base), _rebase(merge[:nmerge], MERGE_STAMPS, base)
    valid = p[:, 0] > 0
    p = p[valid]
    t0 = p[:, 0].min()
    entry, tk, tready, tloop, tdone, tend = (p[:, j] - t0 for j in range(6))
    nch = p[:, 7]
    w = p[:, 8:16] if first_slots else p[:, 8:24]
    wv = w > 0
    wmax = torch.where(wv, w, torch.full_like(w, -1e30)).max(1).values
    wmin = torch.where(wv, w, torch.full_like(w, 1e30)).min(1).values
    # the tensor-core kernel stamps no LUT (slot 2) and no loop start (slot 3): both are its tables-in stamp
    ready = torch.where(p[:, 2] > 0, tready, tk)
    # the loop from its start to the last warp's end (the block barrier after it adds the slowest warp's wait)
    start = torch.where(p[:, 3] > 0, tloop, tk)
    s = {
        "blocks": int(valid.sum()), "merge_blocks": int((m[:, 0] > 0).sum()),
        "chunks_per_block": [int(nch.min()), int(nch.max())],
        "start_spread": us(entry.max()),
        "tables_med": us(tk.sub(entry).median()), "tables_max": us(tk.sub(entry).max()),
        "ready_med": us(ready.sub(entry).median()), "ready_max": us(ready.sub(entry).max()),
        "loop_med": us((wmax - t0 - start).median()), "loop_max": us((wmax - t0 - start).max()),
        "warp_spread_med": us((wmax - wmin).median()), "warp_spread_max": us((wmax - wmin).max()),
        "epi_med": us((tend - tdone).median()), "epi_max": us((tend - tdone).max()),
        "first_block_end": us(tend.min()), "part_end": us(tend.max()),
    }
    f = p[:, 16:24] if first_slots else None
    if f is not None and bool((f > 0).any()):
        # first chunk: from the loop's start to the median warp's first chunk end; per chunk: the loop over the
        # chunks of its busiest warp (8 warps take the chunks round-robin)
        fv = torch.where(f > 0, f - t0 - start.unsqueeze(1), torch.full_like(f, float("nan"))).nanmedian(1).values
        s["first_chunk_med"], s["first_chunk_max"] = us(fv.median()), us(fv.max())
        per = (wmax - t0 - start) / torch.clamp(torch.ceil(nch / 8), min=1)
        s["per_chunk_med"] = us(per.median())
    if bool((p[:, 30] > 0).all()):  # builds since 2026-12-06 10:00 UTC: wait returned (30), lengths in (31)
        tw, tl = p[:, 30] - t0, p[:, 31] - t0
        s["wait_first"], s["wait_med"], s["wait_max"] = us(tw.min()), us(tw.median()), us(tw.max())
        s["lens_med"] = us(tl.sub(tw).median())
    if nmerge:
        mv = m[m[:, 0] > 0]
        s["merge_first_entry"] = us(mv[:, 0].min() - t0)
        s["merge_last_entry"] = us(mv[:, 0].max() - t0)
        s["merge_residual_done"] = us(mv[:, 1].max() - t0)
        s["merge_wait"] = us(mv[:, 2].max() - t0)
        s["end"] = us(mv[:, 3].max() - t0)
        # each merge block from its wait's return to its output (what the merge itself takes after the partial grid)
        tail = mv[:, 3] - mv[:, 2]
        s["merge_tail_min"], s["merge_tail_med"], s["merge_tail_max"] = (us(tail.min()), us(tail.median()),
                                                                         us(tail.max()))
        s["handover"] = us(mv[:, 2].min() - p[:, 5].max())  # last partial block's end to the first wait's return
        if prev is not None:
            pv = _rebase(prev[:nmerge].unsqueeze(1), [0], base)[:, 0]
            pv = pv[pv > 0]
            if len(pv):  # a previous call in the same trace (graph replay): from its last output to this call's start
                s["gap_from_prev"] = us(t0 - pv.max())
                if "wait_first" in s:  # from the previous call's last output to this call's first wait return
                    s["wait_after_prev"] = us(p[:, 30].min() - pv.max())
    return s


def run_case(lib, name, B, bits, T, reps, dev, flush, gbps, graph, zero_starts=False):
    Hq, Hkv, D = SHAPES[name]
    M = D // 2 if bits == 4 else D // 4
    # as bench_decode_cuda.bench: in graph mode enough input copies to exceed 4x the L2, rotated over CALLS calls
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    ncop = max(1, min(CALLS, math.ceil(4 * l2 / (2 * B * Hkv * T * M)))) if graph else 1
    copies = []
    for _ in range(ncop):
        q, kc, vc, kcen, vcen, kr, vr = make(B, Hq, Hkv, D, bits, T, 128, torch.float16, dev)
        pq_lens = torch.full((B,), T - R_VALID, dtype=torch.int32, device=dev)
        res_lens = torch.full((B,), R_VALID, dtype=torch.int32, device=dev)
        copies.append((q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens))

    fn = with_zero_starts(ca.pq_decode_attention) if zero_starts else ca.pq_decode_attention
    if graph:  # the stamps read back are the last call's of a replay of CALLS calls
        call = capture_graph(fn, copies).replay
        for _ in range(3):
            call()
    else:
        def call():
            return fn(*copies[0])

        for _ in range(3):
            call()
    torch.cuda.synchronize()
    G = Hq // Hkv
    GB = ca._group(G)
    kind, nw = ca.choose_kernel(torch.float16, GB, D, M, None, work=B * T)
    S = ca.default_splits(B, Hkv, G // GB, T, dev, kind, nw, D)
    nparts, nmerge = S * Hkv * (G // GB) * B, Hq * B
    floor_us = 2 * B * Hkv * (T - R_VALID) * M / (gbps * 1e3)
    rows, ev_us = [], []
    raw = None
    for _ in range(reps):
        if not graph:
            flush.zero_()
        lib.million_pq_trace_clear()
        torch.cuda.synchronize()
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        call()
        e1.record()
        torch.cuda.synchronize()
        ev_us.append(e0.elapsed_time(e1) * 1e3 / (CALLS if graph else 1))
        part, merge, prev = read_trace(lib)
        rows.append(summarize(part, merge, nparts, nmerge, prev, first_slots=kind == "mma" and nw == 8))
        raw = (part[:nparts].tolist(), merge[:nmerge].tolist())
    keys = rows[0].keys()
    med = {k: (statistics.median(r[k] for r in rows if k in r) if not isinstance(rows[0][k], list) else rows[0][k])
           for k in keys}
    med.update(case=f"{name}:{B}:{bits}:{T}", kernel=kind, warps=nw, S=S, floor_us=round(floor_us, 2),
               event_us=round(statistics.median(ev_us), 2), reps=reps, graph=graph, copies=ncop)
    return med, rows, raw


COLS = [("case", 18), ("kernel", 6), ("S", 3), ("blocks", 6), ("start_spread", 6), ("wait_first", 6),
        ("wait_med", 6), ("wait_max", 6), ("lens_med", 6), ("wait_after_prev", 6), ("tables_med", 6),
        ("ready_med", 6), ("ready_max", 6), ("loop_med", 7), ("loop_max", 7), ("first_chunk_med", 6),
        ("per_chunk_med", 6), ("warp_spread_med", 6), ("epi_med", 5), ("first_block_end", 7), ("part_end", 7), ("merge_residual_done", 7), ("merge_wait", 7),
        ("handover", 6), ("merge_tail_med", 6), ("merge_tail_max", 6), ("end", 7), ("gap_from_prev", 7), ("floor_us", 7),
        ("event_us", 7)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--case", action="append", type=parse_case,
                    help="shape:B:bits:context (repeatable); default: MHA / GQA / SmolLM2 cases at 4K and 32K")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--graph", action="store_true",
                    help=f"stamps of the last call of a CUDA-graph replay of {CALLS} calls over rotating input copies "
                         "(the benchmark's steady state; event_us is then per call); default: single calls, L2 flushed")
    ap.add_argument("--gbps", type=float, default=3000.0, help="copy rate for the byte floor (GB/s)")
    ap.add_argument("--zero-starts", action="store_true",
                    help="a zero-filled starts tensor made in every call (bench_decode_cuda.py --zero-starts)")
    ap.add_argument("--out", default="trace_decode.json")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("trace_decode: needs a CUDA device")
    lib = ca._lib()
    if not hasattr(lib, "million_pq_trace_read"):
        sys.exit("trace_decode: the loaded library has no million_pq_trace_read (set MILLION_CUDA_LIB to a trace build)")
    lib.million_pq_trace_read.argtypes = [ctypes.c_void_p, ctypes.c_int]
    if lib.million_pq_trace_read(None, 0) <= 0:
        sys.exit("trace_decode: the loaded library was built without -DPQ_TRACE (set MILLION_CUDA_LIB to a trace build)")
    cases = args.case or [parse_case(c) for c in (
        "mha:1:4:32768", "mha:1:4:4096", "mha:1:2:32768", "gqa:1:4:32768", "gqa:1:4:4096", "smollm2:1:4:4096",
        "mha:8:4:32768")]
    dev = torch.device("cuda")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device=dev)
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "lib": os.environ.get("MILLION_CUDA_LIB", ""), "zero_starts": args.zero_starts, "cases": []}
    print(" ".join(f"{c[:w]:>{w}}" for c, w in COLS), flush=True)
    for name, B, bits, T in cases:
        med, rows, raw = run_case(lib, name, B, bits, T, args.reps, dev, flush, args.gbps, args.graph,
                                  args.zero_starts)
        out["cases"].append({"summary": med, "reps": rows, "raw_last": {"partial": raw[0], "merge": raw[1]}})
        print(" ".join(f"{str(med.get(c, '')):>{w}}" for c, w in COLS), flush=True)
        Path(args.out).write_text(json.dumps(out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
