"""CUDA shared-memory PQ decode attention vs the naive specification.

CPU: the module imports without touching CUDA and reports itself unavailable. GPU (``-m gpu``):
odd shapes (B > 1 with unequal lengths and starts, GQA 1/3/4/8, residual empty/partial/full,
lengths 0 and 1, d 64 and 128, 4-bit and 2-bit, fp16 and bf16), NaN-poisoned outputs and NaN past
the residual lengths, fallback for unsupported inputs, and a CUDA-graph replay with new lengths.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from million.ops import naive

CUDA = torch.cuda.is_available()


def test_import_without_cuda_and_unavailable_on_cpu():
    code = (
        "import torch, sys\n"
        "from million.ops import cuda_attention as ca\n"
        "assert callable(ca.pq_decode_attention) and callable(ca.available)\n"
        "assert not torch.cuda.is_initialized()\n"
        "print(ca.available())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if not CUDA:
        assert r.stdout.strip() == "False"


def _make(B, Hq, Hkv, D, bits, T, R, dtype, Hc, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    M = D // 2 if bits == 4 else D // 4
    dsub = D // M

    def rn(*shape):
        return torch.randn(*shape, device="cuda", generator=g).to(dtype)

    kc = torch.randint(0, 256, (B, Hkv, T, M), device="cuda", generator=g, dtype=torch.uint8)
    vc = torch.randint(0, 256, (B, Hkv, T, M), device="cuda", generator=g, dtype=torch.uint8)
    return rn(B, Hq, D), kc, vc, rn(Hc, M, 256, dsub), rn(Hc, M, 256, dsub), rn(B, Hkv, R, D), rn(B, Hkv, R, D)


CASES = [
    # B, Hq, Hkv, D, bits, T, R, pq_lens, res_lens, starts, Hc
    (3, 4, 4, 128, 4, 1000, 64, [1000, 517, 0], [64, 10, 0], [0, 37, 0], 1),
    (3, 6, 2, 64, 4, 999, 32, [999, 1, 500], [0, 32, 7], [0, 0, 499], 1),
    (2, 8, 2, 128, 2, 3000, 128, [3000, 2000], [128, 1], [0, 2100], 2),
    (2, 16, 2, 64, 2, 777, 16, [777, 0], [16, 16], [3, 0], 1),
    (2, 9, 3, 64, 4, 5000, 128, [5000, 4000], [128, 0], [100, 4000], 3),
    (4, 8, 8, 128, 4, 333, 16, [333, 1, 0, 200], [0, 16, 3, 5], [0, 0, 0, 210], 1),
    (1, 32, 8, 128, 4, 4096, 256, [4096], [256], [0], 8),
    (2, 5, 5, 128, 2, 2048, 8, [0, 2048], [0, 1], [0, 2049], 1),
    # windows that start inside the residual (r_lo > 0), more than one merge round (> 64 tokens)
    (2, 8, 4, 128, 4, 500, 128, [500, 300], [100, 77], [520, 310], 1),
    (3, 3, 3, 64, 2, 200, 128, [200, 17, 0], [128, 90, 65], [0, 20, 64], 1),
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_naive(case, dtype):
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = CASES[case]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, dtype, Hc, seed=case)
    for b in range(B):  # never read past the residual lengths
        kr[b, :, rl[b]:] = float("nan")
        vr[b, :, rl[b]:] = float("nan")
    pq_lens = torch.tensor(pl, dtype=torch.int32, device="cuda")
    res_lens = torch.tensor(rl, dtype=torch.int32, device="cuda")
    starts = torch.tensor(st, dtype=torch.int32, device="cuda")
    torch.full((1 << 24,), float("nan"), device="cuda")  # poison the allocator's free blocks
    out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts, return_lse=True)
    ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(),
                                             vr.float(), res_lens, starts, return_lse=True)
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    tol = 1e-2 * ref.abs().max().item() + 1e-6
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=0)
    fin = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[fin], ref_lse[fin], atol=2e-3, rtol=0)
    assert (lse[~fin] == float("-inf")).all() and (out.float()[~fin] == 0).all()
    out2 = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts)
    torch.testing.assert_close(out2, out, atol=0, rtol=0)


def _check_view(ca, inputs, views, pl, rl, st):
    """The kernel on views of (q, K codes, V codes) against the naive twin, and bit for bit against the same call on
    the inputs themselves."""
    q, kc, vc, kcen, vcen, kr, vr = inputs
    pq_lens = torch.tensor(pl, dtype=torch.int32, device="cuda")
    res_lens = torch.tensor(rl, dtype=torch.int32, device="cuda")
    starts = torch.tensor(st, dtype=torch.int32, device="cuda")
    out = ca.pq_decode_attention(*views, kcen, vcen, pq_lens, kr, vr, res_lens, starts)
    ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(), vr.float(),
                                    res_lens, starts)
    tol = 1e-2 * ref.abs().max().item() + 1e-6
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=0)
    base = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts)
    torch.testing.assert_close(out, base, atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("layout", ["strided", "offset"])
@pytest.mark.parametrize("kernel", ["ffma", "mma", "lut"])
@pytest.mark.parametrize("case", [0, 2, 4, 6])
def test_q_layouts(case, kernel, layout, monkeypatch):
    """q as a strided view (head dim not contiguous) and as a view 2 bytes off a 16-byte boundary: the kernels that
    load q as vectors where its rows allow (the tensor-core kernel's fragments) fall back to scalar loads, the others
    read it element by element; every kernel against the naive twin and against the same q made contiguous."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = CASES[case]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, Hc, seed=case)
    if layout == "strided":  # element d at d * 2: sq_d == 2
        qv = torch.zeros(B, Hq, D, 2, dtype=q.dtype, device="cuda")
        qv[..., 0] = q
        qv = qv[..., 0]
        assert qv.stride(-1) == 2
    else:  # rows start one element past an aligned address
        buf = torch.zeros(B * Hq * D + 1, dtype=q.dtype, device="cuda")
        qv = buf[1:].view(B, Hq, D)
        qv.copy_(q)
        assert qv.data_ptr() % 16 == 2
    monkeypatch.setenv("MILLION_CUDA_KERNEL", kernel)
    _check_view(ca, (q, kc, vc, kcen, vcen, kr, vr), (qv, kc, vc), pl, rl, st)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("offset", [4, 16])
@pytest.mark.parametrize("case", [0, 2, 5])
def test_codes_offset_views(case, offset):
    """K/V codes as views 4 or 16 bytes into a larger buffer (4: not 16-byte aligned, so no kernel may bulk-copy
    them), against the naive twin and bit for bit against the same codes in their own tensors."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = CASES[case]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, Hc, seed=case)

    def shifted(x):
        buf = torch.zeros(x.numel() + offset, dtype=torch.uint8, device="cuda")
        v = buf[offset:].view(x.shape)
        v.copy_(x)
        assert v.data_ptr() % 16 == offset % 16
        return v

    _check_view(ca, (q, kc, vc, kcen, vcen, kr, vr), (q, shifted(kc), shifted(vc)), pl, rl, st)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_fallback_unsupported_float32():
    from million.ops import cuda_attention as ca

    q, kc, vc, kcen, vcen, kr, vr = _make(2, 4, 2, 64, 4, 100, 8, torch.float32, 1, seed=0)
    pl = torch.tensor([100, 50], dtype=torch.int32, device="cuda")
    rl = torch.tensor([8, 3], dtype=torch.int32, device="cuda")
    assert not ca.supports(q, kc, vc, kcen, vcen, kr, vr)
    out = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl)
    ref = naive.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl)
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_cuda_graph_replay_reads_lengths_on_device():
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    q, kc, vc, kcen, vcen, kr, vr = _make(2, 8, 2, 128, 4, 3000, 64, torch.float16, 1, seed=1)
    pl = torch.tensor([3000, 1000], dtype=torch.int32, device="cuda")
    rl = torch.tensor([64, 3], dtype=torch.int32, device="cuda")
    st = torch.zeros(2, dtype=torch.int32, device="cuda")
    ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl, st)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl, st)
    torch.cuda.current_stream().wait_stream(s)
    pl.copy_(torch.tensor([17, 2999], dtype=torch.int32))
    rl.copy_(torch.tensor([0, 64], dtype=torch.int32))
    g.replay()
    torch.cuda.synchronize()
    ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pl, kr.float(), vr.float(), rl, st)
    torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item(), rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("splits", [1, 7, 64])
def test_ticket_merge_many_splits_and_repeats(splits):
    """One launch: the last block of each (batch, kv head, group) merges; many (partly empty) splits,
    then repeated calls of other shapes on the same stream (the ticket counters must reset)."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    for rep, (B, Hq, Hkv, D, bits, T, R, pl, rl, st) in enumerate([
        (2, 12, 4, 128, 4, 600, 32, [600, 40], [32, 5], [0, 10]),
        (3, 8, 8, 64, 2, 300, 16, [0, 300, 1], [16, 0, 16], [0, 0, 0]),
        (2, 12, 4, 128, 4, 600, 32, [599, 600], [0, 32], [3, 0]),
    ]):
        q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, 1, seed=10 + rep)
        pq_lens = torch.tensor(pl, dtype=torch.int32, device="cuda")
        res_lens = torch.tensor(rl, dtype=torch.int32, device="cuda")
        starts = torch.tensor(st, dtype=torch.int32, device="cuda")
        for _ in range(3):
            out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts,
                                              return_lse=True, num_splits_override=splits)
            ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens,
                                                     kr.float(), vr.float(), res_lens, starts, return_lse=True)
            torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)
            fin = torch.isfinite(ref_lse)
            torch.testing.assert_close(lse[fin], ref_lse[fin], atol=2e-3, rtol=0)


def _check_poisoned(ca, case, dtype, seed, splits=(None, 3), **kernel_args):
    """One case against the naive twin in fp32: residual tails past each length and the allocator
    NaN-poisoned, at each of ``splits`` (default and 3); empty rows give output 0 and lse -inf."""
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = case
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, dtype, Hc, seed=seed)
    for b in range(B):
        kr[b, :, rl[b]:] = float("nan")
        vr[b, :, rl[b]:] = float("nan")
    pq_lens = torch.tensor(pl, dtype=torch.int32, device="cuda")
    res_lens = torch.tensor(rl, dtype=torch.int32, device="cuda")
    starts = torch.tensor(st, dtype=torch.int32, device="cuda")
    ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(),
                                             vr.float(), res_lens, starts, return_lse=True)
    fin = torch.isfinite(ref_lse)
    for s in splits:
        torch.full((1 << 24,), float("nan"), device="cuda")
        out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts, return_lse=True,
                                          num_splits_override=s, **kernel_args)
        assert torch.isfinite(out.float()).all()
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)
        torch.testing.assert_close(lse[fin], ref_lse[fin], atol=2e-3, rtol=0)
        assert (lse[~fin] == float("-inf")).all() and (out.float()[~fin] == 0).all()


LUT_CASES = [
    # B, Hq, Hkv, D, bits, T, R, pq_lens, res_lens, starts, Hc  (GQA ratios 2/3/4/8, odd lengths)
    (3, 8, 2, 128, 4, 1000, 64, [1000, 517, 0], [64, 10, 0], [0, 37, 0], 1),
    (2, 9, 3, 64, 4, 5000, 128, [5000, 4000], [128, 0], [100, 4000], 3),
    (2, 16, 2, 128, 2, 3000, 128, [3000, 2000], [128, 1], [0, 2100], 2),
    (2, 6, 2, 64, 2, 777, 16, [777, 1], [16, 16], [3, 0], 1),
    (1, 32, 8, 128, 4, 4096, 256, [4096], [256], [0], 8),
    (2, 4, 2, 128, 4, 333, 16, [333, 33], [0, 5], [0, 0], 1),
    (1, 32, 8, 128, 2, 70000, 128, [70000], [100], [0], 1),
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("warps", [0, 8, 12, 16])
@pytest.mark.parametrize("case", range(len(LUT_CASES)))
def test_lut_kernel_matches_naive(case, warps):
    """fp16 GQA: the packed-LUT partial kernel at every warp count, and the FFMA kernel (warps=0)."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    _check_poisoned(ca, LUT_CASES[case], torch.float16, 100 + case, num_warps_override=warps)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("warps", [8, 12, 16])
@pytest.mark.parametrize("case", range(len(LUT_CASES)))
def test_lut_kernel_bulk_tables(case, warps, monkeypatch):
    """``MILLION_CUDA_LUT_BULK=1``: the packed-LUT kernel copies the host-laid tables before its wait and builds the
    LUT from the copied K centroids. Against the naive twin (NaN-poisoned, default and 3 splits), and bit for bit
    the output and lse of the per-thread prologue (the same fp16 arithmetic per entry), at several split counts."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_LUT_BULK", "1")
    _check_poisoned(ca, LUT_CASES[case], torch.float16, 100 + case, kernel_override="lut", num_warps_override=warps)
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = LUT_CASES[case]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, Hc, seed=200 + case)
    args = (q, kc, vc, kcen, vcen, torch.tensor(pl, dtype=torch.int32, device="cuda"), kr, vr,
            torch.tensor(rl, dtype=torch.int32, device="cuda"), torch.tensor(st, dtype=torch.int32, device="cuda"))
    for splits in (None, 1, 5, 64):
        got = []
        for bulk in ("0", "1"):
            monkeypatch.setenv("MILLION_CUDA_LUT_BULK", bulk)
            got.append(ca.pq_decode_attention(*args, return_lse=True, num_splits_override=splits,
                                              kernel_override="lut", num_warps_override=warps))
        torch.testing.assert_close(got[1][0], got[0][0], atol=0, rtol=0)
        torch.testing.assert_close(got[1][1], got[0][1], atol=0, rtol=0)


def test_lut_bulk_switch_checked(monkeypatch):
    """CPU: a bad ``MILLION_CUDA_LUT_BULK`` is named."""
    from million.ops import cuda_attention as ca

    monkeypatch.setenv("MILLION_CUDA_LUT_BULK", "yes")
    with pytest.raises(ValueError, match="MILLION_CUDA_LUT_BULK='yes'"):
        ca.lut_bulk()
    monkeypatch.setenv("MILLION_CUDA_LUT_BULK", "1")
    assert ca.lut_bulk()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_lut_kernel_large_scores():
    """Peaked attention (scores of tens in log2 units): fp16 LUT rounding stays inside tolerance."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    q, kc, vc, kcen, vcen, kr, vr = _make(1, 32, 8, 128, 4, 8192, 64, torch.float16, 1, seed=7)
    q = q * 4
    pq_lens = torch.tensor([8192], dtype=torch.int32, device="cuda")
    res_lens = torch.tensor([64], dtype=torch.int32, device="cuda")
    ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(),
                                             vr.float(), res_lens, return_lse=True)
    out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, return_lse=True)
    torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item(), rtol=0)
    torch.testing.assert_close(lse, ref_lse, atol=2e-2, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("warps", [8, 12, 16])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES) + len(LUT_CASES)))
def test_mma_kernel_matches_naive(case, dtype, warps):
    """The tensor-core partial kernel (MHA and GQA, fp16 and bf16, dsub 2 and 4, odd lengths, starts,
    empty sequences), NaN-poisoned residual tails and a NaN-filled allocator, against the naive twin."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    _check_poisoned(ca, (CASES + LUT_CASES)[case], dtype, 300 + case, num_warps_override=warps, kernel_override="mma")


SHORT_CASES = [
    # code tensors shorter than a 32-token chunk (T < 32): B, Hq, Hkv, D, bits, T, R, pq_lens, res_lens, starts, Hc
    (2, 8, 2, 128, 4, 1, 16, [1, 0], [16, 3], [0, 0], 1),
    (2, 8, 2, 128, 2, 5, 8, [5, 3], [8, 1], [0, 2], 1),
    (3, 6, 2, 64, 4, 31, 16, [31, 17, 0], [0, 16, 5], [0, 4, 0], 1),
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(SHORT_CASES)))
def test_mma_kernel_short_code_tensors(case, dtype):
    """Code tensors of fewer tokens per head than a chunk, the tensor-core kernel against the naive twin: a library
    whose kernel reads 32-token windows (million_pq_mma_window) gets them padded by the Python side."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    _check_poisoned(ca, SHORT_CASES[case], dtype, 900 + case, splits=(None, 1, 3), kernel_override="mma")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_mma_kernel_large_scores(dtype):
    """Peaked attention through the tensor-core kernel (fp32 scores from raw q, P rounded to 16 bits)."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    q, kc, vc, kcen, vcen, kr, vr = _make(1, 32, 8, 128, 4, 8192, 64, dtype, 1, seed=7)
    q = q * 4
    pq_lens = torch.tensor([8192], dtype=torch.int32, device="cuda")
    res_lens = torch.tensor([64], dtype=torch.int32, device="cuda")
    ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(),
                                             vr.float(), res_lens, return_lse=True)
    out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, return_lse=True,
                                      kernel_override="mma")
    torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item(), rtol=0)
    torch.testing.assert_close(lse, ref_lse, atol=2e-2, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("cluster", ["2", "8"])
@pytest.mark.parametrize("case", [0, 2, 6, 10, 13, 16])
def test_mma_kernel_cluster_multicast(case, cluster, monkeypatch):
    """The opt-in cluster path (tables multicast to the splits of a cluster; empty splits included)."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CLUSTER", cluster)
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = (CASES + LUT_CASES)[case]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, Hc, seed=500 + case)
    pq_lens = torch.tensor(pl, dtype=torch.int32, device="cuda")
    res_lens = torch.tensor(rl, dtype=torch.int32, device="cuda")
    starts = torch.tensor(st, dtype=torch.int32, device="cuda")
    ref, ref_lse = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(),
                                             vr.float(), res_lens, starts, return_lse=True)
    fin = torch.isfinite(ref_lse)
    for splits in (None, 16):
        out, lse = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, starts, return_lse=True,
                                          num_splits_override=splits, kernel_override="mma")
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)
        torch.testing.assert_close(lse[fin], ref_lse[fin], atol=2e-3, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_mma_tables_follow_the_centroids():
    """The laid-out tables are rebuilt when the centroids change in place or a new tensor reuses memory."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = LUT_CASES[0]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, Hc, seed=9)
    pq_lens = torch.tensor(pl, dtype=torch.int32, device="cuda")
    res_lens = torch.tensor(rl, dtype=torch.int32, device="cuda")
    for _ in range(3):
        out = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pq_lens, kr, vr, res_lens, kernel_override="mma")
        ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(), vr.float(),
                                        res_lens)
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)
        kcen.mul_(-1.5)  # in place: same object, new version
        vcen = vcen.flip(2).contiguous()  # a new tensor (may reuse freed memory)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("bulk", ["1", "0"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(6))
def test_ffma_kernel_host_tables_and_per_thread_prologue(case, dtype, bulk, monkeypatch):
    """The FFMA kernel with one query head per block (MHA): tables laid out on the host and fetched by
    bulk copy (the K side turned into its score table in place; dsub 2 and 4, d 64 and 128), and the
    per-thread prologue, against the naive twin; MHA cases and GQA ones forced onto the FFMA kernel."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_FFMA_BULK", bulk)
    cases = [CASES[0], CASES[5], CASES[7], CASES[9], LUT_CASES[3],
             # MHA d=64 4-bit with per-head codebooks (the per-head table stride)
             (2, 4, 4, 64, 4, 700, 32, [700, 13], [32, 0], [0, 0], 4)]
    _check_poisoned(ca, cases[case], dtype, 900 + case, kernel_override="ffma")


HALF_V_CASES = [CASES[0], CASES[5], CASES[7], CASES[9],
                (2, 4, 4, 64, 4, 700, 32, [700, 13], [32, 0], [0, 0], 4),
                # many chunks per warp, 2 bits at d = 128
                (1, 8, 8, 128, 2, 70000, 64, [70000], [64], [0], 1)]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("half_v", ["1", "0"])
@pytest.mark.parametrize("case", range(len(HALF_V_CASES)))
def test_ffma_half2_values(case, half_v, monkeypatch):
    """fp16 MHA (the FFMA kernel, host-laid tables): each chunk's values accumulated in half2 (kind 4,
    ``MILLION_CUDA_HALF_V=1``) and in float32 (``0``), NaN-poisoned, at the default split count and 3, against the naive
    twin."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_HALF_V", half_v)
    monkeypatch.setenv("MILLION_CUDA_FFMA_BULK", "1")
    _check_poisoned(ca, HALF_V_CASES[case], torch.float16, 1100 + case)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_ffma_half2_values_path_and_range_guard(monkeypatch):
    """With MILLION_CUDA_HALF_V=1 an fp16 MHA call takes the half2 value path (its output differs from the float32
    path's, both near the naive twin). V centroids past +-2048 take the float32 path: with every probability 1 (q = 0) and every V code
    on a centroid of 6000, a chunk's 16 half2 products would sum past the fp16 range; the output is that centroid,
    finite, and equal bit for bit to the float32 path's."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_FFMA_BULK", "1")
    monkeypatch.setenv("MILLION_CUDA_HALF_V", "1")
    B, Hq, Hkv, D, bits, T, R = 2, 8, 8, 128, 4, 3000, 16
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, 1, seed=1200)
    pq_lens = torch.tensor([3000, 2500], dtype=torch.int32, device="cuda")
    res_lens = torch.zeros(B, dtype=torch.int32, device="cuda")

    def run(qq, v_codes, v_cen, half):
        monkeypatch.setenv("MILLION_CUDA_HALF_V", half)
        return ca.pq_decode_attention(qq, kc, v_codes, kcen, v_cen, pq_lens, kr, vr, res_lens)

    assert ca.ffma_half_values(vcen)
    ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pq_lens, kr.float(), vr.float(),
                                    res_lens)
    h, f = run(q, vc, vcen, "1"), run(q, vc, vcen, "0")
    for out in (h, f):
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item(), rtol=0)
    assert not torch.equal(h, f)

    big = vcen.clone()
    big[:, :, 7, :] = 6000.0  # code 7 of every subspace
    assert not ca.ffma_half_values(big)
    q0, v7 = torch.zeros_like(q), torch.full_like(vc, 7)
    g, f = run(q0, v7, big, "1"), run(q0, v7, big, "0")
    assert torch.isfinite(g.float()).all()
    torch.testing.assert_close(g.float(), torch.full_like(g.float(), 6000.0), atol=0, rtol=0)
    assert torch.equal(g, f)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("cluster", ["2", "4"])
@pytest.mark.parametrize("case", [0, 5, 7, 9])
def test_ffma_kernel_cluster_multicast(case, cluster, monkeypatch):
    """The bulk-copy FFMA kernel (MHA) in clusters of splits that multicast the tables: odd lengths, empty
    rows and splits (every block of a cluster takes part in the copies), NaN poison, against the naive twin."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CLUSTER", cluster)
    monkeypatch.setenv("MILLION_CUDA_FFMA_BULK", "1")
    _check_poisoned(ca, CASES[case], torch.float16, 950 + case, kernel_override="ffma")
    B, Hq, Hkv, D, bits, T, R, pl, rl, st, Hc = CASES[case]
    q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, torch.float16, Hc, seed=990 + case)
    args = (torch.tensor(pl, dtype=torch.int32, device="cuda"), kr, vr, torch.tensor(rl, dtype=torch.int32, device="cuda"),
            torch.tensor(st, dtype=torch.int32, device="cuda"))
    ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), args[0], kr.float(), vr.float(),
                                    args[3], args[4])
    out = ca.pq_decode_attention(q, kc, vc, kcen, vcen, *args, num_splits_override=16, kernel_override="ffma")
    torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(CASES) + len(LUT_CASES)))
def test_mma_kernel_cluster_merge(case, dtype, monkeypatch):
    """One launch, the splits of a head and a merge block in one cluster (partials through distributed
    shared memory): every case (GQA 1/2/3/4/8, d 64/128, dsub 2/4, empty rows, starts, residual windows
    starting inside the window) at 1, 3, 7 and 15 splits (empty splits included), against the naive twin."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "1")
    _check_poisoned(ca, (CASES + LUT_CASES)[case], dtype, 700 + case, splits=(None, 1, 3, 7, 15), kernel_override="mma")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_mma_kernel_cluster_merge_graph_replay(monkeypatch):
    """The cluster-merge launch captured in a CUDA graph and replayed with new lengths (read on the device)."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "1")
    q, kc, vc, kcen, vcen, kr, vr = _make(2, 9, 3, 64, 4, 4096, 64, torch.float16, 3, seed=9)
    pl = torch.tensor([4096, 1000], dtype=torch.int32, device="cuda")
    rl = torch.tensor([64, 3], dtype=torch.int32, device="cuda")
    st = torch.zeros(2, dtype=torch.int32, device="cuda")
    ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl, st, kernel_override="mma")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl, st, kernel_override="mma")
    torch.cuda.current_stream().wait_stream(s)
    for lens, res in (([17, 4095], [0, 64]), ([0, 1], [64, 0])):
        pl.copy_(torch.tensor(lens, dtype=torch.int32))
        rl.copy_(torch.tensor(res, dtype=torch.int32))
        g.replay()
        torch.cuda.synchronize()
        ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pl, kr.float(), vr.float(), rl,
                                        st)
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)


def test_cluster_merge_choice(monkeypatch):
    """CPU: where the opt-in cluster merge applies (tensor-core kernel, 8 warps, no table cluster), its default
    (off) and bad modes."""
    from million.ops import cuda_attention as ca

    monkeypatch.delenv("MILLION_CUDA_CMERGE", raising=False)
    assert not ca.cluster_merge("mma", 8, 1)
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "1")
    assert ca.cluster_merge("mma", 8, 1)
    assert not ca.cluster_merge("mma", 12, 1)
    assert not ca.cluster_merge("mma", 8, 2)
    assert not ca.cluster_merge("lut", 16, 1)
    assert not ca.cluster_merge("ffma", 0, 1)
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "0")
    assert not ca.cluster_merge("mma", 8, 1)
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "auto")
    with pytest.raises(ValueError, match="MILLION_CUDA_CMERGE='auto'"):
        ca.cluster_merge("mma", 8, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("kernel", ["ffma", "mma", "lut", "cmerge", "mma64"])
def test_back_to_back_calls_see_the_previous_kernels_writes(kernel, monkeypatch):
    """Programmatic dependent launch (MILLION_CUDA_PDL=2, the default): the partial grid starts while the previous
    kernel runs and copies its tables first. Between calls queued without a synchronization, torch kernels rewrite q,
    the codes, the residual window and the lengths in place, and some calls follow each other directly (the next
    partial grid after this merge grid, the partials' buffers reused); every output must match the naive reference
    of the inputs of its own call."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "1" if kernel == "cmerge" else "0")
    if kernel == "ffma":
        B, Hq, Hkv, D, bits, T, R = 2, 8, 8, 128, 4, 3000, 64
    elif kernel == "mma64":  # d=64: blocks that could share an SM (MILLION_CUDA_SOLO pads them to one per SM)
        B, Hq, Hkv, D, bits, T, R = 2, 9, 3, 64, 4, 3000, 64
    else:
        B, Hq, Hkv, D, bits, T, R = 2, 32, 8, 128, 4, 3000, 64
    dtype = torch.float16
    over = "mma" if kernel in ("cmerge", "mma64") else kernel
    monkeypatch.delenv("MILLION_CUDA_MMA_WARPS", raising=False)
    states = []
    for seed in range(4):
        q, kc, vc, kcen, vcen, kr, vr = _make(B, Hq, Hkv, D, bits, T, R, dtype, 1, seed=20 + seed)
        pl = torch.tensor([[3000, 1234], [17, 2999], [0, 3000], [2048, 1]][seed], dtype=torch.int32, device="cuda")
        rl = torch.tensor([[64, 3], [0, 64], [64, 0], [1, 33]][seed], dtype=torch.int32, device="cuda")
        states.append((q, kc, vc, kr, vr, pl, rl))
    _, _, _, kcen, vcen, _, _ = _make(B, Hq, Hkv, D, bits, T, R, dtype, 1, seed=19)
    work = [t.clone() for t in states[0]]
    q, kc, vc, kr, vr, pl, rl = work
    ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl, kernel_override=over)  # tables laid out
    torch.cuda.synchronize()
    outs = []
    order = [1, 2, 3, 0, 0, 2]
    for n, i in enumerate(order):
        if n == 0 or order[n - 1] != i:  # the same inputs twice: two attention calls back to back
            for w, src in zip(work, states[i]):
                w.copy_(src)
        outs.append(ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl, kr, vr, rl, kernel_override=over))
    torch.cuda.synchronize()
    for out, i in zip(outs, order):
        sq, skc, svc, skr, svr, spl, srl = states[i]
        ref = naive.pq_decode_attention(sq.float(), skc, svc, kcen.float(), vcen.float(), spl, skr.float(),
                                        svr.float(), srl)
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)


def _rerun_gpu_tests_with(var, value, tests):
    """Launch switches are read once per process: run the GPU tests selected by ``tests`` (a ``-k`` expression) again in a
    subprocess with ``var=value`` and require that they all pass."""
    env = dict(os.environ, **{var: value})
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", __file__, "-k",
                        tests], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "error" not in last, r.stdout[-2000:]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_merge8_matches_naive():
    """MILLION_CUDA_MERGE8=2: every merge grid as 64-register blocks (pq_merge_kernel<T, D, 8>), for every partial
    kernel, fp16 and bf16, d 64 and 128. The switch is read once per process, so the matching, many-splits and
    back-to-back tests run again in a subprocess with it set."""
    _rerun_gpu_tests_with("MILLION_CUDA_MERGE8", "2", "test_matches_naive or test_ticket_merge or test_back_to_back or "
                          "test_mma_kernel_matches_naive or lut_kernel or ffma")


WINDOW_CASES = [
    # B, Hq, Hkv, D, bits, T, R, pq_lens, res_lens, starts, Hc  (MHA: the FFMA kernel with host-laid tables)
    # the benchmark's MHA shape: one wave of S = 4 splits, full and partial windows, one sequence with codes only
    (1, 32, 32, 128, 2, 8192, 128, [8192], [128], [0], 32),
    (3, 32, 32, 128, 4, 2000, 128, [2000, 1500, 7], [77, 128, 0], [0, 0, 0], 32),
    # a window only (no code tokens: every split empty but its window rows), left padding into the window
    (2, 8, 8, 128, 2, 600, 256, [0, 600], [200, 256], [0, 650], 1),
    # d 64 at both widths (TPI 4 and 8), window rows not a multiple of the step, a window longer than the codes
    (2, 6, 6, 64, 2, 333, 100, [333, 5], [99, 100], [0, 0], 1),
    (2, 6, 6, 64, 4, 1000, 40, [1000, 1], [40, 39], [3, 0], 6),
]


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", range(len(WINDOW_CASES)))
def test_window_cases_match_naive(case, dtype):
    """MHA cases for the partial blocks' own residual window (``MILLION_CUDA_WINP``, 2-bit cases; run with each setting
    by ``test_window_in_partial_blocks_matches_naive``): NaN-poisoned, at the default split count, 3, 7 and 64."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    _check_poisoned(ca, WINDOW_CASES[case], dtype, 1300 + case, splits=(None, 3, 7, 64))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("winp", ["1", "2"])
def test_window_in_partial_blocks_matches_naive(winp):
    """MILLION_CUDA_WINP=1 (by rule) and 2 (wherever it fits): at 2 bits the MHA kernel's partial blocks attend the
    residual window, staged in shared memory, inside their own softmax, and the merge attends none. The switch is read
    once per process, so the matching, window, graph and back-to-back tests run again in a subprocess with it set."""
    _rerun_gpu_tests_with("MILLION_CUDA_WINP", winp, "test_matches_naive or window_cases or ffma or test_back_to_back or "
                          "graph_replay or no_starts or test_ticket_merge")


@pytest.mark.parametrize("var, bad", [("MILLION_CUDA_PDL", "on"), ("MILLION_CUDA_SOLO", "yes"),
                                      ("MILLION_CUDA_SOLO", "3"), ("MILLION_CUDA_MERGE8", "4"),
                                      ("MILLION_CUDA_WINP", "on")])
def test_launch_switch_checked(var, bad, monkeypatch):
    """CPU: a bad value of a launch switch (MILLION_CUDA_PDL, MILLION_CUDA_SOLO, MILLION_CUDA_MERGE8, MILLION_CUDA_WINP) is
    named before the library is looked for."""
    from million.ops import cuda_attention as ca

    monkeypatch.setenv(var, bad)
    ca._lib.cache_clear()
    try:
        with pytest.raises(ValueError, match=f"{var}='{bad}'"):
            ca._lib()
    finally:
        ca._lib.cache_clear()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("kernel", ["ffma", "mma", "lut", "cmerge"])
def test_no_starts_reads_zero_and_launches_only_the_attention_kernels(kernel, monkeypatch):
    """``starts=None`` is a null pointer that the kernels read as 0 for every sequence: the same output, bit for bit,
    as zero starts, and a call launches the attention kernels only (no fill kernel for a zero tensor in front)."""
    from torch.profiler import ProfilerActivity, profile

    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "1" if kernel == "cmerge" else "0")
    over = "mma" if kernel == "cmerge" else kernel
    Hq, Hkv = (8, 8) if kernel == "ffma" else (32, 8)
    q, kc, vc, kcen, vcen, kr, vr = _make(3, Hq, Hkv, 128, 4, 2000, 64, torch.float16, 1, seed=40)
    pl = torch.tensor([2000, 777, 0], dtype=torch.int32, device="cuda")
    rl = torch.tensor([64, 5, 17], dtype=torch.int32, device="cuda")
    zeros = torch.zeros(3, dtype=torch.int32, device="cuda")
    args = (q, kc, vc, kcen, vcen, pl, kr, vr, rl)
    ref = ca.pq_decode_attention(*args, zeros, kernel_override=over)
    out = ca.pq_decode_attention(*args, kernel_override=over)
    torch.testing.assert_close(out, ref, atol=0, rtol=0)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        ca.pq_decode_attention(*args, kernel_override=over)
        torch.cuda.synchronize()
    names = [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    assert names and all("pq_" in n for n in names), names


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA or torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("kernel", ["ffma", "mma", "lut", "cmerge"])
def test_every_device(kernel, monkeypatch):
    """A kernel's shared-memory attribute belongs to one device: calls on the first device, then on every other one
    (each needs the attribute set on its own device), then on the first again, all match the naive reference."""
    from million.ops import cuda_attention as ca

    if not ca.available():
        pytest.skip("CUDA kernel library not available")
    monkeypatch.setenv("MILLION_CUDA_CMERGE", "1" if kernel == "cmerge" else "0")
    over = "mma" if kernel == "cmerge" else kernel
    Hq, Hkv = (8, 8) if kernel == "ffma" else (32, 8)
    base = _make(2, Hq, Hkv, 128, 4, 1500, 32, torch.float16, 1, seed=50)
    pl = torch.tensor([1500, 600], dtype=torch.int32)
    rl = torch.tensor([32, 7], dtype=torch.int32)
    devices = list(range(torch.cuda.device_count())) + [0]
    for d in devices:
        dev = torch.device("cuda", d)
        q, kc, vc, kcen, vcen, kr, vr = (t.to(dev) for t in base)
        out = ca.pq_decode_attention(q, kc, vc, kcen, vcen, pl.to(dev), kr, vr, rl.to(dev), kernel_override=over)
        assert out.device == dev
        ref = naive.pq_decode_attention(q.float(), kc, vc, kcen.float(), vcen.float(), pl.to(dev), kr.float(),
                                        vr.float(), rl.to(dev))
        torch.testing.assert_close(out.float(), ref, atol=1e-2 * ref.abs().max().item() + 1e-6, rtol=0)
