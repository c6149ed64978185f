"""Building and locating million's CUDA shared libraries (shared by ``cuda_attention`` and ``cuda_encode``).

A library is built with nvcc on first use into ``~/.cache/million/cuda/`` (``$XDG_CACHE_HOME``
honoured), keyed by a hash of its source and flags, or taken from an environment variable naming
a prebuilt ``.so``. Nothing here touches CUDA.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

FLAGS = (
    "-O3", "-std=c++17", "-gencode=arch=compute_90,code=sm_90", "-gencode=arch=compute_90,code=compute_90",
    "-Xcompiler", "-fPIC", "-shared",
)


# the encode library adds sm_90a machine code (its wgmma kernel needs it; the plain sm_90 pass compiles the
# kernel empty and a probe tells which one the driver loaded) and keeps compute_90 PTX for newer GPUs
FLAGS_SM90A = (
    "-O3", "-std=c++17", "-gencode=arch=compute_90a,code=sm_90a", "-gencode=arch=compute_90,code=compute_90",
    "-Xcompiler", "-fPIC", "-shared",
)


def find_nvcc() -> str | None:
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.exists(cand):
            return cand
    return None


@dataclass(frozen=True)
class CudaLibrary:
    """One ``.cu`` source compiled to a shared library named ``<stem>_<hash>.so``; ``env`` names a prebuilt one.
    ``fallback``: flags to build with when ``flags`` fail (an nvcc too old for sm_90a: CUDA 11.8 knows sm_90 only);
    the library then lacks what needs the first flags and says so at run time (``cuda_encode.wgmma_available``);
    the cache keeps that build under the first flags' name (delete it after upgrading nvcc)."""

    src: Path
    stem: str
    env: str
    flags: tuple = FLAGS
    fallback: tuple | None = None

    def cache_path(self) -> Path:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "million" / "cuda"
        return base / f"{self.stem}_{self._hash()}.so"

    def _hash(self) -> str:
        # the source's hash, once per process: hashing it costs ~75 us, and available() runs at every kernel call
        h = self.__dict__.get("_src_hash")
        if h is None:
            h = hashlib.sha256(self.src.read_bytes() + " ".join(self.flags).encode()).hexdigest()[:16]
            object.__setattr__(self, "_src_hash", h)
        return h

    def build(self, path: str | os.PathLike | None = None) -> Path:
        """Compile with nvcc into ``path`` (default: the user cache); returns the path."""
        out = Path(path) if path is not None else self.cache_path()
        nvcc = find_nvcc()
        if nvcc is None:
            raise RuntimeError(f"nvcc not found (set NVCC or {self.env})")
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            try:
                subprocess.run([nvcc, *self.flags, "-o", tmp, str(self.src)], check=True, capture_output=True, text=True)
            except subprocess.CalledProcessError as e:
                if self.fallback is None:
                    raise
                warnings.warn(f"nvcc failed with {' '.join(self.flags)}; building {self.src.name} with "
                              f"{' '.join(self.fallback)} instead:\n{e.stderr[-2000:]}", RuntimeWarning, stacklevel=2)
                subprocess.run([nvcc, *self.fallback, "-o", tmp, str(self.src)], check=True, capture_output=True,
                               text=True)
            os.replace(tmp, out)
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"nvcc failed:\n{e.stderr}") from e
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return out

    def path(self) -> Path:
        """The library to load: ``$env``, else the cached build (built now if missing)."""
        env = os.environ.get(self.env)
        if env:
            return Path(env)
        path = self.cache_path()
        if not path.exists():
            self.build(path)
        return path

    def available(self) -> bool:
        """True when a CUDA device of compute capability >= 9.0 is present and the library can be loaded
        or built (``$env`` set, a cached build, or nvcc on the PATH)."""
        try:
            if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
                return False
        except Exception:
            return False
        env = os.environ.get(self.env)
        key = (env, os.environ.get("XDG_CACHE_HOME"))
        if self.__dict__.get("_available_for") == key:  # a library found once stays found for the process
            return True
        ok = os.path.exists(env) if env else (self.cache_path().exists() or find_nvcc() is not None)
        if ok:
            object.__setattr__(self, "_available_for", key)
        return ok
