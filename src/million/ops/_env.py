"""Environment settings of the GPU path, checked: a value a setting does not take is an error that names it."""

from __future__ import annotations

import os


def env_setting(name: str, default: str, cast, ok, expected: str):
    """The environment setting ``name`` (``default`` when unset) as ``cast`` of it; a clear error when it does not
    parse or ``ok`` refuses it."""
    v = os.environ.get(name, default)
    try:
        x = cast(v)
    except ValueError:
        x = None
    if x is None or not ok(x):
        raise ValueError(f"{name}={v!r}: expected {expected}")
    return x


def env_choice(name: str, default: str, allowed: tuple[str, ...], expected: str | None = None) -> str:
    """The environment setting ``name`` (``default`` when unset), one of the strings ``allowed``."""
    return env_setting(name, default, str, lambda v: v in allowed, expected or f"one of {', '.join(allowed)}")
