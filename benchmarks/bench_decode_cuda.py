"""CUDA shared-memory PQ decode kernel: correctness vs the naive spec, then timing vs Triton and SDPA.

    PYTHONPATH=src MILLION_CUDA_LIB=.carry/million_pq.so python3 benchmarks/bench_decode_cuda.py --out $OUT/cuda.json

Timing: median of triton.testing.do_bench over CUDA-graph replays; one replay runs 20 calls back to back that rotate
over up to 20 input copies (capped at 20: at small shapes they hold less than the L2), each used once per replay, and
do_bench clears the L2 before every replay, so the codes come from HBM. Back to back, each PQ call's partial grid
starts during the previous call's merge (programmatic launch); --q-op puts an op on q in front of every call (PQ and
SDPA alike) so nothing of a previous attention call overlaps (docs/benchmarks.md, "How to read these ratios"). The
"floor" column is the bytes read (codes, tables, window) at a fixed 3.0 TB/s, a reference rate, not a measured limit.
PQ inputs: random uint8 codes, ksub 256, fp16 centroids shared by all heads (--head-codebooks: one table per KV
head, as MillionCache serves), residual window capacity 128 with 64 valid tokens, pq_len = context - 64, no starts
(--zero-starts: a zero-filled starts tensor made in every call).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from million.ops import cuda_attention as ca
from million.ops import naive

CALLS = 20


def make(B, Hq, Hkv, D, bits, T, R, dtype, dev, Hc=1, gen=None):
    M = D // 2 if bits == 4 else D // 4
    dsub = D // M
    q = torch.randn(B, Hq, D, device=dev, dtype=dtype)
    kc = torch.randint(0, 256, (B, Hkv, T, M), device=dev, dtype=torch.uint8)
    vc = torch.randint(0, 256, (B, Hkv, T, M), device=dev, dtype=torch.uint8)
    kcen = torch.randn(Hc, M, 256, dsub, device=dev, dtype=dtype)
    vcen = torch.randn(Hc, M, 256, dsub, device=dev, dtype=dtype)
    kr = torch.randn(B, Hkv, R, D, device=dev, dtype=dtype)
    vr = torch.randn(B, Hkv, R, D, device=dev, dtype=dtype)
    return q, kc, vc, kcen, vcen, kr, vr


def poison():
    x = torch.full((1 << 26,), float("nan"), device="cuda")
    del x


def check(dev):
    cases = []
    # (B, Hq, Hkv, D, bits, T, R, dtype, pq_lens, res_lens, starts, Hc)
    for dtype in (torch.float16, torch.bfloat16):
        for (Hq, Hkv) in ((4, 4), (6, 2), (8, 2), (16, 2), (5, 5), (12, 4)):
            for D in (64, 128):
                for bits in (4, 2):
                    cases.append((3, Hq, Hkv, D, bits, 1000, 64, dtype, [1000, 517, 0], [64, 10, 0], [0, 37, 0], 1))
    cases += [
        (2, 32, 8, 128, 4, 4096, 256, torch.float16, [4096, 1], [256, 256], [5, 0], 8),
        (4, 8, 8, 128, 4, 333, 16, torch.float16, [333, 1, 0, 200], [0, 16, 3, 5], [0, 0, 0, 210], 1),
        (2, 9, 3, 64, 4, 5000, 128, torch.bfloat16, [5000, 4000], [128, 0], [100, 4000], 3),
        (2, 9, 3, 64, 2, 5000, 0, torch.float16, [4999, 3], [0, 0], [0, 1], 1),
        (1, 32, 32, 128, 2, 70000, 128, torch.float16, [70000], [100], [0], 1),
        (2, 16, 2, 128, 4, 2048, 32, torch.bfloat16, [0, 2048], [0, 1], [0, 2049], 1),
    ]
    results = []
    ok_all = True
    for (B, Hq, Hkv, D, bits, T, R, dtype, pl, rl, st, Hc) in cases:
        torch.manual_seed(len(results))
        q, kc, vc, kcen, vcen, kr, vr = make(B, Hq, Hkv, D, bits, T, R, dtype, dev, Hc=Hc)
        # slots past res_lens hold NaN: they must never be read
        for b in range(B):
            kr[b, :, rl[b]:] = float("nan")
            vr[b, :, rl[b]:] = float("nan")
        pq_lens = torch.tensor(pl, dtype=torch.int32, device=dev)
        res_lens = torch.tensor(rl, dtype=torch.int32, device=dev)
        starts = torch.tensor(st, dtype=torch.int32, device=dev)
        poison()
        out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts, return_lse=True)
        torch.cuda.synchronize()
        ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(),
                                                 vr.float(), res_lens, starts, return_lse=True)
        err = ((out.float() - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()
        fin = torch.isfinite(ref_lse)
        lerr = (lse[fin] - ref_lse[fin]).abs().max().item() if fin.any() else 0.0
        inf_ok = bool((lse[~fin] == float("-inf")).all()) and bool((out.float()[~fin] == 0).all())
        ok = bool(torch.isfinite(out.float()).all()) and err < 1e-2 and lerr < 2e-3 and inf_ok
        ok_all &= ok
        results.append(dict(B=B, Hq=Hq, Hkv=Hkv, D=D, bits=bits, T=T, R=R, dtype=str(dtype), pq_lens=pl,
                            res_lens=rl, starts=st, Hc=Hc, rel_err=err, lse_err=lerr, ok=ok))
        print(f"check B={B} Hq={Hq} Hkv={Hkv} D={D} bits={bits} T={T} R={R} {dtype} Hc={Hc}: "
              f"rel {err:.2e} lse {lerr:.2e} {'ok' if ok else 'FAIL'}", flush=True)
    # CUDA graph: capture once, change lengths on the device, replay
    q, kc, vc, kcen, vcen, kr, vr = make(2, 8, 2, 128, 4, 3000, 64, torch.float16, dev)
    pq_lens = torch.tensor([3000, 1000], dtype=torch.int32, device=dev)
    res_lens = torch.tensor([64, 3], dtype=torch.int32, device=dev)
    starts = torch.zeros(2, dtype=torch.int32, device=dev)
    ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            gout = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts)
    torch.cuda.current_stream().wait_stream(s)
    pq_lens.copy_(torch.tensor([17, 2999], dtype=torch.int32))
    res_lens.copy_(torch.tensor([0, 64], dtype=torch.int32))
    g.replay()
    torch.cuda.synchronize()
    ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(), vr.float(),
                                    res_lens, starts)
    gerr = ((gout.float() - ref).abs().max() / ref.abs().max()).item()
    gok = gerr < 1e-2
    ok_all &= gok
    print(f"check cuda-graph replay with changed lengths: rel {gerr:.2e} {'ok' if gok else 'FAIL'}", flush=True)
    results.append(dict(case="graph", rel_err=gerr, ok=gok))
    return ok_all, results


def capture_graph(fn, copies):
    """A CUDA graph of CALLS calls of ``fn`` rotating over ``copies`` (each an argument tuple), every copy called once
    before the capture (per-tensor setup such as laid-out tables)."""
    n = len(copies)
    for c in copies:
        fn(*c)
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(2):
            fn(*copies[i % n])
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(CALLS):
                fn(*copies[i % n])
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    return g


def bench_graph(fn, copies):
    g = capture_graph(fn, copies)
    import triton

    return triton.testing.do_bench(lambda: g.replay(), warmup=50, rep=300, return_mode="median") * 1e3 / CALLS


def with_q_op(fn):
    """``fn`` preceded by an in-place op on its q (the first argument): a kernel of another library that writes
    what the attention call reads, as a model's projection or rotary kernel does, between consecutive calls."""
    def call(*a):
        a[0].mul_(1.0)
        return fn(*a)
    return call


def with_zero_starts(fn):
    """``fn`` given a zero-filled ``starts`` made in every call: what ``pq_decode_attention`` did itself for
    ``starts=None`` before its kernels took a null pointer as 0 (one fill kernel in front of every call)."""
    def call(*a):
        return fn(*a, torch.zeros(a[0].shape[0], dtype=torch.int32, device=a[0].device))
    return call


def bench(dev, contexts, batches, shapes, bits_list, triton=True, warps=(), dtype=torch.float16, cmerge_ab=False,
          q_op=False, zero_starts=False, head_codebooks=False):
    from million.ops import triton_attention as ta

    wrap = with_q_op if q_op else (lambda fn: fn)
    pq_wrap = (lambda fn: wrap(with_zero_starts(fn))) if zero_starts else wrap

    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    rows = []
    for name, Hq, Hkv, D in shapes:
        for B in batches:
            for ctx in contexts:
                R, rv = 128, 64
                kv_bytes = 2 * B * Hkv * ctx * D * 2
                if kv_bytes > 40e9:
                    continue
                # SDPA fp16
                ncop = max(1, min(CALLS, math.ceil(4 * l2 / kv_bytes)))
                sd = [(torch.randn(B, Hq, 1, D, device=dev, dtype=dtype),
                       torch.randn(B, Hkv, ctx, D, device=dev, dtype=dtype),
                       torch.randn(B, Hkv, ctx, D, device=dev, dtype=dtype)) for _ in range(ncop)]
                gqa = Hq != Hkv
                t_sdpa = bench_graph(wrap(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)), sd)
                del sd
                for bits in bits_list:
                    M = D // 2 if bits == 4 else D // 4
                    code_bytes = 2 * B * Hkv * ctx * M
                    ncop = max(1, min(CALLS, math.ceil(4 * l2 / code_bytes)))
                    copies = []
                    for _ in range(ncop):
                        q, kc, vc, kcen, vcen, kr, vr = make(B, Hq, Hkv, D, bits, ctx, R, dtype, dev,
                                                             Hc=Hkv if head_codebooks else 1)
                        pl = torch.full((B,), ctx - rv, dtype=torch.int32, device=dev)
                        rl = torch.full((B,), rv, dtype=torch.int32, device=dev)
                        copies.append((q, kc, vc, kcen, vcen, pl, kr, vr, rl))
                    t_cuda = bench_graph(pq_wrap(ca.pq_decode_attention), copies)
                    # other partial kernels for GQA shapes (0 = FFMA kernel, 8/12/16 = packed-LUT kernel warps)
                    var = {}
                    if gqa:
                        for w in warps:
                            var[w] = bench_graph(lambda *a, w=w: ca.pq_decode_attention(*a, num_warps_override=w), copies)
                    if cmerge_ab and gqa:  # the tensor-core kernel's merge: second kernel (cm0) vs inside a cluster (cm1)
                        saved = os.environ.get("MILLION_CUDA_CMERGE")
                        for mode in ("0", "1"):
                            os.environ["MILLION_CUDA_CMERGE"] = mode
                            var[f"cm{mode}"] = bench_graph(ca.pq_decode_attention, copies)
                        if saved is None:
                            os.environ.pop("MILLION_CUDA_CMERGE")
                        else:
                            os.environ["MILLION_CUDA_CMERGE"] = saved
                    t_tri = bench_graph(ta.pq_decode_attention, copies) if triton else float("nan")
                    n_tab = Hkv if head_codebooks else 1
                    table_bytes = n_tab * 2 * M * 256 * (D // M) * 2
                    floor_us = (code_bytes + table_bytes + 2 * B * Hkv * rv * D * 2) / 3.0e12 * 1e6
                    row = dict(shape=name, B=B, context=ctx, bits=bits, sdpa_us=t_sdpa, cuda_us=t_cuda,
                               triton_us=t_tri, x_sdpa=t_sdpa / t_cuda, triton_x_sdpa=t_sdpa / t_tri,
                               floor_us_at_3TBps=floor_us, warps_us=var, q_op=q_op, zero_starts=zero_starts,
                               head_codebooks=head_codebooks)
                    rows.append(row)
                    print(f"bench {name} B={B} ctx={ctx} bits={bits}: sdpa {t_sdpa:.1f} cuda {t_cuda:.1f} "
                          f"triton {t_tri:.1f} us  x{t_sdpa / t_cuda:.2f} (triton x{t_sdpa / t_tri:.2f}) "
                          f"floor {floor_us:.1f}" + "".join(f" w{w}={t:.1f}" for w, t in var.items()), flush=True)
                    del copies
                torch.cuda.empty_cache()
    return rows


def sweep_splits(dev, spec: str = ""):
    """Time the CUDA kernel at B=1 for several num_splits (same graph method) vs the default rule.
    ``spec`` (``--sweep-spec``): ``shape:context:bits:S1,S2,...`` items separated by ';' (default: every shape at
    4K, 16K and 32K, 4-bit, S0/4 .. 4 S0 around the default S0)."""
    l2 = torch.cuda.get_device_properties(dev).L2_cache_size
    shapes = {"mha": (32, 32, 128), "gqa": (32, 8, 128), "smollm2": (9, 3, 64)}
    if spec:
        items = []
        for it in spec.split(";"):
            name, ctx, bits, ss = it.strip().split(":")
            items.append((name, int(ctx), int(bits), [int(x) for x in ss.split(",")]))
    else:
        items = [(n, c, 4, None) for n in shapes for c in (4096, 16384, 32768)]
    out = []
    for name, ctx, bits, values in items:
        Hq, Hkv, D = shapes[name]
        M = D // 2 if bits == 4 else D // 4
        ncop = max(1, min(CALLS, math.ceil(4 * l2 / (2 * Hkv * ctx * M))))
        copies = []
        for _ in range(ncop):
            q, kc, vc, kcen, vcen, kr, vr = make(1, Hq, Hkv, D, bits, ctx, 128, torch.float16, dev)
            pl = torch.full((1,), ctx - 64, dtype=torch.int32, device=dev)
            rl = torch.full((1,), 64, dtype=torch.int32, device=dev)
            copies.append((q, kc, vc, kcen, vcen, pl, kr, vr, rl))
        G = Hq // Hkv
        gb = ca._group(G)
        kind, nw = ca.choose_kernel(torch.float16, gb, D, M, work=ctx)
        s0 = ca.default_splits(1, Hkv, G // gb, ctx, dev, kind, nw, D)
        for s in sorted(set(values) | {s0}) if values else sorted({max(1, s0 // 4), max(1, s0 // 2), s0, 2 * s0, 4 * s0}):
            t = bench_graph(lambda *a, s=s: ca.pq_decode_attention(*a, num_splits_override=s), copies)
            out.append(dict(shape=name, context=ctx, bits=bits, splits=s, default=s == s0, us=t))
            print(f"splits {name} ctx={ctx} bits={bits} S={s}{'*' if s == s0 else ''}: {t:.1f} us", flush=True)
        del copies
    return out


def profile(dev):
    """Per-kernel GPU times (torch.profiler, no graph) for a few shapes: partial vs merge kernel."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprof

    out = []
    # context 64: no code tokens (only the residual window): the fixed cost of a call
    for name, Hq, Hkv, D, ctx, bits in (("mha", 32, 32, 128, 64, 4), ("mha", 32, 32, 128, 1024, 4),
                                        ("mha", 32, 32, 128, 4096, 4), ("mha", 32, 32, 128, 32768, 4),
                                        ("gqa", 32, 8, 128, 64, 4),
                                        ("gqa", 32, 8, 128, 4096, 4), ("gqa", 32, 8, 128, 32768, 4),
                                        ("smollm2", 9, 3, 64, 4096, 4), ("smollm2", 9, 3, 64, 32768, 4)):
        q, kc, vc, kcen, vcen, kr, vr = make(1, Hq, Hkv, D, bits, ctx, 128, torch.float16, dev)
        pl = torch.full((1,), ctx - 64, dtype=torch.int32, device=dev)
        rl = torch.full((1,), 64, dtype=torch.int32, device=dev)
        for _ in range(3):
            ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl)
        torch.cuda.synchronize()
        with tprof(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl)
            torch.cuda.synchronize()
        for ev in prof.key_averages():
            if "pq_" in ev.key:
                us = ev.device_time_total / max(1, ev.count)
                out.append(dict(shape=name, context=ctx, kernel=ev.key[:40], us=us))
                print(f"profile {name} ctx={ctx}: {ev.key[:40]} {us:.1f} us", flush=True)
    return out


def main():
    global CALLS  # --calls sets the module's replay length, read by capture_graph, bench_graph and the copy counts
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cuda_decode.json")
    ap.add_argument("--contexts", default="4096,16384,32768,131072")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--bits", default="4,2")
    ap.add_argument("--shapes", default="mha,gqa,smollm2")
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--sweep-splits", action="store_true", help="B=1 timings at several num_splits")
    ap.add_argument("--sweep-spec", default="", help="with --sweep-splits: 'shape:context:bits:S1,S2,...' items joined by ';'")
    ap.add_argument("--no-triton", action="store_true", help="skip the Triton column (saves compile time)")
    ap.add_argument("--warps", default="", help="GQA shapes: also time num_warps_override values, e.g. 0,12,16")
    ap.add_argument("--cmerge-ab", action="store_true",
                    help="GQA shapes: also time the tensor-core kernel with its merge kernel (cm0) and with the cluster merge (cm1)")
    ap.add_argument("--q-op", action="store_true",
                    help="an in-place torch op on q before every call (SDPA and PQ alike): the previous kernel is "
                         "then another library's, as in a model, not the previous attention call")
    ap.add_argument("--zero-starts", action="store_true",
                    help="pass a zero-filled starts tensor made in every call (the library's own behaviour for "
                         "starts=None before its kernels read a null pointer as 0)")
    ap.add_argument("--head-codebooks", action="store_true",
                    help="one centroid table per KV head, as MillionCache serves (default: one table for all heads)")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"], help="q, centroids, window and SDPA dtype")
    ap.add_argument("--calls", type=int, default=CALLS,
                    help=f"calls per CUDA-graph replay (default {CALLS}; every replay follows do_bench's L2-clearing fill, "
                         "so more calls spread the first call's cold start over more calls), PQ and SDPA alike")
    args = ap.parse_args()
    if args.calls < 1:
        ap.error(f"--calls {args.calls}: expected at least 1")
    CALLS = args.calls
    dev = torch.device("cuda")
    res = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), device=torch.cuda.get_device_name(),
               torch=torch.__version__, dtype=args.dtype, q_op=args.q_op, zero_starts=args.zero_starts,
               head_codebooks=args.head_codebooks, calls=args.calls,
               env={k: v for k, v in os.environ.items() if k.startswith("MILLION_")})
    if not args.skip_check:
        ok, checks = check(dev)
        res["check_ok"] = ok
        res["checks"] = checks
        print(f"CHECK {'PASSED' if ok else 'FAILED'}", flush=True)
    if args.profile:
        res["profile"] = profile(dev)
    if args.sweep_splits:
        res["splits"] = sweep_splits(dev, args.sweep_spec)
    if not args.skip_bench:
        allshapes = dict(mha=("mha", 32, 32, 128), gqa=("gqa", 32, 8, 128), smollm2=("smollm2", 9, 3, 64))
        shapes = [allshapes[s] for s in args.shapes.split(",")]
        res["bench"] = bench(dev, [int(c) for c in args.contexts.split(",")], [int(b) for b in args.batches.split(",")],
                             shapes, [int(b) for b in args.bits.split(",")],
                             triton=not args.no_triton, warps=[int(w) for w in args.warps.split(",") if w],
                             dtype=getattr(torch, args.dtype), cmerge_ab=args.cmerge_ab, q_op=args.q_op,
                             zero_starts=args.zero_starts, head_codebooks=args.head_codebooks)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    if "bench" in res:
        print("\nshape    B  context bits   SDPA   CUDA  Triton  xSDPA  floor")
        for r in res["bench"]:
            print(f"{r['shape']:8s} {r['B']:2d} {r['context']:7d} {r['bits']:4d} {r['sdpa_us']:7.1f} {r['cuda_us']:6.1f} "
                  f"{r['triton_us']:7.1f} {r['x_sdpa']:6.2f} {r['floor_us_at_3TBps']:6.1f}"
                  + "".join(f" w{w}={t:.1f}" for w, t in r["warps_us"].items()))


if __name__ == "__main__":
    main()
