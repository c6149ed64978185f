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
