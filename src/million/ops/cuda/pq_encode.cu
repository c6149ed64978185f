// PQ encoding (nearest centroid per subspace, ksub = 256, uint8 codes) in CUDA C++ (sm_90).
//
// x [B, H, T, D] (fp16 / bf16 / fp32, last dim contiguous, base and row strides 16-byte aligned where D allows,
// else rows of D elements, 8-byte aligned for dsub 4); codes
// [B, H, T, M] uint8 contiguous. Tables are prepared on the host side (million/ops/cuda_encode.py)
// per (centroid head hc, subspace m) = "table subspace" s = hc * M + m, and cached per codebook.
//
// Grid (chunks, ceil(M / MG), H): a block owns one head h, MG consecutive subspaces and one chunk of
// the B * T tokens of that head; its subspaces' tables are copied to shared memory once.
//
// kind 0, "pruned" (dsub 2, exact fp32): a G x G grid over the centroids' bounding box (border cells
//   extended to infinity); per cell a list of candidate centroids that provably contains the nearest
//   centroid of every point of the cell (cells widened by a margin, so fp32 cell assignment near a
//   border is safe). A point scans only its cell's list: per candidate dist' = ||c||^2 - 2 x.c in
//   fp32 (two FFMA), strict '<' in ascending index order (ties: lowest index, as torch.argmin).
// kind 1, "brute" (dsub 2 or 4, exact fp32): every centroid, program-uniform shared-memory loads,
//   R tokens per thread.
// kind 2, "mma" (dsub 4): mma.sync m16n8k16 fp16 -> fp32 per 16 tokens x 8 centroids with
//   A = [x_hi(4), x_hi(4), x_lo(4), 1, 1, 0, 0], B = [-2c_hi(4), -2c_lo(4), -2c_hi(4), n_hi, n_lo, 0, 0]
//   and C = ||x||^2, i.e. D = ||x - c||^2 to ~22 bits; argmin as a float min over keys with the
//   6-bit (block, parity) index in the low mantissa bits (near-ties within ~2^-17 relative may
//   flip). Tokens whose |x| exceeds the fp16 range are redone exactly from the fp32 table.
//   opt bit 1 (mma2): two tiles per B fragment, ||x||^2 through the MMA. opt bit 2 (mma3, the default
//   with bit 3 = rolled subspace loop): keys built as bits(D) * 64 + tag on the IMAD / LEA pipes with
//   a per-row accumulator offset that puts every D of a row in one binade, DPX three-way minimum. opt bit 8
//   ("staged"): mma3 with each row's values computed once, by one lane, and handed over by ldmatrix; with bit 10 the
//   row's offset goes through the MMA's K dimension (C = 0), with bit 12 in blocks of 16 warps (the default, 6080).
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

struct EncArgs {
  const void* x; uint8_t* codes;
  const void* tab;        // kind 0: float4 [S][256] (-2c0, -2c1, ||c||^2, 0); kind 1/2: float [S][256][8]
  const uint32_t* cells;  // kind 0: [S][G*G] (offset | len << 16)
  const uint8_t* lists;   // kind 0: [S][lcap]
  const float* grid;      // kind 0: [S][4] (lo0, lo1, 1/w0, 1/w1)
  const uint2* frags;     // kind 2: [S][32 blocks][32 lanes] B fragments
  long long sx_b, sx_h, sx_t;  // element strides of x
  long long so_b, so_h, so_t;  // element strides of codes
  int B, H, T, M, Hc, dsub, dtype, kind, chunks, G, lcap;
  int opt;  // bit 0: kind 0 interleaves two subspaces' scans; bit 1: kind 2 uses enc_mma2_kernel; bit 2: enc_mma3_kernel
};

static char g_err[512];

template <typename TX> struct Ld;
template <> struct Ld<__half> {
  static constexpr int PER16 = 8;
  static __device__ __forceinline__ void cvt(uint4 v, float* o) {
    const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) { float2 f = __half22float2(h[i]); o[2 * i] = f.x; o[2 * i + 1] = f.y; }
  }
  static __device__ __forceinline__ float one(const void* p) { return __half2float(*reinterpret_cast<const __half*>(p)); }
};
template <> struct Ld<__nv_bfloat16> {
  static constexpr int PER16 = 8;
  static __device__ __forceinline__ void cvt(uint4 v, float* o) {
    const uint32_t* w = reinterpret_cast<const uint32_t*>(&v);
#pragma unroll
    for (int i = 0; i < 4; ++i) { o[2 * i] = __uint_as_float(w[i] << 16); o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
  }
  static __device__ __forceinline__ float one(const void* p) {
    return __uint_as_float(((uint32_t)*reinterpret_cast<const uint16_t*>(p)) << 16);
  }
};
template <> struct Ld<float> {
  static constexpr int PER16 = 4;
  static __device__ __forceinline__ void cvt(uint4 v, float* o) {
    o[0] = __uint_as_float(v.x); o[1] = __uint_as_float(v.y); o[2] = __uint_as_float(v.z); o[3] = __uint_as_float(v.w);
  }
  static __device__ __forceinline__ float one(const void* p) { return *reinterpret_cast<const float*>(p); }
};

// token n in [0, B*T) of head h -> element offset of its row in x / codes
__device__ __forceinline__ long long xrow(const EncArgs& a, int h, long long n) {
  long long b = n / a.T, t = n - b * a.T;
  return b * a.sx_b + (long long)h * a.sx_h + t * a.sx_t;
}
__device__ __forceinline__ long long orow(const EncArgs& a, int h, long long n) {
  long long b = n / a.T, t = n - b * a.T;
  return b * a.so_b + (long long)h * a.so_h + t * a.so_t;
}

__device__ __forceinline__ void chunk_range(const EncArgs& a, long long& n0, long long& n1) {
  long long N = (long long)a.B * a.T;
  long long per = (N + a.chunks - 1) / a.chunks;
  n0 = per * blockIdx.x;
  n1 = min(N, n0 + per);
}

// ---------------------------------------------------------------------------------------------
// kind 0: grid-pruned exact search, dsub 2. MG = 8 subspaces per block (x slice: 16 values).
template <typename TX, int MG, bool PAIR>
__global__ void __launch_bounds__(256) enc_pruned_kernel(EncArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int GG = a.G * a.G;
  float4* cen = reinterpret_cast<float4*>(smem);                      // [MG][256]
  uint32_t* cells = reinterpret_cast<uint32_t*>(cen + MG * 256);      // [MG][GG]
  float4* grd = reinterpret_cast<float4*>(cells + MG * GG);           // [MG]
  uint8_t* lists = reinterpret_cast<uint8_t*>(grd + MG);              // [MG][lcap]
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  {
    const float4* gc = reinterpret_cast<const float4*>(a.tab) + s0 * 256;
    for (int i = threadIdx.x; i < mg * 256; i += blockDim.x) cen[i] = gc[i];
    const uint32_t* gl = a.cells + s0 * GG;
    for (int i = threadIdx.x; i < mg * GG; i += blockDim.x) cells[i] = gl[i];
    const float4* gg = reinterpret_cast<const float4*>(a.grid) + s0;
    for (int i = threadIdx.x; i < mg; i += blockDim.x) grd[i] = gg[i];
    const uint4* li = reinterpret_cast<const uint4*>(a.lists + s0 * a.lcap);
    uint4* ls = reinterpret_cast<uint4*>(lists);
    for (int i = threadIdx.x; i < mg * a.lcap / 16; i += blockDim.x) ls[i] = li[i];
  }
  __syncthreads();
  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  constexpr int NV = MG * 2;
  constexpr int NL = NV / Ld<TX>::PER16;
  const int Gm1 = a.G - 1;
  const float gmax = (float)Gm1;
  for (long long n = n0 + threadIdx.x; n < n1; n += blockDim.x) {
    float xv[NV];
    const TX* xp = X + xrow(a, h, n) + m0 * 2;
    if (mg == MG && (reinterpret_cast<uintptr_t>(xp) & 15) == 0) {  // rows of D * size % 16 != 0 bytes: scalar loads
      uint4 raw[NL];
#pragma unroll
      for (int i = 0; i < NL; ++i) raw[i] = __ldg(reinterpret_cast<const uint4*>(xp) + i);
#pragma unroll
      for (int i = 0; i < NL; ++i) Ld<TX>::cvt(raw[i], xv + i * Ld<TX>::PER16);
    } else {
#pragma unroll
      for (int i = 0; i < NV; ++i) xv[i] = i < mg * 2 ? Ld<TX>::one(xp + i) : 0.f;
    }
    uint32_t lo = 0, hi = 0;
    if (PAIR && mg == MG) {
      // two subspaces per loop: independent dependency chains (list byte -> centroid -> FFMA) interleave
#pragma unroll
      for (int j = 0; j < MG; j += 2) {
        const uint8_t* lp[2];
        const float4* cj[2];
        int len[2];
        float best[2], x0[2], x1[2];
        int bi[2];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          x0[u] = xv[2 * (j + u)]; x1[u] = xv[2 * (j + u) + 1];
          const float4 g = grd[j + u];
          const float fx = fminf(fmaxf((x0[u] - g.x) * g.z, 0.f), gmax);
          const float fy = fminf(fmaxf((x1[u] - g.y) * g.w, 0.f), gmax);
          const uint32_t ci = cells[(j + u) * GG + (int)fy * a.G + (int)fx];
          lp[u] = lists + (j + u) * a.lcap + (ci & 0xffffu);
          len[u] = (int)(ci >> 16);
          cj[u] = cen + (j + u) * 256;
          best[u] = __int_as_float(0x7f800000);
          bi[u] = 0;
        }
        const int n2 = max(len[0], len[1]);
        for (int t = 0; t < n2; ++t) {
#pragma unroll
          for (int u = 0; u < 2; ++u) {
            const int k = lp[u][min(t, len[u] - 1)];
            const float4 c = cj[u][k];
            const float d = fmaf(x1[u], c.y, fmaf(x0[u], c.x, c.z));
            if (d < best[u]) { best[u] = d; bi[u] = k; }  // a repeated last candidate never wins twice
          }
        }
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          if (j + u < 4) lo |= (uint32_t)bi[u] << (8 * (j + u)); else hi |= (uint32_t)bi[u] << (8 * (j + u - 4));
        }
      }
    } else
#pragma unroll
    for (int j = 0; j < MG; ++j) {
      if (j < mg) {
        const float x0 = xv[2 * j], x1 = xv[2 * j + 1];
        const float4 g = grd[j];
        const float fx = fminf(fmaxf((x0 - g.x) * g.z, 0.f), gmax);
        const float fy = fminf(fmaxf((x1 - g.y) * g.w, 0.f), gmax);
        const int cell = (int)fy * a.G + (int)fx;
        const uint32_t ci = cells[j * GG + cell];
        const uint8_t* lp = lists + j * a.lcap + (ci & 0xffffu);
        const int len = (int)(ci >> 16);
        const float4* cj = cen + j * 256;
        float best = __int_as_float(0x7f800000);
        int bi = 0;
        for (int t = 0; t < len; ++t) {
          const int k = lp[t];
          const float4 c = cj[k];
          const float d = fmaf(x1, c.y, fmaf(x0, c.x, c.z));
          if (d < best) { best = d; bi = k; }
        }
        if (j < 4) lo |= (uint32_t)bi << (8 * j); else hi |= (uint32_t)bi << (8 * (j - 4));
      }
    }
    uint8_t* op = a.codes + orow(a, h, n) + m0;
    if (mg == MG && MG == 8 && (reinterpret_cast<uintptr_t>(op) & 7) == 0) {  // (rows of M % 8 != 0 bytes: bytes)
      *reinterpret_cast<uint2*>(op) = make_uint2(lo, hi);
    } else {
      for (int j = 0; j < mg; ++j) op[j] = (uint8_t)((j < 4 ? lo >> (8 * j) : hi >> (8 * (j - 4))) & 0xff);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// kind 1: brute force, exact fp32, dsub 2 or 4; R tokens per thread, MG subspaces per block.
template <typename TX, int DSUB, int MG, int R>
__global__ void __launch_bounds__(256) enc_brute_kernel(EncArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  float4* cen = reinterpret_cast<float4*>(smem);  // [MG][256][2] (-2c0..3, ||c||^2 ...)
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  {
    const float4* gc = reinterpret_cast<const float4*>(a.tab) + s0 * 512;
    for (int i = threadIdx.x; i < mg * 512; i += blockDim.x) cen[i] = gc[i];
  }
  __syncthreads();
  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  for (long long nb = n0 + threadIdx.x; nb < n1; nb += (long long)blockDim.x * R) {
    long long xo[R], oo[R];
    bool ok[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      long long n = nb + (long long)r * blockDim.x;
      ok[r] = n < n1;
      xo[r] = ok[r] ? xrow(a, h, n) + m0 * DSUB : 0;
      oo[r] = ok[r] ? orow(a, h, n) + m0 : 0;
    }
    for (int j = 0; j < mg; ++j) {
      float xv[R][DSUB];
#pragma unroll
      for (int r = 0; r < R; ++r)
#pragma unroll
        for (int e = 0; e < DSUB; ++e) xv[r][e] = ok[r] ? Ld<TX>::one(X + xo[r] + j * DSUB + e) : 0.f;
      float best[R];
      int bi[R];
#pragma unroll
      for (int r = 0; r < R; ++r) { best[r] = __int_as_float(0x7f800000); bi[r] = 0; }
      const float4* cj = cen + j * 512;
#pragma unroll 4
      for (int k = 0; k < 256; ++k) {
        const float4 c = cj[2 * k];
        float nc;
        if (DSUB == 2) nc = c.z; else nc = cj[2 * k + 1].x;
#pragma unroll
        for (int r = 0; r < R; ++r) {
          float d = fmaf(xv[r][1], c.y, fmaf(xv[r][0], c.x, nc));
          if (DSUB == 4) d = fmaf(xv[r][3], c.w, fmaf(xv[r][2], c.z, d));
          if (d < best[r]) { best[r] = d; bi[r] = k; }
        }
      }
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (ok[r]) a.codes[oo[r] + j] = (uint8_t)bi[r];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// kind 2: tensor cores, dsub 4. A warp encodes 16 tokens x MG subspaces per step.
__device__ __forceinline__ uint32_t pack_h2(float a, float b) {
  __half2 h = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ void mma16816(float* d, const uint32_t* A, uint2 b) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "r"(b.x), "r"(b.y));
}

template <typename TX, int MG>
__device__ __forceinline__ void mma_finish(const EncArgs& a, const TX* X, const float* tab, int h, long long n,
                                           long long s0, int m0, int mg, bool bad, uint32_t (&cw)[MG / 4]) {
  if (bad) {
    const TX* xr = X + xrow(a, h, n) + m0 * 4;
    for (int j = 0; j < mg; ++j) {
      const float x0 = Ld<TX>::one(xr + 4 * j), x1 = Ld<TX>::one(xr + 4 * j + 1);
      const float x2 = Ld<TX>::one(xr + 4 * j + 2), x3 = Ld<TX>::one(xr + 4 * j + 3);
      const float* tj = tab + (s0 + j) * 256 * 8;
      float best = __int_as_float(0x7f800000);
      int bi = 0;
      for (int k = 0; k < 256; ++k) {
        const float* c = tj + k * 8;
        const float d = fmaf(x3, c[3], fmaf(x2, c[2], fmaf(x1, c[1], fmaf(x0, c[0], c[4]))));
        if (d < best) { best = d; bi = k; }
      }
#pragma unroll
      for (int i = 0; i < MG / 4; ++i)
        if (i == (j >> 2)) cw[i] = (cw[i] & ~(0xffu << (8 * (j & 3)))) | ((uint32_t)bi << (8 * (j & 3)));
    }
  }
  uint8_t* op = a.codes + orow(a, h, n) + m0;
  if (mg == MG && MG == 8 && (reinterpret_cast<uintptr_t>(op) & 7) == 0) {  // (rows of M % 8 != 0 bytes: bytes)
    *reinterpret_cast<uint2*>(op) = make_uint2(cw[0], cw[1]);
  } else {
#pragma unroll
    for (int j = 0; j < MG; ++j)
      if (j < mg) op[j] = (uint8_t)(cw[j >> 2] >> (8 * (j & 3)));
  }
}

template <typename TX, int MG>
__global__ void __launch_bounds__(256) enc_mma_kernel(EncArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  uint2* fr = reinterpret_cast<uint2*>(smem);  // [MG][32 blocks][32 lanes]
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  {
    const uint4* gf = reinterpret_cast<const uint4*>(a.frags + s0 * 1024);
    uint4* sf = reinterpret_cast<uint4*>(fr);
    for (int i = threadIdx.x; i < mg * 512; i += blockDim.x) sf[i] = gf[i];
    for (int i = mg * 512 + threadIdx.x; i < MG * 512; i += blockDim.x) sf[i] = make_uint4(0, 0, 0, 0);
  }
  __syncthreads();
  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int g = lane >> 2, q = lane & 3, half = q & 1;
  const float* tab = reinterpret_cast<const float*>(a.tab);
  for (long long tb = n0 + 16LL * warp; tb < n1; tb += 16LL * nw) {
    const long long na = tb + g, nb = tb + g + 8;
    const bool oka = na < n1, okb = nb < n1;
    const TX* xa = X + (oka ? xrow(a, h, na) : 0) + m0 * 4 + 2 * half;
    const TX* xb = X + (okb ? xrow(a, h, nb) : 0) + m0 * 4 + 2 * half;
    float va[MG][2], vb[MG][2];
#pragma unroll
    for (int j = 0; j < MG; ++j) {
      const bool in = j < mg;
      va[j][0] = (oka && in) ? Ld<TX>::one(xa + 4 * j) : 0.f;
      va[j][1] = (oka && in) ? Ld<TX>::one(xa + 4 * j + 1) : 0.f;
      vb[j][0] = (okb && in) ? Ld<TX>::one(xb + 4 * j) : 0.f;
      vb[j][1] = (okb && in) ? Ld<TX>::one(xb + 4 * j + 1) : 0.f;
    }
    static_assert(MG % 4 == 0, "MG must be a multiple of 4");
    uint32_t ca[MG / 4], cb[MG / 4];
#pragma unroll
    for (int i = 0; i < MG / 4; ++i) { ca[i] = 0; cb[i] = 0; }
    bool bad_a = false, bad_b = false;
#pragma unroll
    for (int j = 0; j < MG; ++j) {
      // A fragment: rows g (a) and g+8 (b); cols 2q,2q+1 -> x_hi(dims 2*half, +1); cols 2q+8,+9 ->
      // q<2: x_lo(dims 2*half, +1), q==2: (1, 1), q==3: 0
      const __half2 ha = __floats2half2_rn(va[j][0], va[j][1]);
      const __half2 hb = __floats2half2_rn(vb[j][0], vb[j][1]);
      const float2 fa = __half22float2(ha), fb = __half22float2(hb);
      bad_a |= !(fabsf(fa.x) < 65504.f && fabsf(fa.y) < 65504.f);
      bad_b |= !(fabsf(fb.x) < 65504.f && fabsf(fb.y) < 65504.f);
      uint32_t A[4];
      A[0] = *reinterpret_cast<const uint32_t*>(&ha);
      A[1] = *reinterpret_cast<const uint32_t*>(&hb);
      if (q < 2) {
        A[2] = pack_h2(va[j][0] - fa.x, va[j][1] - fa.y);
        A[3] = pack_h2(vb[j][0] - fb.x, vb[j][1] - fb.y);
      } else if (q == 2) {
        A[2] = A[3] = 0x3c003c00u;
      } else {
        A[2] = A[3] = 0u;
      }
      float sa = va[j][0] * va[j][0] + va[j][1] * va[j][1];
      float sb = vb[j][0] * vb[j][0] + vb[j][1] * vb[j][1];
      sa += __shfl_xor_sync(0xffffffffu, sa, 1);
      sb += __shfl_xor_sync(0xffffffffu, sb, 1);
      float ka = __int_as_float(0x7f800000), kb = ka;
      const uint2* fj = fr + j * 1024 + lane;
#pragma unroll
      for (int blk = 0; blk < 32; ++blk) {
        float d[4] = {sa, sa, sb, sb};
        mma16816(d, A, fj[blk * 32]);
        const uint32_t tag = (uint32_t)(blk * 2);
        ka = fminf(ka, __uint_as_float((__float_as_uint(d[0]) & ~63u) | tag));
        ka = fminf(ka, __uint_as_float((__float_as_uint(d[1]) & ~63u) | (tag + 1)));
        kb = fminf(kb, __uint_as_float((__float_as_uint(d[2]) & ~63u) | tag));
        kb = fminf(kb, __uint_as_float((__float_as_uint(d[3]) & ~63u) | (tag + 1)));
      }
      // reduce over the quad (q = 0..3 hold columns 2q, 2q+1 of every block)
      // index of the min: compare (key, q) pairs so that exact key ties go to the lowest index
      float kq = ka; int qa = q;
      float kr = kb; int qb = q;
#pragma unroll
      for (int off = 1; off <= 2; off <<= 1) {
        float ok_ = __shfl_xor_sync(0xffffffffu, kq, off);
        int oq = __shfl_xor_sync(0xffffffffu, qa, off);
        if (ok_ < kq || (ok_ == kq && oq < qa)) { kq = ok_; qa = oq; }
        float ok2 = __shfl_xor_sync(0xffffffffu, kr, off);
        int oq2 = __shfl_xor_sync(0xffffffffu, qb, off);
        if (ok2 < kr || (ok2 == kr && oq2 < qb)) { kr = ok2; qb = oq2; }
      }
      const uint32_t ta = __float_as_uint(kq) & 63u, tb2 = __float_as_uint(kr) & 63u;
      const uint32_t code_a = (ta >> 1) * 8 + 2 * qa + (ta & 1);
      const uint32_t code_b = (tb2 >> 1) * 8 + 2 * qb + (tb2 & 1);
      ca[j >> 2] |= code_a << (8 * (j & 3));
      cb[j >> 2] |= code_b << (8 * (j & 3));
    }
    // exact redo for tokens with values outside the fp16 range (rare; fp32 table from global)
    bad_a = __any_sync(0xffffffffu, bad_a) && (__shfl_xor_sync(0xffffffffu, (int)bad_a, 1) | (int)bad_a);
    bad_b = __any_sync(0xffffffffu, bad_b) && (__shfl_xor_sync(0xffffffffu, (int)bad_b, 1) | (int)bad_b);
    if (q == 0) {
      if (oka) mma_finish<TX, MG>(a, X, tab, h, na, s0, m0, mg, bad_a, ca);
      if (okb) mma_finish<TX, MG>(a, X, tab, h, nb, s0, m0, mg, bad_b, cb);
    }
  }
}


// kind 2, opt bit 1: two 16-token tiles per warp step share each B fragment load; ||x||^2 enters
// through A columns 14, 15 (hi/lo fp16) against B rows (1, 1), so the accumulator input is zero.
__device__ __forceinline__ void mma16816_z(float& d0, float& d1, float& d2, float& d3, const uint32_t* A, uint2 b) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
      : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
      : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "r"(b.x), "r"(b.y), "f"(0.f));
}

template <typename TX, int MG>
__global__ void __launch_bounds__(256, 2) enc_mma2_kernel(EncArgs a) {
  extern __shared__ __align__(16) unsigned char smem[];
  uint2* fr = reinterpret_cast<uint2*>(smem);  // [MG][32 blocks][32 lanes]
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int g = lane >> 2, q = lane & 3, half = q & 1;
  {
    const uint4* gf = reinterpret_cast<const uint4*>(a.frags + s0 * 1024);
    uint4* sf = reinterpret_cast<uint4*>(fr);
    for (int i = threadIdx.x; i < mg * 512; i += blockDim.x) sf[i] = gf[i];
    for (int i = mg * 512 + threadIdx.x; i < MG * 512; i += blockDim.x) sf[i] = make_uint4(0, 0, 0, 0);
  }
  __syncthreads();
  // B rows 14, 15 (lane q == 3, second register) = (1, 1): multiplies A's (||x||^2 hi, lo)
  if (q == 3) {
    for (int i = warp; i < MG * 32; i += nw) fr[i * 32 + lane].y = 0x3c003c00u;
  }
  __syncthreads();
  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  const float* tab = reinterpret_cast<const float*>(a.tab);
  for (long long tb = n0 + 32LL * warp; tb < n1; tb += 32LL * nw) {
    long long nn[4];
    bool ok[4];
    const TX* xp[4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {  // rows g, g+8 of tile 0 and of tile 1
      nn[r] = tb + g + 8 * r;
      ok[r] = nn[r] < n1;
      xp[r] = X + (ok[r] ? xrow(a, h, nn[r]) : 0) + m0 * 4 + 2 * half;
    }
    float v[4][2], vn[4][2];  // subspace j's and j+1's x (loads one subspace ahead)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      vn[r][0] = ok[r] ? Ld<TX>::one(xp[r]) : 0.f;
      vn[r][1] = ok[r] ? Ld<TX>::one(xp[r] + 1) : 0.f;
    }
    uint32_t cw[4][MG / 4];
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
      for (int i = 0; i < MG / 4; ++i) cw[r][i] = 0;
    bool bad[4] = {false, false, false, false};
#pragma unroll
    for (int j = 0; j < MG; ++j) {
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        v[r][0] = vn[r][0]; v[r][1] = vn[r][1];
        const bool in = ok[r] && j + 1 < mg;
        vn[r][0] = in ? Ld<TX>::one(xp[r] + 4 * (j + 1)) : 0.f;
        vn[r][1] = in ? Ld<TX>::one(xp[r] + 4 * (j + 1) + 1) : 0.f;
      }
      uint32_t A[2][4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const __half2 hh = __floats2half2_rn(v[r][0], v[r][1]);
        const float2 f = __half22float2(hh);
        float sq = v[r][0] * v[r][0] + v[r][1] * v[r][1];
        sq += __shfl_xor_sync(0xffffffffu, sq, 1);
        // fp16 operands: |x| and ||x||^2 must stay inside the fp16 range, else the exact redo
        bad[r] |= !(fabsf(f.x) < 65504.f && fabsf(f.y) < 65504.f && sq < 32768.f);
        const __half sh = __float2half_rn(sq);
        const float shf = __half2float(sh);
        uint32_t hi_lo;
        if (q < 2) hi_lo = pack_h2(v[r][0] - f.x, v[r][1] - f.y);
        else if (q == 2) hi_lo = 0x3c003c00u;
        else hi_lo = pack_h2(shf, sq - shf);
        // r = 0, 1: tile 0 rows g, g+8; r = 2, 3: tile 1
        A[r >> 1][(r & 1)] = *reinterpret_cast<const uint32_t*>(&hh);
        A[r >> 1][2 + (r & 1)] = hi_lo;
      }
      float k[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) k[r] = __int_as_float(0x7f800000);
      const uint2* fj = fr + j * 1024 + lane;
#pragma unroll 8
      for (int blk = 0; blk < 32; ++blk) {
        const uint2 b = fj[blk * 32];
        const uint32_t tag = (uint32_t)(blk * 2);
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          float d0, d1, d2, d3;
          mma16816_z(d0, d1, d2, d3, A[t], b);
          k[2 * t] = fminf(k[2 * t], __uint_as_float((__float_as_uint(d0) & ~63u) | tag));
          k[2 * t] = fminf(k[2 * t], __uint_as_float((__float_as_uint(d1) & ~63u) | (tag + 1)));
          k[2 * t + 1] = fminf(k[2 * t + 1], __uint_as_float((__float_as_uint(d2) & ~63u) | tag));
          k[2 * t + 1] = fminf(k[2 * t + 1], __uint_as_float((__float_as_uint(d3) & ~63u) | (tag + 1)));
        }
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        float kq = k[r];
        int qq = q;
#pragma unroll
        for (int off = 1; off <= 2; off <<= 1) {
          const float ok_ = __shfl_xor_sync(0xffffffffu, kq, off);
          const int oq = __shfl_xor_sync(0xffffffffu, qq, off);
          if (ok_ < kq || (ok_ == kq && oq < qq)) { kq = ok_; qq = oq; }
        }
        const uint32_t t6 = __float_as_uint(kq) & 63u;
        cw[r][j >> 2] |= ((t6 >> 1) * 8 + 2 * qq + (t6 & 1)) << (8 * (j & 3));
      }
    }
#pragma unroll
    for (int r = 0; r < 4; ++r)
      bad[r] = __any_sync(0xffffffffu, bad[r]) && (__shfl_xor_sync(0xffffffffu, (int)bad[r], 1) | (int)bad[r]);
    if (q == 0) {
#pragma unroll
      for (int r = 0; r < 4; ++r)
        if (ok[r]) mma_finish<TX, MG>(a, X, tab, h, nn[r], s0, m0, mg, bad[r], cw[r]);
    }
  }
}
// kind 2, opt bit 2 ("mma3"): as mma2, but the candidate keys are built off the ALU pipe. The
// accumulator input C = 1.25 P per row, P a power of two >= 4 (||x||^2 + max ||c||^2) >= 2 max_c d,
// so every D = 1.25 P + d of a row lies in one binade [P, 2P) (margin P/4 for rounding below zero),
// where the float bits order like the values. key = bits(D) * 64 + tag (one IMAD, fmaheavy pipe)
// keeps the whole mantissa: bits(D) * 64 mod 2^32 = (E & 7) << 29 | mant << 6 never wraps, E is
// common to the row. Minimum over three keys per DPX VIMNMX3 (__vimin3_u32): 1.5 issued
// instructions per candidate pair instead of 4 ALU ones (LOP3 + FMNMX per candidate, the
// measured bottleneck of mma2: ALU pipe 64% busy, ncu 2026-11-23). Resolution: P * 2^-23.
__device__ __forceinline__ void mma16816_c(float& d0, float& d1, float& d2, float& d3, const uint32_t* A, uint2 b,
                                           float c01, float c23) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%11,%11};\n"
      : "=f"(d0), "=f"(d1), "=f"(d2), "=f"(d3)
      : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "r"(b.x), "r"(b.y), "f"(c01), "f"(c23));
}
__device__ __forceinline__ uint32_t key64(float d, uint32_t tag) { return __float_as_uint(d) * 64u + tag; }
// Candidate keys of mma3 and the wg kernel. KM bit 0 ("key256"): key = bits(D) * 256 + (8 blk + parity), the lane's 2q OR-ed in before the quad
// minimum, so the low 8 bits are the centroid index itself (D's exponent is common to the row: its
// low bit is all that bits(D) * 256 keeps of it, and the whole mantissa stays); the quad reduction is
// then two shuffles and two minima per row. Otherwise key = bits(D) * 64 + (2 blk + parity) as mma3.
// KM bit 1: the multiplier comes from a register (kmul), so the key is an IMAD (FMA pipe) and not a
// LEA (ALU pipe, which the VIMNMX3 minima already load).
template <int KM>
__device__ __forceinline__ uint32_t key_of(float d, uint32_t tag, uint32_t kmul) {
  if constexpr (KM & 2) return __float_as_uint(d) * kmul + tag;
  else return __float_as_uint(d) * ((KM & 1) ? 256u : 64u) + tag;
}
// the tag of column pair blk (0..31) at parity 0 (parity 1: + 1)
template <int KM>
__device__ __forceinline__ uint32_t tag_of(int blk) { return (KM & 1) ? (uint32_t)(blk * 8) : (uint32_t)(blk * 2); }
// the row's centroid index from the lane's minimum key kr: the smallest (value, index) over the quad (lanes q)
template <int KM>
__device__ __forceinline__ uint32_t quad_argmin(uint32_t kr, int q) {
  if constexpr (KM & 1) {  // the key's low 8 bits are the index once the lane's 2q is in
    kr |= (uint32_t)(2 * q);
    kr = min(kr, __shfl_xor_sync(0xffffffffu, kr, 1));
    kr = min(kr, __shfl_xor_sync(0xffffffffu, kr, 2));
    return kr & 0xffu;
  } else {  // index = 8 blk + 2 q + parity
    uint32_t kv = kr >> 6;
    int idx = (int)(((kr >> 1) & 31u) * 8u + 2u * q + (kr & 1u));
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      const uint32_t ov = __shfl_xor_sync(0xffffffffu, kv, off);
      const int oi = __shfl_xor_sync(0xffffffffu, idx, off);
      if (ov < kv || (ov == kv && oi < idx)) { kv = ov; idx = oi; }
    }
    return (uint32_t)idx;
  }
}
// 1.25 * (smallest power of two >= 4 * (sq + cmax)); sq + cmax >= 0
__device__ __forceinline__ float big_of(float s) {
  const uint32_t b = __float_as_uint(fmaxf(4.f * s, 1e-30f));
  return 1.25f * __uint_as_float((b + 0x7fffffu) & 0xff800000u);
}

// The rows a lane holds in the m16n8k16 fragment layout (mma3: R = 4, rows g, g+8 of two tiles; the wg kernel: R = 2):
// row r is token tb + g + 8 r; v[r] holds the lane's two x values of it in the current subspace (dims 2 half, 2 half + 1)
// and vn[r] the next subspace's, loaded one ahead; cw0 / cw1 collect the codes of subspaces 0-3 / 4-7; bad marks rows
// for the exact path. finish() merges the flags of the lane pair that shares a row and lets lane q == 0 write the codes.
template <typename TX, int MG, int R>
struct QuadRows {
  static_assert(MG == 8, "two code words per row");
  long long nn[R];
  bool ok[R];
  const TX* xp[R];
  float v[R][2], vn[R][2];
  uint32_t cw0[R], cw1[R];
  bool bad[R];
  __device__ __forceinline__ QuadRows(const EncArgs& a, const TX* X, int h, long long tb, long long n1, int g, int half,
                                      int m0) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      nn[r] = tb + g + 8 * r;
      ok[r] = nn[r] < n1;
      xp[r] = X + (ok[r] ? xrow(a, h, nn[r]) : 0) + m0 * 4 + 2 * half;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      vn[r][0] = ok[r] ? Ld<TX>::one(xp[r]) : 0.f;
      vn[r][1] = ok[r] ? Ld<TX>::one(xp[r] + 1) : 0.f;
      cw0[r] = 0;
      cw1[r] = 0;
      bad[r] = false;
    }
  }
  // subspace j's values into v; subspace j + 1's loads issued
  __device__ __forceinline__ void next(int j, int mg) {
#pragma unroll
    for (int r = 0; r < R; ++r) {
      v[r][0] = vn[r][0]; v[r][1] = vn[r][1];
      const bool in = ok[r] && j + 1 < mg;
      vn[r][0] = in ? Ld<TX>::one(xp[r] + 4 * (j + 1)) : 0.f;
      vn[r][1] = in ? Ld<TX>::one(xp[r] + 4 * (j + 1) + 1) : 0.f;
    }
  }
  __device__ __forceinline__ void code(int r, int j, uint32_t idx) {
    if (j & 4) cw1[r] |= idx << (8 * (j & 3));
    else cw0[r] |= idx << (8 * (j & 3));
  }
  __device__ __forceinline__ void finish(const EncArgs& a, const TX* X, const float* tab, int h, long long s0, int m0,
                                         int mg, int q) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      bad[r] = __any_sync(0xffffffffu, bad[r]) && (__shfl_xor_sync(0xffffffffu, (int)bad[r], 1) | (int)bad[r]);
    if (q == 0) {
#pragma unroll
      for (int r = 0; r < R; ++r)
        if (ok[r]) {
          uint32_t cw[MG / 4] = {cw0[r], cw1[r]};
          mma_finish<TX, MG>(a, X, tab, h, nn[r], s0, m0, mg, bad[r], cw);
        }
    }
  }
};

// mma3's scan of one subspace for two 16-token tiles: 32 column blocks of 8 centroids (B fragment fj[blk * 32]), the
// keys (key_of) of rows g, g+8 of tile 0 and of tile 1 folded into k[0..3] by three-way minima; C of those rows in
// c[0..3] (CK: C zero, the offset is in A and B), BU the unroll of the block loop
template <int KM, int BU, int CK>
__device__ __forceinline__ void mma3_scan(uint32_t (&k)[4], const uint32_t (&A)[2][4], const uint2* fj, const float* c,
                                          uint32_t kmul) {
#pragma unroll
  for (int r = 0; r < 4; ++r) k[r] = 0xffffffffu;
#pragma unroll BU
  for (int blk = 0; blk < 32; ++blk) {
    const uint2 b = fj[blk * 32];
    const uint32_t tag = tag_of<KM>(blk);
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      float d0, d1, d2, d3;
      if constexpr (CK) mma16816_z(d0, d1, d2, d3, A[t], b);
      else mma16816_c(d0, d1, d2, d3, A[t], b, c[2 * t], c[2 * t + 1]);
      k[2 * t] = __vimin3_u32(k[2 * t], key_of<KM>(d0, tag, kmul), key_of<KM>(d1, tag + 1, kmul));
      k[2 * t + 1] = __vimin3_u32(k[2 * t + 1], key_of<KM>(d2, tag, kmul), key_of<KM>(d3, tag + 1, kmul));
    }
  }
}

// the prologue of mma3 and the staged kernel: the MG subspaces' B fragments to shared memory (zeros past mg), B rows 14,
// 15 = (1, 1) (lanes q == 3, second register), and per subspace the largest ||c||^2 (tab entry 4) into cmax
template <int MG>
__device__ __forceinline__ void mma3_prologue(const EncArgs& a, uint2* fr, float* cmax, const float* tab, long long s0,
                                              int mg) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  {
    const uint4* gf = reinterpret_cast<const uint4*>(a.frags + s0 * 1024);
    uint4* sf = reinterpret_cast<uint4*>(fr);
    for (int i = threadIdx.x; i < mg * 512; i += blockDim.x) sf[i] = gf[i];
    for (int i = mg * 512 + threadIdx.x; i < MG * 512; i += blockDim.x) sf[i] = make_uint4(0, 0, 0, 0);
    // warp w: max ||c||^2 of subspace w
    for (int j = warp; j < MG; j += nw) {
      float mx = 0.f;
      if (j < mg)
        for (int k = lane; k < 256; k += 32) mx = fmaxf(mx, tab[((s0 + j) * 256 + k) * 8 + 4]);
#pragma unroll
      for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      if (lane == 0) cmax[j] = mx;
    }
  }
  __syncthreads();
  if ((lane & 3) == 3) {
    for (int i = warp; i < MG * 32; i += nw) fr[i * 32 + lane].y = 0x3c003c00u;
  }
  __syncthreads();
}

// JU: unroll the subspace loop (false: a rolled loop, 1/8 of the code: fewer instruction-cache
// misses); MINB: blocks per SM the registers are budgeted for.
template <typename TX, int MG, bool JU, int MINB, int KM>
__global__ void __launch_bounds__(256, MINB) enc_mma3_kernel(EncArgs a) {
  const uint32_t kmul = (a.opt & 64) ? 256u : 64u;  // (a register: see key_of)
  extern __shared__ __align__(16) unsigned char smem[];
  uint2* fr = reinterpret_cast<uint2*>(smem);  // [MG][32 blocks][32 lanes]
  float* cmax = reinterpret_cast<float*>(smem + MG * 1024 * 8);  // [MG] max ||c||^2
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int g = lane >> 2, q = lane & 3, half = q & 1;
  const float* tab = reinterpret_cast<const float*>(a.tab);
  mma3_prologue<MG>(a, fr, cmax, tab, s0, mg);
  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  for (long long tb = n0 + 32LL * warp; tb < n1; tb += 32LL * nw) {
    QuadRows<TX, MG, 4> rw(a, X, h, tb, n1, g, half, m0);  // rows g, g+8 of tile 0 and of tile 1
#pragma unroll (JU ? MG : 1)
    for (int j = 0; j < MG; ++j) {
      rw.next(j, mg);
      const float cm = cmax[j];
      uint32_t A[2][4];
      float big[4];  // C of rows g, g+8 (tile 0), g, g+8 (tile 1)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const __half2 hh = __floats2half2_rn(rw.v[r][0], rw.v[r][1]);
        const float2 f = __half22float2(hh);
        float sq = rw.v[r][0] * rw.v[r][0] + rw.v[r][1] * rw.v[r][1];
        sq += __shfl_xor_sync(0xffffffffu, sq, 1);
        rw.bad[r] |= !(fabsf(f.x) < 65504.f && fabsf(f.y) < 65504.f && sq < 32768.f);
        // the row's ||x||^2 over all 4 dims: lanes q and q^1 hold halves; q 0/1 and 2/3 see the same token
        big[r] = big_of(sq + cm);
        const __half sh = __float2half_rn(sq);
        const float shf = __half2float(sh);
        uint32_t hi_lo;
        if (q < 2) hi_lo = pack_h2(rw.v[r][0] - f.x, rw.v[r][1] - f.y);
        else if (q == 2) hi_lo = 0x3c003c00u;
        else hi_lo = pack_h2(shf, sq - shf);
        A[r >> 1][(r & 1)] = *reinterpret_cast<const uint32_t*>(&hh);
        A[r >> 1][2 + (r & 1)] = hi_lo;
      }
      // C fragment rows: c0, c1 = row g, c2, c3 = row g + 8; every lane of the quad needs the row's
      // value, and lanes q = 0, 1 (x dims 0-1) and q = 2, 3 (dims 2-3) hold the same token: the sq of
      // a row is summed over both dim pairs already (shfl xor 1 pairs q 0/1 and 2/3 of one token)
      uint32_t k[4];
      mma3_scan<KM, 8, 0>(k, A, fr + j * 1024 + lane, big, kmul);
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        rw.code(r, j, quad_argmin<KM>(k[r], q));
      }
    }
    rw.finish(a, X, tab, h, s0, m0, mg, q);
  }
}

// ---------------------------------------------------------------------------------------------
// kind 2, opt bit 8 ("staged"): mma3's MMAs, keys and minimum, with the per-row work done once. In mma3
// every lane of the quad that holds a row in the fragment layout computes that row's values (its x, its
// norm, the offset P, the range check), four times the work per (token, subspace). Here lane r of a warp
// owns row r of the warp's 32-token tile: it loads the row's 4 values of the subspace with one vector
// load, computes the A row [x_hi(4), x_hi(4), x_lo(4), 1, 1, ||x||^2 hi, lo] and the accumulator input
// 1.25 P once, and stores the A row to the warp's shared staging rows, from which two ldmatrix.x4 give the
// two tiles' fragments; the accumulator inputs go by shuffle. The same A, B and C as mma3, so the same
// distances and codes. Codes collect in shared memory (one byte per row and subspace) and the row's own
// lane writes them (or redoes the row exactly, as mma3).
template <typename TX> struct Ld4;  // 4 consecutive elements as floats (one 8- or 16-byte load)
template <> struct Ld4<__half> {
  static __device__ __forceinline__ float4 load(const __half* p) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&v.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&v.y));
    return make_float4(a.x, a.y, b.x, b.y);
  }
};
template <> struct Ld4<__nv_bfloat16> {
  static __device__ __forceinline__ float4 load(const __nv_bfloat16* p) {
    const uint2 v = *reinterpret_cast<const uint2*>(p);
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xffff0000u));
  }
};
template <> struct Ld4<float> {
  static __device__ __forceinline__ float4 load(const float* p) { return *reinterpret_cast<const float4*>(p); }
};
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
constexpr int kStageBytes = 32 * 32 + 32 * 8;  // per warp: 32 A rows of 32 bytes, 32 rows of 8 code bytes

// BU: the unroll of the column-block loop (32: every tag a compile-time constant). CK (opt bit 10): the row's offset
// enters through the K dimension (A column 14 = 1.25 P in fp16, B row 14 = 1; ||x||^2, common to the row, dropped) and
// the MMA's C is zero, so no per-row C registers (mma3 duplicates each row's C in two registers of the C fragment);
// D = 1.25 P + ||c||^2 - 2 x.c stays in [P, 2P) as mma3's does, but rounds at a different point, so codes may differ
// from mma3's at near-ties within one ulp of D; P outside [2^-14, 2^15] takes the exact path. PS (opt bit 11, needs
// KM bit 0): even and odd columns in separate minima over pairs of column blocks, so a block needs one tag (8 blk)
// instead of two; the parity bit is OR-ed into the odd minimum at the end.
template <typename TX, int MG, int MINB, int KM, int BU, int CK = 0, int PS = 0, int NT = 256>
__global__ void __launch_bounds__(NT, MINB) enc_staged_kernel(EncArgs a) {
  static_assert(!PS || ((KM & 1) && BU % 2 == 0), "parity-split minima need key256 and an even unroll");
  const uint32_t kmul = (a.opt & 64) ? 256u : 64u;  // (a register: see key_of)
  extern __shared__ __align__(16) unsigned char smem[];
  uint2* fr = reinterpret_cast<uint2*>(smem);                    // [MG][32 blocks][32 lanes]
  float* cmax = reinterpret_cast<float*>(smem + MG * 1024 * 8);  // [MG] max ||c||^2
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int g = lane >> 2, q = lane & 3;
  const float* tab = reinterpret_cast<const float*>(a.tab);
  unsigned char* wa = smem + MG * 1024 * 8 + 64 + warp * kStageBytes;  // this warp's A rows
  uint8_t* wc = wa + 32 * 32;                                          // and code bytes [32 rows][8]
  mma3_prologue<MG>(a, fr, cmax, tab, s0, mg);
  // staging rows: row r at byte 32 r, its two 16-byte halves swapped when bit 2 of r is set, so that the
  // 8 rows of every ldmatrix phase (and of every 8-lane phase of the 16-byte stores) hit 32 distinct banks
  const uint32_t wa_s = (uint32_t)__cvta_generic_to_shared(wa);
  uint32_t la[2];  // this lane's ldmatrix row address per tile: row (lane & 7) + 8 ((lane >> 3) & 1) + 16 t, half lane >> 4
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const int row = (lane & 7) + 8 * ((lane >> 3) & 1) + 16 * t;
    la[t] = wa_s + row * 32 + (((lane >> 4) ^ ((row >> 2) & 1)) * 16);
  }
  uint4* st_hi = reinterpret_cast<uint4*>(wa + lane * 32 + (((lane >> 2) & 1) * 16));
  uint4* st_lo = reinterpret_cast<uint4*>(wa + lane * 32 + ((((lane >> 2) & 1) ^ 1) * 16));
  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  static_assert(MG == 8, "two code words per row");
  for (long long tb = n0 + 32LL * warp; tb < n1; tb += 32LL * nw) {
    const long long n = tb + lane;  // this lane's row
    const bool ok = n < n1;
    const TX* xp = X + (ok ? xrow(a, h, n) : 0) + m0 * 4;
    float4 xn = ok ? Ld4<TX>::load(xp) : make_float4(0.f, 0.f, 0.f, 0.f);
    bool bad = false;
#pragma unroll 1
    for (int j = 0; j < MG; ++j) {
      const float4 xv = xn;
      if (ok && j + 1 < mg) xn = Ld4<TX>::load(xp + 4 * (j + 1));
      else xn = make_float4(0.f, 0.f, 0.f, 0.f);
      // the row's values, as mma3 computes them per lane (the same expressions, so the same bits)
      const __half2 h01 = __floats2half2_rn(xv.x, xv.y), h23 = __floats2half2_rn(xv.z, xv.w);
      const float2 f01 = __half22float2(h01), f23 = __half22float2(h23);
      float s01 = xv.x * xv.x + xv.y * xv.y, s23 = xv.z * xv.z + xv.w * xv.w;
      const float sq = s01 + s23;
      const float big = big_of(sq + cmax[j]);
      bad |= !(fabsf(f01.x) < 65504.f && fabsf(f01.y) < 65504.f && fabsf(f23.x) < 65504.f && fabsf(f23.y) < 65504.f &&
               (CK ? (big >= 0x1p-14f * 1.25f && big <= 0x1p15f * 1.25f) : sq < 32768.f));
      uint32_t k14;  // A columns 14, 15
      if constexpr (CK) {
        k14 = pack_h2(big, 0.f);  // 1.25 P: exact in fp16 inside the checked range
      } else {
        const __half sh = __float2half_rn(sq);
        const float shf = __half2float(sh);
        k14 = pack_h2(shf, sq - shf);
      }
      const uint32_t u01 = *reinterpret_cast<const uint32_t*>(&h01), u23 = *reinterpret_cast<const uint32_t*>(&h23);
      __syncwarp();  // the previous subspace's fragments are loaded
      *st_hi = make_uint4(u01, u23, u01, u23);
      *st_lo = make_uint4(pack_h2(xv.x - f01.x, xv.y - f01.y), pack_h2(xv.z - f23.x, xv.w - f23.y), 0x3c003c00u, k14);
      __syncwarp();
      uint32_t A[2][4];
      ldsm_x4(A[0], la[0]);
      ldsm_x4(A[1], la[1]);
      float bg[4];  // C of rows g, g+8 (tile 0), g+16, g+24 (tile 1)
      if constexpr (!CK) {
#pragma unroll
        for (int r = 0; r < 4; ++r) bg[r] = __shfl_sync(0xffffffffu, big, g + 8 * r);
      }
      const uint2* fj = fr + j * 1024 + lane;
      uint32_t kf[4];
      if constexpr (PS) {
        uint32_t k[4][2];
#pragma unroll
        for (int r = 0; r < 4; ++r) { k[r][0] = 0xffffffffu; k[r][1] = 0xffffffffu; }
#pragma unroll
        for (int blk = 0; blk < 32; blk += 2) {
          const uint2 b0 = fj[blk * 32], b1 = fj[(blk + 1) * 32];
          const uint32_t t0 = tag_of<KM>(blk), t1 = tag_of<KM>(blk + 1);
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            float d0, d1, d2, d3, e0, e1, e2, e3;
            if constexpr (CK) {
              mma16816_z(d0, d1, d2, d3, A[t], b0);
              mma16816_z(e0, e1, e2, e3, A[t], b1);
            } else {
              mma16816_c(d0, d1, d2, d3, A[t], b0, bg[2 * t], bg[2 * t + 1]);
              mma16816_c(e0, e1, e2, e3, A[t], b1, bg[2 * t], bg[2 * t + 1]);
            }
            k[2 * t][0] = __vimin3_u32(k[2 * t][0], key_of<KM>(d0, t0, kmul), key_of<KM>(e0, t1, kmul));
            k[2 * t][1] = __vimin3_u32(k[2 * t][1], key_of<KM>(d1, t0, kmul), key_of<KM>(e1, t1, kmul));
            k[2 * t + 1][0] = __vimin3_u32(k[2 * t + 1][0], key_of<KM>(d2, t0, kmul), key_of<KM>(e2, t1, kmul));
            k[2 * t + 1][1] = __vimin3_u32(k[2 * t + 1][1], key_of<KM>(d3, t0, kmul), key_of<KM>(e3, t1, kmul));
          }
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) kf[r] = min(k[r][0], k[r][1] | 1u);  // odd columns: parity bit 1
      } else {
        mma3_scan<KM, BU, CK>(kf, A, fj, bg, kmul);
      }
#pragma unroll
      for (int r = 0; r < 4; ++r) wc[(g + 8 * r) * 8 + j] = (uint8_t)quad_argmin<KM>(kf[r], q);
    }
    __syncwarp();
    if (ok) {
      const uint2 c = *reinterpret_cast<const uint2*>(wc + lane * 8);
      uint32_t cw[MG / 4] = {c.x, c.y};
      mma_finish<TX, MG>(a, X, tab, h, n, s0, m0, mg, bad, cw);
    }
  }
}
// ---------------------------------------------------------------------------------------------
// kind 2, opt bit 5 ("wg", sm_90a only): mma3's keys and minimum, but the distances come from warpgroup
// MMAs (wgmma.mma_async m64n128k16, A = the tokens' augmented x from registers, B = the subspace's
// centroid columns from shared memory): one instruction per 64 tokens x 128 centroids instead of 16
// mma.sync, issued asynchronously, so the tensor pipe no longer paces the candidate bookkeeping
// (mma3 without its tag IMAD was still bound by the mma.sync issue and latency, measured 2026-12-05).
// A row = [x_hi(4), x_hi(4), x_lo(4), 1, 1, bigA, 0], B column = [-2c_hi, -2c_lo, -2c_hi, n_hi, n_lo,
// 2^s, 0]: D = 1.375 P + ||c||^2 - 2 x.c, with P a power of two >= 4 (||x||^2 + max ||c||^2) and
// 2^s the subspace's scale (bigA = 1.375 P / 2^s in fp16): wgmma has no separate C input, so the
// row's offset enters through the K dimension. ||x||^2 is common to the row and dropped; d - ||x||^2
// lies in [-||x||^2, ||x||^2 + 2 max ||c||^2], so every D of a row stays in [P, 2P) and its bits
// order like the distances (as in mma3). Tokens whose x, or bigA, leave the fp16 range are redone
// exactly (mma_finish). Block: one warpgroup (128 threads), 8 subspaces' B tiles (64 KB) in the
// canonical no-swizzle K-major layout: core matrix (8 centroids x 8 K values, 128 contiguous bytes)
// (n-group ng, k-group kg) at ng * 256 + kg * 128.
static int g_wg_lbo = 128, g_wg_sbo = 256;  // descriptor offsets (bytes): K-adjacent, N-adjacent core matrices

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MILLION_WGMMA 1
#endif

#ifdef MILLION_WGMMA
__device__ __forceinline__ void wg_mma_n128(float (&d)[64], const uint32_t (&A)[4], uint64_t desc) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 0, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(A[0]), "r"(A[1]), "r"(A[2]), "r"(A[3]), "l"(desc));
}
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }
// the accumulators are read only after the wait: tie each register to this point
__device__ __forceinline__ void wg_hold(float (&d)[64]) {
#pragma unroll
  for (int i = 0; i < 64; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
// fold a finished 64-column half (h) of the row pair into the running keys k[row][chain] (key_of).
template <int KM>
__device__ __forceinline__ void wg_keys(const float (&d)[64], int h, uint32_t (&k)[2][2], uint32_t kmul) {
#pragma unroll
  for (int b = 0; b < 16; ++b) {
    const uint32_t tag = tag_of<KM>(16 * h + b);
#pragma unroll
    for (int r = 0; r < 2; ++r)
      k[r][b & 1] = __vimin3_u32(k[r][b & 1], key_of<KM>(d[4 * b + 2 * r], tag, kmul),
                                 key_of<KM>(d[4 * b + 2 * r + 1], tag + 1, kmul));
  }
}
#endif

template <typename TX, int MG, int KM>
__global__ void __launch_bounds__(128, 3) enc_wg_kernel(EncArgs a, int lbo, int sbo) {
#ifdef MILLION_WGMMA
  const uint32_t kmul = (a.opt & 64) ? 256u : 64u;  // (a register: see key_of)
  extern __shared__ __align__(16) unsigned char smem[];
  const int h = blockIdx.z, m0 = blockIdx.y * MG;
  const int mg = min(MG, a.M - m0);
  const int hc = a.Hc == 1 ? 0 : h;
  const long long s0 = (long long)hc * a.M + m0;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, q = lane & 3, half = q & 1;
  const float* tab = reinterpret_cast<const float*>(a.tab);
  float* cmax = reinterpret_cast<float*>(smem + MG * 8192);  // [MG] max ||c||^2
  float* scl = cmax + MG;                                   // [MG] 2^-s
  // prologue: per subspace, max ||c||^2 and the scale 2^s (the power of two >= 4 max ||c||^2, in fp16's
  // normal range), then the B tile from the fragments (lane (g, q) of block blk holds rows 2q, 2q+1 and
  // 8+2q, 8+2q+1 of centroid 8 blk + g) into the core-matrix layout; rows 14, 15 = (2^s, 0)
  for (int j = warp; j < MG; j += 4) {
    float mx = 0.f;
    if (j < mg)
      for (int c = lane; c < 256; c += 32) mx = fmaxf(mx, tab[((s0 + j) * 256 + c) * 8 + 4]);
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if (lane == 0) {
      const uint32_t b = __float_as_uint(fmaxf(4.f * mx, 0x1p-14f));
      float p2 = __uint_as_float((b + 0x7fffffu) & 0xff800000u);
      p2 = fminf(p2, 0x1p15f);
      cmax[j] = mx;
      scl[j] = 1.f / p2;
    }
  }
  __syncthreads();
  for (int i = threadIdx.x; i < MG * 1024; i += blockDim.x) {
    const int j = i >> 10, blk = (i >> 5) & 31, ln = i & 31, gg = ln >> 2, qq = ln & 3;
    uint2 v = j < mg ? a.frags[(s0 + j) * 1024 + blk * 32 + ln] : make_uint2(0u, 0u);
    if (qq == 3) {
      const __half s = __float2half_rn(1.f / scl[j]);
      v.y = (uint32_t)__half_as_ushort(s);  // rows 14, 15 = (2^s, 0)
    }
    unsigned char* core = smem + j * 8192 + blk * 256 + gg * 16 + qq * 4;
    *reinterpret_cast<uint32_t*>(core) = v.x;
    *reinterpret_cast<uint32_t*>(core + 128) = v.y;
  }
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();
  const uint32_t sbase = (uint32_t)__cvta_generic_to_shared(smem);
  const uint64_t dconst = ((uint64_t)((lbo >> 4) & 0x3fff) << 16) | ((uint64_t)((sbo >> 4) & 0x3fff) << 32);

  long long n0, n1;
  chunk_range(a, n0, n1);
  const TX* X = reinterpret_cast<const TX*>(a.x);
  float acc0[64], acc1[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) { acc0[i] = 0.f; acc1[i] = 0.f; }
  for (long long tb = n0 + 16LL * warp; tb - 16LL * warp < n1; tb += 64) {
    // every warp of the warpgroup runs every iteration (wgmma is warpgroup-wide); rows past n1 compute
    // on zeros and are not stored
    QuadRows<TX, MG, 2> rw(a, X, h, tb, n1, g, half, m0);
#pragma unroll 1
    for (int j = 0; j < MG; ++j) {
      rw.next(j, mg);
      const float cm = cmax[j], is = scl[j];
      uint32_t A[4];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const __half2 hh = __floats2half2_rn(rw.v[r][0], rw.v[r][1]);
        const float2 f = __half22float2(hh);
        float sq = rw.v[r][0] * rw.v[r][0] + rw.v[r][1] * rw.v[r][1];
        sq += __shfl_xor_sync(0xffffffffu, sq, 1);
        const uint32_t pb = __float_as_uint(fmaxf(4.f * (sq + cm), 0x1p-40f));
        const float P = __uint_as_float((pb + 0x7fffffu) & 0xff800000u);
        const float bigA = 1.375f * P * is;  // exact: powers of two times 1.375
        rw.bad[r] |= !(fabsf(f.x) < 65504.f && fabsf(f.y) < 65504.f && bigA < 32768.f && bigA >= 0x1p-14f);
        uint32_t hi_lo;
        if (q < 2) hi_lo = pack_h2(rw.v[r][0] - f.x, rw.v[r][1] - f.y);
        else if (q == 2) hi_lo = 0x3c003c00u;
        else hi_lo = pack_h2(bigA, 0.f);
        A[r] = *reinterpret_cast<const uint32_t*>(&hh);
        A[2 + r] = hi_lo;
      }
      const uint64_t d0 = dconst | (uint64_t)(((sbase + j * 8192) & 0x3ffff) >> 4);
      const uint64_t d1 = dconst | (uint64_t)(((sbase + j * 8192 + 4096) & 0x3ffff) >> 4);
      wg_fence();
      wg_mma_n128(acc0, A, d0);
      wg_commit();
      wg_mma_n128(acc1, A, d1);
      wg_commit();
      uint32_t k[2][2] = {{0xffffffffu, 0xffffffffu}, {0xffffffffu, 0xffffffffu}};
      wg_wait<1>();
      wg_hold(acc0);
      wg_keys<KM>(acc0, 0, k, kmul);
      wg_wait<0>();
      wg_hold(acc1);
      wg_keys<KM>(acc1, 1, k, kmul);
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        rw.code(r, j, quad_argmin<KM>(min(k[r][0], k[r][1]), q));
      }
    }
    rw.finish(a, X, tab, h, s0, m0, mg, q);
  }
#endif
}
// ---------------------------------------------------------------------------------------------
static int g_max_smem = 0;

// the launch every kernel shares: grid (chunks, groups of MG subspaces, heads), `threads` per block, the
// kernel's arguments after EncArgs in `extra`
template <typename K, typename... X>
static int launch_n(K kernel, const EncArgs& a, int MG, size_t smem, cudaStream_t st, int threads, X... extra) {
  if (g_max_smem == 0) {
    int dev; cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&g_max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  }
  if ((int)smem > g_max_smem) { snprintf(g_err, sizeof g_err, "shared memory %zu > %d", smem, g_max_smem); return 4; }
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "cudaFuncSetAttribute: %s", cudaGetErrorString(e)); return 5; }
  dim3 grid(a.chunks, (a.M + MG - 1) / MG, a.H);
  kernel<<<grid, threads, smem, st>>>(a, extra...);
  e = cudaGetLastError();
  if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "launch: %s", cudaGetErrorString(e)); return 6; }
  return 0;
}
template <typename K>
static int launch(K kernel, const EncArgs& a, int MG, size_t smem, cudaStream_t st) {
  return launch_n(kernel, a, MG, smem, st, 256);
}

static int g_wg = -1;  // the wg kernel present (compiled for sm_90a and loaded as such): wg_ok
// 1 when the wgmma kernel (opt bit 5) runs here. Without sm_90a machine code the driver loads the
// compute_90 build, in which the kernel's body is compiled empty; the register count of the loaded
// kernel tells the two apart without a launch or a copy (so this is safe inside a graph capture).
static int wg_ok() {
  if (g_wg >= 0) return g_wg;
  cudaFuncAttributes at;
  if (cudaFuncGetAttributes(&at, enc_wg_kernel<__half, 8, 0>) != cudaSuccess) { cudaGetLastError(); return 0; }
  g_wg = at.numRegs > 64 ? 1 : 0;
  return g_wg;
}

template <typename TX, int MG>
static int launch_wg(const EncArgs& a, cudaStream_t st) {
  if (wg_ok() != 1) {
    snprintf(g_err, sizeof g_err, "opt bit 5 (wgmma kernel) needs the library built for sm_90a and run on a "
             "compute capability 9.0 device (million_pq_encode_wgmma() = %d)", g_wg);
    return 7;
  }
  const size_t smem = (size_t)MG * 8192 + MG * 8;
  // opt bit 6: key256; bit 7: keys by IMAD (enc_wg_kernel's KM)
  const int km = ((a.opt >> 6) & 1) | (((a.opt >> 7) & 1) << 1);
  void (*kernel)(EncArgs, int, int) = km == 0 ? enc_wg_kernel<TX, MG, 0> : km == 1 ? enc_wg_kernel<TX, MG, 1>
                                      : km == 2 ? enc_wg_kernel<TX, MG, 2> : enc_wg_kernel<TX, MG, 3>;
  return launch_n(kernel, a, MG, smem, st, 128, g_wg_lbo, g_wg_sbo);
}

// the staged kernel with its column-block loop unrolled whole and keys with the index in their low 8 bits (bit 6), by
// IMAD when im (bit 7); cp: bit 0 CK (offset through K), bit 1 PS (parity-split minima); MINB blocks of NT threads
using StagedFn = void (*)(EncArgs);
template <typename TX, int MG, int MINB, int NT, int CK, int PS>
static StagedFn staged_km(bool im) {
  return im ? enc_staged_kernel<TX, MG, MINB, 3, 32, CK, PS, NT> : enc_staged_kernel<TX, MG, MINB, 1, 32, CK, PS, NT>;
}
template <typename TX, int MG, int MINB, int NT>
static StagedFn staged_variant(int cp, bool im) {
  switch (cp) {
    case 0: return staged_km<TX, MG, MINB, NT, 0, 0>(im);
    case 1: return staged_km<TX, MG, MINB, NT, 1, 0>(im);
    case 2: return staged_km<TX, MG, MINB, NT, 0, 1>(im);
    default: return staged_km<TX, MG, MINB, NT, 1, 1>(im);
  }
}

template <typename TX>
static int launch_t(const EncArgs& a, cudaStream_t st) {
  constexpr int MG = 8;
  if (a.kind == 0) {
    if (a.dsub != 2) { snprintf(g_err, sizeof g_err, "pruned kernel needs dsub 2, got %d", a.dsub); return 3; }
    size_t smem = (size_t)MG * 256 * 16 + (size_t)MG * a.G * a.G * 4 + MG * 16 + (size_t)MG * a.lcap;
    if (a.opt & 1) return launch(enc_pruned_kernel<TX, MG, true>, a, MG, smem, st);
    return launch(enc_pruned_kernel<TX, MG, false>, a, MG, smem, st);
  }
  if (a.kind == 1) {
    size_t smem = (size_t)MG * 256 * 32;
    if (a.dsub == 2) return launch(enc_brute_kernel<TX, 2, MG, 4>, a, MG, smem, st);
    if (a.dsub == 4) return launch(enc_brute_kernel<TX, 4, MG, 4>, a, MG, smem, st);
    snprintf(g_err, sizeof g_err, "brute kernel needs dsub 2 or 4, got %d", a.dsub);
    return 3;
  }
  if (a.kind == 2) {
    if (a.dsub != 4) { snprintf(g_err, sizeof g_err, "mma kernel needs dsub 4, got %d", a.dsub); return 3; }
    size_t smem = (size_t)MG * 1024 * 8;
    if (a.opt & 32) return launch_wg<TX, MG>(a, st);
    if (a.opt & 256) {  // the staged kernel; bit 4: 3 blocks per SM; bits 6, 7: keys (key_of); bit 9: BU 32
      const int km = (a.opt >> 6) & 3;
      void (*k)(EncArgs);
      const int cp = (a.opt >> 10) & 3;  // bit 10: CK, bit 11: PS (bit 9 implied; bit 6 required; bit 7 kept)
      if ((cp || (a.opt & 4096)) && !(a.opt & 64)) {  // the kernel's key multiplier comes from bit 6 (key_of)
        snprintf(g_err, sizeof g_err,
                 "opt=%d: bits 10, 11 and 12 need bit 6 (keys with the index in their low 8 bits)", a.opt);
        return 3;
      }
      const bool im = (a.opt & 128) != 0;
      if (a.opt & 4096)  // bit 12: 16 warps per block, 2 blocks per SM (64 registers); bit 9 implied
        return launch_n(staged_variant<TX, MG, 2, 512>(cp, im), a, MG, smem + 64 + 16 * kStageBytes, st, 512);
      const size_t ss = smem + 64 + 8 * kStageBytes;
      if (cp) {
        k = staged_variant<TX, MG, 3, 256>(cp, im);
      } else if (a.opt & 512) {
        k = km == 0 ? enc_staged_kernel<TX, MG, 3, 0, 32> : km == 1 ? enc_staged_kernel<TX, MG, 3, 1, 32>
            : km == 2 ? enc_staged_kernel<TX, MG, 3, 2, 32> : enc_staged_kernel<TX, MG, 3, 3, 32>;
      } else if (a.opt & 16) {
        k = km == 0 ? enc_staged_kernel<TX, MG, 3, 0, 8> : km == 1 ? enc_staged_kernel<TX, MG, 3, 1, 8>
            : km == 2 ? enc_staged_kernel<TX, MG, 3, 2, 8> : enc_staged_kernel<TX, MG, 3, 3, 8>;
      } else {
        k = km == 0 ? enc_staged_kernel<TX, MG, 2, 0, 8> : km == 1 ? enc_staged_kernel<TX, MG, 2, 1, 8>
            : km == 2 ? enc_staged_kernel<TX, MG, 2, 2, 8> : enc_staged_kernel<TX, MG, 2, 3, 8>;
      }
      return launch(k, a, MG, ss, st);
    }
    if (a.opt & 4) {  // bit 3: rolled subspace loop; bit 4: 3 blocks per SM
      if (a.opt & 16) {
        if (a.opt & 8) return launch(enc_mma3_kernel<TX, MG, false, 3, 0>, a, MG, smem + MG * 4, st);
        return launch(enc_mma3_kernel<TX, MG, true, 3, 0>, a, MG, smem + MG * 4, st);
      }
      if (!(a.opt & 8)) return launch(enc_mma3_kernel<TX, MG, true, 2, 0>, a, MG, smem + MG * 4, st);
      // rolled loop; bit 6: key256, bit 7: keys by IMAD (key_of)
      switch ((a.opt >> 6) & 3) {
        case 1: return launch(enc_mma3_kernel<TX, MG, false, 2, 1>, a, MG, smem + MG * 4, st);
        case 2: return launch(enc_mma3_kernel<TX, MG, false, 2, 2>, a, MG, smem + MG * 4, st);
        case 3: return launch(enc_mma3_kernel<TX, MG, false, 2, 3>, a, MG, smem + MG * 4, st);
      }
      return launch(enc_mma3_kernel<TX, MG, false, 2, 0>, a, MG, smem + MG * 4, st);
    }
    if (a.opt & 2) return launch(enc_mma2_kernel<TX, MG>, a, MG, smem, st);
    return launch(enc_mma_kernel<TX, MG>, a, MG, smem, st);
  }
  snprintf(g_err, sizeof g_err, "unknown kind %d", a.kind);
  return 3;
}

extern "C" {
int million_pq_encode_args_size() { return (int)sizeof(EncArgs); }
const char* million_pq_encode_last_error() { return g_err; }
int million_pq_encode_wgmma() { return wg_ok(); }
// the wgmma B descriptor's byte offsets between core matrices (K-adjacent, N-adjacent); 128 / 256 by default
void million_pq_encode_set_wg_layout(int lbo, int sbo) { g_wg_lbo = lbo; g_wg_sbo = sbo; }
int million_pq_encode(const EncArgs* a, void* stream) {
  if ((long long)a->B * a->T == 0 || a->H == 0 || a->M == 0) return 0;
  if (a->chunks < 1) { snprintf(g_err, sizeof g_err, "chunks=%d < 1", a->chunks); return 3; }
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  switch (a->dtype) {
    case 0: return launch_t<__half>(*a, st);
    case 1: return launch_t<__nv_bfloat16>(*a, st);
    case 2: return launch_t<float>(*a, st);
  }
  snprintf(g_err, sizeof g_err, "unknown dtype code %d", a->dtype);
  return 3;
}
}
