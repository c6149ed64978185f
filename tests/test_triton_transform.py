"""Per-head linear maps (the transforms of a decode step with a transformed recipe): the Triton kernel against the
naive specification, and the specification against a loop of plain matmuls, at odd shapes (no rows, one row, rows off
the block, head dims off a power of two, one matrix for every head, batch 2, strided inputs), written fresh or in
place at a device row index with the untransformed copy. Without a GPU the kernel runs in Triton's interpreter."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

import million.ops as ops  # noqa: E402
from million.ops import naive  # noqa: E402
from million.ops import triton_transform as tt  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = [(1, 1, 0, 8, 1), (1, 3, 1, 64, 3), (2, 2, 5, 48, 1), (2, 3, 9, 128, 3), (1, 4, 4, 16, 4), (2, 1, 33, 32, 1)]


def _loop(x, mats):
    B, H, R, D = x.shape
    y = torch.empty(B, H, R, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            y[b, h] = x[b, h].double() @ mats[h if mats.shape[0] > 1 else 0].double()
    return y


@pytest.mark.parametrize("B,H,R,D,Hm", SHAPES)
def test_naive_is_a_matmul_per_head(B, H, R, D, Hm):
    g = torch.Generator().manual_seed(R * 7 + D)
    x, mats = torch.randn(B, H, R, D, generator=g), torch.randn(Hm, D, D, generator=g)
    torch.testing.assert_close(naive.head_map(x, mats).double(), _loop(x, mats), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("B,H,R,D,Hm", SHAPES)
def test_kernel_equals_the_specification_fresh(B, H, R, D, Hm):
    g = torch.Generator().manual_seed(R * 5 + D + Hm)
    x = torch.randn(B, R, H, D, generator=g).to(DEV).transpose(1, 2)  # strided rows, as a query from transformers
    mats = torch.randn(Hm, D, D, generator=g).to(DEV)
    for dtype in (None, torch.float32, torch.float16):
        want, got = naive.head_map(x, mats, dtype), tt.head_map(x, mats, dtype)
        assert got.dtype == want.dtype and got.shape == (B, H, R, D)
        torch.testing.assert_close(got, want, rtol=1e-5 if got.dtype == torch.float32 else 1e-3, atol=1e-4)


@pytest.mark.parametrize("B,H,R,D,Hm", SHAPES)
@pytest.mark.parametrize("at", [None, 0, 3])
def test_kernel_writes_in_place_at_the_device_index(B, H, R, D, Hm, at):
    g = torch.Generator().manual_seed(R + D * 3 + Hm)
    T = R + 5
    x = torch.randn(B, H, R, D, generator=g).to(DEV, torch.float16)
    mats = torch.randn(Hm, D, D, generator=g).to(DEV)
    index = None if at is None else torch.tensor([at], device=DEV)
    if at is not None and at + R > T:
        pytest.skip("rows past the buffer")
    bufs = {}
    for name, fn in (("naive", naive.head_map), ("kernel", tt.head_map)):
        out = torch.full((B, H, T, D), 7.0, dtype=torch.float16, device=DEV)
        raw = torch.full((B, H, T, D), -7.0, dtype=torch.float16, device=DEV)
        assert fn(x, mats, out=out, index=index, raw=raw) is out
        bufs[name] = (out, raw)
    torch.testing.assert_close(bufs["kernel"][0], bufs["naive"][0], rtol=1e-3, atol=2e-3)
    assert torch.equal(bufs["kernel"][1], bufs["naive"][1])
    a = 0 if at is None else at
    assert torch.equal(bufs["kernel"][1][:, :, a : a + R], x)  # the untransformed rows, exactly
    rest = torch.ones(T, dtype=torch.bool)
    rest[a : a + R] = False
    assert (bufs["kernel"][0][:, :, rest] == 7.0).all() and (bufs["kernel"][1][:, :, rest] == -7.0).all()


@pytest.mark.parametrize("B,H,R,D,Hm", SHAPES)
@pytest.mark.parametrize("at,with_raw", [(None, True), (2, True), (1, False)])
def test_kv_pair_in_one_launch_equals_two_specified_maps(B, H, R, D, Hm, at, with_raw):
    # keys and values of one step: their own matrices (one for every head on one side, per head on the other), their
    # own strides (the keys transposed as transformers hands them), one row index; nothing else in the buffers moves
    g = torch.Generator().manual_seed(R * 11 + D + Hm)
    T = R + 4
    k = torch.randn(B, R, H, D, generator=g).to(DEV, torch.float16).transpose(1, 2)
    v = torch.randn(B, H, R, D, generator=g).to(DEV, torch.float16)
    kmats, vmats = torch.randn(Hm, D, D, generator=g).to(DEV), torch.randn(H, D, D, generator=g).to(DEV)
    index = None if at is None else torch.tensor([at], device=DEV)
    got = {}
    for name, fn in (("naive", naive.head_map_kv), ("kernel", tt.head_map_kv)):
        bufs = [torch.full((B, H, T, D), float(i + 1), dtype=torch.float16, device=DEV) for i in range(4)]
        raws = (bufs[2], bufs[3]) if with_raw else (None, None)
        res = fn(k, v, kmats, vmats, bufs[0], bufs[1], index, *raws)
        assert res[0] is bufs[0] and res[1] is bufs[1]
        got[name] = bufs
    for a, b in zip(got["kernel"], got["naive"]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-3)
    r0 = 0 if at is None else at
    if with_raw:  # the untransformed rows, exactly
        assert torch.equal(got["kernel"][2][:, :, r0 : r0 + R], k) and torch.equal(got["kernel"][3][:, :, r0 : r0 + R], v)
    rest = torch.ones(T, dtype=torch.bool)
    rest[r0 : r0 + R] = False
    for i, buf in enumerate(got["kernel"]):
        assert (buf[:, :, rest] == i + 1).all()
    torch.testing.assert_close(got["kernel"][1][:, :, r0 : r0 + R], naive.head_map(v, vmats), rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("fn", [naive.head_map_kv, tt.head_map_kv])
def test_kv_pair_bad_inputs_are_refused_with_their_values(fn):
    k, m = torch.randn(1, 2, 1, 8), torch.randn(2, 8, 8)
    out = torch.zeros(1, 2, 4, 8)
    with pytest.raises(ValueError, match=r"v must match k, got \(1, 2, 2, 8\)"):
        fn(k, torch.randn(1, 2, 2, 8), m, m, out, out.clone())
    with pytest.raises(ValueError, match="vout must match kout"):
        fn(k, k.clone(), m, m, out, torch.zeros(1, 2, 5, 8))
    with pytest.raises(ValueError, match="give both kout and vout"):
        fn(k, k.clone(), m, m, out, None)
    with pytest.raises(ValueError, match="both raw buffers"):
        fn(k, k.clone(), m, m, out, out.clone(), None, out.clone(), None)
    with pytest.raises(ValueError, match=r"mats \[1 or H=2"):
        fn(k, k.clone(), m, torch.randn(3, 8, 8), out, out.clone())


def test_kernel_into_a_window_slice_without_raw():
    x, mats = torch.randn(2, 3, 2, 16).to(DEV), torch.randn(3, 16, 16).to(DEV)
    buf = torch.zeros(2, 3, 10, 16, device=DEV)
    tt.head_map(x, mats, out=buf[:, :, 4:6])
    torch.testing.assert_close(buf[:, :, 4:6], naive.head_map(x, mats), rtol=1e-5, atol=1e-5)
    assert (buf[:, :, :4] == 0).all() and (buf[:, :, 6:] == 0).all()


@pytest.mark.parametrize("fn", [naive.head_map, tt.head_map])
def test_bad_inputs_are_refused_with_their_values(fn):
    x, mats = torch.randn(1, 2, 3, 8), torch.randn(2, 8, 8)
    with pytest.raises(ValueError, match=r"x \[B, H, R, D\]"):
        fn(x[0], mats)
    with pytest.raises(ValueError, match=r"mats \[1 or H=2"):
        fn(x, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="float32 mats"):
        fn(x, mats.half())
    with pytest.raises(ValueError, match="need out"):
        fn(x, mats, index=torch.tensor([0]))
    with pytest.raises(ValueError, match="out must be"):
        fn(x, mats, out=torch.zeros(1, 2, 5, 4))
    with pytest.raises(ValueError, match="raw must have"):
        fn(x, mats, out=torch.zeros(1, 2, 5, 8), raw=torch.zeros(1, 2, 4, 8))
    with pytest.raises(ValueError, match="one-element integer"):
        fn(x, mats, out=torch.zeros(1, 2, 5, 8), index=torch.tensor([0.5]))
    with pytest.raises(ValueError, match="3 rows do not fit"):
        fn(x, mats, out=torch.zeros(1, 2, 2, 8))
    with pytest.raises(ValueError, match="3 rows do not fit"):  # with a device index too: they cannot fit anywhere
        fn(x, mats, out=torch.zeros(1, 2, 2, 8), index=torch.tensor([0]))


def test_a_device_index_past_the_buffer_writes_nothing_outside_it():
    # the host cannot check a device index: the reference raises, the kernel drops the rows past the end. The buffer
    # is a view into a larger one (as the cache's window is), so a stray write would land in the guard rows
    x, mats = torch.randn(1, 2, 3, 16).to(DEV), torch.randn(2, 16, 16).to(DEV)
    big = torch.zeros(1, 3, 8, 16, device=DEV)
    big_raw = torch.zeros(1, 3, 8, 16, device=DEV)
    out, raw = big[:, :2, 2:], big_raw[:, :2, 2:]  # rows 2..7 of heads 0-1; head 2 and rows 0-1 are guards
    index = torch.tensor([4], device=DEV)  # rows 4, 5, 6 of a 6-row buffer: the last is past the end
    tt.head_map(x, mats, out=out, index=index, raw=raw)
    want = naive.head_map(x, mats)
    torch.testing.assert_close(out[:, :, 4:6], want[:, :, :2], rtol=1e-5, atol=1e-5)
    assert torch.equal(raw[:, :, 4:6], x[:, :, :2])
    assert (big[:, 2] == 0).all() and (big[:, :, :6] == 0).all()
    assert (big_raw[:, 2] == 0).all() and (big_raw[:, :, :6] == 0).all()
    with pytest.raises((IndexError, RuntimeError)):
        naive.head_map(x, mats, out=torch.zeros(1, 2, 6, 16, device=DEV), index=index)


@pytest.mark.skipif(DEV != "cuda", reason="Triton's interpreter truncates float32 to bfloat16; the GPU rounds to nearest")
def test_kernel_in_bfloat16():
    x, mats = torch.randn(2, 3, 4, 64, device=DEV, dtype=torch.bfloat16), torch.randn(3, 64, 64, device=DEV)
    torch.testing.assert_close(tt.head_map(x, mats), naive.head_map(x, mats), rtol=1e-2, atol=1e-2)
    out, raw = torch.zeros(2, 3, 9, 64, device=DEV, dtype=torch.bfloat16), torch.zeros(2, 3, 9, 64, device=DEV, dtype=torch.bfloat16)
    tt.head_map(x, mats, out=out, index=torch.tensor([2], device=DEV), raw=raw)
    assert torch.equal(raw[:, :, 2:6], x)


def test_dispatch_setting_is_checked(monkeypatch):
    if DEV != "cuda":
        pytest.skip("the setting is read on the CUDA path only")
    monkeypatch.setenv("MILLION_HEAD_MAP", "fast")
    with pytest.raises(ValueError, match="MILLION_HEAD_MAP='fast'"):
        ops.head_map(torch.randn(1, 1, 1, 8, device=DEV), torch.randn(1, 8, 8, device=DEV))
