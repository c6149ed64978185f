"""MillionCache: a transformers ``Cache`` that stores K/V as product-quantized codes.

Each layer keeps

- ``k_codes``, ``v_codes``: ``[B, H_kv, capacity, M]`` uint8/uint16 codes of positions ``[0, pq_len)``;
- ``k_window``, ``v_window``: ``[B, H_kv, 2R, D]`` full-precision window of the most recent tokens,
  positions ``[pq_len, pq_len + res_len)``, ``R = config.residual_length``.

Once the window holds ``R`` tokens its oldest ``R`` are encoded, on a side CUDA stream when on a GPU
(off the critical path), while attention keeps reading them in full precision from the window; they
are committed to the codes (``pq_len += R``) only when the window is full, so the last ``R..2R``
tokens are always attended in full precision. As long as nothing has been committed, decoding is
exactly what ``DynamicCache`` does.

Prefill (more than one query token) attends in full precision, then encodes. A decode step hands
the attention function a :class:`PQState` so attention runs on the codes without dequantizing the
cache (see :mod:`million.attention`; the model must use ``attn_implementation="million"``).

The layout is static-friendly: codes grow by doubling (or are preallocated with ``max_cache_len``),
the window has a fixed size, and the per-sequence lengths the kernels read live in device tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import ops
from .codebook import Codebooks
from .config import Eviction, PQConfig


@dataclass
class PQState:
    """What a decode step's attention needs from one layer (all tensors, no copies).

    k_codes, v_codes: ``[B, H_kv, capacity, M]``; k_centroids, v_centroids: ``[Hc, M, ksub, dsub]``; pq_lens, res_lens:
    int32 ``[B]``; k_window, v_window: ``[B, H_kv, 2R, D]``; k_sink, v_sink: ``[B, H_kv, S, D]`` full-precision copies
    of each sequence's first ``S`` valid positions (``S = sink_length``, may be 0): row ``i`` of sequence ``b`` holds
    position ``starts[b] + i`` (its left padding plus ``i``); the first ``sink_lens[b]`` rows are filled, those
    positions already committed (attend the rows, not their codes). With transforms (see
    :class:`~million.codebook.Codebooks`): ``q_map [Hc, D, D]`` maps a query to the codes' space (``q @ q_map``) and
    ``v_inverse [Hc, D, D]`` maps the codes' attention output back; the window and sinks hold untransformed K/V.
    ``starts`` (int32 ``[B]``, may be None): each sequence's first valid position (left padding), used when the step
    gets no attention mask (static decoding, :mod:`million.decode`); ``static``: the step is a static one, whose
    attention takes ``starts`` and ignores any attention mask (transformers may materialize a mask while a CUDA graph is
    captured). ``k_window_t``, ``v_window_t``: with transforms, the window already mapped to the codes' space (kept up
    to date token by token, so a decode step does not map the whole window again). ``k_folded``, ``v_folded`` ``[B,
    H_kv, S + 2R, D]`` (static steps without padding): sinks then window in one block (in the codes' space with
    transforms), of which the first ``folded_lens[b]`` rows are filled; attention hands them to the kernel as its
    full-precision rows, so one kernel call covers all. ``code_starts`` (int32 ``[B]``, caches with
    :class:`~million.config.Eviction`): each sequence's first valid code slot (kept tokens are packed at the end of
    ``[0, pq_lens)``); no mask is read. ``code_from`` (int32 ``[B]``, with sinks): where each sequence's codes start
    for attention, after its padding and its committed sinks (``code_starts`` once those are all committed), kept up
    to date by the cache, so a step derives nothing. ``observer``: the layer that wants this step's query and
    log-sum-exp (``observe_step``).
    """

    k_codes: torch.Tensor
    v_codes: torch.Tensor
    k_centroids: torch.Tensor
    v_centroids: torch.Tensor
    pq_lens: torch.Tensor
    k_window: torch.Tensor
    v_window: torch.Tensor
    res_lens: torch.Tensor
    k_sink: torch.Tensor | None = None
    v_sink: torch.Tensor | None = None
    sink_lens: torch.Tensor | None = None
    sink_length: int = 0
    q_map: torch.Tensor | None = None
    v_inverse: torch.Tensor | None = None
    starts: torch.Tensor | None = None
    static: bool = False
    k_window_t: torch.Tensor | None = None
    v_window_t: torch.Tensor | None = None
    k_folded: torch.Tensor | None = None
    v_folded: torch.Tensor | None = None
    folded_lens: torch.Tensor | None = None
    code_starts: torch.Tensor | None = None
    code_from: torch.Tensor | None = None
    observer: "MillionLayer | None" = None


class MillionLayer(CacheLayerMixin):
    """One layer of a :class:`MillionCache`."""

    is_compileable = False
    is_sliding = False
    is_croppable = False

    def __init__(self, config: PQConfig, k_centroids: torch.Tensor, v_centroids: torch.Tensor, max_cache_len: int | None = None,
                 transforms: tuple | None = None, shared: dict | None = None, evict: Eviction | None = None):
        super().__init__()
        self.evict = evict
        self._shared = shared  # device copies of the centroids, shared by the caches of one Codebooks
        self.config = config
        self._kc_src, self._vc_src = k_centroids, v_centroids
        self._tr_src = transforms  # (key, key_inverse, value, value_inverse) [H_kv, D, D] or None
        self.transforms = None
        self.max_cache_len = max_cache_len
        self.pq_len = 0  # code slots in use (= committed positions, unless tokens were evicted)
        self.pq_pos = 0  # positions committed to codes (evicted ones included)
        self._evicted = False  # some code token was evicted: slots are no longer positions
        self._defer = False  # a multi-token update waits for its queries' scores before evicting
        self._pad = None  # host list: each sequence's left padding (first valid position), once learnt
        self._sfill = None  # host list: sink rows filled per sequence (committed positions among its first S)
        self._cs = None  # host list: each sequence's first valid code slot
        self._scored = 0  # window slots whose queries' attention has been added to the scores
        self._scale = None
        self.sink_len = 0  # sink rows in use (the most any sequence has filled)
        self.res_len = 0  # tokens in the full-precision window
        self.pending = False  # the window's first R tokens are being encoded
        self._event = None
        self._stream = None
        self.static = False  # static decoding (see MillionCache.begin_static): device-indexed window writes
        self._fold = False  # static and no padding: sinks attended with the window in one kernel call
        self.starts = None  # int32 [B] first valid positions for steps without an attention mask
        self.layout_version = 0  # bumped whenever a buffer a captured graph may hold is reallocated

    # -- setup -------------------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        B, H, _, D = key_states.shape
        if D != self.config.head_dim:
            raise ValueError(f"model head_dim {D} != codebook head_dim {self.config.head_dim}")
        Hc = self._kc_src.shape[0]
        if Hc not in (1, H):
            raise ValueError(f"codebooks have {Hc} heads per layer but the model has {H} KV heads")
        self.dtype, self.device = key_states.dtype, key_states.device
        self.batch_size, self.num_heads = B, H
        cent_dtype = torch.float32 if key_states.dtype == torch.float32 else key_states.dtype
        self.k_centroids = self._placed(self._kc_src, cent_dtype)
        self.v_centroids = self._placed(self._vc_src, cent_dtype)
        if self.device.type == "cuda" and cent_dtype in (torch.float16, torch.bfloat16):
            # lay out the decode kernel's shared-memory tables now, at allocation, so that a decode step
            # captured into a CUDA graph replays only the attention kernels
            from .ops import cuda_attention

            cuda_attention.prepare_tables(self.k_centroids, self.v_centroids)
        if self._tr_src is not None:
            kt, kti, vt, vti = (t.to(self.device, torch.float32) for t in self._tr_src)
            if kt.shape[0] != H:
                raise ValueError(f"transforms have {kt.shape[0]} heads per layer but the model has {H} KV heads")
            # q . k = (q @ kti^T) . (k @ kt): queries meet the codes through kti^T
            self.transforms = (kt, kti, vt, vti, kti.transpose(-1, -2).contiguous())
        R, M = self.config.residual_length, self.config.M
        cap = self.max_cache_len if self.max_cache_len is not None else 4 * R
        cdt = self.config.code_dtype
        self.k_codes = torch.zeros(B, H, cap, M, dtype=cdt, device=self.device)
        self.v_codes = torch.zeros(B, H, cap, M, dtype=cdt, device=self.device)
        S = self.config.sink_length
        # one buffer per role: the S sink rows, then the 2R window rows (views below), so that a step without
        # padding can hand sinks and window to the kernel as one full-precision block
        self._bufs = [torch.zeros(B, H, S + 2 * R, D, dtype=self.dtype, device=self.device) for _ in range(2)]
        if self.transforms is not None:  # the same in the codes' space, what decode attention reads
            self._bufs += [torch.zeros(B, H, S + 2 * R, D, dtype=self.dtype, device=self.device) for _ in range(2)]
        self._views()
        self.pq_lens = torch.zeros(B, dtype=torch.int32, device=self.device)
        self.res_lens = torch.zeros(B, dtype=torch.int32, device=self.device)
        self.sink_lens = torch.zeros(B, dtype=torch.int32, device=self.device)
        self._sfill = [0] * B
        self._pad_t = torch.zeros(B, dtype=torch.int32, device=self.device)
        self.code_from = torch.zeros(B, dtype=torch.int32, device=self.device)  # see PQState.code_from
        if self.evict is not None:
            # accumulated attention of every code slot and window slot, relative quantization error of every code
            # slot, and the queries (with their log-sum-exp) of decode steps not yet scored, by window slot
            self.score = torch.zeros(B, H, cap, dtype=torch.float32, device=self.device)
            self.err = torch.zeros(B, H, cap, dtype=torch.float16, device=self.device)
            self._wscore = torch.zeros(B, H, 2 * R, dtype=torch.float32, device=self.device)
            self._qbuf = self._lbuf = None  # allocated at the first observed step (the query head count)
            self.code_starts = torch.zeros(B, dtype=torch.int32, device=self.device)
        if self.device.type == "cuda":
            self._stream = torch.cuda.Stream(device=self.device)
        self.is_initialized = True

    def _placed(self, src: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``src`` on this layer's device and in ``dtype``; one copy per codebook slice shared by every cache made
        from the same Codebooks (``shared``), so that the kernels' per-centroid-tensor tables are built once."""
        if self._shared is None:
            return src.to(self.device, dtype).contiguous()
        try:
            version = src._version
        except RuntimeError:  # inference tensors
            version = -1
        key = (src.data_ptr(), version, tuple(src.shape), str(self.device), dtype)
        t = self._shared.get(key)
        if t is None:
            t = self._shared[key] = src.to(self.device, dtype).contiguous()
        return t

    # -- bookkeeping -------------------------------------------------------------------------------
    def get_seq_length(self) -> int:
        return self.pq_pos + self.res_len

    def get_max_length(self) -> int:
        return -1 if self.max_cache_len is None else self.max_cache_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        n = self.get_seq_length() + query_length
        kept, res = self._sizes_at_attention(query_length)
        if kept is not None:  # keys handed to a multi-token step: sinks, kept codes, window, new tokens (see dequantize)
            kv = self.config.sink_length + max(kept) + res + query_length  # (every sink is committed once one evicts)
            return kv, n - kv
        return n, 0

    def _sizes_at_attention(self, q: int) -> tuple[list[int] | None, int]:
        """(kept code tokens of each sequence, window tokens) that a ``q``-token step will attend after the commit and
        eviction its update makes first; kept is None while no token has been evicted (keys are then positions)."""
        if self.evict is None or not getattr(self, "is_initialized", False):
            return None, self.res_len
        kept = [max(0, self.pq_len - c) for c in self._cs] if self._evicted else None
        R = self.config.residual_length
        if q > 1 and self.pending and self.res_len + q > 2 * R:  # update() commits a block and evicts (_evict_all)
            pos = self.pq_pos + R
            first, bud = self._first_and_budgets(pos)
            ready = [f <= pos for f in first]
            if any(ready):
                have = [self.pq_len + R - c if r else 0 for c, r in zip(self._cs or first, ready)]
                if self._evicted or any(h > b for h, b, r in zip(have, bud, ready) if r):
                    kept = [min(h, b) for h, b in zip(have, bud)]
            return kept, self.res_len - R
        return kept, self.res_len

    @property
    def keys(self):  # transformers reads `.keys` in a few generic helpers; expose the full-precision view
        return self.dequantize()[0] if getattr(self, "is_initialized", False) else None

    @keys.setter
    def keys(self, v):
        pass

    @property
    def values(self):
        return self.dequantize()[1] if getattr(self, "is_initialized", False) else None

    @values.setter
    def values(self, v):
        pass

    def _ensure_capacity(self, n: int) -> None:
        cap = self.k_codes.shape[2]
        if n <= cap:
            return
        if self.max_cache_len is not None:
            raise ValueError(f"cache is full: {n} tokens do not fit max_cache_len={self.max_cache_len}")
        new_cap = max(n, 2 * cap)
        grow = new_cap - cap
        B, H, _, M = self.k_codes.shape
        pad = torch.zeros(B, H, grow, M, dtype=self.k_codes.dtype, device=self.device)
        self.k_codes = torch.cat([self.k_codes, pad], 2)
        self.v_codes = torch.cat([self.v_codes, pad], 2)
        if self.evict is not None:
            self.score = torch.cat([self.score, self.score.new_zeros(B, H, grow)], 2)
            self.err = torch.cat([self.err, self.err.new_zeros(B, H, grow)], 2)
        self.layout_version += 1

    def _encode_into(self, k: torch.Tensor, v: torch.Tensor, at: int) -> None:
        n = k.shape[2]
        if self.transforms is not None:
            kt, _, vt, _, _ = self.transforms
            k = torch.einsum("bhtd,hde->bhte", k.float(), kt)
            v = torch.einsum("bhtd,hde->bhte", v.float(), vt)
        kc, vc = ops.pq_encode(k, self.k_centroids), ops.pq_encode(v, self.v_centroids)
        self.k_codes[:, :, at : at + n] = kc
        self.v_codes[:, :, at : at + n] = vc
        if self.evict is not None and self.evict.friendliness:
            # relative squared error of the reconstruction, K and V averaged (in the codes' space)
            def rel(x, c, cent):
                x = x.float()
                return (ops.pq_decode(c, cent, torch.float32) - x).pow(2).sum(-1) / x.pow(2).sum(-1).clamp_min(1e-12)

            self.err[:, :, at : at + n] = ((rel(k, kc, self.k_centroids) + rel(v, vc, self.v_centroids)) / 2).to(self.err.dtype)

    def _launch_pending(self) -> None:
        """Start encoding the window's first R tokens into codes[pq_len : pq_len + R]."""
        R = self.config.residual_length
        self._ensure_capacity(self.pq_len + R)
        if self._stream is None:
            self._encode_into(self.k_window[:, :, :R], self.v_window[:, :, :R], self.pq_len)
        else:
            self._stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._stream):
                self._encode_into(self.k_window[:, :, :R], self.v_window[:, :, :R], self.pq_len)
                self._event = torch.cuda.Event()
                self._event.record(self._stream)
        self.pending = True

    def _commit_pending(self, evict: bool = True) -> None:
        """Make the pending block's codes visible and drop it from the window."""
        R = self.config.residual_length
        self._score_queued()  # the steps since the last commit saw the codes as they are now
        if self._event is not None:
            torch.cuda.current_stream(self.device).wait_event(self._event)
            self._event = None
        self._commit_sinks(self.k_window[:, :, :R], self.v_window[:, :, :R], self.pq_pos)
        if self.evict is not None:
            self.score[:, :, self.pq_len : self.pq_len + R] = self._wscore[:, :, :R]
            self._wscore[:, :, : self.res_len - R] = self._wscore[:, :, R : self.res_len].clone()
            self._wscore[:, :, self.res_len - R :] = 0
            self._scored = max(0, self._scored - R)
        self.pq_len += R
        self.pq_pos += R
        self.pq_lens += R
        rest = self.res_len - R
        if rest > 0:
            for w in self._windows():
                w[:, :, :rest] = w[:, :, R : R + rest].clone()
        self.res_len = rest
        self.res_lens -= R
        self._sync_step_counters()
        self.pending = False
        if evict and not self._defer:
            self._evict()

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Add new tokens ``[B, H_kv, n, D]``; encode whatever leaves the window."""
        R = self.config.residual_length
        n = key_states.shape[2]
        if n == 0:
            return
        if self.res_len + n <= 2 * R:
            self._write_window(self.res_len, key_states, value_states)
            self.res_len += n
            self.res_lens += n
        else:
            if self.pending:
                self._commit_pending()
            ks = torch.cat([self.k_window[:, :, : self.res_len], key_states.to(self.dtype)], 2)
            vs = torch.cat([self.v_window[:, :, : self.res_len], value_states.to(self.dtype)], 2)
            total = ks.shape[2]
            enc = max(0, (total - R) // R * R)  # leave R..2R-1 tokens in the window
            r = total - enc
            if self.evict is not None:  # scores travel with their tokens (the new ones have none yet)
                B, H = ks.shape[:2]
                wsc = torch.cat([self._wscore[:, :, : self.res_len], self._wscore.new_zeros(B, H, n)], 2)
            if enc:
                # room for the window's next block too (launched below): one reallocation per prefill, not two
                self._ensure_capacity(self.pq_len + enc + (R if self.max_cache_len is None else 0))
                self._encode_into(ks[:, :, :enc], vs[:, :, :enc], self.pq_len)
                self._commit_sinks(ks[:, :, :enc], vs[:, :, :enc], self.pq_pos)
                if self.evict is not None:
                    self.score[:, :, self.pq_len : self.pq_len + enc] = wsc[:, :, :enc]
                self.pq_len += enc
                self.pq_pos += enc
                self.pq_lens += enc
            if self.evict is not None:
                self._wscore.zero_()
                self._wscore[:, :, :r] = wsc[:, :, enc:]
                self._scored = max(0, min(self._scored - enc, r))
            # the window keeps ks[enc:]: its old rows shift down (their mapped rows with them, so that a token is
            # mapped once, as static steps do), the new tokens are written (and mapped) after them
            keep = max(0, self.res_len - enc)
            if keep:
                for w in self._windows():
                    w[:, :, :keep] = w[:, :, enc : enc + keep].clone()
            self._write_window(keep, ks[:, :, enc + keep :], vs[:, :, enc + keep :])
            self.res_lens += r - self.res_len
            self.res_len = r
        self._sync_step_counters()
        if not self.pending and self.res_len >= R:
            self._launch_pending()

    def _sync_step_counters(self) -> None:
        """Static mode: the device's step row and sinks-and-window lengths from the host's window, after the host
        moved it (a commit, a multi-token chunk)."""
        if self.static:
            self._wpos.fill_(self.res_len - 1)
            if self._fold:
                self._res_lens_s.copy_(self.res_lens + self.config.sink_length)

    def _commit_sinks(self, k: torch.Tensor, v: torch.Tensor, p0: int) -> None:
        """Copy the attention sinks among positions ``[p0, p0 + n)`` (full precision ``[B, H_kv, n, D]``, being
        committed to codes) to the sink rows: each sequence's first ``S`` valid positions (after its left padding).
        A sink is attended from its row once its position is committed, and from the window before."""
        S, n = self.config.sink_length, k.shape[2]
        if S == 0 or n == 0:
            return
        pads = self._pad if self._pad is not None else [0] * self.batch_size
        groups = {}  # (first row, last row, first source index) -> sequences
        for b, pad in enumerate(pads):
            lo, hi = max(pad + self._sfill[b], p0), min(pad + S, p0 + n)
            if lo < hi:
                groups.setdefault((lo - pad, hi - pad, lo - p0), []).append(b)
                self._sfill[b] = hi - pad
        if not groups:
            return
        dsts = [self.k_sink, self.v_sink]
        if self.transforms is not None:
            dsts += [self._bufs[2][:, :, :S], self._bufs[3][:, :, :S]]
        for (r0, r1, i0), bs in groups.items():
            sel = slice(None) if len(bs) == self.batch_size else torch.tensor(bs, device=self.device)
            srcs = [k[sel, :, i0 : i0 + r1 - r0].to(self.dtype), v[sel, :, i0 : i0 + r1 - r0].to(self.dtype)]
            if self.transforms is not None:
                srcs += list(self._mapped(*srcs))
            for d, x in zip(dsts, srcs):
                d[sel, :, r0:r1] = x
        self._sync_sinks()

    def _sync_sinks(self) -> None:
        """The host's sink counts (``_sfill``) to ``sink_len`` and the device's ``sink_lens``, and the code starts."""
        self.sink_len = max(self._sfill)
        self.sink_lens.copy_(torch.tensor(self._sfill, dtype=torch.int32))
        self._sync_code_from()

    def _sync_code_from(self) -> None:
        """Where attention starts reading each sequence's codes: after its padding and committed sinks, or at its first
        kept slot once its sinks are all committed (eviction); host events (commits, evictions) change it, steps don't."""
        pads = self._pad if self._pad is not None else [0] * self.batch_size
        delta = self.pq_pos - self.pq_len  # positions evicted so far: position p is at slot p - delta from pq_pos on
        first = [p + f - delta for p, f in zip(pads, self._sfill)]
        if self._cs is not None:
            S = self.config.sink_length
            first = [c if f >= S else x for x, c, f in zip(first, self._cs, self._sfill)]
        self.code_from.copy_(torch.tensor(first, dtype=torch.int32))

    # -- static decoding (one token per step, no host-dependent shapes or indices: CUDA-graph capturable) ------
    def begin_static(self) -> None:
        """Switch single-token steps to device-indexed window writes. Needs codes committed (``pq_len > 0``) and
        the sinks filled, so that every step hands attention a :class:`PQState`."""
        S = self.config.sink_length
        if not self.is_initialized or self.pq_len == 0:
            raise RuntimeError("static decoding needs a prefilled layer with committed codes (pq_len > 0)")
        # without padding, sinks and window go to the kernel as one block: rows [0, S + res_len) of the buffers
        fold = S > 0 and self.starts is None
        if fold and min(self._sfill) < S:
            raise RuntimeError(f"static decoding without padding starts needs the {S} sink(s) committed; "
                               f"{min(self._sfill)} are (pass the sequences' starts, or take eager steps first)")
        # the window row of the current step: each step first advances it (and the lengths), then writes there
        self._wpos = torch.full((1,), self.res_len - 1, dtype=torch.long, device=self.device)
        self.static = True
        self._fold = fold
        if self._fold:
            self._res_lens_s = self.res_lens + S
        # the device counters a static step advances before it writes; MillionCache.begin_static stacks those of
        # its layers so that the first layer advances every layer's at once (one launch each per step, not per layer)
        self._bump = [self._wpos, self.res_lens] + ([self._res_lens_s] if fold else [])
        self.layout_version += 1

    def end_static(self) -> None:
        self.static = self._fold = False

    def before_static_step(self) -> None:
        """Host side, before a static step: make room in the window for one token (commit the encoded block)."""
        if self.res_len + 1 > 2 * self.config.residual_length:
            self._commit_pending()

    def after_static_step(self) -> None:
        """Host side, after a static step (eager or replayed): mirror the device's window length, and start
        encoding the window's oldest block once it holds ``R`` tokens."""
        self.res_len += 1
        if not self.pending and self.res_len >= self.config.residual_length:
            self._launch_pending()

    def _views(self) -> None:
        S = self.config.sink_length
        kb, vb = self._bufs[:2]
        self.k_sink, self.v_sink, self.k_window, self.v_window = kb[:, :, :S], vb[:, :, :S], kb[:, :, S:], vb[:, :, S:]
        if self.transforms is not None:
            self.k_window_t, self.v_window_t = self._bufs[2][:, :, S:], self._bufs[3][:, :, S:]
        else:
            self.k_window_t = self.v_window_t = None

    def _windows(self) -> list[torch.Tensor]:
        return [self.k_window, self.v_window] + ([self.k_window_t, self.v_window_t] if self.transforms is not None else [])

    def _mapped(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``k @ A``, ``v @ B`` (the encode transforms) in float32, stored in the window's dtype."""
        kt, _, vt, _, _ = self.transforms
        return ops.head_map(k, kt, self.dtype), ops.head_map(v, vt, self.dtype)

    def _write_window(self, at: int, k: torch.Tensor, v: torch.Tensor) -> None:
        n = k.shape[2]
        if self.transforms is not None and n:  # the mapped rows and their untransformed copy, one launch for both
            kt, _, vt, _, _ = self.transforms
            sl = slice(at, at + n)
            ops.head_map_kv(k.to(self.dtype), v.to(self.dtype), kt, vt, self.k_window_t[:, :, sl],
                            self.v_window_t[:, :, sl], None, self.k_window[:, :, sl], self.v_window[:, :, sl])
            return
        self.k_window[:, :, at : at + n] = k
        self.v_window[:, :, at : at + n] = v

    def _append_static(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        if self.res_len + 1 > 2 * self.config.residual_length:
            raise RuntimeError("static step into a full window: call before_static_step() first")
        for t in self._bump:  # the step's row and lengths (every layer's, where the cache stacked them)
            t += 1
        if self.transforms is not None:  # row _wpos of the window, mapped and untransformed, one launch for both
            kt, _, vt, _, _ = self.transforms
            ops.head_map_kv(key_states, value_states, kt, vt, self.k_window_t, self.v_window_t, self._wpos,
                            self.k_window, self.v_window)
        else:
            self.k_window.index_copy_(2, self._wpos, key_states.to(self.dtype))
            self.v_window.index_copy_(2, self._wpos, value_states.to(self.dtype))

    def dequantize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-precision ``[B, H_kv, seq_len, D]`` reconstruction (for prefill chunks and inspection). After an
        eviction: the sinks, the kept code tokens and the window, ``[B, H_kv, S + kept + res_len, D]``, each sequence
        right-aligned (``kept`` its own count, the most kept by any; rows in front of its first sink are zeros, see
        :meth:`kept_first`)."""
        if self._evicted:
            S = self.sink_len
            kd, vd = self._decoded(min(self._cs), self.pq_len)  # sequence b's codes: the last pq_len - cs[b] rows
            k = torch.cat([self.k_sink[:, :, :S], kd, self.k_window[:, :, : self.res_len]], 2)
            v = torch.cat([self.v_sink[:, :, :S], vd, self.v_window[:, :, : self.res_len]], 2)
            for b, (e, s) in enumerate(zip(self._code_rows(), self._sfill)):
                if e - s:  # fewer kept codes (or committed sinks): its sinks move up to its codes, zeros in front
                    k[b, :, e - s : e], v[b, :, e - s : e] = self.k_sink[b, :, :s], self.v_sink[b, :, :s]
                    k[b, :, : e - s] = 0
                    v[b, :, : e - s] = 0
            return k, v
        kd, vd = self._decoded(0, self.pq_len)
        pads = self._pad if self._pad is not None else [0] * self.batch_size
        for b, (pad, s) in enumerate(zip(pads, self._sfill)):  # committed sinks are attended in full precision
            if s:
                kd[b, :, pad : pad + s] = self.k_sink[b, :, :s]
                vd[b, :, pad : pad + s] = self.v_sink[b, :, :s]
        k = torch.cat([kd, self.k_window[:, :, : self.res_len]], 2)
        v = torch.cat([vd, self.v_window[:, :, : self.res_len]], 2)
        return k, v

    def _code_rows(self) -> list[int]:
        """After an eviction: the row of :meth:`dequantize` where each sequence's kept codes begin (its committed sinks
        are the rows right before; a sequence still waiting for its first code, ``cs > pq_len``, has none)."""
        c0 = min(self._cs)
        return [self.sink_len + min(c, self.pq_len) - c0 for c in self._cs]

    def kept_first(self) -> list[int]:
        """After an eviction: each sequence's first valid row in :meth:`dequantize` (its committed sinks, kept codes and
        window are right-aligned behind as many rows as it keeps fewer codes than the sequence that keeps most; a
        sequence whose left padding still reaches into the window starts past that padding)."""
        pads = self._pad if self._pad is not None else [0] * self.batch_size
        return [e - s + max(p - self.pq_pos, 0) for e, s, p in zip(self._code_rows(), self._sfill, pads)]

    def dense_mask(self, q: int, kv: int) -> torch.Tensor | None:
        """The attention mask ``[B, 1, q, kv]`` (True = attend) of a ``q``-token step over what :meth:`update` handed
        it after an eviction, where sequences keep different counts (left padding): each row from its first kept
        row on, causal among the new tokens. None where the model's own mask lines up (no eviction, equal counts)."""
        if not self._evicted or len(set(self._cs)) == 1:
            return None
        first = torch.tensor(self.kept_first(), device=self.device)
        j = torch.arange(kv, device=self.device)
        causal = j[None, :] <= (kv - q + torch.arange(q, device=self.device))[:, None]  # [q, kv]
        return ((j[None, :] >= first[:, None])[:, None, None, :] & causal[None, None]).contiguous()

    def _decoded(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Code slots ``[a, b)`` decoded to the model's space, in the window's dtype."""
        if self.transforms is None:
            kd = ops.pq_decode(self.k_codes[:, :, a:b], self.k_centroids, self.dtype)
            vd = ops.pq_decode(self.v_codes[:, :, a:b], self.v_centroids, self.dtype)
        else:
            _, kti, _, vti, _ = self.transforms
            kd = ops.pq_decode(self.k_codes[:, :, a:b], self.k_centroids, torch.float32)
            vd = ops.pq_decode(self.v_codes[:, :, a:b], self.v_centroids, torch.float32)
            kd = torch.einsum("bhtd,hde->bhte", kd, kti).to(self.dtype)
            vd = torch.einsum("bhtd,hde->bhte", vd, vti).to(self.dtype)
        return kd, vd

    # -- the transformers entry point --------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized or key_states.shape[0] != self.batch_size:
            if self.is_initialized and self.get_seq_length():
                raise ValueError(f"this cache holds a batch of {self.batch_size} sequences; got a step of "
                                 f"{key_states.shape[0]}: use a new MillionCache (or reset() it) for another batch")
            self.lazy_initialization(key_states, value_states)  # (a reset, empty cache: buffers for the new batch size)
        q_len = key_states.shape[2]
        if self._defer:  # the last multi-token step's queries never reached observe_dense: evict without them
            self._defer = False
            self._evict()
        if q_len != 1:
            # prefill (or a multi-token chunk): full-precision attention, then encode
            self._score_queued()
            if self.pending and self.res_len + q_len > 2 * self.config.residual_length:
                # commit (and evict) the encoded block before this step attends, as a decode step at this position
                # would: chunks of C | R tokens then attend exactly what token-by-token decoding attends
                self._commit_pending()
            if self.evict is not None:
                self._defer = True  # evict again once this step's queries are scored (observe_dense)
            if self.get_seq_length() == 0:
                k_out, v_out = key_states, value_states
            else:
                k_past, v_past = self.dequantize()
                k_out = torch.cat([k_past, key_states.to(self.dtype)], 2)
                v_out = torch.cat([v_past, value_states.to(self.dtype)], 2)
            self.append(key_states, value_states)
            return k_out, v_out
        if self.static:
            self._append_static(key_states, value_states)
            return self._state()
        self.append(key_states, value_states)
        if self.pq_len == 0:
            # nothing committed to codes yet: plain full-precision attention, as DynamicCache
            return self.k_window[:, :, : self.res_len], self.v_window[:, :, : self.res_len]
        return self._state()

    def _state(self) -> tuple[PQState, PQState]:
        tr = self.transforms
        folded = {}
        if self._fold:  # sinks then window, in the codes' space with transforms (the mapped buffers)
            kb, vb = self._bufs[2:] if tr is not None else self._bufs[:2]
            folded = dict(k_folded=kb, v_folded=vb, folded_lens=self._res_lens_s)
        state = PQState(
            self.k_codes, self.v_codes, self.k_centroids, self.v_centroids, self.pq_lens, self.k_window, self.v_window,
            self.res_lens, self.k_sink, self.v_sink, self.sink_lens, self.config.sink_length,
            q_map=tr[4] if tr is not None else None, v_inverse=tr[3] if tr is not None else None, starts=self.starts,
            static=self.static, k_window_t=self.k_window_t, v_window_t=self.v_window_t, code_from=self.code_from, **folded,
        )
        if self.evict is not None:
            self._ensure_pad(None)
            state.code_starts, state.observer = self.code_starts, self
        return state, state

    # -- eviction (caches made with an Eviction) --------------------------------------------------------------
    def _ensure_pad(self, attention_mask, key: torch.Tensor | None = None, value: torch.Tensor | None = None) -> None:
        """Learn each sequence's left padding (once, from the first step's mask) and the first code slots. ``key``,
        ``value``: the full-precision K/V that first step attended (positions ``[0, n)``): the sinks committed before
        the padding was known (taken as none) are copied again from there."""
        if self._pad is not None:
            return
        B = self.batch_size
        if self.starts is not None:
            pad = self.starts.to(torch.int32)
        elif attention_mask is not None:
            from .attention import _starts_from_mask

            pad = _starts_from_mask(attention_mask, B, self.device)
        else:
            pad = torch.zeros(B, dtype=torch.int32, device=self.device)
        self._pad_t.copy_(pad)
        self._pad = [int(x) for x in pad.tolist()]
        S = self.config.sink_length
        if self.evict is not None:  # code positions start after each sequence's padding and sinks
            self._cs = [p + S for p in self._pad]
            self.code_starts.copy_(torch.tensor(self._cs, dtype=torch.int32))
        redo = [b for b, p in enumerate(self._pad) if p and self._sfill[b]]
        if redo:
            if key is None or key.shape[2] < self.pq_pos:
                raise RuntimeError("the left padding was learnt after sinks were committed, without their keys")
            for b in redo:
                self._sfill[b] = 0
            self._commit_sinks(key[:, :, : self.pq_pos], value[:, :, : self.pq_pos], 0)
            # the counts on the device too: where a sequence's padding reaches past the committed codes there is
            # nothing to copy, and _commit_sinks returns before it syncs them (its stale row 0 was a pad token)
            self._sync_sinks()
        else:
            self._sync_code_from()

    def observe_dense(self, query: torch.Tensor, key: torch.Tensor, attention_mask, scaling, lse=None) -> None:
        """Add the attention of a full-precision step's queries ``[B, H_q, C, D]`` over the keys it was handed
        (``[B, H_kv, kv, D]``, what :meth:`update` returned) to the tokens' scores, then evict. The step is causal with
        the queries as the last ``C`` keys and the left padding learnt at the first step (the mask only teaches that).
        ``lse [B, H_q, C]``: the queries' log-sum-exp if the attention already computed it."""
        self._ensure_pad(attention_mask)
        C, D = query.shape[2], query.shape[3]
        kv = key.shape[2]
        scale = D**-0.5 if scaling is None else float(scaling)
        self._scale = scale
        # causal queries (the last C keys) with left padding: what MillionCache's multi-token steps are handed; with an
        # observation window only the last `observe` of them count
        w = self.evict.observe
        if w is not None and w < C:
            query, lse = query[:, :, C - w :], None if lse is None else lse[:, :, C - w :]
        pad = self._pad_t
        if self._evicted and len(set(self._cs)) > 1:  # rows right-aligned (dequantize): each from its first kept row
            pad = torch.tensor(self.kept_first(), dtype=torch.int32, device=self.device)
        tok = ops.attention_column_sums(query, key, pad, scale, lse)
        # the keys' last (codes after c + window) entries are, in order, code slots [c, pq_len) and the window (a
        # sequence that keeps fewer codes adds its sinks' and zeros' sums to slots before its own first: never read)
        c = min(self._cs) if self._evicted else 0
        n_c = self.pq_len - c
        tail = tok[:, :, kv - n_c - self.res_len :]
        self.score[:, :, c : self.pq_len] += tail[:, :, :n_c]
        self._wscore[:, :, : self.res_len] += tail[:, :, n_c:]
        self._scored = self.res_len
        if self._defer:
            self._defer = False
            self._evict()

    def observe_step(self, q: torch.Tensor, lse: torch.Tensor, scaling) -> None:
        """Keep a decode step's query ``[B, H_q, D]`` and its log-sum-exp ``[B, H_q]`` by window slot; they are
        turned into scores when the next block is committed (device-indexed in static mode: capturable)."""
        B, Hq, D = q.shape
        self._scale = D**-0.5 if scaling is None else float(scaling)
        if self._qbuf is None:
            W = self._wscore.shape[2]
            self._qbuf = torch.zeros(B, Hq, W, D, dtype=q.dtype, device=q.device)
            self._lbuf = torch.zeros(B, Hq, W, dtype=torch.float32, device=q.device)
        if self.static:  # the step's window row
            self._qbuf.index_copy_(2, self._wpos, q.unsqueeze(2).to(self._qbuf.dtype))
            self._lbuf.index_copy_(2, self._wpos, lse.unsqueeze(2).float())
        else:
            j = self.res_len - 1
            self._qbuf[:, :, j] = q
            self._lbuf[:, :, j] = lse.float()

    def _score_queued(self) -> None:
        """Add the attention of the decode steps kept by :meth:`observe_step` (window slots ``[scored, res_len)``)
        to the scores of the code slots and window slots they saw: ``p = exp(scale q.k - lse)``."""
        if self.evict is not None:
            _score_queued_all([self])

    def _evict(self) -> None:
        """Keep, per sequence and head, at most ``Eviction.budget`` of the code positions seen: the most recent
        share and the highest (friendliness-discounted) scores; packed at the end of ``[0, pq_len)``."""
        _evict_all([self])

    def _first_and_budgets(self, pos: int) -> tuple[list[int], list[int]]:
        """Each sequence's first code-eligible position (after its padding and the sinks) and its code budget when
        ``pos`` code positions have been committed."""
        pad = self._pad if self._pad is not None else [0] * self.batch_size
        first = [p + self.config.sink_length for p in pad]
        return first, [self.evict.budget(pos - f) for f in first]

    def reset(self) -> None:
        if self.is_initialized:
            if self._event is not None:
                torch.cuda.current_stream(self.device).wait_event(self._event)
                self._event = None
            self.pq_len = self.pq_pos = self.res_len = self.sink_len = self._scored = 0
            self._evicted = self._defer = False
            self._pad = self._cs = None
            self._sfill = [0] * self.batch_size
            if self.evict is not None:
                self.score.zero_()
                self._wscore.zero_()
            self.pending = False
            self.static = self._fold = False
            self.starts = None
            self.pq_lens.zero_()
            self.res_lens.zero_()
            self.sink_lens.zero_()
            self.code_from.zero_()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.batch_select_indices(beam_idx)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if not self.is_initialized:
            return
        if self._event is not None:
            torch.cuda.current_stream(self.device).wait_event(self._event)
            self._event = None
        idx = indices.to(self.device)
        names = ["k_codes", "v_codes", "pq_lens", "res_lens", "sink_lens", "_pad_t", "code_from"]
        sel = [int(i) for i in idx.tolist()]
        self._sfill = [self._sfill[i] for i in sel]
        if self._pad is not None:
            self._pad = [self._pad[i] for i in sel]
        if self.evict is not None:
            names += ["score", "err", "_wscore", "code_starts"] + (["_qbuf", "_lbuf"] if self._qbuf is not None else [])
            if self._cs is not None:
                self._cs = [self._cs[i] for i in sel]
        for name in names:
            setattr(self, name, getattr(self, name).index_select(0, idx))
        self._bufs = [b.index_select(0, idx) for b in self._bufs]
        self._views()
        self.static = self._fold = False
        if self.starts is not None:
            self.starts = self.starts.index_select(0, idx)
        self.batch_size = int(idx.numel())
        self.layout_version += 1

    def batch_repeat_interleave(self, repeats: int) -> None:
        if not self.is_initialized:
            return
        self.batch_select_indices(torch.arange(self.batch_size, device=self.device).repeat_interleave(repeats))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("MillionCache cannot be cropped: quantized tokens cannot be un-quantized")

    def offload(self):
        raise NotImplementedError("MillionCache does not support offloading")

    def prefetch(self):
        pass

    def kv_bytes(self) -> int:
        """Bytes held now: committed codes of all tokens plus the full-precision window."""
        if not self.is_initialized:
            return 0
        B, H = self.batch_size, self.num_heads
        code_b = self.k_codes.element_size() * self.config.M
        fp_tokens = self.res_len + self.sink_len
        n = 2 * B * H * (self.pq_len * code_b + fp_tokens * self.config.head_dim * self.k_window.element_size())
        if self.evict is not None:  # per kept token and head: its float32 score and fp16 quantization error
            n += B * H * self.pq_len * (self.score.element_size() + self.err.element_size())
        return n


class MillionCache(Cache):
    """A product-quantized KV cache to pass as ``cache`` (``past_key_values`` before transformers 5.24).

    Parameters
    ----------
    codebooks : Codebooks (from :func:`million.calibrate` or ``Codebooks.load``)
    config : the model's HF config (``model.config``); checked against the codebooks. The model
        must run with ``attn_implementation="million"``.
    max_cache_len : preallocate codes for this many tokens (static layout); default grows by doubling.
    evict : an :class:`~million.config.Eviction` to keep only part of the code tokens (heavy hitters by
        accumulated attention plus the most recent ones); default keeps every token.

    Example
    -------
    >>> model.set_attn_implementation("million")  # after million.register()
    >>> cache = MillionCache(codebooks, model.config)
    >>> model.generate(**inputs, cache=cache, max_new_tokens=64)
    """

    def __init__(self, codebooks: Codebooks, config, max_cache_len: int | None = None, evict: Eviction | None = None):
        codebooks.check_model(config)
        if evict is not None and not isinstance(evict, Eviction):
            raise ValueError(f"evict must be a million.Eviction or None, got {type(evict).__name__}")
        self.evict = evict
        impl = getattr(config, "_attn_implementation", None)
        if impl != "million":
            raise ValueError(
                f"MillionCache needs the model's attention implementation 'million', got {impl!r}: call "
                "million.register() and model.set_attn_implementation('million') (or load the model with "
                "attn_implementation='million')"
            )
        n = config.num_hidden_layers
        if codebooks.key_centroids.shape[0] not in (1, n):
            raise ValueError(f"codebooks hold {codebooks.key_centroids.shape[0]} layers, the model has {n}")
        self.codebooks = codebooks
        cal = codebooks.calibration or {}
        # post-RoPE codebooks only saw key positions below the calibration window
        self.calibrated_positions = None if cal.get("pre_rope") else cal.get("window")
        self._warned_positions = False
        layers = []
        placed = codebooks.__dict__.setdefault("_placed", {})  # device copies kept with the codebooks (see MillionLayer._placed)
        for i in range(n):
            kc, vc = codebooks.for_layer(i)
            layers.append(MillionLayer(codebooks.config, kc, vc, max_cache_len, codebooks.transforms_for_layer(i), placed, evict))
        super().__init__(layers=layers)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        out = super().update(key_states, value_states, layer_idx, *args, **kwargs)
        layer = self.layers[layer_idx]
        if not isinstance(out[0], PQState) and (self.evict is not None or (layer._pad is None and layer.config.sink_length)):
            # a full-precision step: the attention function hands this layer the step's mask (its left padding: where
            # each sequence's sinks are) and, with eviction, the step's queries (observe_dense)
            from .attention import _observer

            _observer.set(layer, layer_idx)
        w = self.calibrated_positions
        if layer_idx == 0 and w and not self._warned_positions and self.layers[0].get_seq_length() > w:
            import warnings

            self._warned_positions = True
            warnings.warn(
                f"the sequence passed {w} tokens, the window the codebooks were calibrated on: post-RoPE keys at "
                f"later positions were never seen by k-means and quantize worse (retrieval can fail); calibrate "
                f"with --window at least the longest context you serve", stacklevel=2)
        return out

    def kv_bytes(self) -> int:
        """Bytes of K/V held now (codes and full-precision windows, with eviction the kept tokens' scores;
        codebooks not counted)."""
        return sum(layer.kv_bytes() for layer in self.layers)

    def bits_per_element(self) -> float:
        """Bits held now per K/V element of the positions seen (:meth:`kv_bytes` over ``2 * B * H_kv * D`` per
        position and layer; 16 for an fp16 cache, less with codes, lower still with eviction)."""
        elems = sum(2 * l.batch_size * l.num_heads * l.config.head_dim * l.get_seq_length()
                    for l in self.layers if getattr(l, "is_initialized", False))
        return 8.0 * self.kv_bytes() / elems if elems else 0.0

    # -- static decoding: what million.decode drives (one token per step, CUDA-graph capturable) ------------------
    def static_ready(self) -> bool:
        """Whether every layer can take static steps: prefilled, codes committed, and its sinks committed unless some
        sequence is left-padded (then the sinks are attended apart, filled as their positions are committed)."""
        return all(getattr(l, "is_initialized", False) and l.pq_len > 0
                   and (min(l._sfill) >= l.config.sink_length or any(l._pad or ())) for l in self.layers)

    def begin_static(self, starts: torch.Tensor | None = None) -> None:
        """Switch single-token steps to device-indexed window writes (no host-dependent shapes), so that a
        step can be captured in a CUDA graph and replayed. ``starts`` (``[B]``): each sequence's first valid
        position (left padding), which static steps read instead of an attention mask (pass none to them).
        The host side of each step is :meth:`before_static_step` / :meth:`after_static_step`."""
        for l in self.layers:
            l.starts = None if starts is None else starts.to(device=l.device, dtype=torch.int32).contiguous()
            l.begin_static()
        self._stack_step_counters()

    def _stack_step_counters(self) -> None:
        """Each layer's step counters (window row, window lengths, sinks-and-window lengths) become rows of one
        tensor per counter, advanced by the first layer for all: a static step then launches 2-3 tiny adds instead
        of 2-3 per layer. Only where the layers move in lockstep (equal window lengths, one device and batch)."""
        ls = self.layers
        if len(ls) < 2 or len({(l.res_len, l._fold, l.device, l.batch_size) for l in ls}) != 1:
            return
        stacks = [torch.stack([l._bump[j] for l in ls]) for j in range(len(ls[0]._bump))]
        for i, l in enumerate(ls):
            l._wpos, l.res_lens = stacks[0][i], stacks[1][i]
            if l._fold:
                l._res_lens_s = stacks[2][i]
            l._bump = stacks if i == 0 else []

    def end_static(self) -> None:
        for l in self.layers:
            l.end_static()

    def before_static_step(self) -> None:
        ls = self.layers
        R = ls[0].config.residual_length if ls else 0
        if (self.evict is not None and len(ls) > 1 and all(l.res_len + 1 > 2 * R for l in ls)
                and len({(l.pq_len, l.pq_pos, l.res_len, l._scored, tuple(l._cs or ())) for l in ls}) == 1
                and len({(l.k_codes.shape, l.k_codes.dtype, l.k_centroids.shape, l.dtype) for l in ls}) == 1):
            self._commit_all()  # the layers move in lockstep: score and evict all of them at once
            return
        for l in ls:
            l.before_static_step()

    # -- eviction of all layers at once (static steps: the layers' lengths and budgets are equal) -------------------
    def _commit_all(self) -> None:
        """What every layer's ``_commit_pending`` does, with the scoring and the eviction batched over the layers
        (a few kernels per group of layers instead of a few dozen per layer)."""
        ls = self.layers
        _score_queued_all(ls)
        for l in ls:
            l._commit_pending(evict=False)  # the eviction follows for all layers at once
        _evict_all(ls)

    def after_static_step(self) -> None:
        for l in self.layers:
            l.after_static_step()

    def reserve(self, tokens: int) -> None:
        """Grow the code buffers now so that ``tokens`` tokens fit without reallocation (a captured graph keeps
        the buffers' addresses)."""
        for l in self.layers:
            if getattr(l, "is_initialized", False):
                l._ensure_capacity(tokens)

    @property
    def layout_version(self) -> int:
        """Changes whenever a buffer that a captured decode step reads was reallocated."""
        return sum(getattr(l, "layout_version", 0) for l in self.layers)


def fp16_bytes_per_token(config) -> int:
    """Bytes one token's K and V take in an fp16 cache."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    H = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * H * head_dim * 2


def pq_bytes_per_token(config, pq: PQConfig) -> float:
    """Bytes one token's K and V codes take (codebooks and the full-precision window not counted)."""
    H = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * H * pq.M * (1 if pq.nbits <= 8 else 2)


def _score_queued_all(ls: list) -> None:
    """Score the queued decode queries of layers in lockstep (same lengths, code starts and scored slots; one layer
    for ``MillionLayer._score_queued``): per layer one :func:`million.ops.attention_column_sums_coded` call over its
    codes and window with the queries' own log-sum-exp (on CUDA one Triton launch that reads the codes, nothing
    decoded to memory and nothing of size queries x keys)."""
    l0 = ls[0]
    j0, j1 = l0._scored, l0.res_len
    for l in ls:
        l._scored = j1
    if j1 <= j0 or any(l._qbuf is None for l in ls):
        return
    B, Hq, _, D = l0._qbuf.shape
    H, P, dev = l0.num_heads, l0.pq_len, l0._qbuf.device
    G, n = Hq // H, j1 - j0
    cdt = l0.dtype if dev.type == "cuda" else torch.float32
    # query i sits at key index P + j0 + i: it saw every code slot from the sequence's first code slot on and the
    # window slots up to its own, which is the causal rule of the column sums with the code starts as padding
    mapped = None
    if l0.transforms is not None:  # codes' space: q @ q_map per layer and head, all layers in one einsum
        qs = torch.stack([l._qbuf[:, :, j0:j1] for l in ls]).float().view(len(ls), B, H, G, n, D)
        mapped = torch.einsum("lbhgnd,lhde->lbhgne", qs, torch.stack([l.transforms[4] for l in ls]))
        mapped = mapped.reshape(len(ls), B, Hq, n, D)
    for i, l in enumerate(ls):
        q = (l._qbuf[:, :, j0:j1] if mapped is None else mapped[i]).to(cdt)
        win = l.k_window_t if l.transforms is not None else l.k_window
        tok = ops.attention_column_sums_coded(q, l.k_codes[:, :, :P], l.k_centroids, win[:, :, :j1], l.code_starts,
                                              l._scale, l._lbuf[:, :, j0:j1])
        l.score[:, :, :P] += tok[:, :, :P]
        l._wscore[:, :, :j1] += tok[:, :, P:]


def _evict_all(ls: list) -> None:
    """Evict in layers in lockstep (one layer for ``MillionLayer._evict``): one selection (``topk``) for all of
    them, then each layer's codes, scores and errors packed."""
    l0 = ls[0]
    ev = l0.evict
    if ev is None or l0.pq_len == 0:
        return
    for l in ls:
        l._ensure_pad(None)
    first, budgets = l0._first_and_budgets(l0.pq_pos)
    # a sequence whose padding and sinks still reach past the committed positions (a short prompt in a left-padded
    # batch) has no code to keep yet: the others evict, it keeps none, and its first slot moves with the packing
    ready = [f <= l0.pq_pos for f in first]
    if not any(ready):
        return
    lens = [l0.pq_len - c if r else 0 for c, r in zip(l0._cs, ready)]
    if all(k <= b for k, b, r in zip(lens, budgets, ready) if r):
        return
    for l in ls:
        if l._event is not None:
            torch.cuda.current_stream(l.device).wait_event(l._event)
    B, H, dev, L = l0.batch_size, l0.num_heads, l0.device, len(ls)
    rows = []
    for b in range(B):
        K, bud = lens[b], budgets[b]
        if not ready[b]:
            rows.append(torch.empty(L, H, 0, dtype=torch.long, device=dev))
            continue
        slots = torch.arange(l0._cs[b], l0.pq_len, device=dev)
        if K <= bud:
            rows.append(slots.expand(L, H, K))
            continue
        n_recent = min(bud, int(ev.recent * bud))
        old = slots[: K - n_recent]
        sc = torch.stack([l.score[b][:, old] for l in ls])  # [L, H, n_old]
        if ev.friendliness:
            e = torch.stack([l.err[b][:, old] for l in ls]).float()
            sc = sc / (1 + e / e.mean(-1, keepdim=True).clamp_min(1e-12))
        heavy = old[ev.heavy(sc, bud - n_recent)]
        rows.append(torch.cat([heavy, slots[K - n_recent :].expand(L, H, n_recent)], -1))
    new_len = max(r.shape[-1] for r in rows)
    idx = torch.stack([torch.cat([r.new_zeros(L, H, new_len - r.shape[-1]), r], -1) for r in rows], 1)  # [L, B, H, n]
    old_len = l0.pq_len
    # every position from pq_pos on lands at slot (position - delta): a waiting sequence's first code slot is there
    delta = l0.pq_pos - new_len
    cs = [new_len - r.shape[-1] if ok else f - delta for r, ok, f in zip(rows, ready, first)]
    R = l0.config.residual_length
    for i, l in enumerate(ls):
        for t in (l.k_codes, l.v_codes):
            t[:, :, :new_len] = t.gather(2, idx[i][..., None].expand(-1, -1, -1, t.shape[-1]))
        for t in (l.score, l.err):
            t[:, :, :new_len] = t.gather(2, idx[i])
        if l.pending:
            for t in (l.k_codes, l.v_codes, l.score, l.err):
                t[:, :, new_len : new_len + R] = t[:, :, old_len : old_len + R].clone()
        l._cs = list(cs)
        if len(set(cs)) == 1:
            l.code_starts.fill_(cs[0])
        else:
            l.code_starts.copy_(torch.tensor(cs, dtype=torch.int32))
        l.pq_len = new_len
        l.pq_lens.fill_(new_len)
        l._evicted = True
        l._sync_code_from()  # (after pq_len: a waiting sequence's start is its position less the slots evicted)
