"""Needle in a haystack on the Paul Graham essays.

A sentence ``The special magic number is: NNNNNNN.`` is inserted at a sentence boundary at a
given depth (0 = start, 1 = end) of essay text cut so that the whole prompt is ``context``
tokens; a question follows; the model greedily decodes a few tokens and the case counts as
correct if the first run of digits in the answer equals the number. The magic number depends only
on (context, depth, seed), so every method sees the same prompts.
"""

from __future__ import annotations

import random
import re
import time

import torch

from .runners import Runner

NEEDLE = " The special magic number is: {n}. "
QUESTION = "\n\nQuestion: What is the special magic number mentioned in the text above?\nAnswer: The special magic number is:"
DEFAULT_CONTEXTS = (1024, 2048, 4096, 8192)
DEFAULT_DEPTHS = (0.1, 0.5, 0.9)


def magic_number(context: int, depth: float, seed: int = 0) -> str:
    return str(random.Random(f"{seed}-{context}-{depth:.4f}").randint(1_000_000, 9_999_999))


def build_prompt(tokenizer, hay_ids: torch.Tensor, context: int, depth: float, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Prompt ``[1, context]`` token ids and the expected number.

    ``hay_ids [N]``: tokenized haystack (essays). The needle goes after the sentence end nearest
    below ``depth`` of the haystack part.
    """
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth {depth} is outside [0, 1]")
    num = magic_number(context, depth, seed)
    enc = lambda s: tokenizer(s, return_tensors="pt", add_special_tokens=False).input_ids[0]  # noqa: E731
    needle, question = enc(NEEDLE.format(n=num)), enc(QUESTION)
    h = context - needle.numel() - question.numel()
    if h < 16:
        raise ValueError(f"context {context} is too short for the needle and the question")
    if hay_ids.numel() < h:
        raise ValueError(f"haystack has {hay_ids.numel()} tokens; context {context} needs {h}")
    hay = hay_ids[:h]
    at = int(round(depth * h))
    # back off to just after a token that ends a sentence (up to 200 tokens)
    for j in range(at, max(0, at - 200), -1):
        if j == 0 or j == h:
            at = j
            break
        if tokenizer.decode(hay[j - 1 : j]).rstrip().endswith((".", "!", "?")):
            at = j
            break
    ids = torch.cat([hay[:at], needle, hay[at:], question])
    return ids[None], num


def first_number(text: str) -> str | None:
    m = re.search(r"\d+", text.replace(",", ""))
    return m.group(0) if m else None


def needle_eval(model, tokenizer, method, hay_ids: torch.Tensor, contexts=DEFAULT_CONTEXTS, depths=DEFAULT_DEPTHS,
                protocol: str = "all-quantized", max_new_tokens: int = 10, seed: int = 0, progress=None,
                runner=None) -> dict:
    """Accuracy of ``method`` (fitted) at every context and depth.

    ``runner``: decode with this object's ``greedy(ids, n, eos_token_id)`` instead of the method's own
    runner (e.g. :class:`~million.eval.runners.CacheRunner` around the real MillionCache).

    Returns ``{"cases": [...], "accuracy": float, "accuracy_by_context": {ctx: acc}, ...}``.
    """
    if runner is None:
        runner = method.make_runner(model, protocol) if hasattr(method, "make_runner") else Runner(model, method, protocol)
    dev = next(model.parameters()).device
    cases = []
    t0 = time.time()
    for c in contexts:
        for d in depths:
            ids, num = build_prompt(tokenizer, hay_ids, c, d, seed)
            t = time.time()
            new = runner.greedy(ids.to(dev), max_new_tokens, eos_token_id=tokenizer.eos_token_id)
            ans = tokenizer.decode(new, skip_special_tokens=True)
            got = first_number(ans)
            cases.append({"context": c, "depth": d, "expected": num, "answer": ans, "correct": got == num,
                          "seconds": time.time() - t})
            if progress is not None:
                progress(cases[-1])
    by_ctx = {str(c): sum(x["correct"] for x in cases if x["context"] == c) / len(depths) for c in contexts}
    by_depth = {str(d): sum(x["correct"] for x in cases if x["depth"] == d) / len(contexts) for d in depths}
    return {
        "method": method.name,
        "label": method.label,
        "bits": method.bits,
        "protocol": protocol,
        "contexts": list(contexts),
        "depths": list(depths),
        "accuracy": sum(x["correct"] for x in cases) / len(cases),
        "accuracy_by_context": by_ctx,
        "accuracy_by_depth": by_depth,
        "cases": cases,
        "seconds": time.time() - t0,
        "method_details": method.describe(),
    }
