"""CPU emulation of rot.patch's K gathers (and, PQ_ROT=2, its V gathers) (PQ_ROT=1, tensor-core kernel, dsub 2): the kernel's address arithmetic on
the unpadded K table that ops.cuda_attention.mma_tables lays out (with the patch applied), its code-byte rotation
(word select + funnel shift) and the three-stage register rotation, against direct centroid lookups; and the banks of
each gather instruction (32 lanes: 8 tokens x 4 subspace lanes) are 32 distinct ones.

    git apply docs/logs/rot_1207/rot.patch && PYTHONPATH=src python docs/logs/rot_1207/emulate.py
    (since 2026-12-07 PQ_ROT=1 is the library's; emulate_k(D, 4) checks rot4.patch's dsub-4 K gathers, PQ_ROT4=1)
"""

import torch

from million.ops import cuda_attention as ca


def rot_bytes(words, g):
    """The kernel's rotation of a lane's code words: byte u of the result = byte (u + g) mod 4n of the input."""
    n = len(words)
    a = [words[(x + 1) % n] if g & 4 else words[x] for x in range(n)]
    s = 8 * (g & 3)
    return [(((a[(x + 1) % n] << 32) | a[x]) >> s) & 0xFFFFFFFF for x in range(n)]


def unrotate(regs, g):
    """The kernel's select stages: register i of the result = register (i - g) mod n of the input (g < 8)."""
    for b in (1, 2, 4):
        if b < len(regs) and g & b:
            regs = [regs[(i - b) % len(regs)] for i in range(len(regs))]
    return regs


def main():
    torch.manual_seed(0)
    ca._mma_kpad = lambda cen, role="k": 0  # what the PQ_ROT=2 (+ PQ_ROT4=1) build reports (K and V, dsub 2 and 4)
    for D in (128, 64):
        ok = emulate_k(D, 2)
        print(f"d={D}: every gathered entry is its centroid; every instruction conflict-free: {ok}")
        emulate_v(D)
        ok = emulate_k(D, 4)
        print(f"d={D} K, dsub 4: every gathered entry is its centroid; every instruction 2 wavefronts: {ok}")


def emulate_k(D, dsub):
    """The K gathers at dsub 2 (PQ_ROT=1) or 4 (rot4.patch, PQ_ROT4=1). Lane (gid, tig) holds the MQ = M/4 code bytes
    of subspaces MQ*tig + w of its token; at step u it reads the entry (2*dsub bytes) of slot 4((u + gid) mod MQ) + tig
    of the unpadded K table; the registers are rotated back by gid. Returns whether every instruction takes its least
    wavefronts: at dsub 2 the 32 lanes hit 32 distinct banks; a 64-bit load (dsub 4) is served per half-warp (lanes
    4 gid + tig, gid 0-3 and 4-7), whose 16 lanes must touch 32 distinct banks (2 wavefronts)."""
    M, K, ESZ = D // dsub, 256, 2 * dsub
    MQ, ROWBK = M // 4, M * ESZ
    c = torch.randn(1, M, K, dsub)
    entries = ca.mma_tables(c, "k").view(-1, dsub)  # one row per entry of the kernel
    halves = (range(8),) if dsub == 2 else (range(4), range(4, 8))
    least = True
    for _ in range(20):
        codes = torch.randint(0, 256, (8, M))
        for tig in range(4):
            for gid in range(8):
                kb = [int(codes[gid, MQ * tig + j]) for j in range(MQ)]
                words = [sum(kb[4 * x + k] << (8 * k) for k in range(4)) for x in range(MQ // 4)]
                rk = rot_bytes(words, gid)
                regs = []
                for u in range(MQ):
                    byte = (rk[u >> 2] >> (8 * (u & 3))) & 255
                    off = (4 * ESZ * (u + gid)) & (ROWBK - 1)
                    regs.append(entries[(tig * ESZ + off + byte * ROWBK) // ESZ])
                regs = unrotate(regs, gid)
                for w in range(MQ):
                    m = MQ * tig + w
                    assert torch.equal(regs[w], c[0, m, codes[gid, m]]), (D, dsub, tig, gid, w)
        for u in range(MQ):
            for half in halves:
                banks = set()
                for gid in half:
                    for tig in range(4):
                        a = (tig * ESZ + ((4 * ESZ * (u + gid)) & (ROWBK - 1))
                             + int(codes[gid, MQ * tig + (u + gid) % MQ]) * ROWBK) // 4
                        banks |= {(a + k) % 32 for k in range(ESZ // 4)}
                least &= len(banks) == 32
    return least


def emulate_v(D):
    """PQ_ROT=2's V gathers: lane (gid, tig) holds the VR code bytes of subspaces VR*gid + r of its token; at step u it
    reads output tile (u + tig) mod VR of the unpadded V table; the registers are rotated back in two select stages."""
    M, K, ESZ = D // 2, 256, 4
    VR, ROWBV = M // 8, M * ESZ
    c = torch.randn(1, M, K, 2)
    entries = ca.mma_tables(c, "v").view(-1, 2)
    conflict_free = True
    for _ in range(20):
        codes = torch.randint(0, 256, (4, M))  # one token per tig (the instruction's token j of each lane)
        for gid in range(8):
            for tig in range(4):
                vb = [int(codes[tig, VR * gid + r]) for r in range(VR)]
                words = [sum(vb[4 * x + k] << (8 * k) for k in range(min(4, VR))) for x in range(max(1, VR // 4))]
                rv = rot_bytes(words, tig)
                regs = []
                for u in range(VR):
                    byte = (rv[u >> 2] >> (8 * (u & 3))) & 255
                    off = (8 * ESZ * (u + tig)) & (ROWBV - 1)
                    regs.append(entries[(gid * ESZ + off + byte * ROWBV) // ESZ])
                regs = unrotate(regs, tig)
                for r in range(VR):
                    m = VR * gid + r
                    assert torch.equal(regs[r], c[0, m, codes[tig, m]]), (D, gid, tig, r)
        for u in range(VR):
            banks = {((gid * ESZ + ((8 * ESZ * (u + tig)) & (ROWBV - 1))
                       + int(codes[tig, VR * gid + (u + tig) % VR]) * ROWBV) // 4) % 32
                     for gid in range(8) for tig in range(4)}
            conflict_free &= len(banks) == 32
    print(f"d={D} V: every gathered entry is its centroid; every instruction conflict-free: {conflict_free}")


if __name__ == "__main__":
    main()
