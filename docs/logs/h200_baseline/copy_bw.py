import json, statistics, torch
out = {}
for gib in (2, 8):
    n = gib * (1 << 30) // 2
    a = torch.randn(n, device="cuda", dtype=torch.float16)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    ts = []
    for _ in range(20):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record(); b.copy_(a); e1.record(); e1.synchronize()
        ts.append(e0.elapsed_time(e1) * 1e-3)
    assert torch.equal(a[:1 << 20], b[:1 << 20]) and torch.equal(a[-(1 << 20):], b[-(1 << 20):])
    med = statistics.median(ts)
    out[f"{gib}GiB"] = dict(bytes_rw=2 * a.numel() * 2, median_s=med, min_s=min(ts), gbps=2 * a.numel() * 2 / med / 1e9,
                            gbps_best=2 * a.numel() * 2 / min(ts) / 1e9)
    print(f"copy {gib} GiB fp16: median {med * 1e3:.3f} ms -> {out[f'{gib}GiB']['gbps']:.0f} GB/s (read + write), "
          f"best {out[f'{gib}GiB']['gbps_best']:.0f}", flush=True)
    del a, b
    torch.cuda.empty_cache()
import sys
json.dump(out, open(sys.argv[1], "w"), indent=1)
