"""Micro-benchmark behind the decode kernel's design: how fast can a Triton program look up a small
per-subspace table (``M`` subspaces x ``ksub`` entries) by code, for every token of a long context?

Each kernel streams ``T`` tokens x ``H`` heads of random uint8 codes ``[T, M]`` and sums the looked-up
values per token (a stand-in for the score side of attention on codes). Variants:

- ``glob_t``: pointer loads from a global (L1/L2-resident) table, lanes along tokens, one subspace
  per register; the sum over subspaces stays in-thread.
- ``glob_m``: the same with lanes along subspaces (sum across lanes).
- ``smem_m``: ``tl.gather`` on a flattened 1-D table held in registers (Triton stores it to shared
  memory at every call), index ordered token-major (lanes along subspaces, no bank conflicts).
- ``smem_t``: the same, index ordered subspace-major (lanes along tokens, random bank conflicts).
- ``codes_only``: only the code stream (the memory floor of the loop).

    PYTHONPATH=src python benchmarks/bench_gather_micro.py
"""

from __future__ import annotations

import argparse
import json

import torch
import triton
import triton.language as tl


@triton.jit
def _codes_only(c_ptr, tab_ptr, out_ptr, T, S, one, M: tl.constexpr, KS: tl.constexpr, BT: tl.constexpr):
    s = tl.program_id(0)
    h = tl.program_id(1)
    chunk = tl.cdiv(tl.cdiv(T, S), BT) * BT
    acc = tl.zeros([BT, M], dtype=tl.int32)
    for t0 in range(s * chunk, tl.minimum(s * chunk + chunk, T), BT):
        offs_t = t0 + tl.arange(0, BT)
        c = tl.load(c_ptr + (h * T + offs_t)[:, None] * M + tl.arange(0, M)[None, :])
        acc += c.to(tl.int32)
    tl.store(out_ptr + h * S + s, tl.sum(tl.sum(acc, 1), 0).to(tl.float32))


@triton.jit(do_not_specialize=["one"])
def _glob(c_ptr, tab_ptr, out_ptr, T, S, one, M: tl.constexpr, KS: tl.constexpr, BT: tl.constexpr, LANES_T: tl.constexpr):
    s = tl.program_id(0)
    h = tl.program_id(1)
    chunk = tl.cdiv(tl.cdiv(T, S), BT) * BT
    tab = tab_ptr + h * M * KS
    acc = tl.zeros([BT], dtype=tl.float32)
    for t0 in range(s * chunk, tl.minimum(s * chunk + chunk, T), BT):
        offs_t = t0 + tl.arange(0, BT)
        # Triton 3.6 lays the table loads out with lanes along dim 0 (checked in the TTGIR)
        if LANES_T:
            offs_m = tl.arange(0, M)[None, :]
            c = tl.load(c_ptr + (h * T + offs_t)[:, None] * M + offs_m).to(tl.int32)  # [BT, M]
            v = tl.load(tab + offs_m * KS + c).to(tl.float32)
            acc += tl.sum(v, 1)
        else:
            offs_m = tl.arange(0, M)[:, None]
            c = tl.load(c_ptr + (h * T + offs_t)[None, :] * M + offs_m).to(tl.int32)  # [M, BT]
            v = tl.load(tab + offs_m * KS + c).to(tl.float32)
            acc += tl.sum(v, 0)
    tl.store(out_ptr + h * S + s, tl.sum(acc, 0))


@triton.jit
def _smem(c_ptr, tab_ptr, out_ptr, T, S, one, M: tl.constexpr, KS: tl.constexpr, BT: tl.constexpr, LANES_T: tl.constexpr):
    s = tl.program_id(0)
    h = tl.program_id(1)
    chunk = tl.cdiv(tl.cdiv(T, S), BT) * BT
    e = tl.arange(0, BT * M)
    if LANES_T:
        # table [M, KS]: offset m * KS + code (bank = code % 32, random)
        t_of = e % BT
        m_of = e // BT
        tab = tl.load(tab_ptr + h * M * KS + tl.arange(0, M * KS))
    else:
        # table [KS, M]: offset code * M + m (bank = m % 32, conflict-free)
        t_of = e // M
        m_of = e % M
        kk = tl.arange(0, M * KS)
        tab = tl.load(tab_ptr + h * M * KS + (kk % M) * KS + kk // M)
    acc = tl.zeros([BT], dtype=tl.float32)
    for t0 in range(s * chunk, tl.minimum(s * chunk + chunk, T), BT):
        c = tl.load(c_ptr + (h * T + t0 + t_of) * M + m_of).to(tl.int32)
        if LANES_T:
            v = tl.gather(tab, m_of * KS + c, 0).to(tl.float32)
            acc += tl.sum(tl.reshape(v, [M, BT]), 0)
        else:
            v = tl.gather(tab, c * M + m_of, 0).to(tl.float32)
            acc += tl.sum(tl.reshape(v, [BT, M]), 1)
    tl.store(out_ptr + h * S + s, tl.sum(acc, 0))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--T", type=int, default=32768)
    ap.add_argument("--H", type=int, default=32)
    ap.add_argument("--M", type=int, default=64)
    ap.add_argument("--out", default="bench_gather_micro.json")
    args = ap.parse_args(argv)
    T, H, M, KS = args.T, args.H, args.M, 256
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    n_sets = 4
    codes = [torch.randint(0, KS, (H, T, M), dtype=torch.uint8, device="cuda") for _ in range(n_sets)]
    tabs = {dt: torch.randn(H, M, KS, device="cuda").to(dt) for dt in (torch.float32, torch.float16)}
    results = []
    for name, kern, extra in [
        ("codes_only", _codes_only, {}),
        ("glob_t", _glob, dict(LANES_T=True)),
        ("glob_m", _glob, dict(LANES_T=False)),
        ("smem_m", _smem, dict(LANES_T=False)),
        ("smem_t", _smem, dict(LANES_T=True)),
    ]:
        for dt in (torch.float32, torch.float16):
            if name == "codes_only" and dt == torch.float16:
                continue
            for BT in (64, 128):
                for nw in (4, 8):
                    for S in (max(1, 2 * sms // H),):
                        out = torch.empty(H, S, device="cuda")

                        def fn(i=[0]):
                            i[0] = (i[0] + 1) % n_sets
                            kern[(S, H)](codes[i[0]], tabs[dt], out, T, S, 1, M=M, KS=KS, BT=BT, num_warps=nw, **extra)
                        try:
                            fn()
                            ms = triton.testing.do_bench(fn, warmup=20, rep=100, return_mode="median")
                        except Exception as e:
                            print(name, dt, BT, nw, S, "failed:", type(e).__name__, str(e)[:150], flush=True)
                            continue
                        r = dict(name=name, dtype=str(dt), BT=BT, num_warps=nw, S=S, us=ms * 1e3,
                                 ns_per_token_head=ms * 1e6 / (T * H))
                        results.append(r)
                        print(f"{name:10} {str(dt):14} BT={BT:4} nw={nw} S={S:3}: {ms * 1e3:8.1f} us  "
                              f"{r['ns_per_token_head']:.3f} ns/token-head", flush=True)
    best = {}
    for r in results:
        k = (r["name"], r["dtype"])
        if k not in best or r["us"] < best[k]["us"]:
            best[k] = r
    print("\nbest per variant (T=%d, H=%d, M=%d, ksub=%d):" % (T, H, M, KS))
    for k, r in best.items():
        print(f"  {k[0]:10} {k[1]:14} {r['us']:8.1f} us  (BT={r['BT']}, nw={r['num_warps']}, S={r['S']})")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
