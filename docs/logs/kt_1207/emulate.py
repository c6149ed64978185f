"""CPU check of kt.patch's lane algebra (PQ_KT): the transposed score mma of the tensor-core kernel at d = 128, dsub 2.

Emulates, for one 16-token tile, the gathers' rotation by gid undone by gid & 1 only, q as the A operand with 4 row
classes, mma.m16n8k16 by its fragment layout, the valid-lane selection of the scores, and the lanes the value mma's
B operand and the alphas are shuffled from; checks every valid score against q_h . K_t, and that each (token, head)
pair is held by exactly one valid lane.  Run: python docs/logs/kt_1207/emulate.py
"""
import numpy as np

rng = np.random.default_rng(0)
D, MQ, GB = 128, 16, 4              # head dim, subspace groups per tig block (dsub 2: 4 tig x 16 groups = 64)
q = rng.standard_normal((4, D))      # heads
K = rng.standard_normal((16, D))     # tokens of one tile


def dims(tig, g):                    # group g of lane tig's block: subspace 16 tig + g, dims 2 (16 tig + g), + 1
    s = 16 * tig + (g % MQ)
    return [2 * s, 2 * s + 1]


def mma(Afr, Bfr):
    """mma.m16n8k16 from per-lane fragments: Afr[lane] = (a0, a1, a2, a3), Bfr[lane] = (b0, b1), each a pair of
    values; returns C[lane] = (c0, c1, c2, c3)."""
    A = np.zeros((16, 16)); B = np.zeros((16, 8))
    for lane in range(32):
        gid, tig = lane >> 2, lane & 3
        a0, a1, a2, a3 = Afr[lane]
        A[gid, 2 * tig:2 * tig + 2] = a0; A[gid + 8, 2 * tig:2 * tig + 2] = a1
        A[gid, 2 * tig + 8:2 * tig + 10] = a2; A[gid + 8, 2 * tig + 8:2 * tig + 10] = a3
        b0, b1 = Bfr[lane]
        B[2 * tig:2 * tig + 2, gid] = b0; B[2 * tig + 8:2 * tig + 10, gid] = b1
    C = A @ B
    return [(C[l >> 2, 2 * (l & 3)], C[l >> 2, 2 * (l & 3) + 1], C[(l >> 2) + 8, 2 * (l & 3)],
             C[(l >> 2) + 8, 2 * (l & 3) + 1]) for l in range(32)]


# per lane: gathered registers R[e][u] = group (u + gid) of token gid + 8e, then rotated back by gid & 1
R = {}
for lane in range(32):
    gid, tig = lane >> 2, lane & 3
    for e in range(2):
        regs = [K[gid + 8 * e, dims(tig, u + gid)] for u in range(MQ)]
        if gid & 1:
            regs = [regs[(i - 1) % MQ] for i in range(MQ)]
        R[lane, e] = regs
# q quads: qa[r][x] = pair of head gid & 3 at group 2r + (x >> 1) + 4 (x & 1) + 2 (gid >> 2)
acc = {(lane, e): np.zeros(4) for lane in range(32) for e in range(2)}
for r in range(8):
    Afr = []
    for lane in range(32):
        gid, tig = lane >> 2, lane & 3
        h = gid & 3
        Afr.append(tuple(q[h, dims(tig, 2 * r + (x >> 1) + 4 * (x & 1) + 2 * (gid >> 2))] if h < GB else np.zeros(2)
                         for x in range(4)))
    for e in range(2):
        C = mma(Afr, [(R[lane, e][2 * r], R[lane, e][2 * r + 1]) for lane in range(32)])
        for lane in range(32):
            acc[lane, e] += C[lane]
seen = {}
for lane in range(32):
    gid, tig = lane >> 2, lane & 3
    if (tig & 1) != (gid >> 2):
        continue
    for e in range(2):
        for j in range(2):
            s = acc[lane, e][j] if tig < 2 else acc[lane, e][2 + j]
            t, h = 8 * e + 2 * tig + j, gid & 3
            assert np.isclose(s, q[h] @ K[t]), (lane, e, j)
            assert (t, h) not in seen
            seen[t, h] = lane
assert len(seen) == 16 * 4
# the value mma's B lane (gid', tig') reads tokens 2tig', 2tig'+1 (e = 0) and + 8 (e = 1) of head gid' & 3 from srcP
for lane in range(32):
    gid, tig = lane >> 2, lane & 3
    src = 4 * (gid & 3) + 16 * (tig & 1) + tig
    for e in range(2):
        assert seen[8 * e + 2 * tig, gid & 3] == src and seen[8 * e + 2 * tig + 1, gid & 3] == src
    # alphas of the value accumulators' heads 2 (tig & 1) + e come from lane 4 h, a lane of head h
    for e in range(2):
        h = 2 * (tig & 1) + e
        assert ((4 * h) >> 2) & 3 == h
# the max and l reductions (xor 1, 2, 16) stay within one head's 8 lanes
for lane in range(32):
    for o in (1, 2, 16):
        assert ((lane ^ o) >> 2) & 3 == (lane >> 2) & 3
print("kt lane algebra: every valid score is q_h . K_t, each (token, head) once; srcP and the alpha lanes check out")
