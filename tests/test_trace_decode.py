"""benchmarks/trace_decode.py: the phase summary read off known stamps, its reader and case parser; and the --q-op
wrapper of bench_decode_cuda.py, which it imports (CPU)."""

import argparse
import importlib.util
from pathlib import Path

import pytest
import torch

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "trace_decode.py"
_spec = importlib.util.spec_from_file_location("trace_decode", _path)
trace_decode = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace_decode)


def _stamps():
    part = torch.zeros(4, 32, dtype=torch.int64)
    # entry, K table in, tables ready, loop start, loops done, partial written (ns); SM id, chunks; warp loop ends
    part[0, :8] = torch.tensor([1000, 2000, 3000, 3500, 10000, 10500, 7, 5])
    part[0, 8:10] = torch.tensor([9000, 9800])
    part[1, :8] = torch.tensor([1256, 2256, 3256, 3756, 12000, 12600, 9, 6])
    part[1, 8:10] = torch.tensor([11000, 11900])
    merge = torch.zeros(4, 8, dtype=torch.int64)
    merge[0, :4] = torch.tensor([4000, 6000, 12700, 13000])
    return part, merge


def test_summary_of_known_stamps():
    part, merge = _stamps()
    s = trace_decode.summarize(part, merge, 2, 1)
    assert s["blocks"] == 2 and s["merge_blocks"] == 1 and s["chunks_per_block"] == [5, 6]
    assert s["start_spread"] == pytest.approx(0.26)
    assert s["tables_med"] == pytest.approx(1.0) and s["ready_max"] == pytest.approx(2.0)
    # loop: from each block's loop start to its last warp's end (6.3 and 8.144 us; torch's median takes the lower)
    assert s["loop_med"] == pytest.approx(6.3) and s["loop_max"] == pytest.approx(8.14)
    assert s["warp_spread_med"] == pytest.approx(0.8) and s["warp_spread_max"] == pytest.approx(0.9)
    assert s["epi_med"] == pytest.approx(0.5) and s["epi_max"] == pytest.approx(0.6)
    assert s["first_block_end"] == pytest.approx(9.5) and s["part_end"] == pytest.approx(11.6)
    assert s["merge_first_entry"] == pytest.approx(3.0) and s["merge_residual_done"] == pytest.approx(5.0)
    assert s["merge_wait"] == pytest.approx(11.7) and s["end"] == pytest.approx(12.0)
    # the merge block's own time after its wait (12.7 -> 13.0 us) and the hand-over from the last partial's end (11.6)
    assert s["merge_tail_min"] == s["merge_tail_med"] == s["merge_tail_max"] == pytest.approx(0.3)
    assert s["handover"] == pytest.approx(0.1)


def test_tensor_core_blocks_without_lut_stamp():
    """The tensor-core kernel stamps no LUT (slot 2) and no loop start (slot 3): both fall back to the K-table stamp."""
    part, merge = _stamps()
    part[:2, 2:4] = 0
    s = trace_decode.summarize(part, merge, 2, 1)
    assert s["ready_med"] == pytest.approx(1.0)
    assert s["loop_med"] == pytest.approx(7.8)  # 9800 - 2000


def test_case_parser():
    assert trace_decode.parse_case("mha:1:4:32768") == ("mha", 1, 4, 32768)
    for bad in ("mla:1:4:32768", "mha:1:3:32768", "mha:0:4:4096", "mha:1:4", "mha:1:4:64"):
        with pytest.raises(argparse.ArgumentTypeError, match="case"):
            trace_decode.parse_case(bad)


def test_gap_from_the_previous_call():
    """Graph replays: each merge block keeps its previous call's end stamp; the gap runs from the latest of them to this
    call's first partial entry (negative when this call's partial grid started first); absent without one."""
    part, merge = _stamps()
    prev = torch.zeros(4, dtype=torch.int64)
    assert "gap_from_prev" not in trace_decode.summarize(part, merge, 2, 1, prev)
    prev[0] = 400  # the previous call's last output at 400 ns, this call's first partial entry at 1000 ns
    assert trace_decode.summarize(part, merge, 2, 1, prev)["gap_from_prev"] == pytest.approx(0.6)
    prev[0] = 1512
    assert trace_decode.summarize(part, merge, 2, 1, prev)["gap_from_prev"] == pytest.approx(-0.51)


def test_wait_and_lengths_stamps():
    """Builds since 2026-12-06 stamp the wait's return (slot 30) and the lengths' arrival (slot 31); the wait is also
    given from the previous call's last output. Older builds (slot 30 zero) leave the keys out."""
    part, merge = _stamps()
    assert "wait_med" not in trace_decode.summarize(part, merge, 2, 1)
    part[0, 30:32] = torch.tensor([1500, 2100])
    part[1, 30:32] = torch.tensor([1700, 2500])
    prev = torch.zeros(4, dtype=torch.int64)
    prev[0] = 1200
    s = trace_decode.summarize(part, merge, 2, 1, prev)
    assert s["wait_first"] == pytest.approx(0.5) and s["wait_max"] == pytest.approx(0.7)
    assert s["wait_med"] == pytest.approx(0.5)  # torch's median of two takes the lower
    assert s["lens_med"] == pytest.approx(0.6)  # 600 and 800 ns after the wait
    assert s["wait_after_prev"] == pytest.approx(0.3)
    part[1, 30] = 0  # one block without the stamp: none reported
    assert "wait_first" not in trace_decode.summarize(part, merge, 2, 1, prev)


def test_read_trace_layouts():
    """The reader splits a buffer of 41 slots per block (with the previous-call end stamps) or 40 (older builds)."""

    class Lib:
        def __init__(self, per):
            self.per = per

        def million_pq_trace_read(self, buf, n):
            if buf is None:
                return 4 * self.per
            for i in range(n):
                buf[i] = i
            return n

    part, merge, prev = trace_decode.read_trace(Lib(41))
    assert part.shape == (4, 32) and merge.shape == (4, 8) and prev.tolist() == [160, 161, 162, 163]
    part, merge, prev = trace_decode.read_trace(Lib(40))
    assert merge[3, 7].item() == 159 and prev is None


def test_q_op_wrapper_writes_q_then_calls():
    """bench_decode_cuda --q-op: every timed call is preceded by an in-place op on its q (the first argument), for
    SDPA and PQ alike; q's values are unchanged and the call's result is returned."""
    bench = trace_decode.sys.modules["bench_decode_cuda"]
    seen = []

    def fn(q, k):
        seen.append((q._version, k))
        return q.sum() + k

    q = torch.ones(2, 3)
    v0 = q._version
    out = bench.with_q_op(fn)(q, 5)
    assert seen == [(v0 + 1, 5)] and out.item() == 11.0 and torch.equal(q, torch.ones(2, 3))


def test_zero_starts_wrapper_appends_a_new_zero_tensor_per_call():
    """bench_decode_cuda / trace_decode --zero-starts: every call gets a zero int32 ``starts`` of the batch size,
    made in that call (the library's own behaviour for ``starts=None`` before the kernels read a null pointer)."""
    bench = trace_decode.sys.modules["bench_decode_cuda"]
    seen = []

    def fn(q, k, starts):
        seen.append(starts)
        return k

    q = torch.ones(3, 4, 8)
    call = bench.with_zero_starts(fn)
    assert call(q, 7) == 7 and call(q, 8) == 8
    assert [s.dtype for s in seen] == [torch.int32] * 2
    assert all(torch.equal(s, torch.zeros(3, dtype=torch.int32)) for s in seen)
    assert seen[0] is not seen[1]


def test_first_chunk_stamps_of_the_tensor_core_kernel():
    """Trace builds since 2026-12-07: the tensor-core kernel at 8 warps stamps each warp's first chunk end in the
    warp-end slots of warps 8-15; read as such, they give the first chunk beside the loop's per-chunk time and do not
    count as warp ends. Without the flag they are warp ends (the FFMA kernel's 16 warps)."""
    part, merge = _stamps()
    part[:2, 2:4] = 0  # no LUT / loop-start stamps: the loop starts at the K-table stamp (2000 / 2256 ns)
    part[0, 16:18] = torch.tensor([5000, 5400])  # warp 0 / 1 first chunk ends
    part[1, 16:18] = torch.tensor([3256, 3456])
    s = trace_decode.summarize(part, merge, 2, 1, first_slots=True)
    # block 0: median of (3000, 3400) ns after its loop start -> 3.0 us (torch's median takes the lower); block 1: 1.0
    assert s["first_chunk_med"] == pytest.approx(1.0) and s["first_chunk_max"] == pytest.approx(3.0)
    # per chunk: the loop (7.8 / 9.644 us) over ceil(5 / 8) = ceil(6 / 8) = 1 chunk per warp
    assert s["per_chunk_med"] == pytest.approx(7.8)
    assert s["warp_spread_med"] == pytest.approx(0.8)  # the first-chunk stamps are not warp ends
    plain = trace_decode.summarize(part, merge, 2, 1)
    assert "first_chunk_med" not in plain and plain["warp_spread_max"] > 4.0


def test_stamps_of_a_real_timer_keep_their_resolution():
    """%globaltimer stamps are about 1.8e18 ns: the summary must not round their differences to the 256 ns a float64
    keeps at that size (it did before 2026-12-07 17:40 UTC). Shifted by such a base, every key reads as unshifted."""
    part, merge = _stamps()
    base = 1796660405707777952
    prev = torch.zeros(4, dtype=torch.int64)
    prev[0] = 400
    want = trace_decode.summarize(part, merge, 2, 1, prev)
    ps, ms, pvs = part.clone(), merge.clone(), prev.clone()
    for t, cols in ((ps, trace_decode.PART_STAMPS), (ms, trace_decode.MERGE_STAMPS)):
        sub = t[:, cols]
        t[:, cols] = torch.where(sub > 0, sub + base, sub)
    pvs[0] += base
    got = trace_decode.summarize(ps, ms, 2, 1, pvs)
    assert got == want
    assert got["merge_tail_med"] == pytest.approx(0.3) and got["gap_from_prev"] == pytest.approx(0.6)
