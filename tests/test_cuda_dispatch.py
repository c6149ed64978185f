"""CPU checks of the CUDA decode dispatch: kernel choice per shape, the tensor-core kernel's table layout
and its cache, cluster sizing. No GPU needed (the layout is plain torch)."""

import ctypes

import pytest
import torch

from million.ops import cuda_attention as ca


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    for v in ("MILLION_CUDA_KERNEL", "MILLION_CUDA_MMA_WARPS", "MILLION_CUDA_CLUSTER", "MILLION_CUDA_LUT_BULK"):
        monkeypatch.delenv(v, raising=False)


def test_kernel_choice_per_shape(monkeypatch):
    f16, bf16 = torch.float16, torch.bfloat16
    assert ca.choose_kernel(f16, 1, 128, 64) == ("ffma", 0)  # MHA
    assert ca.choose_kernel(bf16, 1, 64, 16) == ("ffma", 0)
    assert ca.choose_kernel(f16, 4, 128, 64, work=32768) == ("mma", 8)  # GQA 4-bit, small work
    assert ca.choose_kernel(f16, 4, 128, 64, work=1 << 17) == ("mma", 8)  # GQA 4-bit, large work (conflict-free K)
    assert ca.choose_kernel(f16, 4, 128, 64, work=1 << 22) == ("mma", 8)
    assert ca.choose_kernel(f16, 4, 128, 32, work=16384) == ("mma", 8)  # GQA 2-bit, small work
    assert ca.choose_kernel(f16, 4, 128, 32, work=32768) == ("mma", 16)  # GQA 2-bit from 2^15: 16 warps
    assert ca.choose_kernel(f16, 4, 128, 32, work=1 << 17) == ("mma", 16)  # GQA 2-bit, large work: 16 warps
    assert ca.choose_kernel(f16, 3, 64, 32, work=1 << 20) == ("mma", 12)  # SmolLM2 shape, long: 12 warps
    assert ca.choose_kernel(f16, 3, 64, 32, work=4096) == ("mma", 8)
    assert ca.choose_kernel(bf16, 4, 128, 64, work=1 << 20) == ("mma", 8)  # bf16 GQA: no LUT kernel
    assert ca.choose_kernel(bf16, 4, 128, 32, work=1 << 20) == ("mma", 16)  # bf16 GQA 2-bit, large work
    monkeypatch.setenv("MILLION_CUDA_LUT_BULK", "0")  # LUT tables loaded after the wait: 2 bits stay on tensor cores
    assert ca.choose_kernel(f16, 4, 128, 32, work=1 << 20) == ("mma", 16)
    assert ca.choose_kernel(f16, 4, 128, 64, work=1 << 17) == ("mma", 8)


def test_mma_warps_auto(monkeypatch):
    """MILLION_CUDA_MMA_WARPS=auto (the default): 12 warps at d=64 and 16 at d=128 2-bit (fp16 and bf16, from 2^15
    tokens of work; fp16 at d=128 below the LUT's 2^17), else 8; =8: 8 everywhere."""
    f16, bf16 = torch.float16, torch.bfloat16
    monkeypatch.setenv("MILLION_CUDA_MMA_WARPS", "8")
    assert ca.choose_kernel(f16, 3, 64, 32, work=1 << 20) == ("mma", 8)
    monkeypatch.setenv("MILLION_CUDA_MMA_WARPS", "auto")
    assert ca.choose_kernel(f16, 3, 64, 32, work=1 << 20) == ("mma", 12)  # SmolLM2 shape, long
    assert ca.choose_kernel(f16, 3, 64, 16, work=1 << 15) == ("mma", 12)
    assert ca.choose_kernel(f16, 3, 64, 32, work=4096) == ("mma", 8)  # short: 8
    assert ca.choose_kernel(f16, 4, 128, 32, work=1 << 15) == ("mma", 16)  # GQA 2-bit
    assert ca.choose_kernel(f16, 4, 128, 32, work=1 << 17) == ("mma", 16)  # no upper bound: the LUT is opt-in
    assert ca.choose_kernel(f16, 4, 128, 64, work=1 << 15) == ("mma", 8)  # GQA 4-bit stays at 8
    # bf16: the same classes, 16 warps at d=128 2-bit with no upper bound (no LUT kernel); short work and 4 bits: 8
    assert ca.choose_kernel(bf16, 3, 64, 32, work=1 << 20) == ("mma", 12)
    assert ca.choose_kernel(bf16, 3, 64, 16, work=1 << 15) == ("mma", 12)
    assert ca.choose_kernel(bf16, 3, 64, 32, work=(1 << 15) - 1) == ("mma", 8)
    assert ca.choose_kernel(bf16, 4, 128, 32, work=1 << 15) == ("mma", 16)
    assert ca.choose_kernel(bf16, 4, 128, 32, work=1 << 22) == ("mma", 16)
    assert ca.choose_kernel(bf16, 4, 128, 32, work=16384) == ("mma", 8)
    assert ca.choose_kernel(bf16, 4, 128, 64, work=1 << 20) == ("mma", 8)
    assert ca.choose_kernel(torch.float32, 3, 64, 32, work=1 << 20) == ("mma", 8)  # (no kernel takes float32)
    monkeypatch.setenv("MILLION_CUDA_LUT_BULK", "0")  # (the LUT's switch no longer changes the auto choice)
    assert ca.choose_kernel(f16, 4, 128, 32, work=1 << 17) == ("mma", 16)


def test_kernel_overrides(monkeypatch):
    f16 = torch.float16
    assert ca.choose_kernel(f16, 4, 128, 64, "ffma") == ("ffma", 0)
    assert ca.choose_kernel(f16, 4, 128, 32, "lut") == ("lut", 12)
    assert ca.choose_kernel(torch.bfloat16, 4, 128, 64, "lut") == ("ffma", 0)  # no bf16 LUT kernel
    assert ca.choose_kernel(f16, 1, 128, 64, "mma") == ("mma", 8)
    monkeypatch.setenv("MILLION_CUDA_KERNEL", "mma")
    monkeypatch.setenv("MILLION_CUDA_MMA_WARPS", "16")
    assert ca.choose_kernel(f16, 1, 128, 64) == ("mma", 16)
    with pytest.raises(ValueError, match="'fast'.*expected one of"):
        ca.choose_kernel(f16, 4, 128, 64, "fast")
    for bad in ("10", "eight"):
        monkeypatch.setenv("MILLION_CUDA_MMA_WARPS", bad)
        with pytest.raises(ValueError, match=f"MILLION_CUDA_MMA_WARPS='{bad}': expected one of auto, 8, 12, 16"):
            ca.choose_kernel(f16, 4, 128, 64)


@pytest.mark.parametrize("bad", ["9", "0", "two"])
def test_cluster_setting_checked(bad, monkeypatch):
    """A bad MILLION_CUDA_CLUSTER (table multicast over clusters of splits, 1-8) is named, not read as a stray int."""
    monkeypatch.setenv("MILLION_CUDA_CLUSTER", bad)
    with pytest.raises(ValueError, match=f"MILLION_CUDA_CLUSTER='{bad}': expected one of 1, 2, 3, 4, 5, 6, 7, 8"):
        ca._env_int("MILLION_CUDA_CLUSTER", "1", ca.CLUSTER_SIZES)
    monkeypatch.setenv("MILLION_CUDA_CLUSTER", "4")
    assert ca._env_int("MILLION_CUDA_CLUSTER", "1", ca.CLUSTER_SIZES) == 4


@pytest.mark.parametrize("M,dsub", [(64, 2), (32, 4), (32, 2), (16, 4)])
def test_mma_table_layout(M, dsub):
    c = torch.randn(2, M, 256, dsub, dtype=torch.float16)
    tk, tv = ca.mma_tables(c, "k"), ca.mma_tables(c, "v")
    pad = 16 // (2 * dsub)
    assert tk.shape == tv.shape == (2, 256, M + pad, dsub)
    assert tk[0, 0].numel() * 2 == M * 2 * dsub + 16  # one padded row of bytes per code
    KB, VB = M // 4, M // 8
    for m in range(M):
        sk = 4 * (m % KB) + m // KB  # K: m = KB*tig + w -> slot 4w + tig
        sv = 8 * (m % VB) + m // VB  # V: m = VB*gid + r -> slot 8r + gid
        assert torch.equal(tk[:, :, sk], c[:, m]) and torch.equal(tv[:, :, sv], c[:, m])
    assert not tk[:, :, M:].any() and not tv[:, :, M:].any()


@pytest.mark.parametrize("M,dsub", [(64, 2), (32, 2), (32, 4), (16, 4)])
def test_mma_table_layout_unpadded(M, dsub, monkeypatch):
    """The library's K rows at dsub 2 and 4 (PQ_ROT=1, PQ_ROT4=1, reported by million_pq_mma_kpad): the rows packed at
    the start of the padded table's bytes, so that the kernel's row stride is M entries, the padding left at the end as
    zeros."""
    monkeypatch.setattr(ca, "_mma_kpad", lambda c, role="k": 0 if role == "k" else 16)
    c = torch.randn(2, M, 256, dsub, dtype=torch.float16)
    tk, tv = ca.mma_tables(c, "k"), ca.mma_tables(c, "v")
    assert tk.shape == tv.shape == (2, 256, M + 16 // (2 * dsub), dsub)  # same bytes as the padded layout
    rows = tk.reshape(2, -1, dsub)[:, : 256 * M].reshape(2, 256, M, dsub)
    KB, VB = M // 4, M // 8
    for m in range(M):
        assert torch.equal(rows[:, :, 4 * (m % KB) + m // KB], c[:, m])  # K: unpadded rows of M entries
        assert torch.equal(tv[:, :, 8 * (m % VB) + m // VB], c[:, m])  # V: still padded
    assert not tk.reshape(2, -1, dsub)[:, 256 * M:].any()
    assert ca.mma_tables(c, "k") is tk  # cached under its own key


def test_mma_table_layout_v_unpadded(monkeypatch):
    """The library's V rows at d = 128, dsub 2 (PQ_VCLS=1, reported by million_pq_mma_vpad): unpadded like the K rows,
    packed at the start of the same bytes; V slot of subspace m = (M/8)*gid + r at 8r + gid."""
    monkeypatch.setattr(ca, "_mma_kpad", lambda c, role="k": 0)
    M, dsub = 64, 2
    c = torch.randn(2, M, 256, dsub, dtype=torch.float16)
    tv = ca.mma_tables(c, "v")
    assert tv.shape == (2, 256, M + 16 // (2 * dsub), dsub)
    rows = tv.reshape(2, -1, dsub)[:, : 256 * M].reshape(2, 256, M, dsub)
    VB = M // 8
    for m in range(M):
        assert torch.equal(rows[:, :, 8 * (m % VB) + m // VB], c[:, m])
    assert not tv.reshape(2, -1, dsub)[:, 256 * M:].any()


def test_mma_pad_asks_the_library_per_role(monkeypatch):
    """_mma_kpad: CPU tensors 16; on the GPU the K padding from million_pq_mma_kpad(dsub), the V padding from
    million_pq_mma_vpad(M, dsub), each read from the loaded library."""
    asked = []
    monkeypatch.setattr(ca, "_lib_kpad", lambda dsub: asked.append(("k", dsub)) or 0)
    monkeypatch.setattr(ca, "_lib_vpad", lambda M, dsub: asked.append(("v", M, dsub)) or 0)

    class FakeCuda:
        is_cuda = True
        shape = (8, 64, 256, 2)

    assert ca._mma_kpad(torch.empty(1, 64, 256, 2), "v") == 16
    assert ca._mma_kpad(FakeCuda(), "k") == 0 and ca._mma_kpad(FakeCuda(), "v") == 0
    assert asked == [("k", 2), ("v", 64, 2)]


def test_mma_tables_cache_follows_the_tensor():
    c = torch.randn(1, 64, 256, 2, dtype=torch.float16)
    t1 = ca.mma_tables(c, "k")
    assert ca.mma_tables(c, "k") is t1  # same live tensor, same version: cached
    c.mul_(2)  # in place: new version, new table
    t2 = ca.mma_tables(c, "k")
    assert t2 is not t1 and torch.equal(t2[0, :, 0], c[0, 0])
    d = c.clone()  # another tensor with equal contents gets its own entry
    assert ca.mma_tables(d, "k") is not t2


def test_cluster_sizes():
    assert ca._cluster(16) == (16, 8)
    assert ca._cluster(44) == (40, 8)
    assert ca._cluster(3) == (2, 2)
    assert ca._cluster(1) == (1, 1)
    assert ca._cluster(16, 4) == (16, 4)


def test_supports_centroids():
    assert ca.supports_centroids(torch.empty(1, 64, 256, 2))
    assert ca.supports_centroids(torch.empty(3, 16, 256, 4))
    assert not ca.supports_centroids(torch.empty(1, 64, 16, 2))  # ksub 16
    assert not ca.supports_centroids(torch.empty(1, 48, 256, 2))  # d = 96


@pytest.mark.parametrize("M,dsub", [(64, 2), (32, 4), (32, 2), (16, 4)])
def test_ffma_table_layout(M, dsub):
    """Host-laid FFMA tables: subspace m of code k at row k, slot swz(m) (a permutation of the M slots,
    the same formula as pq_attention.cu's swz), no padding; cached per live tensor and version."""
    c = torch.randn(3, M, 256, dsub, dtype=torch.float16)
    t = ca.ffma_tables(c)
    assert t.shape == (3, 256, M, dsub) and t[0].numel() == c[0].numel()
    pos = ca._swz(M, dsub)
    assert sorted(pos) == list(range(M))
    for m in range(M):
        assert torch.equal(t[:, :, pos[m]], c[:, m])
    assert ca.ffma_tables(c) is t
    c.add_(1)
    assert ca.ffma_tables(c) is not t


def test_ffma_bulk_switch(monkeypatch):
    monkeypatch.delenv("MILLION_CUDA_FFMA_BULK", raising=False)
    assert ca.ffma_bulk()
    monkeypatch.setenv("MILLION_CUDA_FFMA_BULK", "0")
    assert not ca.ffma_bulk()
    monkeypatch.setenv("MILLION_CUDA_FFMA_BULK", "yes")
    with pytest.raises(ValueError, match="MILLION_CUDA_FFMA_BULK='yes'"):
        ca.ffma_bulk()


def test_ffma_half_values_rule(monkeypatch):
    """The half2 value path's eligibility: fp16 V centroids (bf16 ones where the loaded library takes them), finite
    and within +-HALF_VALUES_MAX, the switch on; cached per tensor and version (an in-place change is checked again)."""
    monkeypatch.setenv("MILLION_CUDA_HALF_V", "1")
    monkeypatch.setattr(ca, "_lib_bf16_half", lambda: False)  # a library without million_pq_ffma_bf16_half
    c = torch.randn(2, 16, 256, 4).half()
    assert ca.ffma_half_values(c)
    assert not ca.ffma_half_values(c.float())
    assert not ca.ffma_half_values(c.to(torch.bfloat16))
    monkeypatch.setattr(ca, "_lib_bf16_half", lambda: True)  # one built with PQ_BFH
    b = c.to(torch.bfloat16)
    assert ca.ffma_half_values(b)
    b[0, 0, 0, 0] = 4 * ca.HALF_VALUES_MAX
    assert not ca.ffma_half_values(b)
    c[1, 3, 200, 2] = ca.HALF_VALUES_MAX
    assert ca.ffma_half_values(c)
    c[1, 3, 200, 2] = -2 * ca.HALF_VALUES_MAX
    assert not ca.ffma_half_values(c)
    c[1, 3, 200, 2] = float("nan")
    assert not ca.ffma_half_values(c)
    c[1, 3, 200, 2] = 1.0
    assert ca.ffma_half_values(c)
    assert ca.ffma_half_values(torch.empty(0, 16, 256, 4, dtype=torch.float16))
    monkeypatch.setenv("MILLION_CUDA_HALF_V", "0")
    assert not ca.half_values_enabled() and not ca.ffma_half_values(c)
    monkeypatch.setenv("MILLION_CUDA_HALF_V", "2")
    with pytest.raises(ValueError, match="MILLION_CUDA_HALF_V='2'"):
        ca.ffma_half_values(c)


def test_library_abi_checked(monkeypatch, tmp_path):
    """A kernel library built from another source revision (MILLION_CUDA_LIB pointing at a stale build) is refused
    with a message naming both versions, instead of running kernels that read the arguments differently."""

    class Fn:
        def __init__(self, v):
            self.v, self.argtypes, self.restype = v, None, None

        def __call__(self, *a):
            return self.v

    class FakeLib:
        def __init__(self, abi):
            self.million_pq_decode_attention = Fn(0)
            self.million_pq_last_error = Fn(b"")
            self.million_pq_args_size = Fn(ctypes.sizeof(ca._Args))
            self.million_pq_abi_version = Fn(abi)

    monkeypatch.setenv("MILLION_CUDA_LIB", str(tmp_path / "lib.so"))
    for abi, ok in ((ca.ABI_VERSION, True), (ca.ABI_VERSION - 1, False)):
        monkeypatch.setattr(ca.ctypes, "CDLL", lambda path, abi=abi: FakeLib(abi))
        ca._lib.cache_clear()
        try:
            if ok:
                assert ca._lib().million_pq_abi_version() == ca.ABI_VERSION
            else:
                with pytest.raises(RuntimeError, match=f"ABI {abi}, this code needs {ca.ABI_VERSION}"):
                    ca._lib()
        finally:
            ca._lib.cache_clear()


def test_split_rule(monkeypatch):
    """num_splits on a 132-SM device: about one block per SM, capped by the tokens per warp (the tensor-core
    kernel at d=128: one split per 1.125 chunks per warp of 8 warps)."""
    monkeypatch.setattr(ca, "_sms", lambda index: 132)
    dev = torch.device("cuda", 0)
    mma128 = ca.chunks_per_warp("mma", 128)
    assert ca.num_splits(1, 8, 1, 4096, dev, 8, mma128) == 14  # GQA 4K
    assert ca.num_splits(1, 8, 1, 32768, dev, 8, mma128) == 16  # GQA 32K: the SM cap
    assert ca.num_splits(8, 8, 1, 32768, dev, 8, mma128) == 2
    assert ca.num_splits(1, 3, 1, 4096, dev, 8, ca.chunks_per_warp("mma", 64)) == 16  # SmolLM2 shape
    assert ca.num_splits(1, 3, 1, 16384, dev, 8, ca.chunks_per_warp("mma", 64)) == 44
    assert ca.num_splits(1, 32, 1, 32768, dev, 0) == 4  # MHA, FFMA kernel
    assert ca.num_splits(1, 32, 1, 100, dev, 0) == 1  # short: at least one split
    # FFMA kernel, short contexts: fewer, longer splits (about 1280 tokens, at least 2) while 40% of the SMs stay busy
    assert [ca.num_splits(1, 32, 1, t, dev, 0) for t in (1024, 2048, 4096, 8192, 16384)] == [2, 2, 3, 4, 4]
    assert ca.num_splits(1, 8, 1, 4096, dev, 0) == 16  # 8 heads: 3 splits would leave most SMs idle
    assert ca.num_splits(2, 32, 1, 4096, dev, 0) == 2  # the SM rule is already below
    assert ca.num_splits(300, 8, 1, 1 << 20, dev, 8, mma128) == 1  # more rows than SMs


def test_merge_rounded_split_rule(monkeypatch):
    """The tensor-core kernel's splits: above 16 and under 1024 tokens per split, down to a multiple of 16 (the
    merge's group per round trip); long splits and the other kernels keep the plain rule."""
    monkeypatch.setattr(ca, "_sms", lambda index: 132)
    dev = torch.device("cuda", 0)
    assert [ca.merge_rounded(s, t) for s, t in ((16, 4096), (44, 16384), (44, 32768), (44, 65536), (33, 8192))] == [
        16, 32, 32, 44, 32]
    assert ca.merge_rounded(17, 1000) == 16 and ca.merge_rounded(5, 100) == 5
    # SmolLM2 shape (3 KV heads, GQA 3, d=64): 44 -> 32 at 16K-32K, 44 from 64K, 16 at 4K
    assert [ca.default_splits(1, 3, 1, t, dev, "mma", 8, 64) for t in (4096, 16384, 32768, 65536, 131072)] == [
        16, 32, 32, 44, 44]
    assert ca.default_splits(1, 8, 1, 32768, dev, "mma", 8, 128) == 16  # GQA: unchanged
    assert ca.default_splits(1, 2, 1, 16384, dev, "ffma", 0, 128) == ca.num_splits(1, 2, 1, 16384, dev, 0)


def test_launch_switch_defaults_agree():
    """The launch switches the library reads itself (env_digit in pq_attention.cu) have the same default in the
    library, in the Python check that names bad values, and first in the README's table; so do the switches only the
    Python side reads."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    cu = (root / "src/million/ops/cuda/pq_attention.cu").read_text()
    py = (root / "src/million/ops/cuda_attention.py").read_text()
    readme = (root / "README.md").read_text()
    lib = {m[0]: m[1] for m in re.findall(r'env_digit\("(MILLION_CUDA_\w+)", \d+, (\d+)\)', cu)}
    assert set(lib) >= {"MILLION_CUDA_PDL", "MILLION_CUDA_SOLO", "MILLION_CUDA_MERGE8", "MILLION_CUDA_WINP"}
    for name, default in lib.items():
        m = re.search(rf'env_choice\("{name}", "(\d+)"', py)
        assert m and m.group(1) == default, f"{name}: library default {default}, Python check {m and m.group(1)}"
        row = re.search(rf"^\| `{name}` \| `([^`]+)`", readme, re.M)
        assert row and row.group(1) == default, f"{name}: library default {default}, README {row and row.group(1)}"
    # and every switch the Python side checks with a default (MILLION_CUDA_MMA_WARPS, ...) against the README
    for name, default in re.findall(r'env_choice\(\s*"(MILLION_CUDA_\w+)", "(\w+)"', py):
        row = re.search(rf"^\| `{name}` \| `([^`]+)`", readme, re.M)
        assert row and row.group(1) == default, f"{name}: Python default {default}, README {row and row.group(1)}"


def test_ffma_tables_half():
    """bf16 V centroids laid out for the half2 value path: the FFMA layout of the fp16 conversion, cached per tensor
    and version like the other tables (a layout counts as a table build)."""
    c = (torch.randn(3, 32, 256, 4) * 100).to(torch.bfloat16)
    t = ca.ffma_tables_half(c)
    assert t.dtype == torch.float16 and t.shape == (3, 256, 32, 4)
    torch.testing.assert_close(t, ca.ffma_tables(c.to(torch.float16)), rtol=0, atol=0)
    torch.testing.assert_close(t.float(), ca.ffma_tables(c).float(), rtol=0, atol=0)  # exact within the bound
    builds = ca._TABLE_BUILDS
    assert ca.ffma_tables_half(c) is t and ca._TABLE_BUILDS == builds
    c[0, 0, 0, 0] = 1.0
    assert ca.ffma_tables_half(c) is not t and ca._TABLE_BUILDS == builds + 1
