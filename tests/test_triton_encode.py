"""Triton PQ encode vs the naive specification.

Without a GPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, CPU tensors); with one
it is compiled. Codes must match ``naive.pq_encode`` except at near-ties: at least 99% equal, and
every mismatch must be as close to ``x`` as the reference centroid (within float rounding).
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton decorates the kernels
pytest.importorskip("triton")

from million.ops import naive  # noqa: E402
from million.ops import triton_encode as te  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"

if DEV == "cpu":
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(te._pq_encode_kernel, InterpretedFunction):  # imported before TRITON_INTERPRET was set
        te = importlib.reload(te)


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


@pytest.fixture(autouse=True)
def _cpu_default_kernel(monkeypatch):
    """The interpreter runs v2's scalar centroid loop slowly (~0.1 ms per op): on CPU the generic
    cases take the older kernels and ``test_v2_*`` cover v2 at small shapes; on a GPU every case
    takes the real default."""
    if DEV == "cpu":
        monkeypatch.setattr(te, "DEFAULT_KERNEL", None)


@pytest.fixture
def poisoned_empty(monkeypatch):
    """Codes buffers start as 0xAB... (an invalid code for ksub <= 171), floats as NaN."""
    real_empty = torch.empty

    def poisoned(*size, **kw):
        t = real_empty(*size, **kw)
        if t.is_floating_point():
            t.fill_(float("nan"))
        elif t.numel():
            t.fill_(0xAB if t.dtype == torch.uint8 else 0xABCD)
        return t

    monkeypatch.setattr(torch, "empty", poisoned)


def check_codes(x, c, got, min_match=0.99, rtol=1e-4):
    ref = naive.pq_encode(x.float().cpu(), c.float().cpu())
    got = got.cpu()
    assert got.dtype == ref.dtype and got.shape == ref.shape
    if ref.numel() == 0:
        return
    assert int(got.long().max()) < c.shape[2], "code out of range (unwritten?)"
    match = (got == ref).float().mean().item()
    assert match >= min_match
    B, H, T, D = x.shape
    M, dsub = c.shape[1], c.shape[3]
    xs = x.float().cpu().reshape(B, H, T, M, dsub)
    dist = lambda codes: ((xs - naive.pq_decode(codes, c.float().cpu()).reshape(B, H, T, M, dsub)) ** 2).sum(-1)
    d_ref, d_got = dist(ref), dist(got)
    assert torch.all(d_got <= d_ref + rtol * (1 + d_ref)), "a mismatch is not a near-tie"


# (name, B, H, T, D, M, ksub, Hc)
CASES = [
    ("basic", 2, 3, 37, 16, 8, 256, 3),
    ("T0", 2, 3, 0, 16, 8, 256, 3),
    ("T1_shared", 1, 2, 1, 16, 8, 256, 1),
    ("dsub1", 1, 2, 21, 8, 8, 64, 2),
    ("dsub4_nbits4", 2, 2, 45, 32, 8, 16, 1),
    ("nbits10_uint16", 1, 2, 19, 16, 8, 1024, 2),
    ("odd_ksub", 1, 2, 23, 8, 4, 100, 2),
    ("nonpow2_M", 1, 1, 17, 12, 6, 32, 1),
    ("many_tokens", 1, 1, 300, 16, 8, 256, 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_matches_naive(case, poisoned_empty):
    name, B, H, T, D, M, ksub, Hc = case
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.randn(B, H, T, D, generator=g).to(DEV)
    c = torch.randn(Hc, M, ksub, D // M, generator=g).to(DEV)
    check_codes(x, c, te.pq_encode(x, c))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_and_strides(dtype, poisoned_empty):
    g = torch.Generator().manual_seed(1)
    # x as a [B, H, T, D] view of a [B, T, H, D] buffer: non-contiguous in T and H
    x = torch.randn(2, 29, 3, 16, generator=g).to(dtype).to(DEV).transpose(1, 2)
    c = torch.randn(3, 8, 256, 2, generator=g).to(dtype).to(DEV)
    check_codes(x, c, te.pq_encode(x, c))


@pytest.mark.parametrize("tc", [False, True], ids=["cuda_cores", "tensor_cores"])
@pytest.mark.parametrize("dsub,ksub", [(2, 256), (4, 16), (1, 64)])
def test_fp16_kernels(tc, dsub, ksub, poisoned_empty):
    g = torch.Generator().manual_seed(dsub * 1000 + ksub)
    x = torch.randn(1, 2, 70, 32, generator=g).half().to(DEV)
    c = torch.randn(2, 32 // dsub, ksub, dsub, generator=g).half().to(DEV)
    check_codes(x, c, te.pq_encode_launch(x, c, tc=tc))


@pytest.mark.parametrize("scale", [1.0, 150.0, 600.0])
def test_fp16_tensor_core_kernel_large_values(scale, poisoned_empty):
    """Subvectors whose squared norm passes fp16's 65504 (|x| ~ 150-600 per element, as keys in a whitened space can
    be): the tensor-core kernel adds the norms in fp32 and keeps the exact nearest centroids (near-ties aside)."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(1, 2, 70, 32, generator=g) * scale).half().to(DEV)
    c = (torch.randn(2, 8, 16, 4, generator=g) * scale).half().to(DEV)
    check_codes(x, c, te.pq_encode_launch(x, c, kernel="tc"))


def test_launch_refuses_a_kernel_that_cannot_take_the_shape():
    x = torch.randn(1, 1, 4, 16).to(DEV)
    c = torch.randn(1, 2, 16, 8).to(DEV)  # dsub 8
    for k in ("v2", "v3"):
        with pytest.raises(ValueError, match="dsub <= 4, got dsub=8"):
            te.pq_encode_launch(x, c, kernel=k)
    with pytest.raises(ValueError, match="'v4' is not one of"):
        te.pq_encode_launch(x, c, kernel="v4")


# (name, B, H, T, D, M, ksub, Hc): dsub 1..4, nbits 4/8/10, odd ksub, T 0/1/non-multiple of BT
V2_CASES = [
    ("v2_dsub2_k256", 2, 1, 9, 4, 2, 256, 1),
    ("v2_T0", 1, 2, 0, 8, 4, 16, 1),
    ("v2_T1_shared", 1, 2, 1, 8, 4, 64, 1),
    ("v2_dsub1", 1, 2, 21, 4, 4, 64, 2),
    ("v2_dsub4_nbits4", 2, 2, 45, 16, 4, 16, 1),
    ("v2_dsub3", 1, 1, 13, 6, 2, 16, 1),
    ("v2_nbits10", 1, 1, 5, 2, 1, 1024, 1),
    ("v2_odd_ksub", 1, 2, 23, 8, 4, 100, 2),
    ("v2_tail", 1, 1, 70, 4, 2, 16, 1),  # 70 tokens over BT 32: a partial last tile
]


@pytest.mark.parametrize("case", V2_CASES, ids=[c[0] for c in V2_CASES])
def test_v2_matches_naive(case, poisoned_empty):
    name, B, H, T, D, M, ksub, Hc = case
    g = torch.Generator().manual_seed(sum(map(ord, name)))
    x = torch.randn(B, H, T, D, generator=g).to(DEV)
    c = torch.randn(Hc, M, ksub, D // M, generator=g).to(DEV)
    check_codes(x, c, te.pq_encode_launch(x, c, kernel="v2", BT=32, MB=3))
    check_codes(x, c, te.pq_encode_launch(x, c, kernel="v3", BT=16, MB=2))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_v2_half_strided(dtype, poisoned_empty):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 2, 8, generator=g).to(dtype).to(DEV).transpose(1, 2)
    c = torch.randn(2, 4, 32, 2, generator=g).to(dtype).to(DEV)
    check_codes(x, c, te.pq_encode_launch(x, c, kernel="v2"))
    check_codes(x, c, te.pq_encode_launch(x, c, kernel="v3"))


def test_v2_ties_pick_lowest_index(poisoned_empty):
    g = torch.Generator().manual_seed(4)
    c = torch.randn(1, 2, 8, 2, generator=g).repeat(1, 1, 2, 1).to(DEV)  # c[k] == c[k + 8]
    x = torch.randn(1, 1, 13, 4, generator=g).to(DEV)
    for kernel in ("v2", "v3"):
        got = te.pq_encode_launch(x, c, kernel=kernel).cpu()
        assert int(got.max()) < 8
        check_codes(x, c, got, min_match=1.0)


def test_ties_pick_lowest_index(poisoned_empty):
    # duplicated centroids: every distance ties between k and k + 8
    g = torch.Generator().manual_seed(2)
    c = torch.randn(1, 4, 8, 2, generator=g).repeat(1, 1, 2, 1).to(DEV)  # ksub 16, c[k] == c[k + 8]
    x = torch.randn(1, 2, 13, 8, generator=g).to(DEV)
    got = te.pq_encode(x, c).cpu()
    assert int(got.max()) < 8
    check_codes(x, c, got, min_match=1.0)


def test_validation_errors():
    x = torch.randn(1, 2, 3, 16)
    with pytest.raises(ValueError, match="Hc"):
        te.pq_encode(x, torch.randn(3, 8, 16, 2))
    with pytest.raises(ValueError, match="M \\* dsub"):
        te.pq_encode(x, torch.randn(1, 4, 16, 2))
    with pytest.raises(ValueError, match="ksub"):
        te.pq_encode(x, torch.randn(1, 8, 5000, 2))


def test_custom_op_opcheck():
    from million.ops import custom_ops  # noqa: F401

    x = torch.randn(1, 2, 5, 16).to(DEV)
    c = torch.randn(2, 8, 32, 2).to(DEV)
    torch.library.opcheck(torch.ops.million.pq_encode.default, (x, c), test_utils=("test_schema", "test_faketensor"))


# ----------------------------------------------------------------------------------------------
# GPU sweeps (pytest -m gpu)
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("M,ksub", [(64, 256), (32, 256), (64, 16), (64, 4096), (32, 1024)])
@pytest.mark.parametrize("Hc", [1, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_gpu_sweep(M, ksub, Hc, dtype):
    g = torch.Generator(device="cuda").manual_seed(M + ksub + Hc)
    x = torch.randn(2, 8, 1500, 128, device="cuda", generator=g).to(dtype)
    c = torch.randn(Hc, M, ksub, 128 // M, device="cuda", generator=g).to(dtype)
    check_codes(x, c, te.pq_encode(x, c))
