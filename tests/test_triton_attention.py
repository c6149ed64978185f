"""Triton decode attention on PQ codes vs the naive specification (fp32).

Without a GPU the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors) on small
odd shapes; with one they are compiled and run on CUDA tensors. ``-m gpu`` adds full-size sweeps.
Every buffer the launcher allocates is NaN-poisoned, so an output element the kernels never write
makes the test fail.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton decorates the kernels
pytest.importorskip("triton")

from million.ops import naive  # noqa: E402
from million.ops import triton_attention as ta  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"

if DEV == "cpu":
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(ta._pq_attn_partial_kernel, InterpretedFunction):  # imported before TRITON_INTERPRET was set
        ta = importlib.reload(ta)


@pytest.fixture(autouse=True, scope="module")
def _interpret_triton_library():
    """TRITON_INTERPRET is read when triton decorates its own library (tl.sum, tl.zeros, ...). If
    another test module imported triton before this one set it, those are compiled-mode functions:
    interpret them when an interpreted kernel calls them."""
    import triton
    from triton.runtime.jit import JITFunction

    if DEV == "cuda" or not isinstance(triton.language.standard.zeros, JITFunction):
        yield
        return
    from triton.runtime.interpreter import InterpretedFunction

    wrapped = {}

    def call(self, *args, **kwargs):
        if self.fn not in wrapped:
            wrapped[self.fn] = InterpretedFunction(self.fn)
        return wrapped[self.fn](*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(JITFunction, "__call__", call)
        yield


def rel_rms(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.double(), ref.double()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


@pytest.fixture
def nan_buffers(monkeypatch):
    """Every torch.empty (outputs, partials, LUT) starts as NaN (floats) or 0xAB (ints)."""
    real_empty = torch.empty

    def poisoned(*size, **kw):
        t = real_empty(*size, **kw)
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.numel():
            t.fill_(0xAB)
        return t

    monkeypatch.setattr(torch, "empty", poisoned)


def make_case(B, Hkv, G, T, D, M, nbits, Hc, R, pq_lens, starts, res_lens, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    kbits, vbits = nbits if isinstance(nbits, tuple) else (nbits, nbits)  # (keys, values) may differ
    Hq, ksub_k, ksub, dsub = Hkv * G, 2**kbits, 2**vbits, D // M
    cd = torch.uint8 if max(ksub_k, ksub) <= 256 else torch.uint16
    q = torch.randn(B, Hq, D, generator=g)
    kc = torch.randint(0, ksub_k, (B, Hkv, T, M), generator=g).to(cd)
    vc = torch.randint(0, ksub, (B, Hkv, T, M), generator=g).to(cd)
    kcen = torch.randn(Hc, M, ksub_k, dsub, generator=g)
    vcen = torch.randn(Hc, M, ksub, dsub, generator=g)
    kr = torch.randn(B, Hkv, R, D, generator=g)
    vr = torch.randn(B, Hkv, R, D, generator=g)
    ints = lambda v: torch.tensor(v, dtype=torch.int32)
    args = [q, kc, vc, kcen, vcen, ints(pq_lens), kr, vr, ints(res_lens), None if starts is None else ints(starts)]
    ref = naive.pq_decode_attention(*args)  # fp32 reference
    args = [a if a is None else a.to(DEV) for a in args]
    for i in (0, 3, 4, 6, 7):  # q, centroids, residual in the test dtype
        args[i] = args[i].to(dtype)
    return args, ref


# (name, B, Hkv, G, T, D, M, nbits, Hc, R, pq_lens, starts, res_lens)
CASES = [
    ("mha_basic", 2, 2, 1, 37, 64, 32, 8, 2, 5, [37, 20], [0, 3], [5, 2]),
    ("mha_dsub4_hc1", 2, 2, 1, 45, 64, 16, 8, 1, 4, [45, 33], [2, 0], [1, 4]),
    ("len0_residual_only", 2, 2, 1, 0, 32, 16, 8, 2, 6, [0, 0], [0, 0], [3, 6]),
    ("len1", 1, 3, 1, 1, 32, 16, 8, 3, 2, [1], None, [0]),
    ("empty_residual_R0", 2, 2, 1, 29, 32, 16, 8, 2, 0, [29, 7], [0, 5], [0, 0]),
    ("full_residual", 2, 1, 1, 19, 32, 8, 8, 1, 7, [19, 2], [1, 0], [7, 7]),
    ("no_valid_token", 2, 2, 1, 12, 32, 16, 8, 2, 3, [12, 0], [0, 0], [2, 0]),
    ("start_inside_residual", 2, 2, 1, 9, 32, 16, 8, 2, 6, [5, 9], [7, 10], [4, 3]),
    ("capacity_past_len", 2, 2, 1, 70, 32, 16, 8, 2, 2, [33, 51], [4, 0], [2, 1]),
    ("gqa3_smollm2_like", 2, 2, 3, 41, 64, 32, 8, 2, 4, [41, 17], [0, 2], [4, 1]),
    ("gqa4_dsub4", 1, 2, 4, 50, 64, 16, 8, 1, 3, [50], [3], [2]),
    ("gqa8", 2, 1, 8, 23, 32, 16, 8, 1, 2, [23, 11], [0, 1], [2, 0]),
    ("nbits4", 2, 2, 1, 31, 32, 16, 4, 2, 2, [31, 30], [0, 0], [1, 2]),
    ("nbits10_uint16", 2, 1, 2, 27, 32, 16, 10, 1, 3, [27, 9], [0, 4], [3, 1]),
    ("gqa4_nbits4", 1, 2, 4, 33, 32, 8, 4, 2, 2, [33], [0], [2]),
    # keys and values with different code widths (fewer key centroids than value centroids, and the reverse)
    ("mha_k7_v9", 2, 2, 1, 35, 32, 16, (7, 9), 2, 3, [35, 18], [0, 2], [3, 1]),
    ("gqa3_k6_v10", 2, 1, 3, 26, 32, 16, (6, 10), 1, 2, [26, 13], [1, 0], [2, 2]),
    ("gqa2_k9_v5", 1, 2, 2, 40, 32, 8, (9, 5), 2, 2, [40], [0], [1]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_naive_fp32(case, nan_buffers):
    name, *shape = case
    args, ref = make_case(*shape, dtype=torch.float32)
    out = ta.pq_decode_attention(*args)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert not torch.isnan(out).any()
    assert rel_rms(out.cpu(), ref) < 1e-5


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (
    "mha_basic", "len0_residual_only", "len1", "no_valid_token", "start_inside_residual", "gqa3_smollm2_like",
    "gqa8", "nbits10_uint16", "gqa3_k6_v10")], ids=lambda c: c[0])
def test_lse_matches_naive_fp32(case, nan_buffers):
    """The log-sum-exp path (what the cache's eviction observer asks for): output and lse as the naive twin's, lse
    -inf exactly where a head attends nothing."""
    name, *shape = case
    args, _ = make_case(*shape, dtype=torch.float32)
    ref_out, ref_lse = naive.pq_decode_attention(*[a if a is None else a.cpu() for a in args], return_lse=True)
    out, lse = ta.pq_decode_attention(*args, return_lse=True)
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape and lse.dtype == torch.float32
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert rel_rms(out.cpu(), ref_out) < 1e-5
    empty = torch.isinf(ref_lse)
    assert torch.equal(torch.isinf(lse.cpu()), empty) and (ref_lse[empty] < 0).all()
    assert torch.allclose(lse.cpu()[~empty], ref_lse[~empty], rtol=0, atol=1e-4)


def test_dispatch_with_lse_uses_the_triton_kernels(monkeypatch, nan_buffers):
    """million.ops.pq_decode_attention(..., return_lse=True) on a device with kernels runs the Triton lse path, not the
    naive fallback."""
    import million.ops as ops

    args, _ = make_case(2, 2, 3, 41, 64, 32, 8, 2, 4, [41, 17], [0, 2], [4, 1], torch.float32)
    monkeypatch.setattr(ops, "use_kernels", lambda t: True)
    monkeypatch.setattr(ops, "_cuda_kernel", lambda a: None)
    calls = []
    real = ta.pq_decode_attention
    monkeypatch.setattr(ta, "pq_decode_attention", lambda *a, **k: calls.append(k) or real(*a, **k))
    monkeypatch.setattr(naive, "pq_decode_attention", lambda *a, **k: pytest.fail("naive fallback used"))
    out, lse = ops.pq_decode_attention(*args, return_lse=True)
    assert calls == [{"return_lse": True}] and lse.shape == (2, 6)


CONFIGS = [
    ("splits3_bt16", dict(S=3, BT=16)),
    ("pipelined_no_prefetch", dict(PREFETCH=False, NUM_STAGES=2, BT=16)),
    ("mha_centroid_dot", dict(K_LUT=False, USE_DOT=True, BT=16, S=2)),
    ("lut_fp32_tau0", dict(LUT_FP16=False, TAU=0.0, BT=16, S=2)),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
@pytest.mark.parametrize("G", [1, 4])
def test_design_variants(cfg, G, nan_buffers):
    name, over = cfg
    if G > 1 and over.get("USE_DOT") is False:
        pytest.skip("G > 1 needs tl.dot")
    args, ref = make_case(2, 2, G, 61, 32, 16, 8, 2, 3, [61, 40], [0, 7], [3, 1], torch.float32, seed=G)
    out = ta.pq_decode_attention_launch(*args, config=over)
    assert not torch.isnan(out).any()
    assert rel_rms(out.cpu(), ref) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("G", [1, 3])
def test_half_dtypes(dtype, G, nan_buffers):
    if DEV == "cpu" and dtype == torch.bfloat16 and G > 1:
        pytest.skip("the Triton interpreter computes tl.dot on bf16 bit patterns; covered by -m gpu")
    args, ref = make_case(2, 2, G, 40, 64, 32, 8, 2, 4, [40, 25], [0, 2], [4, 3], dtype, seed=5)
    # reference on the half-rounded inputs, upcast to fp32
    ref = naive.pq_decode_attention(*[a if a is None else (a.float() if a.is_floating_point() else a).cpu()
                                      for a in args])
    out = ta.pq_decode_attention(*args)
    assert out.dtype == dtype
    assert rel_rms(out.float().cpu(), ref) < (1e-2 if dtype == torch.bfloat16 else 3e-3)


def test_scale_argument(nan_buffers):
    args, _ = make_case(1, 2, 2, 30, 32, 16, 8, 1, 2, [30], [0], [2], torch.float32)
    ref = naive.pq_decode_attention(*[a if a is None else a.cpu() for a in args], scale=0.3)
    out = ta.pq_decode_attention(*args, scale=0.3)
    assert rel_rms(out.cpu(), ref) < 1e-5


def test_validation_errors():
    args, _ = make_case(1, 2, 1, 8, 32, 16, 8, 2, 2, [8], [0], [1], torch.float32)
    bad = list(args)
    bad[3] = args[3][:, :8]  # centroids with the wrong M
    with pytest.raises(ValueError, match="M"):
        ta.pq_decode_attention(*bad)
    bad = list(args)
    bad[0] = args[0][:, :, :16]
    with pytest.raises(ValueError):
        ta.pq_decode_attention(*bad)


def test_custom_op_opcheck():
    args, _ = make_case(1, 2, 1, 16, 32, 16, 8, 2, 2, [16], [0], [1], torch.float32)
    from million.ops import custom_ops  # noqa: F401

    torch.library.opcheck(torch.ops.million.pq_decode_attention.default, (*args, None),
                          test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(torch.ops.million.pq_decode_attention_lse.default, (*args, None),
                          test_utils=("test_schema", "test_faketensor"))


def test_custom_op_fake_is_contiguous_for_a_permuted_q():
    """The launcher returns a contiguous output whatever q's layout; the fake must say the same (torch.compile's
    inductor checks the real strides against it)."""
    args, _ = make_case(2, 2, 1, 16, 32, 16, 8, 2, 2, [16, 9], [0, 1], [1, 2], torch.float32)
    args[0] = args[0].transpose(0, 1).contiguous().transpose(0, 1)  # [B, Hq, D] view of [Hq, B, D] storage
    assert not args[0].is_contiguous()
    from million.ops import custom_ops  # noqa: F401

    for op in (torch.ops.million.pq_decode_attention.default, torch.ops.million.pq_decode_attention_lse.default):
        torch.library.opcheck(op, (*args, None), test_utils=("test_schema", "test_faketensor"))
    # the CUDA kernel's op (not runnable here) allocates its output as torch.empty(B, Hq, D) too
    out, lse = custom_ops._pq_decode_attention_cuda_fake(*args, None)
    assert out.shape == args[0].shape and out.is_contiguous() and lse.shape == args[0].shape[:2]


def test_import_does_not_load_triton():
    code = ("import sys, million, million.ops, million.ops.custom_ops; "
            "assert 'triton' not in sys.modules, 'triton imported'; "
            "import torch; assert not torch.cuda.is_initialized()")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------------------------
# GPU sweeps (pytest -m gpu)
# ----------------------------------------------------------------------------------------------

GPU_SHAPES = [("mha", 32, 32, 128), ("gqa", 32, 8, 128), ("smollm2", 9, 3, 64)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=[s[0] for s in GPU_SHAPES])
@pytest.mark.parametrize("dsub", [2, 4], ids=["4bit", "2bit"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("Hc", ["shared", "per_head"])
def test_gpu_sweep(shape, dsub, dtype, Hc):
    _, Hq, Hkv, D = shape
    M = D // dsub
    B, T, R = 3, 3000, 128
    hc = 1 if Hc == "shared" else Hkv
    args, _ = make_case(B, Hkv, Hq // Hkv, T, D, M, 8, hc, R, [3000, 1777, 5], [0, 100, 0], [64, 128, 0], dtype,
                        seed=11)
    ref = naive.pq_decode_attention(*[a if a is None else (a.float() if a.is_floating_point() else a)
                                      for a in args])
    out = ta.pq_decode_attention(*args)
    torch.cuda.synchronize()
    assert not torch.isnan(out).any()
    assert rel_rms(out.float(), ref) < (1e-2 if dtype == torch.bfloat16 else 3e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_uint16_codes():
    args, _ = make_case(2, 4, 2, 2000, 128, 64, 12, 1, 16, [2000, 999], [0, 3], [16, 5], torch.float16, seed=3)
    ref = naive.pq_decode_attention(*[a if a is None else (a.float() if a.is_floating_point() else a)
                                      for a in args])
    out = ta.pq_decode_attention(*args)
    assert rel_rms(out.float(), ref) < 3e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_codes_past_2_31_elements():
    # [3, 32, 2**22 + 5, 64] uint8 codes: batch offsets pass 2**31; only the last 150 tokens are
    # valid, so the reference runs on that slice
    B, Hkv, T, M, D = 3, 32, 2**22 + 5, 64, 128
    g = torch.Generator(device="cuda").manual_seed(9)
    kc = torch.randint(0, 256, (B, Hkv, T, M), dtype=torch.uint8, device="cuda", generator=g)
    vc = torch.randint(0, 256, (B, Hkv, T, M), dtype=torch.uint8, device="cuda", generator=g)
    q = torch.randn(B, Hkv, D, device="cuda", dtype=torch.float16, generator=g)
    kcen = torch.randn(1, M, 256, 2, device="cuda", dtype=torch.float16, generator=g)
    vcen = torch.randn(1, M, 256, 2, device="cuda", dtype=torch.float16, generator=g)
    kr = torch.randn(B, Hkv, 4, D, device="cuda", dtype=torch.float16, generator=g)
    vr = torch.randn_like(kr)
    i32 = lambda v: torch.tensor(v, dtype=torch.int32, device="cuda")
    out = ta.pq_decode_attention(q, kc, vc, kcen, vcen, i32([T] * B), kr, vr, i32([2] * B), i32([T - 150] * B))
    sl = slice(T - 150, T)
    ref = naive.pq_decode_attention(q.float(), kc[:, :, sl].contiguous(), vc[:, :, sl].contiguous(), kcen.float(),
                                    vcen.float(), i32([150] * B), kr.float(), vr.float(), i32([2] * B))
    assert rel_rms(out.float(), ref) < 3e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_cuda_graph_reads_lengths_on_device():
    args, _ = make_case(2, 8, 4, 4096, 128, 64, 8, 1, 64, [4096, 4096], [0, 0], [64, 64], torch.float16, seed=4)
    pq_lens, res_lens = args[5], args[8]
    fn = lambda: ta.pq_decode_attention(*args)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    for lens, rl in (([4096, 10], [3, 64]), ([77, 3000], [0, 1])):
        pq_lens.copy_(torch.tensor(lens, dtype=torch.int32))
        res_lens.copy_(torch.tensor(rl, dtype=torch.int32))
        graph.replay()
        ref = naive.pq_decode_attention(*[a if a is None else (a.float() if a.is_floating_point() else a)
                                          for a in args])
        assert rel_rms(out.float(), ref) < 3e-3


@pytest.mark.parametrize("G", [1, 3])
def test_no_starts_is_zero_starts(G, nan_buffers):
    """starts=None reads 0 for every sequence inside the kernel (no zero tensor made per call): the same output as
    zero starts, bit for bit, for codes that reach into the residual window too."""
    args, ref = make_case(2, 2, G, 33, 32, 16, 8, 2, 3, [33, 12], [0, 0], [3, 2], torch.float32, seed=11 + G)
    zeros = ta.pq_decode_attention(*args)
    none = ta.pq_decode_attention(*args[:9], None)
    assert torch.equal(none, zeros)
    assert rel_rms(none.cpu(), ref) < 1e-5
