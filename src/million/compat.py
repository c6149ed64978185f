"""How to hand a cache to a transformers model, across transformers 5.x.

transformers renamed the ``past_key_values`` argument of ``forward`` and ``generate`` to ``cache``
(5.24, with a FutureWarning on the old name). :func:`cache_arg` returns the keyword that the
installed transformers and the given model take, so million passes its cache without warnings on
every supported version.
"""

from __future__ import annotations

import functools
import inspect


@functools.lru_cache(maxsize=None)
def _forward_kw(forward_cls: type) -> str:
    params = inspect.signature(forward_cls.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@functools.lru_cache(maxsize=1)
def _generate_kw() -> str:
    from transformers.generation.utils import GenerationMixin

    params = inspect.signature(GenerationMixin.prepare_inputs_for_generation).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kw(model, *, generate: bool = False) -> str:
    """``"cache"`` or ``"past_key_values"``: the name under which ``model`` takes a cache."""
    if generate:
        return _generate_kw()
    return _forward_kw(type(model))


def cache_arg(model, cache, *, generate: bool = False) -> dict:
    """``{name: cache}`` to splat into ``model(...)`` (or ``model.generate(...)`` with
    ``generate=True``)."""
    return {cache_kw(model, generate=generate): cache}
