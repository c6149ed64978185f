"""``torch.library`` custom ops wrapping the Triton kernels, so that ``torch.compile`` treats them as
opaque calls (with fake implementations for shape propagation) and CUDA graphs capture them whole.

Importing this module imports only torch; the Triton modules are imported when an op first runs.
"""

from __future__ import annotations

import torch


@torch.library.custom_op("million::pq_encode", mutates_args=())
def pq_encode(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Codes ``[B, H, T, M]`` of ``x [B, H, T, D]``; see :func:`million.ops.naive.pq_encode`."""
    from .triton_encode import pq_encode_launch

    return pq_encode_launch(x, centroids)


@pq_encode.register_fake
def _pq_encode_fake(x, centroids):
    B, H, T, _ = x.shape
    M, ksub = centroids.shape[1], centroids.shape[2]
    return x.new_empty((B, H, T, M), dtype=torch.uint8 if ksub <= 256 else torch.uint16)


@torch.library.custom_op("million::pq_decode_attention", mutates_args=())
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
    starts: torch.Tensor | None,
    scale: float | None,
) -> torch.Tensor:
    """Decode attention on codes ``[B, H_q, D]``; see :func:`million.ops.naive.pq_decode_attention`."""
    from .triton_attention import pq_decode_attention_launch

    return pq_decode_attention_launch(
        q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale
    )


@pq_decode_attention.register_fake
def _pq_decode_attention_fake(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale):
    return q.new_empty(q.shape)  # contiguous, as the launcher allocates it (not q's layout: q may be a permuted view)


@torch.library.custom_op("million::pq_decode_attention_lse", mutates_args=())
def pq_decode_attention_lse(
    q: torch.Tensor,
    k_codes: torch.Tensor,
    v_codes: torch.Tensor,
    k_centroids: torch.Tensor,
    v_centroids: torch.Tensor,
    pq_lens: torch.Tensor,
    k_res: torch.Tensor,
    v_res: torch.Tensor,
    res_lens: torch.Tensor,
    starts: torch.Tensor | None,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernels with each head's log-sum-exp: ``(out [B, H_q, D], lse [B, H_q] float32)``; see
    :func:`million.ops.triton_attention.pq_decode_attention` with ``return_lse=True``."""
    from .triton_attention import pq_decode_attention_launch

    return pq_decode_attention_launch(
        q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale, return_lse=True
    )


@pq_decode_attention_lse.register_fake
def _pq_decode_attention_lse_fake(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=torch.float32)


@torch.library.custom_op("million::pq_decode_attention_cuda", mutates_args=())
def pq_decode_attention_cuda(
    q: torch.Tensor,
    k_codes: torch.Tensor,
    v_codes: torch.Tensor,
    k_centroids: torch.Tensor,
    v_centroids: torch.Tensor,
    pq_lens: torch.Tensor,
    k_res: torch.Tensor,
    v_res: torch.Tensor,
    res_lens: torch.Tensor,
    starts: torch.Tensor | None,
    scale: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CUDA shared-memory kernel: ``(out [B, H_q, D], lse [B, H_q] float32)``; see
    :func:`million.ops.cuda_attention.pq_decode_attention`."""
    from .cuda_attention import pq_decode_attention as kernel

    return kernel(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale, return_lse=True)


@pq_decode_attention_cuda.register_fake
def _pq_decode_attention_cuda_fake(q, k_codes, v_codes, k_centroids, v_centroids, pq_lens, k_res, v_res, res_lens, starts, scale):
    return q.new_empty(q.shape), q.new_empty(q.shape[:2], dtype=torch.float32)


@torch.library.custom_op("million::pq_encode_cuda", mutates_args=())
def pq_encode_cuda(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """The CUDA C++ encode kernel: uint8 codes ``[B, H, T, M]``; see
    :func:`million.ops.cuda_encode.pq_encode` (its tables are cached per centroid tensor)."""
    from .cuda_encode import pq_encode as kernel

    return kernel(x, centroids)


@pq_encode_cuda.register_fake
def _pq_encode_cuda_fake(x, centroids):
    B, H, T, _ = x.shape
    return x.new_empty((B, H, T, centroids.shape[1]), dtype=torch.uint8)
