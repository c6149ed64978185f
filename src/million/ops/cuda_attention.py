"""PQ decode attention in CUDA C++ with the centroid tables resident in shared memory.

Same contract as :func:`million.ops.naive.pq_decode_attention` (plus ``return_lse``). The kernels
live in ``ops/cuda/pq_attention.cu``; the shared library is found through ``MILLION_CUDA_LIB``
(a path to a prebuilt ``.so``) or built on first use with ``nvcc`` into
``~/.cache/million/cuda/`` (keyed by a hash of the source and flags), then loaded with ctypes.
Importing this module touches neither CUDA nor nvcc.

Covered: fp16 / bf16 ``q`` (centroids and residual window of the same dtype), head_dim 64 or 128,
uint8 codes with ``ksub == 256`` and ``dsub`` 2 (4-bit, ``M = d/2``) or 4 (2-bit, ``M = d/4``).
Everything else is routed to the Triton kernel (or the naive reference).
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import weakref
from pathlib import Path

import torch

from ._env import env_choice
from ._nvcc import CudaLibrary

_SRC = Path(__file__).with_name("cuda") / "pq_attention.cu"
_LIBRARY = CudaLibrary(_SRC, "million_pq", "MILLION_CUDA_LIB")
_LOG2E = 1.4426950408889634
ABI_VERSION = 9  # million_pq_abi_version() of the library this code drives (9: kind 4, the half2 value path)


class _Args(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in (
        "q", "kc", "vc", "kcen", "vcen", "pq_lens", "res_lens", "starts", "kres", "vres", "out",
        "lse_out", "o_part", "lse_part")] + [(n, ctypes.c_longlong) for n in (
        "sq_b", "sq_h", "sq_d", "sk_b", "sk_h", "sk_t", "sv_b", "sv_h", "sv_t", "kcen_h", "vcen_h",
        "skr_b", "skr_h", "skr_t", "svr_b", "svr_h", "svr_t", "so_b", "so_h", "so_d")] + [(n, ctypes.c_int) for n in (
        "B", "Hq", "Hkv", "T", "R", "D", "M", "S", "dtype", "GB", "ngroups", "num_warps", "kind", "cluster",
        "cmerge", "pdl")] + [
        ("scale_log2", ctypes.c_float)]


@functools.lru_cache(maxsize=None)
def _lib():
    # (read by the library itself; checked here so that a bad value is named)
    env_choice("MILLION_CUDA_PDL", "2", ("0", "1", "2"), "0 (off), 1 (the merge grid) or 2 (the partial grid too)")
    env_choice("MILLION_CUDA_SOLO", "1", ("0", "1", "2"),
               "0 (never), 1 (the default: an early-launched partial grid that fits one block per SM and covers more "
               "than 3/4 of the SMs takes a whole SM per block) or 2 (every such grid)")
    env_choice("MILLION_CUDA_MERGE8", "1", ("0", "1", "2"),
               "0 (128-register merge blocks), 1 (the default: 64-register merge blocks at 2 bits or with grouped "
               "query heads, where only they all fit beside a one-wave partial grid) or 2 (always 64-register merge "
               "blocks)")
    env_choice("MILLION_CUDA_WINP", "0", ("0", "1", "2"),
               "0 (the default: the merge blocks attend the residual window), 1 (at 2 bits the MHA kernel's partial "
               "blocks attend it, on a one-wave partial grid beside which some merge blocks would not fit) or 2 (at 2 "
               "bits wherever its rows fit)")
    path = _LIBRARY.path()
    lib = ctypes.CDLL(str(path))
    lib.million_pq_decode_attention.argtypes = [ctypes.POINTER(_Args), ctypes.c_void_p]
    lib.million_pq_decode_attention.restype = ctypes.c_int
    lib.million_pq_last_error.restype = ctypes.c_char_p
    lib.million_pq_args_size.restype = ctypes.c_int
    lib.million_pq_abi_version.restype = ctypes.c_int
    if lib.million_pq_args_size() != ctypes.sizeof(_Args):
        raise RuntimeError(f"{path}: argument struct size mismatch (stale library?)")
    if lib.million_pq_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path}: kernel library ABI {lib.million_pq_abi_version()}, this code needs {ABI_VERSION} "
                           "(a library built from an older source: rebuild it, or unset MILLION_CUDA_LIB)")
    return lib


def available() -> bool:
    """True when a CUDA device of compute capability >= 9.0 is present and the library can be
    loaded or built (MILLION_CUDA_LIB set, a cached build, or nvcc on the PATH)."""
    return _LIBRARY.available()


def build(path: str | os.PathLike | None = None) -> Path:
    """Compile the kernels with nvcc into ``path`` (default: the user cache) and return the path."""
    return _LIBRARY.build(path)


def supports(q, k_codes, v_codes, k_centroids, v_centroids, k_res, v_res) -> bool:
    """Whether the CUDA kernel handles these inputs (else :func:`pq_decode_attention` falls back)."""
    if not (q.is_cuda and q.dim() == 3 and k_codes.dim() == 4):
        return False
    if q.dtype not in (torch.float16, torch.bfloat16):
        return False
    if any(t.dtype != q.dtype for t in (k_centroids, v_centroids, k_res, v_res)):
        return False
    if k_codes.dtype != torch.uint8 or v_codes.dtype != torch.uint8 or v_codes.shape != k_codes.shape:
        return False
    B, Hq, D = q.shape
    _, Hkv, T, M = k_codes.shape
    if D not in (64, 128) or M * 2 != D and M * 4 != D:
        return False
    if Hkv == 0 or Hq % Hkv or k_codes.shape[0] != B:
        return False
    for c in (k_centroids, v_centroids):
        if c.dim() != 4 or c.shape[1] != M or c.shape[2] != 256 or c.shape[3] * M != D or c.shape[0] not in (1, Hkv):
            return False
    for r in (k_res, v_res):
        if r.dim() != 4 or r.shape[0] != B or r.shape[1] != Hkv or r.shape[3] != D:
            return False
    return k_res.shape[2] == v_res.shape[2]


def _group(G: int) -> int:
    for gb in (4, 3, 2):
        if G % gb == 0:
            return gb
    return 1


@functools.lru_cache(maxsize=None)
def _sms(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_splits(B: int, Hkv: int, ngroups: int, T: int, device: torch.device, lut_warps: int = 0,
               chunks_per_warp: float = 1) -> int:
    """About one block per SM (the tables take 64-192 KB of shared memory: one block per SM), at most
    T/256 splits; for the LUT and tensor-core kernels (``lut_warps`` > 0 warps) at most one split per
    ``32 * chunks_per_warp * lut_warps`` tokens, so that every warp has its chunks (LUT, GQA 4K: S 16 -> 8
    measured 21.4 -> 18.8 us; tensor-core kernel at d=128: see :func:`chunks_per_warp`, docs/benchmarks.md)."""
    idx = device.index if device.index is not None else torch.cuda.current_device()
    sms, heads = _sms(idx), max(1, B * Hkv * ngroups)
    s = max(1, sms // heads)
    if not lut_warps:
        # FFMA kernel: every block reads its 128 KB of tables from L2, so short splits pay more for the tables
        # than for their codes. Splits of about 1280 tokens (at least 2) as long as the blocks still cover
        # 40% of the SMs (H200, MHA B=1: 1K S 2/4 12.7/16.0 us, 2K 15.4/17.7, 4K S 3/4 18.1/20.3, 8K 24.9/25.0,
        # 16K S 4/3 34.1/37.1; docs/benchmarks.md, "H200 split sweep")
        fewer = max(2, round(T / 1280))
        if fewer < s and 5 * heads * fewer >= 2 * sms:
            s = fewer
    return max(1, min(s, int(T // (32 * chunks_per_warp * lut_warps) if lut_warps else T // 256), 1024))


def merge_rounded(S: int, T: int) -> int:
    """Splits of the tensor-core kernel after rounding: where S > 16 and the splits are short (under 1024 tokens
    each), S goes down to a multiple of 16, the merge kernel's group of partials per global round trip
    (``MERGE_PF``), so that the merge's serial tail takes one round trip fewer. H100, SmolLM2 shape (3 KV heads),
    B=1, 4-bit (docs/kernel_notes.md, "Merge rounds in the split rule"): 16K S 44 -> 32 12.3 -> 11.3-11.4 us, 32K
    13.8 -> 13.5 (2-bit 13.3 -> 12.9); from 64K (1489 tokens per split) S=44 stays faster (16.7 vs 17.8 us)."""
    if S > 16 and T < 1024 * S:
        return S // 16 * 16
    return S


def default_splits(B: int, Hkv: int, ngroups: int, T: int, device: torch.device, kind: str, nw: int, D: int) -> int:
    """The split count the dispatcher uses for a partial kernel (``kind``, ``nw`` from :func:`choose_kernel`)."""
    S = num_splits(B, Hkv, ngroups, T, device, nw, chunks_per_warp(kind, D))
    return merge_rounded(S, T) if kind == "mma" else S


def chunks_per_warp(kind: str, D: int) -> float:
    """Chunks each warp should get (the ``num_splits`` cap): 1.125 for the tensor-core kernel at d=128
    (split sweeps at GQA B=1 4K, 4-bit: S 16 / 14 / 12 / 8 measured 15.2 / 13.3 / 13.4 / 14.2 us, run 14 of
    2026-11-23; at 16K the SM cap, 16, applies), else 1."""
    return 1.125 if kind == "mma" and D == 128 else 1


def lut_warps(q_dtype: torch.dtype, GB: int, D: int, M: int) -> int:
    """Warps per block of the packed-fp16-LUT partial kernel, or 0 for the FFMA kernel.

    The LUT kernel (K: one 8-byte lookup of GB <= 4 packed fp16 scores per subspace; V: half2 FMAs
    flushed to float32 per 32-token chunk) covers fp16 with GB >= 2 query heads per block. bf16 and
    MHA (GB == 1, float32 LUT) stay on the FFMA kernel.
    """
    if q_dtype != torch.float16 or GB < 2:
        return 0
    if D == 64:
        return 0  # no LUT kernel at d=64 (measured no faster than the FFMA kernel); auto takes the tensor-core kernel
    return 16 if D // M == 2 else 12


def _codes_ok(c: torch.Tensor, align: int = 4) -> torch.Tensor:
    """Codes contiguous over (t, m) with ``align``-byte aligned rows (the tensor-core kernel loads up to
    16 bytes of one row at once; the other kernels 4)."""
    if c.stride(3) != 1 or c.stride(2) != c.shape[3] or c.data_ptr() % align or any(x % align for x in c.stride()[:3]):
        c = c.contiguous()
        if c.data_ptr() % align:
            c = c.clone()
    return c


KERNELS = ("auto", "ffma", "lut", "mma")

_TABLES: dict = {}  # (id(tensor), role) -> (weakref to the tensor, version, laid-out table or derived value)
_TABLE_BUILDS = 0  # tables laid out so far: a call that lays one out launches its partial grid without PDL


def _cached(key, centroids: torch.Tensor):
    """What :func:`_remember` holds for ``centroids`` under ``key``, or None (another or a dead tensor, or a version
    changed in place since)."""
    hit = _TABLES.get(key)
    if hit is not None and hit[0]() is centroids and hit[1] == centroids._version:
        return hit[2]
    return None


def _remember(key, centroids: torch.Tensor, t, table: bool = True):
    """Cache ``t`` (a freshly laid-out table of ``centroids``, or with ``table=False`` a value derived from them)
    under ``key``, dropping entries of dead tensors; a table counts as a layout (``_TABLE_BUILDS``)."""
    global _TABLE_BUILDS
    for k in [k for k, v in _TABLES.items() if v[0]() is None]:
        del _TABLES[k]
    if table:
        _TABLE_BUILDS += 1
    _TABLES[key] = (weakref.ref(centroids), centroids._version, t)
    return t


def mma_tables(centroids: torch.Tensor, role: str) -> torch.Tensor:
    """The tensor-core kernel's shared-memory table, laid out once on the device: ``[Hc, 256, M + pad, dsub]``
    (one row per code: the centroid entries of the M subspaces at their slots, then 16 bytes of padding; where the
    loaded library reads unpadded rows, :func:`_mma_kpad` 0, the K rows at dsub 2 and 4 and the V rows at d = 128
    dsub 2 since 2026-12-07, the rows are packed at the start of the same bytes and the padding moves to the end).
    K slots: subspace ``m = (M/4)*tig + w`` at ``4w + tig``; V: ``m = (M/8)*gid + r`` at ``8r + gid``
    (``ops/cuda/pq_attention.cu``). Cached per centroid tensor object (alive, same version): codebooks
    held by MillionCache are long-lived, so a decode loop or a CUDA-graph replay pays for the layout
    once; a fresh tensor (or one modified in place) gets a fresh table."""
    kpad = _mma_kpad(centroids, role)
    key = (id(centroids), role, kpad)
    hit = _cached(key, centroids)
    if hit is not None:
        return hit
    Hc, M, K, dsub = centroids.shape
    m = torch.arange(M, device=centroids.device)
    slot = 4 * (m % (M // 4)) + m // (M // 4) if role == "k" else 8 * (m % (M // 8)) + m // (M // 8)
    t = torch.zeros(Hc, K, M + 16 // (2 * dsub), dsub, dtype=centroids.dtype, device=centroids.device)
    # unpadded rows (kpad 0): packed at the start of the same bytes, the padding at the end
    rows = t if kpad == 16 else t.view(Hc, -1, dsub)[:, : K * M].view(Hc, K, M, dsub)
    rows[:, :, slot] = centroids.permute(0, 2, 1, 3)
    return _remember(key, centroids, t)


def _mma_kpad(centroids: torch.Tensor, role: str = "k") -> int:
    """Padding bytes per K (or V) table row of the tensor-core kernel, as the loaded library reports it: K from
    ``million_pq_mma_kpad(dsub)`` (since 2026-12-07 unpadded at dsub 2 and 4, ``PQ_ROT=1``, ``PQ_ROT4=1``), V from
    ``million_pq_mma_vpad(M, dsub)`` (unpadded at d = 128 dsub 2, ``PQ_VCLS=1``); a library without the export, built
    before, pads every row by 16. CPU tensors: 16."""
    if not centroids.is_cuda:
        return 16
    if role != "k":
        return _lib_vpad(int(centroids.shape[1]), int(centroids.shape[3]))
    return _lib_kpad(int(centroids.shape[3]))


@functools.lru_cache(maxsize=None)
def _lib_kpad(dsub: int) -> int:
    # once per process and dsub (the library is loaded once): mma_tables runs at every tensor-core call
    f = getattr(_lib(), "million_pq_mma_kpad", None)
    if f is None:
        return 16
    f.argtypes, f.restype = [ctypes.c_int], ctypes.c_int
    return int(f(dsub))


@functools.lru_cache(maxsize=None)
def _lib_mma_window() -> int:
    # tokens per head the loaded library's tensor-core kernel reads at once (million_pq_mma_window); 0 without it
    f = getattr(_lib(), "million_pq_mma_window", None)
    if f is None:
        return 0
    f.argtypes, f.restype = [], ctypes.c_int
    return int(f())


@functools.lru_cache(maxsize=None)
def _lib_vpad(M: int, dsub: int) -> int:
    # V rows: unpadded where the loaded library reports 0 (``million_pq_mma_vpad``, PQ_VCLS); 16 for one without it
    f = getattr(_lib(), "million_pq_mma_vpad", None)
    if f is None:
        return 16
    f.argtypes, f.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return int(f(M, dsub))


def _swz(M: int, dsub: int) -> list[int]:
    """Position of subspace m inside a row of the FFMA kernel's tables (``swz`` in pq_attention.cu)."""
    def one(m):
        if M == 64:
            return (m >> 2) + 16 * ((m >> 1) & 1) + 32 * (m & 1)
        if M == 32 and dsub == 2:
            return (m >> 2) + 8 * (m & 3)
        if M == 32:
            return (m >> 2) + 8 * (m & 1) + 16 * ((m >> 1) & 1)
        return (m >> 2) + 4 * (m & 3)  # M == 16
    return [one(m) for m in range(M)]


def ffma_tables(centroids: torch.Tensor) -> torch.Tensor:
    """The FFMA kernel's shared-memory table for one query head per block (MHA), laid out once on the
    device: ``[Hc, 256, M, dsub]`` with subspace ``m`` of code ``k`` at row ``k``, slot ``swz(m)``, so that
    the kernel brings it in with bulk copies (K: turned into its float32 score table in place). Cached
    like :func:`mma_tables` (per live centroid tensor and version)."""
    return _ffma_layout(centroids, "ffma", centroids.dtype)


def ffma_tables_half(centroids: torch.Tensor) -> torch.Tensor:
    """:func:`ffma_tables` of bf16 V centroids converted to fp16: the V table of the half2 value path for bf16 inputs
    (kind 4, where the loaded library takes it: :func:`_lib_bf16_half`). Within the +-2048 bound of that path the
    conversion is exact for every normal fp16 magnitude (fp16 keeps 10 mantissa bits, bf16 7). Cached per live tensor
    and version, like the other tables."""
    return _ffma_layout(centroids, "ffma_h", torch.float16)


def _ffma_layout(centroids: torch.Tensor, tag: str, dtype: torch.dtype) -> torch.Tensor:
    key = (id(centroids), tag)
    hit = _cached(key, centroids)
    if hit is not None:
        return hit
    Hc, M, K, dsub = centroids.shape
    pos = torch.tensor(_swz(M, dsub), device=centroids.device)
    t = torch.empty(Hc, K, M, dsub, dtype=dtype, device=centroids.device)
    t[:, :, pos] = centroids.permute(0, 2, 1, 3).to(dtype)
    return _remember(key, centroids, t)


@functools.lru_cache(maxsize=None)
def _lib_bf16_half() -> bool:
    # whether the loaded library's kind 4 takes bf16 inputs with an fp16 V table (million_pq_ffma_bf16_half)
    f = getattr(_lib(), "million_pq_ffma_bf16_half", None)
    if f is None:
        return False
    f.argtypes, f.restype = [], ctypes.c_int
    return bool(f())


HALF_VALUES_MAX = 2048.0  # V centroid bound of the half2 value path: 16 products of p <= 1 stay within +-32768


def ffma_half_values(v_centroids: torch.Tensor) -> bool:
    """Whether the FFMA kernel (one query head per block) may accumulate each chunk's values in half2 for these V
    centroids (kind 4): fp16 entries (or bf16 ones, laid out in fp16 by :func:`ffma_tables_half`, where the loaded
    library takes them), all finite and within +-``HALF_VALUES_MAX`` (a chunk sums at most 16 products of a
    probability <= 1, so its half2 sums stay inside the fp16 range), and ``$MILLION_CUDA_HALF_V`` not ``0``. Else
    the values accumulate in float32 (kind 2). The check reads the tensor's maximum back to the host once per live
    tensor and version (cached); during CUDA-graph capture a tensor not checked before takes the float32 path
    (:func:`prepare_tables` checks the cache's codebooks at allocation)."""
    if v_centroids.dtype not in (torch.float16, torch.bfloat16) or not half_values_enabled():
        return False
    if v_centroids.dtype == torch.bfloat16 and not _lib_bf16_half():
        return False
    key = (id(v_centroids), "half_v")
    hit = _cached(key, v_centroids)
    if hit is not None:
        return hit
    if v_centroids.is_cuda and torch.cuda.is_current_stream_capturing():
        return False
    ok = v_centroids.numel() == 0 or bool((v_centroids.float().abs().amax() <= HALF_VALUES_MAX).item())
    return _remember(key, v_centroids, ok, table=False)


def half_values_enabled() -> bool:
    """``$MILLION_CUDA_HALF_V``: ``1`` (default) lets the FFMA kernel accumulate fp16 values in half2 per chunk where
    :func:`ffma_half_values` allows it; ``0`` keeps float32 accumulation. H100, 2026-12-06 (docs/kernel_notes.md), same
    library, two rounds: MHA B=1 32K 2-bit 33.9 / 34.0 -> 31.6 / 31.6 us, 128K 2-bit 115.3 -> 101.0, B=8 32K 2-bit
    232.8 -> 206.0, B=1 32K 4-bit 50.8 -> 50.3; no cell slower by more than 1% in both rounds."""
    return env_choice("MILLION_CUDA_HALF_V", "1", ("0", "1"), "0 or 1") == "1"


def prepare_tables(k_centroids: torch.Tensor, v_centroids: torch.Tensor) -> None:
    """Lay out every table the decode kernels may read for these codebooks (MillionCache calls it at
    allocation, so that a decode step captured into a CUDA graph replays only the attention kernels), and check
    the V centroids for the half2 value path (:func:`ffma_half_values`)."""
    if supports_centroids(k_centroids) and supports_centroids(v_centroids):
        for c, role in ((k_centroids, "k"), (v_centroids, "v")):
            mma_tables(c, role)
            ffma_tables(c)
        if ffma_half_values(v_centroids) and v_centroids.dtype == torch.bfloat16:
            ffma_tables_half(v_centroids)


def ffma_bulk() -> bool:
    """Whether the FFMA kernel (one query head per block) reads host-laid tables by bulk copy
    (``$MILLION_CUDA_FFMA_BULK``, default 1; 0 = the per-thread prologue, for A/B timing)."""
    return env_choice("MILLION_CUDA_FFMA_BULK", "1", ("0", "1"), "0 or 1") == "1"


def lut_bulk() -> bool:
    """Whether the packed-LUT kernel (fp16 GQA) reads the FFMA kernel's host-laid tables by bulk copies issued before
    it waits for the previous kernel, and builds its LUT from the copied K centroids (``$MILLION_CUDA_LUT_BULK=1``, the
    default), or loads both tables from global memory after the wait (``0``). H100, 2026-12-06 (docs/kernel_notes.md):
    faster at every GQA cell measured, 4K-32K, B=1 and 8, 4 and 2 bits (B=1 32K 4-bit 33.8 -> 30.3 us, B=8 32K 2-bit
    115.1 -> 111.3)."""
    return env_choice("MILLION_CUDA_LUT_BULK", "1", ("0", "1"), "0 or 1") == "1"


def supports_centroids(c: torch.Tensor) -> bool:
    """Whether centroids of this shape can feed the tensor-core kernel (ksub 256, dsub 2 or 4, d 64 or 128)."""
    return c.dim() == 4 and c.shape[2] == 256 and c.shape[3] in (2, 4) and c.shape[1] * c.shape[3] in (64, 128)


def _env_int(name: str, default: str, allowed: tuple[str, ...]) -> int:
    """``$name`` (or ``default``) as an int, after checking it is one of ``allowed``; a bad value is named."""
    return int(env_choice(name, default, allowed))


CLUSTER_SIZES = tuple(str(c) for c in range(1, 9))  # $MILLION_CUDA_CLUSTER: blocks per table-sharing cluster (opt-in)


def _cluster(S: int, limit: int = 8) -> tuple[int, int]:
    """(S, C): splits rounded down to a multiple of the cluster size C (a power of two <= min(limit, 8, S))."""
    C = 1
    while C * 2 <= min(8, limit, S):
        C *= 2
    return (S // C) * C, C


CMERGE_MAX_SPLITS = 15  # splits + the merge block form one cluster: at most 16 blocks (H100, non-portable)


def cluster_merge(kind: str, nw: int, C: int, override: str | None = None) -> bool:
    """Whether the tensor-core kernel merges its splits inside a thread-block cluster (one launch: the S splits
    of a head keep their partials in shared memory and a merge block of the same cluster reads them through
    distributed shared memory) instead of the second, programmatic-dependent merge kernel.

    ``override`` or ``$MILLION_CUDA_CMERGE``: ``0`` (default) never, ``1`` wherever it applies (the tensor-core
    kernel with 8 warps and no table cluster; the caller caps the splits at :data:`CMERGE_MAX_SPLITS`). Opt-in
    only: measured slower than the merge kernel at every shape (H200 and H100, 2026-12-05; docs/kernel_notes.md,
    "Cluster merge")."""
    mode = override or os.environ.get("MILLION_CUDA_CMERGE") or "0"
    if mode not in ("0", "1"):
        raise ValueError(f"MILLION_CUDA_CMERGE={mode!r}: expected 0 or 1")
    return mode == "1" and kind == "mma" and nw == 8 and C == 1


MMA_WARPS = ("auto", "8", "12", "16")  # $MILLION_CUDA_MMA_WARPS


def mma_warps_for(q_dtype: torch.dtype, D: int, M: int, work: int = 0) -> int:
    """Warps per tensor-core block: ``$MILLION_CUDA_MMA_WARPS`` = 8, 12 or 16, or by default (``auto``) more than 8
    where fp16 blocks wait on latency that 8 warps do not hide: 12 at d = 64 from 2^15 tokens of ``work`` (batch x code
    capacity), 16 at d = 128, 2 bits, from 2^15 tokens, else 8. H100,
    2026-12-07 (docs/kernel_notes.md), against 8 warps everywhere, two rounds: SmolLM2 shape B=8 128K 2-bit 97.6 ->
    86.9 us, B=8 32K 2-bit 29.1 -> 26.5, B=1 128K 4-bit 20.0 -> 19.1; GQA B=1 32K 2-bit 21.8 -> 20.5, B=8 4K 2-bit
    23.1 -> 22.0; no cell more than 1% slower in both rounds. Below 2^15 tokens 12 or 16 warps were slower (B=1 4K:
    +9% SmolLM2, +34% GQA), and d = 128 at 4 bits stays at 8 (12 and 16 warps 14-42% slower). bf16 takes the same
    classes, at d = 128 2 bits with no upper bound (it has no packed-LUT kernel): H100, 2026-12-07 16:42 UTC
    (benchmarks/bf16_warps_rule.py, two rounds against 8 warps), SmolLM2 shape B=8 128K 2-bit 95.2 -> 82.3-82.8 us,
    B=8 32K 4-bit 32.1 -> 30.1-30.3; GQA B=8 32K 2-bit 118.6-118.7 -> 96.3-96.4, B=1 128K 2-bit 62.6-62.7 -> 52.1-52.2;
    no cell of either class slower. fp16 at d = 128 2 bits took 16 warps from 2^17 tokens too, in place of the packed
    LUT kernel there: H100, 2026-12-07 19:35 UTC (benchmarks/gpu_next28.sh, two rounds), GQA B=8 32K 2-bit 110.3-111.0
    -> 96.5 us, B=1 128K 60.7-60.8 -> 52.0-52.6, B=8 128K 400.6-400.9 -> 352.9-353.3."""
    v = env_choice("MILLION_CUDA_MMA_WARPS", "auto", MMA_WARPS)
    if v != "auto":
        return int(v)
    if q_dtype in (torch.float16, torch.bfloat16) and work >= 1 << 15:
        if D == 64:
            return 12
        if D == 128 and D // M == 4:
            return 16
    return 8


def choose_kernel(q_dtype: torch.dtype, GB: int, D: int, M: int, override: str | None = None,
                  work: int = 0) -> tuple[str, int]:
    """(partial kernel, warps per block) for a shape. ``override`` (or ``$MILLION_CUDA_KERNEL``) picks
    one of ``ffma`` (float32 LUT / K-centroid FFMA kernel), ``lut`` (packed fp16 LUT, fp16 GQA only),
    ``mma`` (tensor-core kernel: gathered centroids as mma.sync fragments); ``auto`` the measured
    default per shape (docs/benchmarks.md): FFMA for MHA, the tensor-core kernel for GQA (its warps by
    :func:`mma_warps_for`). The packed-LUT kernel is opt-in since 2026-12-07: it had been the default for fp16 d=128
    2-bit GQA from 2^17 tokens of ``work`` until 16 tensor-core warps passed it there by 12-14%."""
    kind = override or os.environ.get("MILLION_CUDA_KERNEL") or "auto"
    if kind not in KERNELS:
        raise ValueError(f"kernel {kind!r}: expected one of {KERNELS}")
    mma_warps = mma_warps_for(q_dtype, D, M, work)
    if kind == "mma":
        return "mma", mma_warps
    if kind == "ffma" or (kind == "lut" and (q_dtype != torch.float16 or GB < 2)):
        return "ffma", 0
    if kind == "lut":
        return "lut", lut_warps(q_dtype, GB, D, M) or (16 if D // M == 2 else 12)
    # auto, from the same-run A/Bs of 2026-11-23 (docs/benchmarks.md, "Tensor-core partial kernel"): MHA
    # stays on the FFMA kernel (at 32K the tensor-core kernel's random-bank gathers make it 1.4x slower);
    # fp16 GQA takes the tensor-core kernel with tables by bulk copy (GQA B=1 32K 31.1 vs 35.3 us at 4
    # bits, 25.7 vs 29.8 at 2 bits; SmolLM2 shape 4K 8.5 vs 9.9); at 4 bits and d=128 from 2^17 tokens
    # of work the packed LUT is ahead (B=8 32K 142.8 vs 154.0 us, B=1 131K 81.7 vs 83.5), at 2 bits the
    # tensor-core kernel stays ahead (B=8 32K 127.3 vs 133.3). bf16 GQA (no LUT kernel): tensor-core kernel
    # (B=1 32K 31.1 vs 42.7 us on the FFMA kernel, B=8 32K 153.9 vs 229.0). With the LUT kernel's tables copied
    # before its wait (H100, 2026-12-06) it passes the tensor-core kernel at 2 bits too from 2^17 tokens: B=8 16K
    # 63.3 vs 68.3 us, 32K 111.3 vs 125.8; below (B=1 32K 26.5 vs 23.9, B=8 4K 26.9 vs 25.0) it stays behind.
    # With conflict-free K gathers (PQ_ROT, H100, 2026-12-07) the tensor-core kernel passes the LUT at 4 bits from
    # 2^17 tokens too (GQA, two rounds each): B=1 128K 66.9 vs 75.0 us, B=8 16K 67.7 vs 75.8, 32K 125.8 vs 139.6,
    # 128K 477.7 vs 528.4; at 2 bits the LUT stays ahead there (B=8 32K 112.2 vs 135.4, 128K 411.7 vs 514.3).
    # At 16 warps (H100, 2026-12-07 19:35 UTC, benchmarks/gpu_next28.sh, two rounds) the tensor-core kernel passes
    # the LUT at 2 bits from 2^17 tokens as well (B=8 32K 96.5 vs 110.3-111.0 us, B=8 128K 352.9-353.3 vs 400.6-400.9),
    # so auto takes the tensor-core kernel for every GQA shape; the LUT kernel is opt-in (MILLION_CUDA_KERNEL=lut).
    return ("mma", mma_warps) if GB >= 2 else ("ffma", 0)


def _rows_ok(r: torch.Tensor) -> torch.Tensor:
    if r.shape[2] > 0 and (r.stride(3) != 1 or r.stride(2) % 8 or r.data_ptr() % 16):
        r = r.contiguous()
    return r


def _fallback(args, return_lse):
    try:
        from . import triton_attention
    except ImportError:
        triton_attention = None
    if triton_attention is not None:
        return triton_attention.pq_decode_attention(*args, return_lse=return_lse)
    from . import naive

    return naive.pq_decode_attention(*args, return_lse=return_lse)


def pq_decode_attention(
    q: torch.Tensor,
    k_codes: torch.Tensor,
    v_codes: torch.Tensor,
    k_centroids: torch.Tensor,
    v_centroids: torch.Tensor,
    pq_lens: torch.Tensor,
    k_res: torch.Tensor,
    v_res: torch.Tensor,
    res_lens: torch.Tensor,
    starts: torch.Tensor | None = None,
    scale: float | None = None,
    return_lse: bool = False,
    num_splits_override: int | None = None,
    num_warps_override: int | None = None,
    kernel_override: str | None = None,
):
    """Decode attention over PQ codes plus the residual window (CUDA, shared-memory tables).

    Shapes and semantics of :func:`million.ops.naive.pq_decode_attention`. Lengths are read on the
    device (no host synchronization; CUDA-graph capturable). Unsupported inputs go to the Triton
    kernel (or the naive reference). ``kernel_override`` (tests, benchmarks; also ``$MILLION_CUDA_KERNEL``):
    ``ffma``, ``lut`` or ``mma`` (see :func:`choose_kernel`). ``num_warps_override`` without a kernel
    override: 0 forces the FFMA kernel, 8 / 12 / 16 the packed-LUT kernel with that many warps (fp16
    GQA at d=128; other shapes take the FFMA kernel); with ``lut`` or ``mma``: that kernel's warps
    (8, 12 or 16).
    """
    args = (q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale)
    if not supports(q, k_codes, v_codes, k_centroids, v_centroids, k_res, v_res):
        return _fallback(args, return_lse)
    lib = _lib()
    B, Hq, D = q.shape
    _, Hkv, T, M = k_codes.shape
    G = Hq // Hkv
    GB = _group(G)
    ngroups = G // GB
    dev = q.device
    scale = D**-0.5 if scale is None else float(scale)
    # no starts: the kernels read a null pointer as 0 for every sequence (a zero-filled tensor here would put one
    # more kernel in front of every call)
    pq_lens, res_lens = (t.to(device=dev, dtype=torch.int32).contiguous() for t in (pq_lens, res_lens))
    if starts is not None:
        starts = starts.to(device=dev, dtype=torch.int32).contiguous()
    kind, nw = choose_kernel(q.dtype, GB, D, M, kernel_override, work=B * T)
    if num_warps_override is not None:
        w = int(num_warps_override)
        if kernel_override in (None, "auto") and not os.environ.get("MILLION_CUDA_KERNEL"):
            # 0: the FFMA kernel, 8 / 12 / 16: the packed-LUT kernel where it applies (fp16 GQA, d=128)
            if w not in (0, 8, 12, 16):
                raise ValueError(f"num_warps_override={w}: expected 0, 8, 12 or 16")
            kind, nw = ("lut", w) if (w and lut_warps(q.dtype, GB, D, M)) else ("ffma", 0)
        elif kind in ("mma", "lut"):
            if w not in (8, 12, 16):
                raise ValueError(f"num_warps_override={w}: the {kind} kernel takes 8, 12 or 16 warps")
            nw = w
    align = 16 if kind == "mma" else 4
    k_codes, v_codes = _codes_ok(k_codes, align), _codes_ok(v_codes, align)
    window = _lib_mma_window() if kind == "mma" else 0
    if 0 < T < window:
        # the library's tensor-core kernel loads a chunk's codes as a window of that many tokens: shorter code
        # tensors get zero rows after theirs (a copy of at most 31 tokens per head; T itself stays the bound)
        k_codes, v_codes = (torch.nn.functional.pad(c, (0, 0, 0, window - T)) for c in (k_codes, v_codes))
    kcen, vcen = k_centroids.contiguous(), v_centroids.contiguous()
    k_res, v_res = _rows_ok(k_res), _rows_ok(v_res)
    S = num_splits_override or default_splits(B, Hkv, ngroups, T, dev, kind, nw, D)
    C = 1
    builds = _TABLE_BUILDS
    kcode = 1 if kind == "mma" else 0
    if kind == "ffma" and GB == 1 and ffma_bulk():
        # kind 4: values accumulated in half2 per chunk where the V centroids allow it (ffma_half_values); bf16 inputs
        # where the library takes them, with the V table in fp16
        kcode = 4 if q.dtype == v_centroids.dtype and ffma_half_values(v_centroids) else 2
        half_v = kcode == 4 and vcen.dtype == torch.bfloat16
        kcen, vcen = ffma_tables(kcen), (ffma_tables_half(vcen) if half_v else ffma_tables(vcen))
    if kind == "lut" and lut_bulk():
        kcen, vcen, kcode = ffma_tables(kcen), ffma_tables(vcen), 3
    if kind == "mma":
        kcen, vcen = mma_tables(kcen, "k"), mma_tables(vcen, "v")
    if kcode in (1, 2, 4):
        want = _env_int("MILLION_CUDA_CLUSTER", "1", CLUSTER_SIZES)
        if want > 1:  # opt-in: clusters of splits multicast the tables (measured slower on the H100)
            S, C = _cluster(S, want)
    cm = cluster_merge(kind, nw, C)
    if cm:
        S = min(S, CMERGE_MAX_SPLITS)
    out = torch.empty(B, Hq, D, dtype=q.dtype, device=dev)
    lse = torch.empty(B, Hq, dtype=torch.float32, device=dev) if return_lse else None
    # partials go through global memory only without the cluster merge
    o_part = torch.empty(B, Hq, 0 if cm else S, D, dtype=torch.float32, device=dev)
    lse_part = torch.empty(B, Hq, 0 if cm else S, dtype=torch.float32, device=dev)
    if B > 0 and Hq > 0:
        cen_stride = kcen[0].numel()  # elements (2 bytes) per centroid head, raw or laid out
        a = _Args(
            q.data_ptr(), k_codes.data_ptr(), v_codes.data_ptr(), kcen.data_ptr(), vcen.data_ptr(),
            pq_lens.data_ptr(), res_lens.data_ptr(), None if starts is None else starts.data_ptr(),
            k_res.data_ptr(), v_res.data_ptr(),
            out.data_ptr(), lse.data_ptr() if lse is not None else None, o_part.data_ptr(), lse_part.data_ptr(),
            *q.stride(), *k_codes.stride()[:3], *v_codes.stride()[:3],
            cen_stride if kcen.shape[0] > 1 else 0, cen_stride if vcen.shape[0] > 1 else 0,
            *k_res.stride()[:3], *v_res.stride()[:3], *out.stride(),
            B, Hq, Hkv, T, k_res.shape[2], D, M, S, 0 if q.dtype == torch.float16 else 1, GB, ngroups, nw,
            # the partial grid copies its tables before waiting for the previous kernel (MILLION_CUDA_PDL=2): not
            # when this call laid one out, since the kernel that wrote it may still be that previous kernel
            kcode, C, int(cm), int(_TABLE_BUILDS == builds),
            scale * _LOG2E,
        )
        with torch.cuda.device(dev):
            stream = torch.cuda.current_stream(dev).cuda_stream
            rc = lib.million_pq_decode_attention(ctypes.byref(a), ctypes.c_void_p(stream))
        if rc != 0:
            raise RuntimeError(f"million CUDA kernel failed ({rc}): {lib.million_pq_last_error().decode()}")
    elif lse is not None:
        lse.fill_(float("-inf"))
    if return_lse:
        return out, lse
    return out
