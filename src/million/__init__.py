"""million: a product-quantized KV cache for long-context LLM inference.

``import million`` initializes neither CUDA nor triton.
"""

from .config import Eviction, PQConfig

__version__ = "0.1.0"

__all__ = ["PQConfig", "Eviction", "Codebooks", "MillionCache", "calibrate", "generate", "register", "__version__"]


def __getattr__(name):  # lazy: keep the import light
    if name == "Codebooks":
        from .codebook import Codebooks

        return Codebooks
    if name == "MillionCache":
        from .cache import MillionCache

        return MillionCache
    if name == "calibrate":
        from .calibrate import calibrate

        return calibrate
    if name == "generate":
        from .decode import generate

        return generate
    if name == "register":
        from .attention import register

        return register
    raise AttributeError(f"module 'million' has no attribute {name!r}")
