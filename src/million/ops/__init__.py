"""PQ operations.

``naive`` is the CPU-runnable specification. The public functions below dispatch to the Triton
kernels for CUDA tensors when triton is installed, and to ``naive`` otherwise. Triton is imported
lazily, so ``import million`` needs neither CUDA nor triton.
"""

from __future__ import annotations

import torch

from . import naive
from .naive import dense_attention_partial, inner_prod_table, merge_state, pq_decode

__all__ = [
    "pq_encode",
    "pq_decode",
    "attention_column_sums",
    "attention_column_sums_coded",
    "pq_decode_attention",
    "inner_prod_table",
    "merge_state",
    "dense_attention_partial",
    "head_map",
    "head_map_kv",
    "use_kernels",
]


def use_kernels(t: torch.Tensor) -> bool:
    """True when ``t`` lives on a CUDA device and the Triton kernels can be imported."""
    if not t.is_cuda:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def pq_encode(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Nearest-centroid codes; see :func:`million.ops.naive.pq_encode` for shapes.

    On CUDA: the CUDA C++ kernel (ksub 256, dsub 2 or 4; Hopper) when available, else the Triton
    kernel; on the CPU the naive reference."""
    if x.is_cuda:
        try:
            from . import cuda_encode
        except ImportError:
            cuda_encode = None
        try:
            if cuda_encode is not None and cuda_encode.available() and cuda_encode.supports(x, centroids):
                if not torch.compiler.is_compiling():  # eager: no custom-op dispatch on the host path
                    return cuda_encode.pq_encode(x, centroids)
                from . import custom_ops  # noqa: F401  (registers torch.ops.million.*)

                return torch.ops.million.pq_encode_cuda(x, centroids)
        except (OSError, RuntimeError):
            pass
    if use_kernels(x):
        try:
            from .triton_encode import pq_encode as kernel
        except ImportError:
            kernel = None
        if kernel is not None:
            return kernel(x, centroids)
    return naive.pq_encode(x, centroids)


def _cuda_kernel(args):
    """The CUDA shared-memory kernel when it is built/buildable and handles these inputs, else None."""
    try:
        from . import cuda_attention
    except ImportError:
        return None
    try:
        if cuda_attention.available() and cuda_attention.supports(*args[:5], args[6], args[7]):
            if not torch.compiler.is_compiling():  # eager: call the kernel wrapper directly
                return lambda *a: cuda_attention.pq_decode_attention(*a, return_lse=True)
            from . import custom_ops  # noqa: F401  (registers torch.ops.million.*)

            return torch.ops.million.pq_decode_attention_cuda
    except (OSError, RuntimeError):
        return None
    return None


def pq_decode_attention(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts=None, scale=None, return_lse=False):
    """Decode attention on codes plus residual window; see :func:`million.ops.naive.pq_decode_attention`.

    On CUDA: the shared-memory CUDA kernel (Hopper, fp16/bf16, uint8 codes with 256 centroids) when
    available, else the Triton kernel; on the CPU the naive reference.
    """
    args = (q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale)
    if use_kernels(q) or q.is_cuda:
        kernel = _cuda_kernel(args) if q.is_cuda else None
        if kernel is not None:
            out, lse = kernel(*args[:10], None if scale is None else float(scale))
            return (out, lse) if return_lse else out
    if use_kernels(q):
        try:
            from . import triton_attention
        except ImportError:
            triton_attention = None
        if triton_attention is not None:
            return triton_attention.pq_decode_attention(*args, return_lse=return_lse)
    return naive.pq_decode_attention(*args, return_lse=return_lse)


def attention_column_sums(q, k, pad=None, scale=None, lse=None):
    """Attention each key receives from causal queries (summed over queries and the query heads of its KV head); see
    :func:`million.ops.naive.attention_column_sums`. On CUDA the Triton kernels (no ``queries x keys`` tensor in
    memory), on the CPU the naive reference."""
    D = q.shape[-1]
    if use_kernels(q) and D >= 16 and D & (D - 1) == 0 and q.shape[1] % k.shape[1] == 0:
        try:
            from . import triton_scores
        except ImportError:
            triton_scores = None
        if triton_scores is not None:
            return triton_scores.attention_column_sums(q, k, pad, scale, lse)
    return naive.attention_column_sums(q, k, pad, scale, lse)


def attention_column_sums_coded(q, k_codes, k_centroids, k_window, pad=None, scale=None, lse=None):
    """Column sums over keys held as codes plus a full-precision window (see
    :func:`million.ops.naive.attention_column_sums_coded`). On CUDA one Triton launch that builds the key tiles from
    the codes in registers; on the CPU the naive reference."""
    D = q.shape[-1]
    if (use_kernels(q) and lse is not None and D >= 16 and D & (D - 1) == 0 and q.shape[1] % k_codes.shape[1] == 0
            and k_centroids.shape[2] & (k_centroids.shape[2] - 1) == 0):
        try:
            from . import triton_scores
        except ImportError:
            triton_scores = None
        if triton_scores is not None:
            return triton_scores.attention_column_sums_coded(q, k_codes, k_centroids, k_window, pad, scale, lse)
    return naive.attention_column_sums_coded(q, k_codes, k_centroids, k_window, pad, scale, lse)


HEAD_MAP_CHOICES = ("triton", "pair", "torch")  # MILLION_HEAD_MAP (see head_map and head_map_kv)


def _head_map_kernels(x, mats):
    """The Triton head-map module and the ``MILLION_HEAD_MAP`` choice where the kernels serve ``x`` and ``mats``
    (CUDA, triton importable, not the reference chosen, not tracing); else ``(None, None)``."""
    if torch.compiler.is_compiling() or not (use_kernels(x) and mats.is_cuda):
        return None, None
    from ._env import env_choice

    choice = env_choice("MILLION_HEAD_MAP", "triton", HEAD_MAP_CHOICES)
    if choice == "torch":
        return None, None
    try:
        from . import triton_transform
    except ImportError:
        return None, None
    return triton_transform, choice


def head_map(x, mats, dtype=None, out=None, index=None, raw=None):
    """Per-head linear map of rows in float32, optionally written in place at a device row index; see
    :func:`million.ops.naive.head_map`. On CUDA one Triton launch per call (``MILLION_HEAD_MAP=torch`` keeps the
    reference's casts and batched matmul, for comparison); on the CPU, and while ``torch.compile`` traces, the
    reference."""
    tt, _ = _head_map_kernels(x, mats)
    if tt is not None and x.shape[0] * x.shape[1] <= tt.MAX_BH:
        return tt.head_map(x, mats, dtype, out, index, raw)
    return naive.head_map(x, mats, dtype, out, index, raw)


def head_map_kv(k, v, kmats, vmats, kout, vout, index=None, kraw=None, vraw=None):
    """A step's key and value rows mapped into their windows (two :func:`head_map` calls with one row index); see
    :func:`million.ops.naive.head_map_kv`. On CUDA one Triton launch per side by default; ``MILLION_HEAD_MAP=pair``
    maps both sides in one launch (not yet timed on a GPU, so opt-in); ``MILLION_HEAD_MAP=torch``: the reference. On
    the CPU, and while ``torch.compile`` traces, the reference."""
    tt, choice = _head_map_kernels(k, kmats)
    BH = k.shape[0] * k.shape[1]
    if tt is not None and BH <= tt.MAX_BH:
        return tt.head_map_kv(k, v, kmats, vmats, kout, vout, index, kraw, vraw,
                              pair=choice == "pair" and 2 * BH <= tt.MAX_BH)
    return naive.head_map_kv(k, v, kmats, vmats, kout, vout, index, kraw, vraw)
