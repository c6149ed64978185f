"""Decoding with the step captured in a CUDA graph.

Eager transformers spends most of a single-token decode step on the host (Python, hundreds of small
kernel launches per layer), so a faster attention barely shows end to end (``docs/e2e.md``). This module
runs the decode loop with the whole step -- embedding, every layer, attention on the PQ codes, the LM
head -- recorded once into a CUDA graph and replayed, for

- :class:`~million.cache.MillionCache` in its static mode (:meth:`~million.cache.MillionCache.begin_static`):
  the new token is written into the full-precision window at a device-held index, lengths live in device
  tensors, and the host work that must happen between steps (committing an encoded block, starting the
  next block's encoding on the side stream, every ``R`` steps) runs outside the graph;
- transformers' ``StaticCache`` (fp16 baseline: the same loop, the same graph capture).

On the CPU (or with ``graph=False``) the same static steps run eagerly, which is how the tests check them
against ``model.generate``.

    >>> out = million.generate(model, MillionCache(codebooks, model.config), input_ids, max_new_tokens=64)
"""

from __future__ import annotations

import torch

from .compat import cache_arg

__all__ = ["Decoder", "generate"]


def _cache_kind(cache) -> str:
    from .cache import MillionCache

    if isinstance(cache, MillionCache):
        return "million"
    try:
        from transformers import StaticCache
    except ImportError:  # pragma: no cover
        StaticCache = ()
    if isinstance(cache, StaticCache):
        return "static"
    raise ValueError(f"million.decode runs MillionCache or transformers' StaticCache, got {type(cache).__name__}")


class Decoder:
    """Prefill once, then one token per :meth:`step`, replaying a captured CUDA graph of the step.

    Parameters
    ----------
    model : a causal LM (LLaMA / Qwen2 / Mistral family); for MillionCache with ``attn_implementation="million"``.
    cache : a fresh :class:`~million.cache.MillionCache` or ``transformers.StaticCache``.
    graph : capture the step in a CUDA graph (default: when the model is on a CUDA device).
    warmup : eager steps before the capture (they also initialize libraries on the capture stream).
    """

    def __init__(self, model, cache, graph: bool | None = None, warmup: int = 2):
        self.kind = _cache_kind(cache)
        self.model, self.cache = model, cache
        self.device = next(model.parameters()).device
        if graph is None:
            graph = self.device.type == "cuda"
        if graph and self.device.type != "cuda":
            raise ValueError(f"graph=True needs the model on a CUDA device, it is on {self.device}")
        if not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup={warmup!r}: expected an integer >= 1")
        self.graph, self.warmup = bool(graph), warmup
        self._graph = None
        self._layout = None
        self._static_steps = 0
        self._stream = None
        self._pool = None
        self.prefilled = False

    # -- prefill -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                max_new_tokens: int | None = None) -> torch.Tensor:
        """Run the prompt ``[B, T]`` (left-padded when ``attention_mask`` has zeros) through the model in one
        forward. Returns the float32 logits of the last position ``[B, V]``. ``max_new_tokens`` reserves room
        for that many steps (MillionCache: code buffers grown now, so the graph never sees a reallocation;
        StaticCache: checked against its ``max_cache_len``)."""
        if self.prefilled:
            raise RuntimeError("this Decoder was already prefilled: make a new Decoder (and cache) for a new prompt")
        if input_ids.dim() != 2 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [batch, tokens] with at least one token, got shape {tuple(input_ids.shape)}")
        held = self.cache.get_seq_length()
        if held:  # a prompt appended to another sequence's tokens, its positions from 0: a silently wrong answer
            raise ValueError(f"the cache already holds {held} tokens of an earlier sequence: pass a new cache, or call "
                             f"cache.reset() first")
        ids = input_ids.to(self.device)
        B, T = ids.shape
        am = None
        if attention_mask is not None:
            if tuple(attention_mask.shape) != (B, T):
                raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} != input_ids shape {(B, T)}")
            am = attention_mask.to(self.device).long()
            if bool((am.sum(-1) == 0).any()):
                raise ValueError("attention_mask has a row with no valid token")
            if bool(am.all()):
                am = None
        if am is None:
            pos = torch.arange(T, device=self.device).expand(B, T)
        else:  # as transformers' generate: positions count the valid tokens, padding gets position 1
            pos = (am.cumsum(-1) - 1).masked_fill(am == 0, 1)
        if self.kind == "static":
            cap = self.cache.layers[0].max_cache_len
            need = T + (max_new_tokens or 0)
            if need > cap:
                raise ValueError(f"prompt {T} + {max_new_tokens or 0} new tokens do not fit the StaticCache's max_cache_len={cap}")
        out = self.model(input_ids=ids, attention_mask=am, position_ids=pos, use_cache=True, logits_to_keep=1,
                         **cache_arg(self.model, self.cache))
        if self.kind == "million" and max_new_tokens:
            self.cache.reserve(T + max_new_tokens)
        self.B, self.T = B, T
        self.tok = torch.zeros(B, 1, dtype=torch.long, device=self.device)
        self.pos = pos[:, -1:].clone() + 1
        self.am = am  # MillionCache steps before static mode still take a growing 2-D mask
        self.starts = None if am is None else am.argmax(-1).to(torch.int32)
        if self.kind == "static" and am is not None:
            # a fixed-size 2-D mask over the whole cache; each step sets its own column on the device
            self.mask = torch.zeros(B, self.cache.layers[0].max_cache_len, dtype=torch.long, device=self.device)
            self.mask[:, :T] = am
        else:
            self.mask = None
        self.col = torch.full((1,), T, dtype=torch.long, device=self.device)
        self.prefilled = True
        return out.logits[:, -1].float()

    # -- steps -------------------------------------------------------------------------------------------
    def _forward(self, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """One step on the static buffers (``tok``, ``pos``, ``mask``): only device work, so it can be captured.
        ``attention_mask``: for the eager steps before static mode (a growing 2-D mask)."""
        if self.mask is not None:
            self.mask.index_fill_(1, self.col, 1)
            attention_mask = self.mask
        out = self.model(input_ids=self.tok, attention_mask=attention_mask, position_ids=self.pos, use_cache=True,
                         **cache_arg(self.model, self.cache))
        self.pos += 1
        self.col += 1
        return out.logits[:, -1].float()

    def _static(self) -> bool:
        if self.kind == "static":
            return True
        if not self.cache.layers[0].static:
            if not self.cache.static_ready():
                return False
            self.cache.begin_static(self.starts)
        return True

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per sequence (``[B]`` or ``[B, 1]``); returns the next float32 logits ``[B, V]``."""
        if not self.prefilled:
            raise RuntimeError("call prefill() before step()")
        tokens = tokens.reshape(-1, 1)
        if tokens.shape[0] != self.B:
            raise ValueError(f"step() got {tokens.shape[0]} tokens for a batch of {self.B}")
        self.tok.copy_(tokens)
        if not self._static():
            # MillionCache before its first committed block: an ordinary eager step with a growing mask
            if self.am is not None:
                self.am = torch.cat([self.am, torch.ones(self.B, 1, dtype=self.am.dtype, device=self.device)], 1)
            return self._forward(self.am)
        if self.kind == "million":
            self.cache.before_static_step()
        if not self.graph:
            logits = self._forward()
        else:
            layout = self.cache.layout_version if self.kind == "million" else 0
            if self._graph is not None and layout != self._layout:
                self._drop_graph()  # a buffer moved: capture again
            if self._stream is None:
                self._stream = torch.cuda.Stream(device=self.device)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            if self._graph is None and self._static_steps < self.warmup:
                # warm-up on the capture stream: real steps, eager
                self._stream.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(self._stream):
                    logits = self._forward()
                torch.cuda.current_stream(self.device).wait_stream(self._stream)
            else:
                if self._graph is None:
                    g = torch.cuda.CUDAGraph()
                    self._stream.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.graph(g, pool=self._pool, stream=self._stream):
                        self._out = self._forward()
                    torch.cuda.current_stream(self.device).wait_stream(self._stream)
                    self._graph, self._layout = g, layout
                self._graph.replay()
                logits = self._out.clone()
        self._static_steps += 1
        if self.kind == "million":
            self.cache.after_static_step()
        return logits

    def _drop_graph(self) -> None:
        """Forget the captured graph, its output and its memory pool: the next capture takes a new pool (torch
        refuses a capture into a pool that no live graph uses while blocks of it are still held)."""
        self._graph = self._out = self._pool = None

    def finish(self) -> None:
        """Drop the captured graph and return a MillionCache to its ordinary mode (so that it can take a multi-token
        forward or ``model.generate`` steps again)."""
        self._drop_graph()
        if self.kind == "million" and self.cache.layers and self.cache.layers[0].static:
            self.cache.end_static()


def _pick(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None,
          generator) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), -1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        srt, idx = logits.sort(-1, descending=True)
        cum = srt.softmax(-1).cumsum(-1)
        drop = cum - srt.softmax(-1) > top_p  # keep the smallest prefix whose mass reaches top_p
        logits = logits.scatter(-1, idx, srt.masked_fill(drop, float("-inf")))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, cache, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32,
             eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             generator: torch.Generator | None = None, graph: bool | None = None) -> torch.Tensor:
    """Greedy (or sampled) generation with :class:`Decoder`: the decode step replays a CUDA graph on a GPU.

    Returns ``[B, T + n]`` token ids (the prompt, then up to ``max_new_tokens`` new tokens; sequences that
    finished early are filled with ``pad_token_id``, default the EOS id), as ``model.generate`` does.
    ``cache`` is a fresh :class:`~million.cache.MillionCache` or ``transformers.StaticCache``; a MillionCache is
    back in its ordinary mode afterwards (it holds the prompt and the new tokens but the last one)."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: expected an integer >= 1")
    if do_sample:
        if not temperature > 0:
            raise ValueError(f"temperature={temperature!r}: expected > 0")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k={top_k!r}: expected an integer >= 1")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p={top_p!r}: expected a value in (0, 1]")
    eos = [] if eos_token_id is None else ([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id))
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    dec = Decoder(model, cache, graph=graph)
    logits = dec.prefill(input_ids, attention_mask, max_new_tokens)
    dev = logits.device
    eos_t = torch.tensor(eos, device=dev, dtype=torch.long)
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=dev)
    new = []
    for i in range(max_new_tokens):
        nxt = _pick(logits, do_sample, temperature, top_k, top_p, generator)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        new.append(nxt)
        if len(eos):
            done |= torch.isin(nxt, eos_t)
            if bool(done.all()):
                break
        if i + 1 < max_new_tokens:
            logits = dec.step(nxt)
    dec.finish()
    return torch.cat([input_ids.to(dev), torch.stack(new, 1)], 1)
