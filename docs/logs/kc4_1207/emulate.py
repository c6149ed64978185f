"""CPU emulation of kc4.patch's lane maps (PQ_KC4) for one 16-token tile of the score mma, d = 128, dsub 2.

Model: each of a lane's 16 A registers (K) and 16 B registers (q) is one scalar per (group, tig); the mma sums
A[row][k] * B[k][col] over the k-tiles (groups 2r, 2r + 1) and the four tig lanes. Checks that every lane kept valid
by hi_k holds the right score for its (token, head) pairs after the one select stage and the n-tile select, that each
pair is held by exactly one valid lane, and that the value side's shuffle sources (srcA, srcB) are valid lanes holding
the token and head asked for.  Run: python docs/logs/kc4_1207/emulate.py
"""
import numpy as np

MQ, HEADS = 16, 4
rng = np.random.default_rng(0)
K = rng.standard_normal((16, MQ, 4))  # token row, group, tig
q = rng.standard_normal((HEADS, MQ, 4))  # head, group, tig
true = np.einsum("tgk,hgk->th", K, q)


def a_regs(row, gid, tig):  # the gathers (step u reads group (u + gid) mod MQ), then the one select stage (b = 1)
    R = [K[row, (u + gid) % MQ, tig] for u in range(MQ)]
    for b in (1,):
        if gid & b:
            R = [R[(i - b) % MQ] for i in range(MQ)]
    return R


def b_regs(tile, gid, tig):  # q of head gid & 3, loaded unrotated, rotated per n-tile as in the patch
    u = [q[gid & 3, j, tig] for j in range(MQ)]
    odd = (gid & 4) != 0
    if tile == 0:
        return [u[(j + 2) % MQ] if odd else u[j] for j in range(MQ)]
    return [u[(j + 6) % MQ] if odd else u[(j + 4) % MQ] for j in range(MQ)]


def C(tile, row):  # C[row][col] of n-tile `tile`, row 0..15 (rows gid and gid + 8 share gid)
    gid = row % 8
    return [sum(a_regs(row, gid, t)[i] * b_regs(tile, col, t)[i] for t in range(4) for i in range(MQ))
            for col in range(8)]


held = {}
for gid in range(8):
    for tig in range(4):
        valid = (tig >> 1) == ((gid >> 1) & 1)
        for half in (0, 1):
            row = gid + 8 * half
            c0, c1 = C(0, row), C(1, row)
            for z in (0, 1):
                col = 2 * tig + z
                sz = c1[col] if gid & 4 else c0[col]
                if valid:
                    head = col & 3
                    assert np.isclose(sz, true[row, head]), (gid, tig, row, head)
                    held.setdefault((row, head), []).append(4 * gid + tig)
assert len(held) == 16 * HEADS and all(len(v) == 1 for v in held.values()), "each (token, head) in one valid lane"
for gid in range(8):
    for tig in range(4):
        src_a = (2 * tig) * 4 + ((gid & 3) >> 1) + 2 * (tig & 1)
        for src, row in ((src_a, 2 * tig), (src_a + 4, 2 * tig + 1)):
            sg, st = src // 4, src % 4
            assert sg == row and (st >> 1) == ((sg >> 1) & 1), (gid, tig, src)
            assert (gid & 3) in ((2 * st) & 3, (2 * st + 1) & 3), (gid, tig, src)
print("kc4 lane maps: every valid score correct, each (token, head) held once, srcA/srcB valid")
