"""Decode-attention speed: PQ codes (million Triton kernel) vs torch SDPA over an fp16 KV cache.

One decode step (one query per head) at each context length, batch size, head shape and bit width.
Every timing is the median of CUDA-graph replays (``triton.testing.do_bench``), each replay running
``--reps`` calls that rotate over enough copies of the inputs to defeat the 50 MB L2 cache. Inputs are
random (never zeros). Effective bandwidth counts the bytes a call must read and write once (codes,
centroids, residual window, q, out) and is compared with a device-to-device copy measured in the
same run.

    PYTHONPATH=src python benchmarks/bench_decode.py --out decode.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import torch
import torch.nn.functional as F

SHAPES = {  # name: (H_q, H_kv, head_dim)
    "mha": (32, 32, 128),
    "gqa": (32, 8, 128),
    "smollm2": (9, 3, 64),
}
BITS = {4: 2, 2: 4}  # bits per element -> dsub (M = head_dim / dsub, 8-bit codes)
L2_BYTES = 50 * 2**20


def copy_bandwidth(nbytes: int = 2 * 2**30) -> float:
    """Device-to-device copy, bytes read + written per second."""
    import triton.testing

    a = torch.empty(nbytes // 2, dtype=torch.float16, device="cuda").normal_()
    b = torch.empty_like(a)
    ms = triton.testing.do_bench(lambda: b.copy_(a), warmup=50, rep=300, return_mode="median")
    del a, b
    return 2 * nbytes / (ms * 1e-3)


def time_graph(fn, n_sets: int, reps: int) -> float:
    """Median seconds per call of ``fn(i)``, from CUDA-graph replays of ``reps`` calls."""
    import triton.testing

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(min(n_sets, 3)):
            fn(i)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(i % n_sets)
    ms = triton.testing.do_bench(g.replay, warmup=25, rep=200, return_mode="median")
    return ms * 1e-3 / reps


def make_inputs(B, Hq, Hkv, D, T, dsub, nbits, R, dtype, n_sets, gen):
    """n_sets independent input sets for the PQ kernel and for SDPA."""
    M = D // dsub
    ksub = 2**nbits
    res_valid = min(64, R)
    pq_len = max(T - res_valid, 0)
    sets = []
    for _ in range(n_sets):
        q = torch.randn(B, Hq, D, device="cuda", dtype=dtype, generator=gen)
        kc = torch.randint(0, ksub, (B, Hkv, pq_len, M), device="cuda", dtype=torch.uint8, generator=gen)
        vc = torch.randint(0, ksub, (B, Hkv, pq_len, M), device="cuda", dtype=torch.uint8, generator=gen)
        kr = torch.randn(B, Hkv, R, D, device="cuda", dtype=dtype, generator=gen)
        vr = torch.randn(B, Hkv, R, D, device="cuda", dtype=dtype, generator=gen)
        sets.append((q, kc, vc, kr, vr))
    kcen = torch.randn(1, M, ksub, dsub, device="cuda", dtype=dtype, generator=gen)
    vcen = torch.randn(1, M, ksub, dsub, device="cuda", dtype=dtype, generator=gen)
    pq_lens = torch.full((B,), pq_len, dtype=torch.int32, device="cuda")
    res_lens = torch.full((B,), res_valid, dtype=torch.int32, device="cuda")
    nbytes = (
        2 * B * Hkv * pq_len * M  # codes
        + 2 * kcen.numel() * kcen.element_size()
        + 2 * B * Hkv * res_valid * D * 2
        + 2 * B * Hq * D * 2
    )
    return sets, kcen, vcen, pq_lens, res_lens, nbytes


def sdpa_inputs(B, Hq, Hkv, D, T, dtype, n_sets, gen):
    sets = []
    for _ in range(n_sets):
        q = torch.randn(B, Hq, 1, D, device="cuda", dtype=dtype, generator=gen)
        k = torch.randn(B, Hkv, T, D, device="cuda", dtype=dtype, generator=gen)
        v = torch.randn(B, Hkv, T, D, device="cuda", dtype=dtype, generator=gen)
        sets.append((q, k, v))
    return sets


def time_sdpa(sets, gqa: bool, reps: int) -> dict:
    """Time SDPA with the default dispatch and with each fp16 backend that accepts the shape."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out = {}
    backends = {
        "default": None,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    for name, be in backends.items():
        def fn(i, be=be):
            q, k, v = sets[i]
            if be is None:
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
            with sdpa_kernel(be):
                return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        try:
            out[name] = time_graph(fn, len(sets), reps)
        except Exception as e:  # backend refuses this shape
            out[name] = None
            out[name + "_error"] = type(e).__name__ + ": " + str(e).split("\n")[0][:120]
    return out


def check_once(B, Hq, Hkv, D, dsub, dtype, config, gen) -> float:
    """Relative error of the kernel vs the naive reference (fp32 on upcast inputs), NaN-poisoned."""
    from million.ops import naive
    from million.ops.triton_attention import pq_decode_attention_launch

    T, R = 1000, 16
    M = D // dsub
    q = torch.randn(B, Hq, D, device="cuda", dtype=dtype, generator=gen)
    kc = torch.randint(0, 256, (B, Hkv, T, M), device="cuda", dtype=torch.uint8, generator=gen)
    vc = torch.randint(0, 256, (B, Hkv, T, M), device="cuda", dtype=torch.uint8, generator=gen)
    kcen = torch.randn(1, M, 256, dsub, device="cuda", dtype=dtype, generator=gen)
    vcen = torch.randn(1, M, 256, dsub, device="cuda", dtype=dtype, generator=gen)
    kr = torch.randn(B, Hkv, R, D, device="cuda", dtype=dtype, generator=gen)
    vr = torch.randn(B, Hkv, R, D, device="cuda", dtype=dtype, generator=gen)
    pq_lens = torch.tensor([T - 7 * i for i in range(B)], dtype=torch.int32, device="cuda")
    res_lens = torch.tensor([R - i % R for i in range(B)], dtype=torch.int32, device="cuda")
    starts = torch.tensor([3 * i for i in range(B)], dtype=torch.int32, device="cuda")
    ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(), vr.float(),
                                    res_lens, starts)
    out = pq_decode_attention_launch(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts, config=config)
    if torch.isnan(out).any():
        return float("nan")
    return ((out.float() - ref).norm() / ref.norm()).item()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contexts", default="1024,4096,16384,32768,65536,131072,1048576")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--shapes", default="mha,gqa,smollm2")
    ap.add_argument("--bits", default="4,2", help="bits per element: 4 (M=d/2) and/or 2 (M=d/4), 8-bit codes")
    ap.add_argument("--dtype", default="float16", choices=["float16", "bfloat16"])
    ap.add_argument("--residual", type=int, default=128, help="residual window capacity R (64 slots valid)")
    ap.add_argument("--reps", type=int, default=20, help="calls per CUDA graph")
    ap.add_argument("--mem-gb", type=float, default=60.0, help="skip cases whose inputs exceed this")
    ap.add_argument("--variants", default="", help="JSON list of kernel config overrides to time as well")
    ap.add_argument("--no-sdpa", action="store_true")
    ap.add_argument("--out", default="bench_decode.json")
    args = ap.parse_args(argv)

    from million.ops.triton_attention import choose_config, pq_decode_attention_launch

    dtype = getattr(torch, args.dtype)
    gen = torch.Generator(device="cuda")
    gen.manual_seed(0)
    variants = json.loads(args.variants) if args.variants else []
    props = torch.cuda.get_device_properties(0)
    meta = {
        "device": torch.cuda.get_device_name(0),
        "sms": props.multi_processor_count,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "argv": sys.argv,
    }
    import triton

    meta["triton"] = triton.__version__
    bw = copy_bandwidth()
    meta["copy_bandwidth_GBps"] = bw / 1e9
    print(f"# {meta['device']}  torch {meta['torch']}  triton {meta['triton']}  copy {bw / 1e9:.0f} GB/s", flush=True)

    # correctness of every config we time, once per shape family
    checks = {}
    for shape in args.shapes.split(","):
        Hq, Hkv, D = SHAPES[shape]
        for bits in map(int, args.bits.split(",")):
            for vi, cfg in enumerate([None] + variants):
                key = f"{shape}/{bits}b/v{vi}"
                try:
                    checks[key] = check_once(2, Hq, Hkv, D, BITS[bits], dtype, cfg, gen)
                except Exception as e:
                    checks[key] = f"error: {type(e).__name__}: {str(e)[:200]}"
                print(f"check {key} {cfg}: rel err {checks[key]}", flush=True)

    rows = []
    header = f"{'shape':8} {'bits':>4} {'B':>3} {'ctx':>8} {'pq_us':>9} {'sdpa_us':>9} {'best_us':>9} {'x_sdpa':>7} {'x_best':>7} {'GB/s':>6} {'%copy':>6}  cfg"
    print(header, flush=True)
    for shape in args.shapes.split(","):
        Hq, Hkv, D = SHAPES[shape]
        for B in map(int, args.batches.split(",")):
            for T in map(int, args.contexts.split(",")):
                sdpa_bytes = 2 * B * Hkv * T * D * 2
                if sdpa_bytes > args.mem_gb * 2**30:
                    continue
                sdpa_res = None
                if not args.no_sdpa:
                    n_sets = max(1, min(8, math.ceil(4 * L2_BYTES / sdpa_bytes)))
                    try:
                        sets = sdpa_inputs(B, Hq, Hkv, D, T, dtype, n_sets, gen)
                        sdpa_res = time_sdpa(sets, Hq != Hkv, args.reps)
                    except torch.OutOfMemoryError:
                        sdpa_res = {"default": None, "error": "OOM"}
                    sets = None
                    torch.cuda.empty_cache()
                for bits in map(int, args.bits.split(",")):
                    dsub = BITS[bits]
                    code_bytes = 2 * B * Hkv * T * (D // dsub)
                    n_sets = max(1, min(64, math.ceil(4 * L2_BYTES / max(code_bytes, 1))))
                    try:
                        sets, kcen, vcen, pq_lens, res_lens, nbytes = make_inputs(
                            B, Hq, Hkv, D, T, dsub, 8, args.residual, dtype, n_sets, gen)
                    except torch.OutOfMemoryError:
                        print(f"{shape:8} {bits:>4} {B:>3} {T:>8} OOM", flush=True)
                        continue
                    base_cfg = choose_config(B, Hkv, Hq // Hkv, sets[0][1].shape[2], D, D // dsub, 256, dtype,
                                             torch.device("cuda"))
                    results = {}
                    for vi, cfg in enumerate([None] + variants):
                        def fn(i, cfg=cfg):
                            q, kc, vc, kr, vr = sets[i]
                            return pq_decode_attention_launch(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens,
                                                              config=cfg)
                        try:
                            results[vi] = time_graph(fn, n_sets, args.reps)
                        except Exception as e:
                            results[vi] = None
                            print(f"  variant {vi} {cfg}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    sets = None
                    torch.cuda.empty_cache()
                    ok = {k: v for k, v in results.items() if v is not None}
                    if not ok:
                        continue
                    best_vi = min(ok, key=ok.get)
                    t_pq = ok[best_vi]
                    sd = sdpa_res or {}
                    t_sdpa = sd.get("default")
                    t_best = min([v for k, v in sd.items() if isinstance(v, float)], default=None)
                    gbps = nbytes / t_pq / 1e9
                    row = dict(shape=shape, Hq=Hq, Hkv=Hkv, D=D, bits=bits, B=B, ctx=T, pq_s=t_pq,
                               pq_variant=best_vi, variants_s={str(k): v for k, v in results.items()},
                               config=base_cfg if best_vi == 0 else {**base_cfg, **variants[best_vi - 1]},
                               sdpa=sd, sdpa_s=t_sdpa, sdpa_best_s=t_best, bytes=nbytes, GBps=gbps,
                               speedup_sdpa=(t_sdpa / t_pq) if t_sdpa else None,
                               speedup_best=(t_best / t_pq) if t_best else None)
                    rows.append(row)
                    fmt = lambda v: f"{v * 1e6:9.1f}" if v else f"{'-':>9}"
                    print(f"{shape:8} {bits:>4} {B:>3} {T:>8} {fmt(t_pq)} {fmt(t_sdpa)} {fmt(t_best)} "
                          f"{(t_sdpa / t_pq) if t_sdpa else float('nan'):7.2f} {(t_best / t_pq) if t_best else float('nan'):7.2f} "
                          f"{gbps:6.0f} {100 * gbps * 1e9 / bw:6.1f}  v{best_vi} "
                          + " ".join(f"v{k}={fmt(v).strip()}" for k, v in results.items()), flush=True)
    with open(args.out, "w") as f:
        json.dump(dict(meta=meta, checks=checks, rows=rows), f, indent=1)
    print(f"# wrote {args.out}")


if __name__ == "__main__":
    main()
