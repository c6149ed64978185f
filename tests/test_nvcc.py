"""The CUDA library locator: its per-call checks stay cheap (the source is hashed once per process, a library found
once is not looked up again), since ``available()`` runs at every kernel call of the eager decode path."""

import torch

from million.ops._nvcc import CudaLibrary


def test_source_hashed_once_and_found_library_remembered(tmp_path, monkeypatch):
    src = tmp_path / "k.cu"
    src.write_text("// kernel\n")
    lib = CudaLibrary(src, "k", "MILLION_TEST_LIB")
    reads = []
    orig = type(src).read_bytes

    def counting(self):
        reads.append(self)
        return orig(self)

    monkeypatch.setattr(type(src), "read_bytes", counting)
    p1, p2 = lib.cache_path(), lib.cache_path()
    assert p1 == p2 and p1.name.startswith("k_") and len(reads) == 1

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    so = tmp_path / "k.so"
    monkeypatch.setenv("MILLION_TEST_LIB", str(so))
    assert not lib.available()  # named but missing
    so.write_bytes(b"")
    assert lib.available()
    so.unlink()
    assert lib.available()  # found once: not looked up again for the same setting
    monkeypatch.setenv("MILLION_TEST_LIB", str(tmp_path / "other.so"))
    assert not lib.available()  # another setting is looked up
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    monkeypatch.setenv("MILLION_TEST_LIB", str(so))
    assert not lib.available()  # pre-Hopper GPUs never take the library


def test_build_falls_back_when_the_first_flags_fail(tmp_path, monkeypatch):
    """An nvcc that rejects sm_90a (as CUDA 11.8's does): the library is built with the fallback flags, with a
    warning; without a fallback the failure is an error that shows nvcc's message."""
    import pytest

    from million.ops._nvcc import FLAGS, FLAGS_SM90A

    log = tmp_path / "calls.txt"
    fake = tmp_path / "nvcc"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> {log}\n"
        "case \"$*\" in *sm_90a*) echo \"nvcc fatal : Unsupported gpu architecture 'compute_90a'\" >&2; exit 1;; esac\n"
        "while [ $# -gt 0 ]; do if [ \"$1\" = -o ]; then echo built > \"$2\"; fi; shift; done\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NVCC", str(fake))
    src = tmp_path / "k.cu"
    src.write_text("// kernel\n")
    lib = CudaLibrary(src, "k", "MILLION_TEST_LIB", FLAGS_SM90A, fallback=FLAGS)
    with pytest.warns(RuntimeWarning, match="Unsupported gpu architecture"):
        out = lib.build(tmp_path / "k.so")
    assert out.read_text() == "built\n"
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and "compute_90a" in calls[0] and "compute_90a" not in calls[1]
    strict = CudaLibrary(src, "k", "MILLION_TEST_LIB", FLAGS_SM90A)
    with pytest.raises(RuntimeError, match="Unsupported gpu architecture"):
        strict.build(tmp_path / "k2.so")
    assert not (tmp_path / "k2.so").exists()
