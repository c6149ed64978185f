// PQ decode attention with the centroid tables resident in shared memory (sm_90).
//
// Kernel 1 (pq_partial_kernel), grid (S, H_kv * ngroups, B): one block per split of the valid code
// tokens of one KV head and GB query heads of its GQA group. Prologue: both centroid tables of the
// head (K and V, [ksub=256][M] entries of dsub fp16/bf16 each, 64 KB apiece at d=128) go to shared
// memory in a swizzled layout. Main loop: each warp takes 32-token chunks; lane l = (i, h) with
// i = l % W, h = l / W, W = M/4 reads word i (4 codes, subspaces 4i..4i+3) of token h of every
// step (TPI = 32/W tokens per 128-byte coalesced warp load). At sub-step bb the lane looks up
// subspace m = 4i + ((bb + sel(h)) & 3): together with the swizzle this makes every table lookup of
// a warp hit 32 distinct banks (one wavefront; 2 half-warp wavefronts for 8-byte entries).
// Scores: K centroid entry . q (q in registers, scale*log2e folded in), per-lane partial sums
// reduced over the W lanes of a token by a transposing butterfly (W-1 shuffles for W tokens), so
// that every lane ends with one token's score. Online softmax per warp (log2 units). Values:
// p of the token (shuffle) times the V centroid entry, accumulated in registers per lane/subspace.
// Warps merged through shared memory; the block writes a normalized partial and its lse.
// Kernel 2 (pq_merge_kernel), grid (H_q, B): dense attention over the residual window and the
// float32 log-sum-exp merge of the S partials; writes q.dtype output (and lse). Launched as a
// programmatic dependent grid: q and the residual window are read before griddepcontrol.wait.
// Cluster merge (a.cmerge, tensor-core kernel, S <= 15): one launch of grid (S + 1, H_kv * ngroups, B) in
// clusters of S + 1; the splits keep their partials in shared memory and rank S, the merge block, attends the
// residual window while they run, then merges the partials through distributed shared memory.
// All lengths are read on the device (CUDA-graph capturable).
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include <type_traits>

struct PQArgs {
  const void* q; const uint8_t* kc; const uint8_t* vc; const void* kcen; const void* vcen;
  const int* pq_lens; const int* res_lens;
  const int* starts;                  // each sequence's first valid position; nullptr: 0 for every sequence
  const void* kres; const void* vres; void* out; float* lse_out; float* o_part; float* lse_part;
  long long sq_b, sq_h, sq_d;
  long long sk_b, sk_h, sk_t;
  long long sv_b, sv_h, sv_t;
  long long kcen_h, vcen_h;           // element stride between centroid heads (0 when shared)
  long long skr_b, skr_h, skr_t;      // residual K (last dim contiguous)
  long long svr_b, svr_h, svr_t;
  long long so_b, so_h, so_d;
  int B, Hq, Hkv, T, R, D, M, S, dtype, GB, ngroups, num_warps, kind, cluster;  // kind 1: tensor-core kernel,
  // 2: FFMA kernel (GB 1) with host-laid tables (cuda_attention.ffma_tables) fetched by bulk copy; 3: packed-LUT
  // kernel with the same host-laid tables, fetched by bulk copy; 4: kind 2 with each chunk's values accumulated in
  // half2 (fp16 only; the launcher passes the kernel kind 2)
  int cmerge;  // 1: one launch, the S splits of a head and a merge block form a cluster (tensor-core kernel)
  int pdl;     // 1: the partial grid may start before the previous kernel on the stream ends (its tables, which no
               // kernel of this call wrote, are copied before griddepcontrol.wait); the launcher passes 0 when it
               // laid out a table in this call
  float scale_log2;
};
// rows of the residual window each split attends in the FFMA kernel's window instance (WP): split s takes rows
// [s * rows, (s + 1) * rows) of the window, a multiple of 8 (every TPI divides it)
__host__ __device__ __forceinline__ int window_rows(int R, int S) { return ((R + S - 1) / S + 7) & ~7; }

#define FULL 0xffffffffu
// Phase timeline (diagnostic builds only: nvcc -DPQ_TRACE; benchmarks/trace_decode.py reads it back through
// million_pq_trace_read). Thread 0 of every partial block stamps %globaltimer at its phases (slots 0-5) and clock64
// (slots 24-29), lane 0 of each warp %globaltimer at the end of its chunk loop (slots 8 + warp, 16 warps at most),
// slot 6 holds the SM id, slot 7 the chunk count; merge blocks stamp slots 0-3 (clock64: 4-7) of their own region,
// and keep the end stamp that their slot 3 held before (the previous call's, in a graph replay) in g_trace_prev_end.
// A production build compiles none of this.
#ifdef PQ_TRACE
#define PQ_TRACE_BLOCKS 8192
__device__ unsigned long long g_trace[PQ_TRACE_BLOCKS * 32];
__device__ unsigned long long g_trace_merge[PQ_TRACE_BLOCKS * 8];
__device__ unsigned long long g_trace_prev_end[PQ_TRACE_BLOCKS];
__device__ __forceinline__ unsigned long long trace_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
__device__ __forceinline__ int trace_block() {
  return (int)(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z)) % PQ_TRACE_BLOCKS;
}
#define TRACE_P(slot) do { if (threadIdx.x == 0) { g_trace[trace_block() * 32 + (slot)] = trace_now(); \
    g_trace[trace_block() * 32 + 24 + (slot)] = (unsigned long long)clock64(); } } while (0)
#define TRACE_W(warp) do { if ((threadIdx.x & 31) == 0) g_trace[trace_block() * 32 + 8 + (warp)] = trace_now(); } while (0)
#define TRACE_V(slot, v) do { if (threadIdx.x == 0) g_trace[trace_block() * 32 + (slot)] = (unsigned long long)(v); } while (0)
// slot 31: the time the split's lengths arrived (the empty asm needs their values: the stamp cannot run before)
#define TRACE_LENS(sr) do { asm volatile("" ::"r"((sr).lo), "r"((sr).hi)); TRACE_V(31, trace_now()); } while (0)
#define TRACE_INFO(nchunks) do { if (threadIdx.x == 0) { unsigned smid_; asm volatile("mov.u32 %0, %%smid;" : "=r"(smid_)); \
    TRACE_V(6, smid_); TRACE_V(7, nchunks); } } while (0)
#define TRACE_M(slot) do { if (threadIdx.x == 0) { g_trace_merge[trace_block() * 8 + (slot)] = trace_now(); \
    g_trace_merge[trace_block() * 8 + 4 + (slot)] = (unsigned long long)clock64(); } } while (0)
// the end stamp is read before the previous one is copied out, so that it does not wait for that load
#define TRACE_M_END() do { if (threadIdx.x == 0) { const unsigned long long t_ = trace_now(); \
    const unsigned long long c_ = (unsigned long long)clock64(); \
    g_trace_prev_end[trace_block()] = g_trace_merge[trace_block() * 8 + 3]; \
    g_trace_merge[trace_block() * 8 + 3] = t_; g_trace_merge[trace_block() * 8 + 7] = c_; } } while (0)
#else
#define TRACE_P(slot) do { } while (0)
#define TRACE_W(warp) do { } while (0)
#define TRACE_V(slot, v) do { } while (0)
#define TRACE_LENS(sr) do { } while (0)
#define TRACE_INFO(nchunks) do { } while (0)
#define TRACE_M(slot) do { } while (0)
#define TRACE_M_END() do { } while (0)
#endif
#ifndef PRO_UNR
#define PRO_UNR 8  // prologue: 16-byte table loads in flight per thread and table (was 4)
#endif
#ifndef PQ_P8
#define PQ_P8 1  // FFMA kernel, one query head, 256-byte table rows: lookup addresses by one byte permute (see P8;
                 // -DPQ_P8=0: the kernels before it)
#endif
// P8 kernels (pq_partial_kernel): both tables at 64 KB-aligned shared addresses, so that a lookup's address is one byte
// permute; the dynamic allocation covers the alignment (192 KB instead of 128)
template <int D, int DSUB, int GB> __host__ __device__ constexpr bool p8_on() {
  return PQ_P8 && GB == 1 && (D / DSUB) * 2 * DSUB == 256;
}
#ifndef PQ_TALIGN
// tensor-core and packed-LUT kernels: tables at a PQ_TALIGN-byte aligned shared address, the allocation grown by as
// much (0: at the dynamic allocation's start, 16-byte aligned behind the static shared memory). H100, 2026-12-07
// (docs/kernel_notes.md, "Aligned GQA tables at d = 128"): 1024 at d = 128 only, GQA B=1 4K 4-bit 10.8 -> 8.7 us
// (2-bit 10.1 -> 8.0), 32K 28.7 -> 27.6; at every head dim (2026-12-06) the d = 64 cells were 8-31% slower from 32K
#define PQ_TALIGN 1024
#endif
#ifndef PQ_TALIGN_DMIN
#define PQ_TALIGN_DMIN 128  // PQ_TALIGN applies to head dims from this one up (not at d = 64, whose blocks share an SM)
#endif
template <int D> __host__ __device__ constexpr unsigned talign() { return D >= PQ_TALIGN_DMIN ? PQ_TALIGN : 0; }
#ifndef PQ_ROT
// tensor-core kernel at dsub 2: K table rows unpadded (M * 4 bytes), the 8 tokens of a gather instruction reading 8
// different subspaces (one wavefront instead of ~3.35), each lane's gathered registers rotated back by its token slot.
// H100, 2026-12-07 (docs/kernel_notes.md): GQA B=1 32K 4-bit 27.5 -> 23.4 us, B=8 4K 27.8 -> 23.9; 0 the padded rows
// of before. The V side rotated as well (docs/logs/rot_1207/rot2.patch, PQ_ROT=2) was slower (24.1 us, up to 7.7% at
// the SmolLM2 shape) and is not in this source
#define PQ_ROT 1
#endif
#ifndef PQ_ROT4
// the same for the K gathers at dsub 4 (2 bits): unpadded K rows, lane gid reading k-tile (u + gid) mod M/4 at step u
// (8-byte entries: each half-warp's 16 lanes hit 32 distinct banks), the registers rotated back by gid.
// H100, 2026-12-07 (docs/kernel_notes.md): GQA B=1 32K 2-bit 23.1 -> 22.7 us, SmolLM2 B=8 128K 2-bit 111 -> 98.5;
// 0 the padded rows of before
#define PQ_ROT4 1
#endif
template <int DSUB> __host__ __device__ constexpr int mma_kpad() {
  return ((PQ_ROT && DSUB == 2) || (PQ_ROT4 && DSUB == 4)) ? 0 : 16;
}
#ifndef PQ_MP8
// tensor-core kernel, unpadded 256-byte K rows (d = 128 with PQ_ROT at dsub 2 or PQ_ROT4 at dsub 4), outside a merge
// cluster: the K table at a 64 KB-aligned shared address, so that a K gather's address is one byte permute of the
// rotated code word and a per-lane word holding the entry offset (byte 0) and the table base (bytes 2-3), as in the
// FFMA kernel's P8, instead of a permute and an IMAD; the allocation grows by 64 KB instead of PQ_TALIGN.
// With PQ_KCLS and PQ_VCLS (below), H100, 2026-12-07 10:24 UTC (docs/kernel_notes.md, "Byte-permute addressing and
// two-class gathers"): GQA B=1 32K 4-bit 22.2 -> 20.7 us, B=8 32K 124.3 -> 111.6, B=1 16K 2-bit 14.1 -> 13.0; alone
// (10:15 UTC) -0.8% / -0.5% at GQA B=1 32K 4-bit; 0: the K table at PQ_TALIGN, a permute and an IMAD per gather
#define PQ_MP8 1
#endif
#ifndef PQ_KCLS
// tensor-core kernel, rotated K gathers with at least 8 subspace groups per lane (PQ_ROT at dsub 2, PQ_ROT4 at dsub 4
// and d = 128): the gathered registers are rotated back by gid & 3 only (two select stages instead of three). Rows
// gid >= 4 then hold their k-tiles shifted by 4 groups; the q columns 4..7 of the score mma (unused before, GB <= 4)
// carry the same heads' q shifted alike, so row gid's scores are right in columns of its class (gid >> 2); the other
// class's scores are masked to -inf before the softmax, whose reductions also cross the tig lanes (xor 2). Not in the
// 16-warp dsub-4 instances, whose spills it doubled (32 -> 68 bytes; GQA B=8 4K 2-bit 2.7% slower, 10:15 UTC).
// Chunk loop SASS (fp16, d = 128, GB 4, 8 warps): 1,038 -> 921 instructions at 4 bits with PQ_MP8, 811 -> 713 at 2
#define PQ_KCLS 1
#endif
template <int D, int DSUB> __host__ __device__ constexpr bool mp8_on() {
  return PQ_MP8 && mma_kpad<DSUB>() == 0 && (D / DSUB) * 2 * DSUB == 256;
}
#ifndef PQ_BFH
// bf16 inputs on the half2 value path of the FFMA kernel (kind 4): the host lays the V table out in fp16
// (cuda_attention.ffma_tables_half, V centroids within +-2048, cuda_attention.ffma_half_values), so each chunk's values
// accumulate in half2 as for fp16 inputs; q, the K table, the window and the output stay bf16. The library reports it
// (million_pq_ffma_bf16_half). H100, 2026-12-07 22:52 UTC (docs/kernel_notes.md, "bf16 on the half2 value path
// (taken)"): bf16 MHA B=1 32K 4-bit 51.0-51.1 -> 49.1-49.2 us, B=1 128K 2-bit 113.6-114.6 -> 99.2-102.5, no cell
// slower; 0: bf16 on the float32 value path of before
#define PQ_BFH 1
#endif
#ifndef PQ_WIN
// tensor-core kernel: a chunk's codes loaded as a window of 32 tokens from one per-lane pointer with constant offsets
// (no per-token clamp, index and 64-bit address), the window moved back to end at the split's last token where the
// chunk is partial, its tokens before the chunk masked; needs codes of at least 32 tokens per head (the Python side
// pads shorter ones; million_pq_mma_window reports it). Chunk loop SASS (fp16, d = 128, GB 4, 8 warps): 893 -> 861
// instructions at 4 bits, 713 -> 681 at 2. H100, 2026-12-07 (docs/kernel_notes.md, "Window code loads"): GQA B=1 32K
// 4-bit 20.54 -> 20.20 us (four rounds, 10:46 UTC), SmolLM2 B=8 128K 2-bit -5.6%, no GQA or SmolLM2 cell slower
#define PQ_WIN 1
#endif
#ifndef PQ_VCLS
// tensor-core kernel at d = 128, dsub 2, with PQ_MP8 and PQ_KCLS: V rows unpadded (256 bytes) and the V table 64 KB
// after the K table (both 64 KB-aligned: 192 KB), each V gather's address one byte permute; the tig lanes of class
// cv = tig >> 1 read output tile (r + 2 cv) mod 8 at step r (their code words rotated by 2 cv bytes), so that the two
// classes' gathers hit disjoint banks (2 wavefronts, was ~2.34 with padded rows); the value mma's B columns 4..7 carry
// class 1's probabilities (class 0's in 0..3, the rest 0), whose accumulators are added two tiles on at the end.
// Chunk loop SASS (fp16, d = 128, 4-bit, GB 4, 8 warps): 921 -> 893 instructions. H100, 2026-12-07 10:24 UTC: with
// PQ_MP8 and PQ_KCLS, GQA B=1 32K 4-bit 22.2 -> 20.7 us (those two alone: 21.9), B=8 32K 4-bit -10.2%
#define PQ_VCLS 1
#endif
// V row padding of the tensor-core kernel's tables (the host layout, million_pq_mma_vpad): 0 where PQ_VCLS applies
template <int D, int DSUB> __host__ __device__ constexpr int mma_vpad() {
  return (PQ_VCLS && PQ_KCLS && mp8_on<D, DSUB>() && PQ_ROT && DSUB == 2 && D == 128) ? 0 : 16;
}
#ifndef MERGE_PF
#define MERGE_PF 16  // merge: partials per output element loaded per global round trip (group of the online merge)
#endif
static constexpr float LOG2E = 1.4426950408889634f;
static constexpr float LN2 = 0.6931471805599453f;

template <typename T> struct Cvt;
template <> struct Cvt<__half> {
  static __device__ __forceinline__ float2 pair(uint32_t w) {
    __half2 h = *reinterpret_cast<__half2*>(&w);
    return __half22float2(h);
  }
  static __device__ __forceinline__ float f(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half to(float x) { return __float2half_rn(x); }
};
template <> struct Cvt<__nv_bfloat16> {
  static __device__ __forceinline__ float2 pair(uint32_t w) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  }
  static __device__ __forceinline__ float f(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 to(float x) { return __float2bfloat16_rn(x); }
};

// entry position of subspace m inside a table row (bank-conflict-free for the access pattern above)
template <int M, int DSUB> __device__ __forceinline__ int swz(int m) {
  if (M == 64) return (m >> 2) + 16 * ((m >> 1) & 1) + 32 * (m & 1);
  if (M == 32 && DSUB == 2) return (m >> 2) + 8 * (m & 3);
  if (M == 32) return (m >> 2) + 8 * (m & 1) + 16 * ((m >> 1) & 1);
  return (m >> 2) + 4 * (m & 3);  // M == 16
}
// the subspace whose entry sits at position p of a row (swz's inverse)
template <int M, int DSUB> __device__ __forceinline__ int swz_inv(int p) {
  static_assert(M == 64 || M == 32 || M == 16, "swz_inv: M 64, 32 or 16");
  if (M == 64) return 4 * (p & 15) + 2 * ((p >> 4) & 1) + ((p >> 5) & 1);
  if (M == 32 && DSUB == 2) return 4 * (p & 7) + (p >> 3);
  if (M == 32) return 4 * (p & 7) + 2 * ((p >> 4) & 1) + ((p >> 3) & 1);
  return 4 * (p & 3) + (p >> 2);  // M == 16
}
template <int M> __device__ __forceinline__ int selh(int h) {
  if (M == 64) return 2 * h;
  if (M == 32) return h;
  return h & 3;
}

template <int DSUB> struct EntryT;
template <> struct EntryT<2> { using type = uint32_t; };
template <> struct EntryT<4> { using type = uint2; };

template <typename T, int DSUB>
__device__ __forceinline__ void entry_to_float(const typename EntryT<DSUB>::type& e, float* out) {
  if constexpr (DSUB == 2) {
    float2 a = Cvt<T>::pair(e); out[0] = a.x; out[1] = a.y;
  } else {
    float2 a = Cvt<T>::pair(e.x), c = Cvt<T>::pair(e.y);
    out[0] = a.x; out[1] = a.y; out[2] = c.x; out[3] = c.y;
  }
}

// shared-memory loads by 32-bit shared-window address (base + code * row bytes: one IMAD per lookup;
// generic pointers made the compiler add the CTA's shared window base at every lookup)
__device__ __forceinline__ uint32_t smem_addr(const void* p) { return (uint32_t)__cvta_generic_to_shared(p); }
__device__ __forceinline__ uint32_t lds32(uint32_t a) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(a));
  return v;
}
__device__ __forceinline__ uint2 lds64(uint32_t a) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "r"(a));
  return v;
}
template <typename E> __device__ __forceinline__ E lds_entry(uint32_t a);
template <> __device__ __forceinline__ uint32_t lds_entry<uint32_t>(uint32_t a) { return lds32(a); }
template <> __device__ __forceinline__ uint2 lds_entry<uint2>(uint32_t a) { return lds64(a); }

// one stage of the transposing butterfly: lanes with bit MASK set keep the upper half of the
// values and receive the partner's upper half; recursion keeps every array index static
template <int MASK, int NS, int GB>
__device__ __forceinline__ void butterfly(float (&part)[NS][GB], int lane) {
  if constexpr (MASK >= 1) {
    const uint32_t upm = (lane & MASK) ? 0xffffffffu : 0u;
#pragma unroll
    for (int k = 0; k < MASK; ++k)
#pragma unroll
      for (int g = 0; g < GB; ++g) {
        const uint32_t lo_ = __float_as_uint(part[k][g]), hi_ = __float_as_uint(part[k + MASK][g]);
        const float send = __uint_as_float((lo_ & upm) | (hi_ & ~upm));
        const float keep = __uint_as_float((hi_ & upm) | (lo_ & ~upm));
        part[k][g] = keep + __shfl_xor_sync(FULL, send, MASK);
      }
    butterfly<MASK / 2, NS, GB>(part, lane);
  }
}

// prologue work item idx -> (subspace m, first centroid k0) of one 16-byte table load. dsub 2: lane
// pairs take adjacent 16-byte halves of one 32-byte sector (full sector use; measured faster);
// dsub 4: one lane per subspace (the paired order measured slower at 32K).
template <int M, int DSUB> __device__ __forceinline__ int pro_m(int idx) {
  return DSUB == 2 ? (idx >> 1) % M : idx % M;
}
template <int M, int DSUB, int VEC> __device__ __forceinline__ int pro_k0(int idx) {
  return DSUB == 2 ? (((idx >> 1) / M) * 2 + (idx & 1)) * VEC : (idx / M) * VEC;
}

// ---- shared by the partial kernels ----
// sequence b's first valid position (its left padding): a.starts may be null, every sequence then starts at 0 (no
// zero-filled tensor, and no kernel writing one, in front of every call)
__device__ __forceinline__ int seq_start(const PQArgs& a, int b) { return a.starts ? a.starts[b] : 0; }
// the block's split of the valid code tokens of (batch b, KV head hkv, query heads hq0..hq0+GB-1):
// [lo, hi), 32-token aligned starts; prow = row of its partial (o_part / lse_part) for head hq0
struct SplitRange { int b, hkv, hq0, lo, hi; long long prow; };
// the block's KV head: blockIdx only, so a block may use it (its tables) before griddepcontrol.wait
__device__ __forceinline__ int block_hkv(const PQArgs& a) { return blockIdx.y / a.ngroups; }
// the block's first query head, from blockIdx only: q may be loaded before the lengths are (split_range), so that
// the two global round trips after griddepcontrol.wait overlap instead of following each other
template <int GB> __device__ __forceinline__ int block_hq0(const PQArgs& a) {
  return block_hkv(a) * (a.Hq / a.Hkv) + (blockIdx.y % a.ngroups) * GB;
}
template <int GB> __device__ __forceinline__ SplitRange split_range(const PQArgs& a) {
  SplitRange r;
  const int split = blockIdx.x;
  r.b = blockIdx.z;
  r.hkv = block_hkv(a);
  r.hq0 = block_hq0<GB>(a);
  const int start = max(seq_start(a, r.b), 0);
  const int end = min(a.pq_lens[r.b], a.T);
  const int n = max(end - start, 0);
  int per = (n + a.S - 1) / a.S;
  per = (per + 31) & ~31;
  r.lo = start + split * per;
  r.hi = min(r.lo + per, end);
  r.prow = ((long long)r.b * a.Hq + r.hq0) * a.S + split;
  return r;
}
// an empty split: zero output, lse -inf (the merge gives it weight 0)
template <int GB, int D, int NT> __device__ __forceinline__ void write_empty_partial(const PQArgs& a, long long prow) {
  const int tid = threadIdx.x;
  for (int x = tid; x < GB * D; x += NT) a.o_part[(prow + (long long)(x / D) * a.S) * D + (x % D)] = 0.f;
  if (tid < GB) a.lse_part[prow + (long long)tid * a.S] = -INFINITY;
}
// the block's warps' (o [NW][GB][D], m, l [NW][GB], log2 units) -> one normalized partial and its lse,
// written to the partial rows in global memory, or (slot != nullptr, cluster merge) to this block's
// shared-memory slot [GB][D] o, then [GB] lse, which the cluster's merge block reads
template <int GB, int D, int NW>
__device__ __forceinline__ void merge_warps(const PQArgs& a, const float* red, const float* wm, const float* wl,
                                            long long prow, float* slot = nullptr) {
  for (int x = threadIdx.x; x < GB * D; x += NW * 32) {
    const int g = x / D, d = x % D;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, wm[w * GB + g]);
    float L = 0.f, o = 0.f;
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float f = exp2f(wm[w * GB + g] - mx);  // 0 for a warp without tokens (m = -inf)
      L += wl[w * GB + g] * f;
      o += red[(w * GB + g) * D + d] * f;
    }
    if (slot) {
      slot[g * D + d] = o / L;
      if (d == 0) slot[GB * D + g] = (mx + log2f(L)) * LN2;
    } else {
      a.o_part[(prow + (long long)g * a.S) * D + d] = o / L;
      if (d == 0) a.lse_part[prow + (long long)g * a.S] = (mx + log2f(L)) * LN2;
    }
  }
}

// ---- cluster merge (a.cmerge): the S splits of (batch, KV head, query-head group) are ranks 0..S-1 of a
// cluster and rank S is the merge block; partials stay in the splits' shared memory (DSMEM) ----
// the slot's byte offset in the dynamic shared memory, after the epilogue's red / wm / wl
template <int GB, int D, int NW> __host__ __device__ constexpr int cm_slot_off() { return (NW * GB * D + 2 * NW * GB) * 4; }
template <int GB, int D> __host__ __device__ constexpr int cm_slot_bytes() { return (GB * D + GB) * 4; }
__device__ __forceinline__ void cluster_sync_all() {
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}
__device__ __forceinline__ float ld_dsmem(uint32_t local_addr, uint32_t rank) {
  uint32_t ra;
  float v;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(local_addr), "r"(rank));
  asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(ra) : "memory");
  return v;
}
// a split's end: its slot is written; phase 1 tells the merge block, phase 2 waits until the merge block
// has read every slot (a block's shared memory must outlive remote reads of it)
__device__ __forceinline__ void cm_split_done() {
  cluster_sync_all();
  cluster_sync_all();
}

// ---- table prologue by bulk copy (FFMA kernel with host-laid tables, tensor-core kernel) ----
// mbarriers at shared addresses bar (K table) and bar + 8 (V table). In a cluster of csize blocks each
// block fetches 1/csize of the bytes and multicasts them to all (every block must take part).
// init: both mbarriers, visible to the whole cluster (or block) before any copy completes on them
__device__ __forceinline__ void tables_init(uint32_t bar, uint32_t csize) {
  if (threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar + 8));
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  if (csize > 1) {
    asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
    asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  } else {
    __syncthreads();
  }
}
// thread 0: arm both mbarriers for TB bytes each and issue this block's share of both tables' copies
// (global ksrc / vsrc -> shared dstK / dstV)
__device__ __forceinline__ void tables_copy(const unsigned char* ksrc, const unsigned char* vsrc, uint32_t dstK,
                                            uint32_t dstV, uint32_t TB, uint32_t bar, uint32_t crank, uint32_t csize) {
  if (threadIdx.x != 0) return;
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(TB) : "memory");
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar + 8), "r"(TB) : "memory");
  const uint32_t piece = ((TB + csize - 1) / csize + 15u) & ~15u;
  const uint32_t p0 = crank * piece, p1 = min(p0 + piece, TB);
  const uint16_t mask = (uint16_t)((1u << csize) - 1u);
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    const unsigned char* src = t == 0 ? ksrc : vsrc;
    const uint32_t dst = t == 0 ? dstK : dstV, tb = bar + 8u * t;
    for (uint32_t o = p0; o < p1; o += 16384u) {
      const uint32_t n = min(16384u, p1 - o);
      if (csize > 1)
        asm volatile(
            "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1], %2, [%3], %4;"
            ::"r"(dst + o), "l"(src + o), "r"(n), "r"(tb), "h"(mask) : "memory");
      else
        asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                     ::"r"(dst + o), "l"(src + o), "r"(n), "r"(tb) : "memory");
    }
  }
}
// wait until the copies completing on mbarrier mb (phase 0) have landed
__device__ __forceinline__ void mbar_wait(uint32_t mb) {
  uint32_t done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }"
                 : "=r"(done) : "r"(mb) : "memory");
}

// programmatic dependent launch of the partial grid (MILLION_CUDA_PDL=2, a.pdl): a block may start while the
// previous kernel on the stream still runs. Before this point it reads only its tables (written by no kernel of this
// call); here it waits for that kernel (its writes of q, codes, lengths and residual window are then visible), and
// only then lets the merge grid launch, whose q and residual-window reads precede its own wait. Launched without the
// attribute, the wait returns at once.
__device__ __forceinline__ void pdl_wait_then_trigger() {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

// the split's first `chunks` chunks of 32 tokens of K and V codes (contiguous over (t, m)) prefetched into L2 by the
// calling thread before griddepcontrol.wait. The lengths read here may be stale (the previous kernel may still write
// them): they only pick the lines of a prefetch, which changes no value read after the wait.
template <int GB>
__device__ __forceinline__ void prefetch_first_chunks(const PQArgs& a, int M, int chunks) {
  const SplitRange pr = split_range<GB>(a);
  const int n = min(pr.hi - pr.lo, chunks * 32);
  if (n <= 0) return;
  const unsigned char* k0 = a.kc + (long long)pr.b * a.sk_b + (long long)pr.hkv * a.sk_h + (long long)pr.lo * M;
  const unsigned char* v0 = a.vc + (long long)pr.b * a.sv_b + (long long)pr.hkv * a.sv_h + (long long)pr.lo * M;
  if (((reinterpret_cast<uintptr_t>(k0) | reinterpret_cast<uintptr_t>(v0)) & 15u) != 0) return;
  const uint32_t bytes = (uint32_t)(n * M);  // a multiple of 16 (M >= 16)
  for (uint32_t o = 0; o < bytes; o += 16384u) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(k0 + o), "r"(min(16384u, bytes - o)) : "memory");
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(v0 + o), "r"(min(16384u, bytes - o)) : "memory");
  }
}

// VF: fp16 inputs and one query head (kind 4 at the launcher): each chunk's values accumulate in half2 (see the loop)
// WP (GB 1, host-laid tables; the launcher's MILLION_CUDA_WINP): the block also attends its rows of the residual window
// (window_rows), and the merge grid is the instance that attends none
template <typename T, int D, int DSUB, int GB, int NW, bool VF = false, bool WP = false>
__global__ void __launch_bounds__(NW * 32, 1) pq_partial_kernel(const PQArgs a) {
  constexpr int M = D / DSUB, W = M / 4, TPI = 32 / W, NS = W, NT = NW * 32;
  constexpr bool VH2 = VF && GB == 1 && (std::is_same<T, __half>::value || PQ_BFH);
  using Entry = typename EntryT<DSUB>::type;
  // P8 (-DPQ_P8=1; one query head, 256-byte rows in both tables: d = 128): the K table (then the LUT) starts at a
  // 64 KB-aligned shared address and the V table 64 KB after it, so that a lookup's address is one byte permute of the
  // code word and a per-lane word holding the entry offset (byte 0) and the table base (bytes 2-3): offset | code << 8
  // | base, instead of a permute and an IMAD (code * row bytes + lane base): 64 of the 541 instructions of a 32-token
  // chunk at 2 bits, 128 of 892 at 4. At dsub 4 the LUT keeps the K centroid table's 256-byte rows (its floats in the
  // first half of each row). H100, 2026-12-06 20:08 UTC (docs/kernel_notes.md): faster at every MHA cell, B=1 32K 2-bit
  // 31.5 -> 30.7 us, 4-bit 50.4 -> 49.3, B=1 4K 2-bit 10.8 -> 9.3.
  constexpr bool P8 = p8_on<D, DSUB, GB>();
  constexpr int LS = P8 ? 64 : M;  // LUT floats per row
  static_assert(!P8 || (M * (int)sizeof(Entry) == 256 && (DSUB == 4 || LS == M)), "P8 table rows");
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* tables = smem;
  if constexpr (P8) tables = smem + ((0u - smem_addr(smem)) & 0xFFFFu);
  Entry* tabK = reinterpret_cast<Entry*>(tables);  // GB > 1: K centroids [256][M]
  float* lut = reinterpret_cast<float*>(tables);    // GB == 1: LUT [256][M] (same or fewer bytes)
  Entry* tabV = tabK + 256 * M;

  // programmatic dependent launch: waits for the previous kernel (MILLION_CUDA_PDL=2), then lets the merge grid
  // be scheduled (it waits with griddepcontrol.wait before reading the partials). Host-laid tables outside a cluster
  // are copied before the wait, as the tensor-core kernel does (no kernel of this call writes them): MHA 32K 4-bit
  // 54.0 -> 53.2 us, 4K 15.9 -> 15.6 (H100, 2026-12-06, docs/kernel_notes.md). Measured 2-4% slower while the
  // previous kernel was a fill of the starts tensor (before starts=None became a null pointer).
  TRACE_P(0);
  __shared__ __align__(8) uint64_t tbar[2];  // K table, V table: the LUT build starts before V arrives
  const uint32_t bar = smem_addr(&tbar[0]);  // bar + 8: the V table's
  constexpr uint32_t TB = 256u * M * sizeof(Entry);
  bool early = false;
  if constexpr (GB == 1) {
    uint32_t cs;
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(cs));
    if (a.kind == 2 && cs == 1) {
      tables_init(bar, 1);
      tables_copy(reinterpret_cast<const unsigned char*>(a.kcen) + (long long)block_hkv(a) * a.kcen_h * 2,
                  reinterpret_cast<const unsigned char*>(a.vcen) + (long long)block_hkv(a) * a.vcen_h * 2,
                  smem_addr(tabK), smem_addr(tabV), TB, bar, 0, 1);
      early = true;
      // the split's first NW chunks of K and V codes prefetched into L2 before the wait: their loads after it took
      // ~3 us from HBM, the critical path of the timeline (the same prefetch as prefetch_first_chunks, kept inline:
      // through the helper nvcc emits different code for this kernel, measured 0.7-2.6% slower at three 2-bit cells in
      // both rounds of an A/B, H100 2026-12-06 14:13 UTC). The lengths read here may be stale (the previous
      // kernel may still write them): they only pick the lines of a prefetch, which changes no value read after the wait.
      // H100, 2026-12-06 (docs/kernel_notes.md): MHA B=1 32K 4-bit 52.3 -> 51.5 us, 4K 14.0 -> 13.6; 2-bit within 1%.
      // 2 x NW chunks measured slower (4K 13.6 -> 14.8 us; 32K 50.9 -> 50.7).
      if (threadIdx.x == 0) {
        const SplitRange pr = split_range<GB>(a);
        const int n = min(pr.hi - pr.lo, NW * 32);
        if (n > 0) {
          const unsigned char* k0 = a.kc + (long long)pr.b * a.sk_b + (long long)pr.hkv * a.sk_h + (long long)pr.lo * M;
          const unsigned char* v0 = a.vc + (long long)pr.b * a.sv_b + (long long)pr.hkv * a.sv_h + (long long)pr.lo * M;
          if (((reinterpret_cast<uintptr_t>(k0) | reinterpret_cast<uintptr_t>(v0)) & 15u) == 0) {
            const uint32_t bytes = (uint32_t)(n * M);  // a multiple of 16 (M >= 16)
            for (uint32_t o = 0; o < bytes; o += 16384u) {
              asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(k0 + o), "r"(min(16384u, bytes - o)) : "memory");
              asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(v0 + o), "r"(min(16384u, bytes - o)) : "memory");
            }
          }
        }
      }
    }
  }
  pdl_wait_then_trigger();
  TRACE_V(30, trace_now());  // (trace builds) the wait returned
  // host-laid tables: this thread's q element, loaded before the lengths (staged into qs below), so that the two round
  // trips overlap. H100, 2026-12-06 (docs/kernel_notes.md): MHA B=1 4K 4-bit 15.6 -> 13.9 us, 32K 53.1 -> 51.5
  float q_early = 0.f;
  if constexpr (GB == 1) {
    static_assert(NT >= D, "one q element per thread");
    if (a.kind == 2 && (int)threadIdx.x < D)
      q_early = Cvt<T>::f(reinterpret_cast<const T*>(a.q)[(long long)blockIdx.z * a.sq_b +
                                                         (long long)block_hq0<GB>(a) * a.sq_h +
                                                         (long long)threadIdx.x * a.sq_d]) * a.scale_log2;
  }
  const SplitRange sr = split_range<GB>(a);
  TRACE_LENS(sr);  // (trace builds) the lengths are in
  const int b = sr.b, hkv = sr.hkv, hq0 = sr.hq0, lo = sr.lo, hi = sr.hi;
  const long long prow = sr.prow;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // WP: this block attends rows [wlo, whi) of the residual window inside its own softmax (the merge attends none), so
  // that no merge block has the window's dependent loads left to do after the partial grid ends. The rows are staged
  // behind the tables by cp.async, issued here (after the wait: the previous kernel may append to the window) so that
  // they land while the LUT is built; rows past whi are zero-filled.
  int wlo = 0, whi = 0;
  int winp = 0;
  if constexpr (GB == 1 && WP) {
    winp = window_rows(a.R, a.S);
    {
      const int plen = a.pq_lens[b];
      wlo = max(seq_start(a, b) - plen, 0) + (int)blockIdx.x * winp;
      whi = min(wlo + winp, min(a.res_lens[b], a.R));
      if (wlo < whi) {
        constexpr int PIECES = D * 2 / 16;  // 16-byte pieces per row
        const uint32_t stage = smem_addr(tables) + 2 * TB;
        const T* kr = reinterpret_cast<const T*>(a.kres) + (long long)b * a.skr_b + (long long)hkv * a.skr_h;
        const T* vr = reinterpret_cast<const T*>(a.vres) + (long long)b * a.svr_b + (long long)hkv * a.svr_h;
        const int rows = winp * PIECES;
        for (int x = tid; x < 2 * rows; x += NT) {
          const int side = x >= rows, r = (x - side * rows) / PIECES, col = (x - side * rows) % PIECES;
          const int j = wlo + r < whi ? wlo + r : wlo;
          const T* src = (side ? vr + (long long)j * a.svr_t : kr + (long long)j * a.skr_t) + col * 8;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(stage + (uint32_t)x * 16u), "l"(src),
                       "r"(wlo + r < whi ? 16 : 0) : "memory");
        }
      }
    }
  }

  if (lo >= hi && a.cluster <= 1 && (!WP || wlo >= whi)) {  // (in a cluster every block takes part in the table copies)
    write_empty_partial<GB, D, NT>(a, prow);
    if (early) { mbar_wait(bar); mbar_wait(bar + 8); }  // its copies target this block's shared memory
    return;
  }

  const int i = lane % W, h = lane / W;
  const int sh = selh<M>(h);
  // (a.sk_t == a.sv_t == M: the launcher makes the codes contiguous over (t, m))
  const uint8_t* kbase = a.kc + (long long)b * a.sk_b + (long long)hkv * a.sk_h + 4 * i;
  const uint8_t* vbase = a.vc + (long long)b * a.sv_b + (long long)hkv * a.sv_h + 4 * i;
  const int nchunks = (hi - lo + 31) / 32;
  uint32_t kw[NS], vw[NS], kn[NS], vn[NS];
  TRACE_INFO(nchunks);

  // codes are contiguous over (t, m): step s of a chunk is 128 bytes further (immediate offsets);
  // the last, partial chunk clamps its tokens to hi - 1 (their scores are masked).
  auto load = [&](int c, uint32_t* kd, uint32_t* vd) {
    const int t0 = lo + c * 32 + h;
    if (lo + c * 32 + 32 <= hi) {
      const uint32_t* kp = reinterpret_cast<const uint32_t*>(kbase + (long long)t0 * M);
      const uint32_t* vp = reinterpret_cast<const uint32_t*>(vbase + (long long)t0 * M);
#pragma unroll
      for (int s = 0; s < NS; ++s) {
        kd[s] = __ldg(kp + s * TPI * M / 4);
        vd[s] = __ldg(vp + s * TPI * M / 4);
      }
    } else {
#pragma unroll
      for (int s = 0; s < NS; ++s) {
        const long long t = min(t0 + s * TPI, hi - 1);
        kd[s] = __ldg(reinterpret_cast<const uint32_t*>(kbase + t * M));
        vd[s] = __ldg(reinterpret_cast<const uint32_t*>(vbase + t * M));
      }
    }
  };

  // the first chunk's codes are in flight while the tables are built
  int c = warp;
  if (c < nchunks) load(c, kw, vw);
  // ---- prologue: tables -> shared memory (swizzled). GB == 1: the K side is a float32 lookup table
  // lut[k][m] = scale*log2e * q_m . kcen[m][k]; GB > 1: the K centroids themselves.
  bool built = false;
  uint32_t crank = 0, csize = 1;  // cluster of splits (bulk-copy path only)
  if constexpr (GB == 1) {
    if (a.kind == 2) {
      // tables laid out on the host in the swizzled shared-memory order (cuda_attention.ffma_tables):
      // both arrive by bulk copies (TMA) on one mbarrier while q is staged; the K entries then become
      // LUT floats in place (ncu, MHA 32K: the per-thread prologue was ~21% of the kernel's warp time,
      // scalar q loads and L2 round trips of the centroid loads)
      // Optional (a.cluster = C > 1): the C splits of a head form a cluster; each block fetches 1/C of the
      // bytes and multicasts them to all C blocks (C-fold fewer L2 reads: at MHA B=1 every block reading its
      // own 128 KB makes the copy L2-bound, ncu 2026-11-23; measured slower all the same: clusters of one
      // 128 KB block per SM leave SMs idle); every block, empty ones too, takes part and leaves only after the
      // cluster's final barrier.
      __shared__ float qs[D];
      asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(crank));
      asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(csize));
      if (!early) {
        tables_init(bar, csize);
        tables_copy(reinterpret_cast<const unsigned char*>(a.kcen) + (long long)hkv * a.kcen_h * 2,
                    reinterpret_cast<const unsigned char*>(a.vcen) + (long long)hkv * a.vcen_h * 2,
                    smem_addr(tabK), smem_addr(tabV), TB, bar, crank, csize);
      }
      if (tid < D) qs[tid] = q_early;
      __syncthreads();  // qs
      // the K table is waited for here; outside a cluster the V table after the LUT build (its copy overlaps
      // the build; a wait inside the chunk loop measured slower from 32K, run 19)
      mbar_wait(bar);
      TRACE_P(1);
      if (csize > 1) {
        mbar_wait(bar + 8);
        asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");  // tables are in
      }
      if (lo >= hi && (!WP || wlo >= whi)) {  // an empty split of a cluster: its part of the copies is done
        write_empty_partial<GB, D, NT>(a, prow);
        if (csize > 1) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
        return;
      }
      // entry (k, m) sits at e = k*M + swz(m) in both the centroid table and the LUT. NT is a multiple of M, so a
      // thread keeps one subspace m (its q pair in registers) and its entries are NT apart. The table and the LUT
      // share their bytes, so the compiler cannot move a later entry's load above an earlier entry's store: the
      // loads of a batch are issued together by hand (LUT build and V-table wait: a median 3.5 K cycles for the
      // 32 entries per thread at MHA 4-bit, trace of 2026-12-06)
      constexpr int NE = 256 * M, PER = NE / NT;
      static_assert(NE % NT == 0 && NT % M == 0, "LUT entries per thread");
      // M = 64: a thread takes row position p = tid % M (subspace swz_inv(p)), so that the 32 lanes of a warp touch 32
      // consecutive words; by subspace (m = tid % M, position swz(m)) lanes m and m ^ 1 share a bank (2-way conflicts
      // in every load and store of the build). Elsewhere swz maps a warp's 32 subspaces to distinct banks already.
      const int p = tid % M, m = M == 64 ? swz_inv<M, DSUB>(p) : p;
      const int e0 = (tid / M) * M + (M == 64 ? p : swz<M, DSUB>(m));
      float qm[DSUB];
#pragma unroll
      for (int j = 0; j < DSUB; ++j) qm[j] = qs[DSUB * m + j];
      if constexpr (DSUB == 2) {  // 4-byte entries, 4-byte LUT floats: in place, each thread its own entries
        constexpr int BATCH = PER < 16 ? PER : 16;
        static_assert(PER % BATCH == 0, "LUT batches");
#pragma unroll
        for (int u0 = 0; u0 < PER; u0 += BATCH) {
          Entry ent[BATCH];
#pragma unroll
          for (int u = 0; u < BATCH; ++u) ent[u] = tabK[e0 + (u0 + u) * NT];
#pragma unroll
          for (int u = 0; u < BATCH; ++u) {
            float ef[2];
            entry_to_float<T, 2>(ent[u], ef);
            lut[e0 + (u0 + u) * NT] = fmaf(qm[1], ef[1], qm[0] * ef[0]);
          }
        }
      } else {  // 8-byte entries, 4-byte floats: read all of this thread's entries before anyone writes
        float val[PER];
#pragma unroll
        for (int u = 0; u < PER; ++u) {
          float ef[DSUB];
          entry_to_float<T, DSUB>(tabK[e0 + u * NT], ef);
          float acc = 0.f;
#pragma unroll
          for (int j = 0; j < DSUB; ++j) acc = fmaf(qm[j], ef[j], acc);
          val[u] = acc;
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < PER; ++u) {
          if constexpr (P8) lut[((e0 + u * NT) / M) * LS + (e0 + u * NT) % M] = val[u];
          else lut[e0 + u * NT] = val[u];
        }
      }
      if (csize == 1) mbar_wait(bar + 8);
      TRACE_P(2);
      built = true;
    }
  }
  if (!built) {
    const T* kcen = reinterpret_cast<const T*>(a.kcen) + (long long)hkv * a.kcen_h;
    const T* vcen = reinterpret_cast<const T*>(a.vcen) + (long long)hkv * a.vcen_h;
    const T* qh = reinterpret_cast<const T*>(a.q) + (long long)b * a.sq_b + (long long)hq0 * a.sq_h;
    constexpr int VEC = 16 / (DSUB * 2);
    constexpr int TOTAL = M * 256 / VEC;
    constexpr int ITERS = (TOTAL + NT - 1) / NT;
    constexpr int UNR = ITERS < PRO_UNR ? ITERS : PRO_UNR;
    for (int it0 = 0; it0 < ITERS; it0 += UNR) {
      uint4 vk[UNR], vv[UNR];
#pragma unroll
      for (int u = 0; u < UNR; ++u) {
        const int idx = tid + (it0 + u) * NT;
        if (idx < TOTAL) {
          const int m = pro_m<M, DSUB>(idx), k0 = pro_k0<M, DSUB, VEC>(idx);
          const long long off = ((long long)m * 256 + k0) * DSUB;
          vk[u] = __ldg(reinterpret_cast<const uint4*>(kcen + off));
          vv[u] = __ldg(reinterpret_cast<const uint4*>(vcen + off));
        }
      }
#pragma unroll
      for (int u = 0; u < UNR; ++u) {
        const int idx = tid + (it0 + u) * NT;
        if (idx < TOTAL) {
          const int m = pro_m<M, DSUB>(idx), k0 = pro_k0<M, DSUB, VEC>(idx);
          const int sw = swz<M, DSUB>(m);
          const Entry* ek = reinterpret_cast<const Entry*>(&vk[u]);
          const Entry* ev = reinterpret_cast<const Entry*>(&vv[u]);
          if constexpr (GB == 1) {
            float qm[DSUB];
#pragma unroll
            for (int j = 0; j < DSUB; ++j) qm[j] = Cvt<T>::f(qh[(long long)(m * DSUB + j) * a.sq_d]) * a.scale_log2;
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
              float ef[DSUB];
              entry_to_float<T, DSUB>(ek[v], ef);
              float acc = 0.f;
#pragma unroll
              for (int j = 0; j < DSUB; ++j) acc = fmaf(qm[j], ef[j], acc);
              lut[(k0 + v) * LS + sw] = acc;
            }
          } else {
#pragma unroll
            for (int v = 0; v < VEC; ++v) tabK[(k0 + v) * M + sw] = ek[v];
          }
#pragma unroll
          for (int v = 0; v < VEC; ++v) tabV[(k0 + v) * M + sw] = ev[v];
        }
      }
    }
  }

  // ---- per-lane constants ----
  uint32_t selb[4];
  int off[4];
  uint32_t baseK[4], baseV[4];  // shared addresses of this lane's entry in table row 0, per sub-step
  float qr[4][GB][DSUB];
  {
    const T* qb = reinterpret_cast<const T*>(a.q) + (long long)b * a.sq_b;
#pragma unroll
    for (int bb = 0; bb < 4; ++bb) {
      const int c = (bb + sh) & 3;
      const int m = 4 * i + c;
      // P8: the address's byte 0 is the lane's entry offset (byte 0 of baseK / baseV), byte 1 code c, bytes 2-3 the
      // table's 64 KB-aligned base (bytes 2-3 of baseK / baseV)
      selb[bb] = P8 ? 0x7604u | ((uint32_t)c << 4) : 0x4440u | (uint32_t)c;
      off[bb] = swz<M, DSUB>(m);
      baseK[bb] = smem_addr(tables) + off[bb] * (GB == 1 ? 4u : (uint32_t)sizeof(Entry));
      baseV[bb] = smem_addr(tabV) + off[bb] * (uint32_t)sizeof(Entry);
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int j = 0; j < DSUB; ++j)
          qr[bb][g][j] = Cvt<T>::f(qb[(long long)(hq0 + g) * a.sq_h + (long long)(m * DSUB + j) * a.sq_d]) * a.scale_log2;
    }
  }
  if constexpr (GB == 1 && WP) {
    if (wlo < whi) asm volatile("cp.async.wait_all;" ::: "memory");  // this thread's window pieces
  }
  __syncthreads();
  TRACE_P(3);

  float m_run[GB], l_run[GB], acc[4][GB][DSUB];
#pragma unroll
  for (int g = 0; g < GB; ++g) {
    m_run[g] = -INFINITY; l_run[g] = 0.f;
#pragma unroll
    for (int bb = 0; bb < 4; ++bb)
#pragma unroll
      for (int j = 0; j < DSUB; ++j) acc[bb][g][j] = 0.f;
  }

  // the block's window rows (a.winp): steps of TPI tokens in the chunk loop's lane layout (lane (h, i): token h of the
  // step, subspaces 4i..4i+3), warp w taking steps w, w + NW, ...; the score is reduced over the W lanes of a token
  if constexpr (GB == 1 && WP) {
    if (wlo < whi) {
      const uint32_t kst = smem_addr(tables) + 2 * TB, vst = kst + (uint32_t)winp * (D * 2);
      const int nst = (whi - wlo + TPI - 1) / TPI;
      // staged row r's entry of subspace 4i + ((bb + sh) & 3) (the lane's subspace at sub-step bb), as floats
      auto row_entry = [&](uint32_t base, int r, int bb, float (&x)[DSUB]) {
        const int m = 4 * i + ((bb + sh) & 3);
        entry_to_float<T, DSUB>(lds_entry<Entry>(base + (uint32_t)(r * D + m * DSUB) * 2u), x);
      };
      for (int st = warp; st < nst; st += NW) {
        const int r = st * TPI + h;  // < winp (a multiple of 8 >= TPI); rows past whi - wlo are zeros
        float part = 0.f;
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) {
          float x[DSUB];
          row_entry(kst, r, bb, x);
#pragma unroll
          for (int j = 0; j < DSUB; ++j) part = fmaf(qr[bb][0][j], x[j], part);  // q of the lane's subspace
        }
#pragma unroll
        for (int o = W / 2; o >= 1; o >>= 1) part += __shfl_xor_sync(FULL, part, o);
        const float sc = wlo + r < whi ? part : -INFINITY;
        float cmax = sc;
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(FULL, cmax, o));
        if (cmax > m_run[0]) {  // token st * TPI is valid: cmax is finite
          const float alpha = exp2f(m_run[0] - cmax);
          l_run[0] *= alpha;
#pragma unroll
          for (int bb = 0; bb < 4; ++bb)
#pragma unroll
            for (int j = 0; j < DSUB; ++j) acc[bb][0][j] *= alpha;
          m_run[0] = cmax;
        }
        const float p = exp2f(sc - m_run[0]);
        if (i == 0) l_run[0] += p;  // once per token (the epilogue sums l over all lanes)
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) {
          float x[DSUB];
          row_entry(vst, r, bb, x);
#pragma unroll
          for (int j = 0; j < DSUB; ++j) acc[bb][0][j] = fmaf(p, x[j], acc[bb][0][j]);
        }
      }
    }
  }

  for (; c < nchunks; c += NW) {
    if (c + NW < nchunks) load(c + NW, kn, vn);
    // ---- scores: per-lane partial sums over its subspaces, step s = token s*TPI + h ----
    float part[NS][GB];
#pragma unroll
    for (int s = 0; s < NS; ++s) {
#pragma unroll
      for (int g = 0; g < GB; ++g) part[s][g] = 0.f;
#pragma unroll
      for (int bb = 0; bb < 4; ++bb) {
        const uint32_t code = __byte_perm(kw[s], 0u, selb[bb]);
        if constexpr (P8) {
          part[s][0] += __uint_as_float(lds32(__byte_perm(kw[s], baseK[bb], selb[bb])));
        } else if constexpr (GB == 1) {
          part[s][0] += __uint_as_float(lds32(baseK[bb] + code * (M * 4)));
        } else {
          const Entry e = lds_entry<Entry>(baseK[bb] + code * (M * (uint32_t)sizeof(Entry)));
          float ef[DSUB];
          entry_to_float<T, DSUB>(e, ef);
#pragma unroll
          for (int g = 0; g < GB; ++g)
#pragma unroll
            for (int j = 0; j < DSUB; ++j) part[s][g] = fmaf(qr[bb][g][j], ef[j], part[s][g]);
        }
      }
    }
    // transposing butterfly over the W lanes of a token: lane i ends with step i's total
    butterfly<W / 2, NS, GB>(part, lane);
    const bool valid = (lo + c * 32 + i * TPI + h) < hi;
    float p[GB];
#pragma unroll
    for (int g = 0; g < GB; ++g) {
      const float sc = valid ? part[0][g] : -INFINITY;
      float cmax = sc;
#pragma unroll
      for (int o = 16; o >= 1; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(FULL, cmax, o));
      if (cmax > m_run[g]) {
        const float alpha = exp2f(m_run[g] - cmax);
        l_run[g] *= alpha;
#pragma unroll
        for (int bb = 0; bb < 4; ++bb)
#pragma unroll
          for (int j = 0; j < DSUB; ++j) acc[bb][g][j] *= alpha;
        m_run[g] = cmax;
      }
      p[g] = exp2f(sc - m_run[g]);
      l_run[g] += p[g];
    }
    // ---- values ----
    // VH2 (fp16 inputs, one query head): the chunk's NS tokens accumulate in half2 (p rounded to fp16, one HFMA2 per
    // centroid pair instead of two conversions and two FFMAs), added into the float32 accumulators once per chunk.
    // The launcher takes this path only for V tables within +-2048 (cuda_attention.ffma_half_values): NS <= 16
    // products of p <= 1 then stay within +-32768, inside the fp16 range. SASS per 32-token chunk at d = 128: 693 ->
    // 541 instructions at 2 bits, 1052 -> 892 at 4. H100, 2026-12-06 (docs/kernel_notes.md): MHA B=1 32K 2-bit
    // 33.9 -> 31.6 us (loop median 24.3 -> 22.5 us), 128K 2-bit 115.3 -> 101.0, 4-bit 32K 50.8 -> 50.3.
    __half2 hacc[4][DSUB / 2];
    if constexpr (VH2) {
#pragma unroll
      for (int bb = 0; bb < 4; ++bb)
#pragma unroll
        for (int j = 0; j < DSUB / 2; ++j) hacc[bb][j] = __float2half2_rn(0.f);
    }
#pragma unroll
    for (int s = 0; s < NS; ++s) {
      float ps[GB];
#pragma unroll
      for (int g = 0; g < GB; ++g) ps[g] = __shfl_sync(FULL, p[g], h * W + s);
      __half2 ph;  // p of the token in fp16 (VH2 only)
      if constexpr (VH2) ph = __float2half2_rn(ps[0]);
#pragma unroll
      for (int bb = 0; bb < 4; ++bb) {
        const Entry e = P8 ? lds_entry<Entry>(__byte_perm(vw[s], baseV[bb], selb[bb]))
                           : lds_entry<Entry>(baseV[bb] + __byte_perm(vw[s], 0u, selb[bb]) * (M * (uint32_t)sizeof(Entry)));
        if constexpr (VH2) {
          const __half2* e2 = reinterpret_cast<const __half2*>(&e);
#pragma unroll
          for (int j = 0; j < DSUB / 2; ++j) hacc[bb][j] = __hfma2(ph, e2[j], hacc[bb][j]);
        } else {
          float ef[DSUB];
          entry_to_float<T, DSUB>(e, ef);
#pragma unroll
          for (int g = 0; g < GB; ++g)
#pragma unroll
            for (int j = 0; j < DSUB; ++j) acc[bb][g][j] = fmaf(ps[g], ef[j], acc[bb][g][j]);
        }
      }
    }
    if constexpr (VH2) {
#pragma unroll
      for (int bb = 0; bb < 4; ++bb)
#pragma unroll
        for (int j = 0; j < DSUB / 2; ++j) {
          const float2 f = __half22float2(hacc[bb][j]);
          acc[bb][0][2 * j] += f.x;
          acc[bb][0][2 * j + 1] += f.y;
        }
    }
#pragma unroll
    for (int s = 0; s < NS; ++s) { kw[s] = kn[s]; vw[s] = vn[s]; }
  }

  TRACE_W(warp);
  // ---- epilogue: canonical subspace order, reduce over the token lanes h, merge warps ----
  float accc[4][GB][DSUB];
#pragma unroll
  for (int cc = 0; cc < 4; ++cc)
#pragma unroll
    for (int g = 0; g < GB; ++g)
#pragma unroll
      for (int j = 0; j < DSUB; ++j) {
        float v = 0.f;
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) v = (((bb + sh) & 3) == cc) ? acc[bb][g][j] : v;
        accc[cc][g][j] = v;
      }
#pragma unroll
  for (int mask = W; mask < 32; mask <<= 1)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int j = 0; j < DSUB; ++j) accc[cc][g][j] += __shfl_xor_sync(FULL, accc[cc][g][j], mask);
#pragma unroll
  for (int g = 0; g < GB; ++g)
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) l_run[g] += __shfl_xor_sync(FULL, l_run[g], o);

  __syncthreads();  // tables are dead: reuse shared memory
  TRACE_P(4);
  float* red = reinterpret_cast<float*>(smem);  // [NW][GB][D]
  float* wm = red + NW * GB * D;                // [NW][GB]
  float* wl = wm + NW * GB;                     // [NW][GB]
  if (h == 0) {
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int j = 0; j < DSUB; ++j) red[(warp * GB + g) * D + (4 * i + cc) * DSUB + j] = accc[cc][g][j];
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < GB; ++g) { wm[warp * GB + g] = m_run[g]; wl[warp * GB + g] = l_run[g]; }
  }
  __syncthreads();
  merge_warps<GB, D, NW>(a, red, wm, wl, prow);
  TRACE_P(5);
  if (csize > 1) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}

// ---------------------------------------------------------------------------------------------
// GQA partial kernel with a packed fp16 LUT (fp16 inputs, GB = 2..4 query heads per block).
// K side: lut[k][swz8(m)] = 4 fp16 scores scale*log2e * q_g,m . kcen[m][k] of the GB heads (padded to
// 8 bytes): one LDS.64 per (subspace, token) instead of 2*GB FFMAs on a looked-up centroid; the 4
// lookups of a sub-step are summed in half2 (HADD2), then in float32 (butterfly over the W lanes of a
// token, in passes of P <= 8 steps to halve the live partial sums). V side: p of the GB heads packed as
// half2 pairs, HFMA2 on the broadcast centroid halves into a per-chunk fp16 accumulator (16 tokens per
// lane at most), flushed into float32 after each chunk. Codes: no register double buffer; the next
// chunk's K codes are loaded once this chunk's scores are done, its V codes once the values are done
// (each load has half a chunk of other warps' work to hide under), so 16 warps fit in 128 registers.
template <int M> __device__ __forceinline__ int swz8(int m) {
  const int i = m >> 2, c = m & 3;
  if (M == 64) return ((i + 4 * c) & 15) + 16 * c;
  if (M == 32) return 8 * (c & 1) + (i ^ (4 * (c >> 1))) + 16 * (c >> 1);
  return i + 4 * c;  // M == 16
}

template <int D, int DSUB, int GB, int NW>
__global__ void __launch_bounds__(NW * 32, 1) pq_partial_lut_kernel(const PQArgs a) {
  using T = __half;
  constexpr int M = D / DSUB, W = M / 4, TPI = 32 / W, NS = W, NT = NW * 32;
  constexpr int P = W < 8 ? W : 8, NU = W / P;  // steps per score pass, passes per chunk
  constexpr int GP = (GB + 1) / 2;              // head pairs (half2)
  constexpr int MB = M / 16;                    // 16-subspace blocks (LUT prologue order)
  static_assert(NW % MB == 0, "prologue: subspace of a thread must not change between iterations");
  using VEntry = typename EntryT<DSUB>::type;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* tb = smem;  // the tables' start (PQ_TALIGN: aligned; the launcher allocates PQ_TALIGN bytes more)
  if constexpr (talign<D>() > 0) tb = smem + ((0u - smem_addr(smem)) & (talign<D>() - 1u));
  uint2* lut = reinterpret_cast<uint2*>(tb);                          // [256][M] x 4 fp16
  VEntry* tabV = reinterpret_cast<VEntry*>(tb + 256 * M * sizeof(uint2));

  TRACE_P(0);
  // a.kind == 3: both tables laid out on the host as the FFMA kernel's (cuda_attention.ffma_tables: entry (k, m) at
  // k*M + swz(m)) arrive by bulk copies issued before the wait, as in the other two kernels: the V table at its place,
  // the K centroids at the end of the LUT's bytes, where the LUT is then built from them after the wait (q is needed).
  // Otherwise every thread loads its share of both tables from global memory after the wait.
  __shared__ __align__(8) uint64_t tbar[2];  // K table, V table
  const uint32_t bar = smem_addr(&tbar[0]);
  constexpr uint32_t LUTB = 256u * M * sizeof(uint2), TB = 256u * M * sizeof(VEntry);
  static_assert(TB <= LUTB, "K table inside the LUT's bytes");
  const bool bulk = a.kind == 3;
  if (bulk) {
    tables_init(bar, 1);
    tables_copy(reinterpret_cast<const unsigned char*>(a.kcen) + (long long)block_hkv(a) * a.kcen_h * 2,
                reinterpret_cast<const unsigned char*>(a.vcen) + (long long)block_hkv(a) * a.vcen_h * 2,
                smem_addr(tb) + LUTB - TB, smem_addr(tabV), TB, bar, 0, 1);
    if (threadIdx.x == 0) prefetch_first_chunks<GB>(a, M, NW);  // see pq_partial_mma_kernel
  }
  pdl_wait_then_trigger();
  TRACE_V(30, trace_now());  // (trace builds) the wait returned
  TRACE_P(1);  // (the wait's return: without bulk copies this kernel loads its tables after it)
  // scaled q of subspace m, head pairs packed as half2: an entry's GB scores are DSUB packed HFMA2 per pair of heads
  // (products and sums in fp16, like the stored entry)
  auto q_pairs = [&](int b_, int hq0_, int m, __half2 (&qh2)[DSUB][2]) {
    const T* qh = reinterpret_cast<const T*>(a.q) + (long long)b_ * a.sq_b;
#pragma unroll
    for (int j = 0; j < DSUB; ++j)
#pragma unroll
      for (int gp = 0; gp < 2; ++gp) {
        float v2[2];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int g = 2 * gp + e;
          v2[e] = g < GB ? Cvt<T>::f(qh[(long long)(hq0_ + g) * a.sq_h + (long long)(m * DSUB + j) * a.sq_d]) * a.scale_log2
                         : 0.f;
        }
        qh2[j][gp] = __floats2half2_rn(v2[0], v2[1]);
      }
  };
  // bulk: NT is a multiple of M, so a thread keeps one table column p = tid % M (subspace swz_inv(p)) in the LUT
  // build; its q pairs are loaded here, before the lengths (split_range), so that the two round trips overlap
  static_assert(NT % M == 0, "LUT build: one column per thread");
  __half2 qh2b[DSUB][2];
  if (bulk) q_pairs(blockIdx.z, block_hq0<GB>(a), swz_inv<M, DSUB>((int)threadIdx.x % M), qh2b);
  const SplitRange sr = split_range<GB>(a);
  TRACE_LENS(sr);  // (trace builds) the lengths are in
  const int b = sr.b, hkv = sr.hkv, hq0 = sr.hq0, lo = sr.lo, hi = sr.hi;
  const long long prow = sr.prow;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

  if (lo >= hi) {
    write_empty_partial<GB, D, NT>(a, prow);
    if (bulk) { mbar_wait(bar); mbar_wait(bar + 8); }  // its copies target this block's shared memory
    return;
  }

  const int i = lane % W, h = lane / W;
  const int sh = selh<M>(h);
  const uint8_t* kbase = a.kc + (long long)b * a.sk_b + (long long)hkv * a.sk_h + 4 * i;
  const uint8_t* vbase = a.vc + (long long)b * a.sv_b + (long long)hkv * a.sv_h + 4 * i;
  const int nchunks = (hi - lo + 31) / 32;
  uint32_t kw[NS], vw[NS];
  TRACE_INFO(nchunks);

  auto load = [&](int c, const uint8_t* base, uint32_t* d) {
    const int t0 = lo + c * 32 + h;
    if (lo + c * 32 + 32 <= hi) {
      const uint32_t* p = reinterpret_cast<const uint32_t*>(base + (long long)t0 * M);
#pragma unroll
      for (int s = 0; s < NS; ++s) d[s] = __ldg(p + s * TPI * M / 4);
    } else {
#pragma unroll
      for (int s = 0; s < NS; ++s) {
        const long long t = min(t0 + s * TPI, hi - 1);
        d[s] = __ldg(reinterpret_cast<const uint32_t*>(base + t * M));
      }
    }
  };

  int c = warp;
  if (c < nchunks) { load(c, kbase, kw); load(c, vbase, vw); }
  // ---- prologue: packed fp16 LUT (K) and V centroid table -> shared memory ----
  // the GB packed scores of one centroid entry
  auto lut_entry = [&](const VEntry& ent, const __half2 (&qh2)[DSUB][2]) {
    __half2 cb[DSUB];  // centroid element j broadcast to both halves
    if constexpr (DSUB == 2) {
      const __half2 x = *reinterpret_cast<const __half2*>(&ent);
      cb[0] = __low2half2(x); cb[1] = __high2half2(x);
    } else {
      const __half2 x = *reinterpret_cast<const __half2*>(&ent.x);
      const __half2 y = *reinterpret_cast<const __half2*>(&ent.y);
      cb[0] = __low2half2(x); cb[1] = __high2half2(x); cb[2] = __low2half2(y); cb[3] = __high2half2(y);
    }
    __half2 sg[2];
#pragma unroll
    for (int gp = 0; gp < 2; ++gp) {
      if (gp == 1 && GB <= 2) { sg[1] = __float2half2_rn(0.f); continue; }
      sg[gp] = __hmul2(qh2[0][gp], cb[0]);
#pragma unroll
      for (int j = 1; j < DSUB; ++j) sg[gp] = __hfma2(qh2[j][gp], cb[j], sg[gp]);
    }
    uint2 e;
    e.x = *reinterpret_cast<uint32_t*>(&sg[0]);
    e.y = *reinterpret_cast<uint32_t*>(&sg[1]);
    return e;
  };
  if (bulk) {
    // NT is a multiple of M, so a thread keeps one table column p (subspace m) and its q pairs in registers; every
    // thread reads all its K entries (they share their bytes with the LUT's second half) before any LUT store
    constexpr int NE = 256 * M, PER = (NE + NT - 1) / NT;
    const int slot = swz8<M>(swz_inv<M, DSUB>(tid % M));
    const VEntry* tk = reinterpret_cast<const VEntry*>(tb + LUTB - TB);
    VEntry ent[PER];
    mbar_wait(bar);
#pragma unroll
    for (int u = 0; u < PER; ++u)
      if (tid + u * NT < NE) ent[u] = tk[tid + u * NT];
    __syncthreads();
#pragma unroll
    for (int u = 0; u < PER; ++u) {
      const int e = tid + u * NT;
      if (e < NE) lut[(e / M) * M + slot] = lut_entry(ent[u], qh2b);
    }
    mbar_wait(bar + 8);
  } else {
    const T* kcen = reinterpret_cast<const T*>(a.kcen) + (long long)hkv * a.kcen_h;
    const T* vcen = reinterpret_cast<const T*>(a.vcen) + (long long)hkv * a.vcen_h;
    constexpr int VEC = 16 / (DSUB * 2);
    constexpr int TOTAL = M * 256 / VEC;
    constexpr int ITERS = (TOTAL + NT - 1) / NT;
    constexpr int UNR = ITERS < PRO_UNR ? ITERS : PRO_UNR;
    // LUT order: lanes l and l+16 read the two 16-byte halves of one 32-byte sector of subspace m;
    // the 16 lanes of a half-warp hold 16 different subspaces (conflict-free 8-byte stores with swz8)
    const int lm = ((tid >> 5) % MB) * 16 + (lane & 15);
    // scaled q of this thread's subspace, head pairs packed as half2: an entry's GB scores are
    // 2*DSUB packed HFMA2 per pair of heads (products and sums in fp16, like the stored entry)
    __half2 qh2[DSUB][2];
    {
      const T* qh = reinterpret_cast<const T*>(a.q) + (long long)b * a.sq_b;
#pragma unroll
      for (int j = 0; j < DSUB; ++j)
#pragma unroll
        for (int gp = 0; gp < 2; ++gp) {
          float v2[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int g = 2 * gp + e;
            v2[e] = g < GB ? Cvt<T>::f(qh[(long long)(hq0 + g) * a.sq_h + (long long)(lm * DSUB + j) * a.sq_d]) * a.scale_log2
                           : 0.f;
          }
          qh2[j][gp] = __floats2half2_rn(v2[0], v2[1]);
        }
    }
    for (int it0 = 0; it0 < ITERS; it0 += UNR) {
      uint4 vk[UNR], vv[UNR];
#pragma unroll
      for (int u = 0; u < UNR; ++u) {
        const int idx = tid + (it0 + u) * NT;
        if (idx < TOTAL) {
          const int k0 = (((idx >> 5) / MB) * 2 + (lane >> 4)) * VEC;
          vk[u] = __ldg(reinterpret_cast<const uint4*>(kcen + ((long long)lm * 256 + k0) * DSUB));
          const int m = pro_m<M, DSUB>(idx), kv0 = pro_k0<M, DSUB, VEC>(idx);
          vv[u] = __ldg(reinterpret_cast<const uint4*>(vcen + ((long long)m * 256 + kv0) * DSUB));
        }
      }
#pragma unroll
      for (int u = 0; u < UNR; ++u) {
        const int idx = tid + (it0 + u) * NT;
        if (idx < TOTAL) {
          const int k0 = (((idx >> 5) / MB) * 2 + (lane >> 4)) * VEC;
          const VEntry* ek = reinterpret_cast<const VEntry*>(&vk[u]);
          const int slot = swz8<M>(lm);
#pragma unroll
          for (int v = 0; v < VEC; ++v) {
            __half2 cb[DSUB];  // centroid element j broadcast to both halves
            if constexpr (DSUB == 2) {
              const __half2 x = *reinterpret_cast<const __half2*>(&ek[v]);
              cb[0] = __low2half2(x); cb[1] = __high2half2(x);
            } else {
              const __half2 x = *reinterpret_cast<const __half2*>(&ek[v].x);
              const __half2 y = *reinterpret_cast<const __half2*>(&ek[v].y);
              cb[0] = __low2half2(x); cb[1] = __high2half2(x); cb[2] = __low2half2(y); cb[3] = __high2half2(y);
            }
            __half2 sg[2];
#pragma unroll
            for (int gp = 0; gp < 2; ++gp) {
              if (gp == 1 && GB <= 2) { sg[1] = __float2half2_rn(0.f); continue; }
              sg[gp] = __hmul2(qh2[0][gp], cb[0]);
#pragma unroll
              for (int j = 1; j < DSUB; ++j) sg[gp] = __hfma2(qh2[j][gp], cb[j], sg[gp]);
            }
            uint2 e;
            e.x = *reinterpret_cast<uint32_t*>(&sg[0]);
            e.y = *reinterpret_cast<uint32_t*>(&sg[1]);
            lut[(k0 + v) * M + slot] = e;
          }
          const int m = pro_m<M, DSUB>(idx), kv0 = pro_k0<M, DSUB, VEC>(idx);
          const int sw = swz<M, DSUB>(m);
          const VEntry* ev = reinterpret_cast<const VEntry*>(&vv[u]);
#pragma unroll
          for (int v = 0; v < VEC; ++v) tabV[(kv0 + v) * M + sw] = ev[v];
        }
      }
    }
  }

  uint32_t selb[4];
  uint32_t baseK[4], baseV[4];  // shared addresses of this lane's entry in table row 0, per sub-step
#pragma unroll
  for (int bb = 0; bb < 4; ++bb) {
    const int cc = (bb + sh) & 3;
    const int m = 4 * i + cc;
    selb[bb] = 0x4440u | (uint32_t)cc;
    baseK[bb] = smem_addr(lut) + swz8<M>(m) * 8;
    baseV[bb] = smem_addr(tabV) + swz<M, DSUB>(m) * (uint32_t)sizeof(VEntry);
  }
  __syncthreads();
  TRACE_P(2);  // LUT built, V table in
  TRACE_P(3);

  float m_run[GB], l_run[GB], acc[4][GB][DSUB];
#pragma unroll
  for (int g = 0; g < GB; ++g) {
    m_run[g] = -INFINITY; l_run[g] = 0.f;
#pragma unroll
    for (int bb = 0; bb < 4; ++bb)
#pragma unroll
      for (int j = 0; j < DSUB; ++j) acc[bb][g][j] = 0.f;
  }

  for (; c < nchunks; c += NW) {
    // ---- scores: NU passes of P steps; step s = token s*TPI + h ----
    float sc[NU][GB];
#pragma unroll
    for (int u = 0; u < NU; ++u) {
      float part[P][GB];
#pragma unroll
      for (int r = 0; r < P; ++r) {
        const int s = u * P + r;
        __half2 a01, a23;
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) {
          const uint32_t code = __byte_perm(kw[s], 0u, selb[bb]);
          const uint2 e = lds64(baseK[bb] + code * (M * 8));
          const __half2 e01 = *reinterpret_cast<const __half2*>(&e.x);
          const __half2 e23 = *reinterpret_cast<const __half2*>(&e.y);
          if (bb == 0) { a01 = e01; if (GB > 2) a23 = e23; }
          else { a01 = __hadd2(a01, e01); if (GB > 2) a23 = __hadd2(a23, e23); }
        }
        const float2 f01 = __half22float2(a01);
        part[r][0] = f01.x;
        part[r][1] = f01.y;
        if constexpr (GB > 2) {
          const float2 f23 = __half22float2(a23);
          part[r][2] = f23.x;
          if constexpr (GB > 3) part[r][3] = f23.y;
        }
      }
      butterfly<P / 2, P, GB>(part, lane);
#pragma unroll
      for (int mask = P; mask < W; mask <<= 1)
#pragma unroll
        for (int g = 0; g < GB; ++g) part[0][g] += __shfl_xor_sync(FULL, part[0][g], mask);
#pragma unroll
      for (int g = 0; g < GB; ++g) sc[u][g] = part[0][g];
    }
    if (c + NW < nchunks) load(c + NW, kbase, kw);
    // ---- online softmax (log2 units); lanes i and i^P hold the same token when W > P ----
    uint32_t p2[NU][GP];
    {
      float p[NU][4];
#pragma unroll
      for (int g = 0; g < GB; ++g) {
        float sv[NU];
        float cmax = -INFINITY;
#pragma unroll
        for (int u = 0; u < NU; ++u) {
          const int tok = (u * P + (i % P)) * TPI + h;
          sv[u] = (lo + c * 32 + tok < hi) ? sc[u][g] : -INFINITY;
          cmax = fmaxf(cmax, sv[u]);
        }
#pragma unroll
        for (int o = 16; o >= 1; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(FULL, cmax, o));
        if (cmax > m_run[g]) {
          const float alpha = exp2f(m_run[g] - cmax);
          l_run[g] *= alpha;
#pragma unroll
          for (int bb = 0; bb < 4; ++bb)
#pragma unroll
            for (int j = 0; j < DSUB; ++j) acc[bb][g][j] *= alpha;
          m_run[g] = cmax;
        }
#pragma unroll
        for (int u = 0; u < NU; ++u) {
          p[u][g] = exp2f(sv[u] - m_run[g]);
          l_run[g] += (W == P || i < P) ? p[u][g] : 0.f;
        }
      }
#pragma unroll
      for (int u = 0; u < NU; ++u)
#pragma unroll
        for (int gp = 0; gp < GP; ++gp) {
          const __half2 hp = __floats2half2_rn(p[u][2 * gp], 2 * gp + 1 < GB ? p[u][2 * gp + 1] : 0.f);
          p2[u][gp] = *reinterpret_cast<const uint32_t*>(&hp);
        }
    }
    // ---- values: fp16 accumulation over this chunk's tokens, then float32. Each head's p is broadcast
    // to both halves once per step and multiplies the centroid entry as stored (x = dims j, j+1), so
    // hacc[bb][g][jj] holds head g's dims 2jj, 2jj+1: no per-lookup broadcast of centroid halves ----
    constexpr int DH = DSUB / 2;  // half2 words per centroid entry
    __half2 hacc[4][GB][DH];
#pragma unroll
    for (int bb = 0; bb < 4; ++bb)
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int jj = 0; jj < DH; ++jj) hacc[bb][g][jj] = __float2half2_rn(0.f);
#pragma unroll
    for (int s = 0; s < NS; ++s) {
      __half2 pb[GB];
#pragma unroll
      for (int gp = 0; gp < GP; ++gp) {
        const uint32_t x = __shfl_sync(FULL, p2[s / P][gp], h * W + (s % P));
        const __half2 pp = *reinterpret_cast<const __half2*>(&x);
        pb[2 * gp] = __low2half2(pp);
        if (2 * gp + 1 < GB) pb[2 * gp + 1 < GB ? 2 * gp + 1 : 0] = __high2half2(pp);
      }
#pragma unroll
      for (int bb = 0; bb < 4; ++bb) {
        const uint32_t code = __byte_perm(vw[s], 0u, selb[bb]);
        const VEntry e = lds_entry<VEntry>(baseV[bb] + code * (M * (uint32_t)sizeof(VEntry)));
        const __half2* cv = reinterpret_cast<const __half2*>(&e);
#pragma unroll
        for (int g = 0; g < GB; ++g)
#pragma unroll
          for (int jj = 0; jj < DH; ++jj) hacc[bb][g][jj] = __hfma2(pb[g], cv[jj], hacc[bb][g][jj]);
      }
    }
    if (c + NW < nchunks) load(c + NW, vbase, vw);
#pragma unroll
    for (int bb = 0; bb < 4; ++bb)
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int jj = 0; jj < DH; ++jj) {
          const float2 f = __half22float2(hacc[bb][g][jj]);
          acc[bb][g][2 * jj] += f.x;
          acc[bb][g][2 * jj + 1] += f.y;
        }
  }

  TRACE_W(warp);
  // ---- epilogue (as pq_partial_kernel) ----
  float accc[4][GB][DSUB];
#pragma unroll
  for (int cc = 0; cc < 4; ++cc)
#pragma unroll
    for (int g = 0; g < GB; ++g)
#pragma unroll
      for (int j = 0; j < DSUB; ++j) {
        float v = 0.f;
#pragma unroll
        for (int bb = 0; bb < 4; ++bb) v = (((bb + sh) & 3) == cc) ? acc[bb][g][j] : v;
        accc[cc][g][j] = v;
      }
#pragma unroll
  for (int mask = W; mask < 32; mask <<= 1)
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int j = 0; j < DSUB; ++j) accc[cc][g][j] += __shfl_xor_sync(FULL, accc[cc][g][j], mask);
#pragma unroll
  for (int g = 0; g < GB; ++g)
#pragma unroll
    for (int o = 16; o >= 1; o >>= 1) l_run[g] += __shfl_xor_sync(FULL, l_run[g], o);

  __syncthreads();
  TRACE_P(4);
  float* red = reinterpret_cast<float*>(smem);  // [NW][GB][D]
  float* wm = red + NW * GB * D;
  float* wl = wm + NW * GB;
  if (h == 0) {
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int g = 0; g < GB; ++g)
#pragma unroll
        for (int j = 0; j < DSUB; ++j) red[(warp * GB + g) * D + (4 * i + cc) * DSUB + j] = accc[cc][g][j];
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < GB; ++g) { wm[warp * GB + g] = m_run[g]; wl[warp * GB + g] = l_run[g]; }
  }
  __syncthreads();
  merge_warps<GB, D, NW>(a, red, wm, wl, prow);
  TRACE_P(5);
}

// ---------------------------------------------------------------------------------------------
// Tensor-core partial kernel (pq_partial_mma_kernel): fp16 or bf16, GB <= 4 query heads per block
// (MHA too), dsub 2 or 4. Lane l = (gid = l / 4, tig = l % 4), the mma.sync m16n8k16 fragment roles.
// K side: S^T[16 tokens x 8 heads] = Khat[16 x D] . Q^T[D x 8]: the A fragment of a token is its
// gathered centroid entries (token gid / gid+8, the dims of subspaces (M/4)*tig + w: a dsub-2 entry
// is exactly one A register, so a lookup is PRMT + IMAD + LDS and no float math); the B fragment is
// the raw q of head gid (constant over the loop; scale applied to the fp32 scores); the lane's K
// codes of a token are M/4 contiguous bytes (one 16-byte load at d=128, 4-bit). V side:
// O^T[D x 8 heads] += Vhat^T[16 dims x 16 tokens] . P^T[16 tokens x 8 heads]: lane gid gathers the
// entries of subspaces (M/8)*gid + r for tokens 2tig, 2tig+1, 2tig+8, 2tig+9 (two PRMT per pair of
// entries build the A registers); P comes from the score fragments by 4 shuffles per 16 tokens.
// Online softmax per head on the fragments (fp32), accumulators in fp32. Tables: [256][M] entries
// per row, rows padded by 16 bytes (bank = 4*code + slot mod 32: a warp's gathers spread over
// banks); slot orders put the 4 tig (K) / 8 gid (V) subspaces of one instruction in distinct banks.
// The host lays the tables out in exactly this form once per codebook (cuda_attention.mma_tables):
// a.kcen / a.vcen point at them and a.kcen_h / a.vcen_h are their per-head strides in 2-byte units.
// Residual window of query head hq for one group of NWM warps (gtid: thread in the group, NWM * 32 >= D),
// reduced across the group through its shared scratch wacc [NWM][D], wm, wl [NWM]. Every thread of the block
// calls it (one __syncthreads inside); a group with active == false attends nothing. Leaves this thread's
// merge state for output element d = gtid: running max mx (log2 units), denominator den and numerator o
// relative to mx.
template <typename T, int D, int NWM>
__device__ __forceinline__ void residual_window(const PQArgs& a, int b, int hq, int gtid, bool active, float* wacc,
                                                float* wm, float* wl, float& mx, float& den, float& o) {
  constexpr int EV = D / 32, RT = 16;
  using VT = typename std::conditional<EV == 4, uint2, uint32_t>::type;
  const int G = a.Hq / a.Hkv, hkv = hq / G;
  const int lane = gtid & 31, warp = gtid >> 5;
  const int plen = a.pq_lens[b];
  const int r_end = min(a.res_lens[b], a.R);
  const int r_lo = max(seq_start(a, b) - plen, 0);
  float m = -INFINITY, l = 0.f, acc[EV];
#pragma unroll
  for (int e = 0; e < EV; ++e) acc[e] = 0.f;
  const T* kr = reinterpret_cast<const T*>(a.kres) + (long long)b * a.skr_b + (long long)hkv * a.skr_h;
  const T* vr = reinterpret_cast<const T*>(a.vres) + (long long)b * a.svr_b + (long long)hkv * a.svr_h;
  int j0 = active ? r_lo + warp * RT : r_end;
  if (j0 < r_end) {
    float qv[EV];
    {
      const T* qb = reinterpret_cast<const T*>(a.q) + (long long)b * a.sq_b + (long long)hq * a.sq_h;
#pragma unroll
      for (int e = 0; e < EV; ++e) qv[e] = Cvt<T>::f(qb[(long long)(lane * EV + e) * a.sq_d]) * a.scale_log2;
    }
    for (; j0 < r_end; j0 += NWM * RT) {
      VT kk[RT], vv[RT];
#pragma unroll
      for (int t = 0; t < RT; ++t) {
        const long long j = min(j0 + t, r_end - 1);
        kk[t] = __ldg(reinterpret_cast<const VT*>(kr + j * a.skr_t) + lane);
      }
#pragma unroll
      for (int t = 0; t < RT; ++t) {
        const long long j = min(j0 + t, r_end - 1);
        vv[t] = __ldg(reinterpret_cast<const VT*>(vr + j * a.svr_t) + lane);
      }
      float part[RT][1];
#pragma unroll
      for (int t = 0; t < RT; ++t) {
        float x[EV];
        if constexpr (EV == 4) {
          const float2 u = Cvt<T>::pair(kk[t].x), w = Cvt<T>::pair(kk[t].y);
          x[0] = u.x; x[1] = u.y; x[2] = w.x; x[3] = w.y;
        } else {
          const float2 u = Cvt<T>::pair(kk[t]);
          x[0] = u.x; x[1] = u.y;
        }
        float d = 0.f;
#pragma unroll
        for (int e = 0; e < EV; ++e) d = fmaf(x[e], qv[e], d);
        part[t][0] = d;
      }
      butterfly<RT / 2, RT, 1>(part, lane);  // lane holds token (lane & 15) summed over its half-warp
      const float dot = part[0][0] + __shfl_xor_sync(FULL, part[0][0], 16);
      const float s = (j0 + (lane & 15) < r_end) ? dot : -INFINITY;
      float cmax = s;
#pragma unroll
      for (int o2 = 8; o2 >= 1; o2 >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(FULL, cmax, o2));
      if (cmax > m) {  // cmax is finite: token j0 is valid
        const float alpha = exp2f(m - cmax);
        l *= alpha;
#pragma unroll
        for (int e = 0; e < EV; ++e) acc[e] *= alpha;
        m = cmax;
      }
      const float p = exp2f(s - m);
      float ps = p;
#pragma unroll
      for (int o2 = 8; o2 >= 1; o2 >>= 1) ps += __shfl_xor_sync(FULL, ps, o2);
      l += ps;
#pragma unroll
      for (int t = 0; t < RT; ++t) {
        const float pt = __shfl_sync(FULL, p, t);
        float x[EV];
        if constexpr (EV == 4) {
          const float2 u = Cvt<T>::pair(vv[t].x), w = Cvt<T>::pair(vv[t].y);
          x[0] = u.x; x[1] = u.y; x[2] = w.x; x[3] = w.y;
        } else {
          const float2 u = Cvt<T>::pair(vv[t]);
          x[0] = u.x; x[1] = u.y;
        }
#pragma unroll
        for (int e = 0; e < EV; ++e) acc[e] = fmaf(pt, x[e], acc[e]);
      }
    }
  }
#pragma unroll
  for (int e = 0; e < EV; ++e) wacc[warp * D + lane * EV + e] = acc[e];
  if (lane == 0) { wm[warp] = m; wl[warp] = l; }
  __syncthreads();

  float mres = -INFINITY;
#pragma unroll
  for (int w = 0; w < NWM; ++w) mres = fmaxf(mres, wm[w]);
  float lres = 0.f, ores = 0.f;
  const int d = gtid;  // this thread's output element
  if (mres > -INFINITY) {
#pragma unroll
    for (int w = 0; w < NWM; ++w) {
      const float f = exp2f(wm[w] - mres);  // 0 for a warp without tokens
      lres += wl[w] * f;
      if (d < D) ores += wacc[w * D + d] * f;
    }
  }
  mx = lres > 0.f ? mres + log2f(lres) : -INFINITY;
  den = lres > 0.f ? 1.f : 0.f;
  o = lres > 0.f ? ores / lres : 0.f;  // residual part relative to mx
}

// merge S partials into (mx, den, o), online in groups of MERGE_PF whose loads are all issued before any is
// used (one round trip per group; a plain loop serializes one round trip per split: measured +2.4 us at
// S = 44). lse(s): split s's lse (natural log); out(s): this thread's element of its output (0 where the
// thread has no element).
template <typename LL, typename LO>
__device__ __forceinline__ void merge_partials(int S, LL lse, LO out, float& mx, float& den, float& o) {
  for (int s0 = 0; s0 < S; s0 += MERGE_PF) {
    float lv[MERGE_PF], ov[MERGE_PF];
#pragma unroll
    for (int u = 0; u < MERGE_PF; ++u) {
      const int s = s0 + u;
      lv[u] = s < S ? lse(s) * LOG2E : -INFINITY;
      ov[u] = s < S ? out(s) : 0.f;
    }
    float gm = -INFINITY;
#pragma unroll
    for (int u = 0; u < MERGE_PF; ++u) gm = fmaxf(gm, lv[u]);
    const float nm = fmaxf(mx, gm);
    if (nm == -INFINITY) continue;  // nothing attended so far
    const float f = exp2f(mx - nm);  // 0 when mx = -inf
    den *= f;
    o *= f;
#pragma unroll
    for (int u = 0; u < MERGE_PF; ++u) {
      const float w = exp2f(lv[u] - nm);  // 0 for an empty split (lse -inf, o 0)
      den += w;
      o = fmaf(w, ov[u], o);
    }
    mx = nm;
  }
}

template <typename T, int D>
__device__ __forceinline__ void write_output(const PQArgs& a, int b, int hq, int d, bool lead, float mx, float den,
                                             float o) {
  const bool any = mx > -INFINITY;
  if (d < D) {
    T* ob = reinterpret_cast<T*>(a.out) + (long long)b * a.so_b + (long long)hq * a.so_h;
    ob[(long long)d * a.so_d] = Cvt<T>::to(any ? o / den : 0.f);
  }
  if (lead && a.lse_out) a.lse_out[(long long)b * a.Hq + hq] = any ? (mx + log2f(den)) * LN2 : -INFINITY;
}

// residual window (dense) + merge of the S partials; one block of NWM warps per (q head, batch).
// Residual: warp w takes tokens r_lo + w*RT + k*NWM*RT (RT = 16 per round); lane l owns the EV = D/32
// consecutive elements l*EV.. of every row, so each token's K and V rows are one coalesced warp load
// and all 2*RT rows of a round are in flight at once (with q). Scores: per-lane partial dots reduced
// by a transposing butterfly (lane t & 15 ends with token t's score). 4 warps and <= 128 registers so
// that a merge block fits beside a 12-warp partial block: with programmatic dependent launch the
// residual part runs while the partial kernel still runs. After griddepcontrol.wait every thread
// merges its output element over the S partials on its own (the lse values are broadcast loads),
// online in groups of MERGE_PF whose loads are issued together: one global round trip per group, no barrier.
// MINB = 8 (launcher: merge8): at most 64 registers at d = 128, so that 8 merge blocks fit on an SM the partial grid
// leaves free instead of 5 (MINB = 0: no bound).
// WIN = false: the window instance's merge (the partial blocks attended the window)
template <typename T, int D, int MINB = 0, bool WIN = true>
__global__ void __launch_bounds__(128, MINB) pq_merge_kernel(const PQArgs a) {
  constexpr int NWM = 4;
  const int hq = blockIdx.x, b = blockIdx.y;
  const int tid = threadIdx.x;
  __shared__ float wacc[NWM * D];
  __shared__ float wm[NWM], wl[NWM];
  float mx, den, o;
  TRACE_M(0);
  // the next call's partial grid (MILLION_CUDA_PDL=2) may be scheduled now: its blocks copy their tables while this
  // grid and the tail of this call's partial grid run, then wait for this grid to end
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  residual_window<T, D, NWM>(a, b, hq, tid, WIN, wacc, wm, wl, mx, den, o);
  TRACE_M(1);
  // everything above (q, residual window) is independent of the partial kernel; wait for it here
  asm volatile("griddepcontrol.wait;" ::: "memory");
  TRACE_M(2);
  const int S = a.S;
  const long long row = (long long)b * a.Hq + hq;
  const float* lp = a.lse_part + row * S;
  const float* op = a.o_part + row * S * D + tid;
  merge_partials(S, [&](int s) { return lp[s]; }, [&](int s) { return tid < D ? op[(long long)s * D] : 0.f; },
                 mx, den, o);
  write_output<T, D>(a, b, hq, tid, tid == 0, mx, den, o);
  TRACE_M_END();
}

// the merge block of a cluster (rank S, a.cmerge): groups of NWM = D/32 warps, one query head of the
// block's GB at a time, attend the residual window while the splits run, then (cluster barrier) merge the
// S partials straight from the splits' shared memory and write the output
template <typename T, int D, int GB, int NW>
__device__ __forceinline__ void cm_merge_block(const PQArgs& a, unsigned char* smem) {
  constexpr int NWM = D / 32, NG = NW / NWM, NP = (GB + NG - 1) / NG;
  static_assert(NG >= 1 && NG * NWM == NW, "cluster merge: warps per block");
  const int tid = threadIdx.x, grp = tid / (NWM * 32), gtid = tid % (NWM * 32);
  const int b = blockIdx.z, hkv = blockIdx.y / a.ngroups;
  const int hq0 = hkv * (a.Hq / a.Hkv) + (blockIdx.y % a.ngroups) * GB;
  float* scratch = reinterpret_cast<float*>(smem) + grp * (NWM * D + 2 * NWM);
  float mx[NP], den[NP], o[NP];
#pragma unroll
  for (int p = 0; p < NP; ++p) {
    const int g = p * NG + grp;
    residual_window<T, D, NWM>(a, b, hq0 + min(g, GB - 1), gtid, g < GB, scratch, scratch + NWM * D,
                               scratch + NWM * D + NWM, mx[p], den[p], o[p]);
    if (p + 1 < NP) __syncthreads();  // the scratch is reused by the next pass
  }
  cluster_sync_all();  // phase 1: every split's slot is written
  const uint32_t slot = smem_addr(smem) + cm_slot_off<GB, D, NW>();
#pragma unroll
  for (int p = 0; p < NP; ++p) {
    const int g = p * NG + grp;
    if (g < GB)
      merge_partials(a.S, [&](int s) { return ld_dsmem(slot + 4u * (GB * D + g), (uint32_t)s); },
                     [&](int s) { return ld_dsmem(slot + 4u * (g * D + gtid), (uint32_t)s); }, mx[p], den[p], o[p]);
  }
  cluster_sync_all();  // phase 2: the slots have been read, the splits may exit
#pragma unroll
  for (int p = 0; p < NP; ++p) {
    const int g = p * NG + grp;
    if (g < GB) write_output<T, D>(a, b, hq0 + g, gtid, gtid == 0, mx[p], den[p], o[p]);
  }
}

template <typename T> __device__ __forceinline__ void mma_16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                                                uint32_t a3, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
  }
}
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  if constexpr (std::is_same<T, __half>::value) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  } else {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
}
// code words of a lane for one token: NB bytes at byte offset `off` of the token's row
template <int NB> __device__ __forceinline__ void ld_codes(const uint8_t* p, uint32_t* w) {
  if constexpr (NB == 16) { const uint4 v = __ldg(reinterpret_cast<const uint4*>(p)); w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w; }
  else if constexpr (NB == 8) { const uint2 v = __ldg(reinterpret_cast<const uint2*>(p)); w[0] = v.x; w[1] = v.y; }
  else if constexpr (NB == 4) { w[0] = __ldg(reinterpret_cast<const uint32_t*>(p)); }
  else { w[0] = __ldg(reinterpret_cast<const unsigned short*>(p)); }
}
__device__ __forceinline__ uint32_t byte_of(const uint32_t* w, int j) {  // j compile-time after unrolling
  return __byte_perm(w[j >> 2], 0u, 0x4440u | (uint32_t)(j & 3));
}

template <typename T, int D, int DSUB, int GB, int NW, bool PF, bool CM = false>
__global__ void __launch_bounds__(NW * 32, 1) pq_partial_mma_kernel(const PQArgs a) {
  constexpr int M = D / DSUB, NT = NW * 32;
  constexpr int ESZ = 2 * DSUB;                 // bytes per centroid entry
  constexpr int ROWB = M * ESZ + 16;            // padded table row (one code)
  constexpr int ROWBK = M * ESZ + mma_kpad<DSUB>();  // K table row (PQ_ROT: unpadded, in the same bytes)
  constexpr int KB = M / 4, VB = M / 8;         // code bytes per lane and token: K, V
  constexpr int KWN = (KB + 3) / 4, VWN = (VB + 3) / 4;
  constexpr int NKT = D / 16;                   // K: mma k-tiles (16 dims) per token tile
  constexpr int NVT = D / 16;                   // V: output dim tiles
  constexpr int VR = M / 8;                     // V: subspaces per lane (= NVT for dsub 2, NVT/2 for dsub 4)
  static_assert(GB >= 1 && GB <= 4, "GB");
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* tabK = smem;  // PQ_TALIGN (outside a merge cluster): at an aligned address, PQ_TALIGN bytes allocated more
  constexpr bool MP8 = mp8_on<D, DSUB>() && !CM;
  static_assert(!MP8 || ROWBK == 256, "PQ_MP8: 256-byte K rows");
  constexpr int ROWBV = M * ESZ + mma_vpad<D, DSUB>();  // V table row (PQ_VCLS: unpadded)
  constexpr bool VCLS = mma_vpad<D, DSUB>() == 0 && MP8;
  if constexpr (MP8) tabK = smem + ((0u - smem_addr(smem)) & 0xFFFFu);
  else if constexpr (talign<D>() > 0 && !CM) tabK = smem + ((0u - smem_addr(smem)) & (talign<D>() - 1u));
  unsigned char* tabV = tabK + (VCLS ? 65536 : 256 * ROWB);

  TRACE_P(0);
  if constexpr (CM) {  // cluster merge: rank S merges the splits' partials (no second kernel)
    if ((int)blockIdx.x == a.S) {
      pdl_wait_then_trigger();
      cm_merge_block<T, D, GB, NW>(a, smem);
      return;
    }
  }
  // ---- prologue: both tables, pre-laid out on the host as the shared-memory rows [code][ROWB bytes]
  // (entries at their slots, rows padded), arrive by bulk copies (TMA) completing on one mbarrier: no
  // per-thread loads, stores or registers; issued at the block's start, before the wait for the previous
  // kernel. Optional (a.cluster > 1, measured slower on the H100): a cluster of C blocks (splits of the same
  // head) where each block fetches 1/C of the bytes and multicasts them to all C blocks. Every block, empty
  // ones too, takes part; it leaves only after its copies landed (and, in a cluster, after the cluster's
  // final barrier: no copy may still target its shared memory).
  __shared__ __align__(8) uint64_t tab_bar[2];  // K table, V table: the K side starts before V arrives
  uint32_t crank = 0, csize = 1;
  if constexpr (!CM) {  // (a merge cluster does not share tables: every split fetches its own)
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(crank));
    asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(csize));
  }
  const uint32_t bar = smem_addr(&tab_bar[0]);  // bar + 8: the V table's
  constexpr uint32_t TB = VCLS ? 65536u : 256u * ROWB;  // bytes per table (PQ_VCLS: both unpadded)
  tables_init(bar, csize);
  tables_copy(reinterpret_cast<const unsigned char*>(a.kcen) + (long long)block_hkv(a) * a.kcen_h * 2,
              reinterpret_cast<const unsigned char*>(a.vcen) + (long long)block_hkv(a) * a.vcen_h * 2,
              smem_addr(tabK), smem_addr(tabV), TB, bar, crank, csize);
  // the split's first NW chunks of codes prefetched into L2 before the wait. H100, 2026-12-06 (docs/kernel_notes.md):
  // GQA B=1 4K 4-bit 11.3 -> 10.7 us, 32K 29.4 -> 28.5; SmolLM2 B=1 4K 6.1 -> 5.8; 2 x NW chunks no faster
  if (threadIdx.x == 0) prefetch_first_chunks<GB>(a, M, NW);
  auto wait_table = [&](int t) { mbar_wait(bar + 8u * t); };
  auto wait_tables = [&]() { wait_table(0); wait_table(1); };
  pdl_wait_then_trigger();
  TRACE_V(30, trace_now());  // (trace builds) the wait returned
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gid = lane >> 2, tig = lane & 3;
  // q, loaded before the lengths (split_range): the two round trips overlap
  // B fragments of q (raw; scale applied to the fp32 scores): head gid, dims (D/4)*tig + 2j, +1
  // PQ_KCLS: lanes gid 4..7 hold the q of heads gid - 4, their registers rotated by KSH * (gid >> 2)
  constexpr bool KCLS = PQ_KCLS && PQ_ROT && M / 4 >= 8 && (DSUB == 2 || (DSUB == 4 && PQ_ROT4 && NW <= 12));
  constexpr int KSH = 4 * (DSUB / 2);  // bq registers per 4 subspace groups
  const int qg = KCLS ? (gid & 3) : gid, qrot = KCLS ? KSH * (gid >> 2) : 0;
  uint32_t bq[D / 8];
  {
    const T* qb = reinterpret_cast<const T*>(a.q) + (long long)blockIdx.z * a.sq_b +
                  (long long)(block_hq0<GB>(a) + qg) * a.sq_h;
    // d = 128: a lane's D/8 pairs are the D/4 consecutive elements from (D/4)*tig; with contiguous, 16-byte aligned
    // rows they are D/32 vector loads instead of D/4 scalar ones. The block's scalar q loads held up the lengths' load
    // behind them: 1.8 us from the wait to the lengths at GQA 32K, 1.0 with the vector loads (FFMA kernel: 0.8).
    // H100, 2026-12-06 (docs/kernel_notes.md): GQA B=1 4K 11.7 -> 11.3 us (2-bit 10.8 -> 10.3), 32K 29.8 -> 29.6;
    // at d = 64 (SmolLM2 shape) 1-3% slower, so d = 64 keeps the scalar loads
    const bool vec = D == 128 && a.sq_d == 1 && (reinterpret_cast<uintptr_t>(qb + (D / 4) * tig) & 15u) == 0;
    if (qg < GB && vec) {
      const uint4* qv = reinterpret_cast<const uint4*>(qb + (D / 4) * tig);
#pragma unroll
      for (int v = 0; v < D / 32; ++v) {
        const uint4 w = qv[(v + qrot / 4) % (D / 32)];
        bq[4 * v] = w.x; bq[4 * v + 1] = w.y; bq[4 * v + 2] = w.z; bq[4 * v + 3] = w.w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        if (qg < GB) {
          const long long d0 = (long long)((D / 4) * tig + 2 * ((j + qrot) % (D / 8)));
          const T x0 = qb[d0 * a.sq_d], x1 = qb[(d0 + 1) * a.sq_d];
          bq[j] = (uint32_t)(*reinterpret_cast<const unsigned short*>(&x0)) |
                  ((uint32_t)(*reinterpret_cast<const unsigned short*>(&x1)) << 16);
        } else {
          bq[j] = 0u;
        }
      }
    }
  }
  const SplitRange sr = split_range<GB>(a);
  TRACE_LENS(sr);  // (trace builds) the lengths are in
  const int b = sr.b, hkv = sr.hkv, hq0 = sr.hq0, lo = sr.lo, hi = sr.hi;
  const long long prow = sr.prow;
  float* const cm_slot = CM ? reinterpret_cast<float*>(smem + cm_slot_off<GB, D, NW>()) : nullptr;

  if (CM && lo >= hi) {  // an empty split of a merge cluster: o 0, lse -inf (weight 0); its slot may overlap the
    wait_tables();       // tables' bytes, so it is written after they landed
    for (int x = tid; x < GB * D; x += NT) cm_slot[x] = 0.f;
    if (tid < GB) cm_slot[GB * D + tid] = -INFINITY;
    cm_split_done();
    return;
  }
  if (lo >= hi && a.cluster <= 1) {  // an empty split outside a cluster: leaves after its copies landed
    write_empty_partial<GB, D, NT>(a, prow);
    wait_tables();
    return;
  }
  auto cluster_done = [&]() {  // after the tables arrived everywhere: arrive now, wait before exit
    if (csize > 1) asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
  };
  auto cluster_exit = [&]() {
    if (csize > 1) asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
  };

  if (lo >= hi) {  // (in a cluster: its copies target this block's shared memory, wait for them)
    write_empty_partial<GB, D, NT>(a, prow);
    wait_tables();
    cluster_done();
    cluster_exit();
    return;
  }

  const uint8_t* kbase = a.kc + (long long)b * a.sk_b + (long long)hkv * a.sk_h + KB * tig;
  const uint8_t* vbase = a.vc + (long long)b * a.sv_b + (long long)hkv * a.sv_h + VB * gid;
  const int nchunks = (hi - lo + 31) / 32;
  TRACE_INFO(nchunks);
  // K codes: token tile tt, rows gid (e=0) / gid+8 (e=1); V codes: tile tt, tokens 2tig, 2tig+1, 2tig+8, 2tig+9
  // codes of the current chunk (kw, vw) and, with PF, of the warp's next chunk (kn, vn: loaded at the
  // top of an iteration, a whole chunk of work ahead of their use)
  uint32_t kw[2][2][KWN], vw[2][4][VWN];
  uint32_t kn[2][2][KWN], vn[2][4][VWN];
  // PQ_WIN: the window of chunk c starts at token win0(c) <= lo + 32c (0 <= win0, win0 + 32 <= max(hi, 32))
  auto win0 = [&](int c) { return max(min(lo + c * 32, hi - 32), 0); };
  auto loadK = [&](int c, uint32_t (&d)[2][2][KWN]) {
    if constexpr (PQ_WIN) {
      const uint8_t* p = kbase + (long long)(win0(c) + gid) * M;
#pragma unroll
      for (int tt = 0; tt < 2; ++tt)
#pragma unroll
        for (int e = 0; e < 2; ++e) ld_codes<KB>(p + (16 * tt + 8 * e) * M, d[tt][e]);
      return;
    }
#pragma unroll
    for (int tt = 0; tt < 2; ++tt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const long long t = min(lo + c * 32 + 16 * tt + 8 * e + gid, hi - 1);
        ld_codes<KB>(kbase + t * M, d[tt][e]);
      }
  };
  auto loadV = [&](int c, uint32_t (&d)[2][4][VWN]) {
    if constexpr (PQ_WIN) {
      const uint8_t* p = vbase + (long long)(win0(c) + 2 * tig) * M;
#pragma unroll
      for (int tt = 0; tt < 2; ++tt)
#pragma unroll
        for (int j = 0; j < 4; ++j) ld_codes<VB>(p + (16 * tt + (j & 1) + 8 * (j >> 1)) * M, d[tt][j]);
      return;
    }
#pragma unroll
    for (int tt = 0; tt < 2; ++tt)
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const long long t = min(lo + c * 32 + 16 * tt + 2 * tig + (j & 1) + 8 * (j >> 1), hi - 1);
        ld_codes<VB>(vbase + t * M, d[tt][j]);
      }
  };
  int c = warp;
  if (c < nchunks) { loadK(c, kw); loadV(c, vw); }

  const uint32_t baseK = smem_addr(tabK) + tig * ESZ;  // + 4w*ESZ + code*ROWB
  const uint32_t baseV = smem_addr(tabV) + gid * ESZ;  // + 8r*ESZ + code*ROWB
  const uint32_t psel = (gid & 1) ? 0x7632u : 0x5410u;
  // (PQ_KCLS: token row 2tig's scores are in the lanes of its class, tig + 2 for rows 4..7)
  const int srcA = (2 * tig) * 4 + ((VCLS ? (gid & 3) : gid) >> 1) + (KCLS ? 2 * (tig >> 1) : 0), srcB = srcA + 4;
  // PQ_VCLS: this lane's value-mma B column gid holds head gid & 3 of class gid >> 2, its tokens are of class tig >> 1
  const bool bval = VCLS ? ((gid & 3) < GB && (tig >> 1) == (gid >> 2)) : gid < GB;
  const int cv = VCLS ? (tig >> 1) : 0;
  const uint32_t baseVh = smem_addr(tabV) + gid * ESZ;  // PQ_VCLS: bytes 2-3 the table, byte 0 the lane's slot
  // PQ_KCLS: a lane's score columns are of class tig >> 1, its rows of class gid >> 2; the other class's are masked
  const int hi_k = (!KCLS || (tig >> 1) == (gid >> 2)) ? hi : 0;
  // outside a cluster the K side starts as soon as the K table is in; the V table is waited for at the
  // first value step (its copy overlaps the first chunk's scores)
  bool v_pending = csize == 1;
  if (v_pending) {
    wait_table(0);
    TRACE_P(1);
  } else {
    wait_tables();
    cluster_done();
  }

  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // heads 2tig, 2tig+1
  float o[NVT][4];
#pragma unroll
  for (int r = 0; r < NVT; ++r)
#pragma unroll
    for (int z = 0; z < 4; ++z) o[r][z] = 0.f;

  for (; c < nchunks; c += NW) {
    const int t0 = lo + c * 32;
#if PQ_WIN
    // the window's first lb tokens are another chunk's; a token at window index x is in iff x - lb < lim
    const int lb = t0 - win0(c);
    const unsigned lim = (unsigned)max(hi_k - t0, 0);
#endif
    const bool more = c + NW < nchunks;
    if (PF && more) { loadK(c + NW, kn); loadV(c + NW, vn); }
    // ---- scores (log2 units): sc[tt][z] = token 16tt + gid (+8 for z >= 2), head 2tig + (z & 1) ----
    float sc[2][4];
#pragma unroll
    for (int tt = 0; tt < 2; ++tt) {
      float acc2[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // even / odd k-tiles: two mma chains
#if PQ_ROT
      if constexpr (DSUB == 2) {
        // step u: lane gid reads its subspace (u + gid) mod MQ; with unpadded rows a lookup's bank is its slot alone,
        // so the 8 tokens of an instruction hit 8 distinct bank groups. Codes and registers are rotated by gid.
        constexpr int MQ = M / 4;
        uint32_t rk[2][KWN], R[2][MQ];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          uint32_t A[KWN];
#pragma unroll
          for (int x = 0; x < KWN; ++x) A[x] = (gid & 4) ? kw[tt][e][(x + 1) % KWN] : kw[tt][e][x];
#pragma unroll
          for (int x = 0; x < KWN; ++x) rk[e][x] = __funnelshift_r(A[x], A[(x + 1) % KWN], 8 * (gid & 3));
        }
#pragma unroll
        for (int u = 0; u < MQ; ++u) {
          const uint32_t off = (uint32_t)((4 * ESZ * (u + gid)) & (ROWBK - 1));
          if constexpr (MP8) {  // baseK's low 16 bits are tig * ESZ: byte 0 offset, byte 1 the code, bytes 2-3 base
            const uint32_t lw = baseK | off, sel = 0x7604u | ((uint32_t)(u & 3) << 4);
            R[0][u] = lds32(__byte_perm(rk[0][u >> 2], lw, sel));
            R[1][u] = lds32(__byte_perm(rk[1][u >> 2], lw, sel));
          } else {
            R[0][u] = lds32(baseK + off + byte_of(rk[0], u) * ROWBK);
            R[1][u] = lds32(baseK + off + byte_of(rk[1], u) * ROWBK);
          }
        }
#pragma unroll
        for (int b = 1; b < (KCLS ? 4 : 8); b <<= 1) {
          const bool sh = (gid & b) != 0;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            uint32_t Tm[MQ];
#pragma unroll
            for (int i = 0; i < MQ; ++i) Tm[i] = sh ? R[e][(i - b + MQ) % MQ] : R[e][i];
#pragma unroll
            for (int i = 0; i < MQ; ++i) R[e][i] = Tm[i];
          }
        }
#pragma unroll
        for (int r = 0; r < NKT; ++r)
          mma_16816<T>(acc2[r & 1], R[0][2 * r], R[1][2 * r], R[0][2 * r + 1], R[1][2 * r + 1], bq[2 * r], bq[2 * r + 1]);
      } else if constexpr (DSUB == 4 && PQ_ROT4) {
        // dsub 4: lane gid reads its k-tile (u + gid) mod MQ at step u (one 8-byte entry: the tile's 4 dims of subspace
        // slot 4w + tig); the same code-byte and register rotations as at dsub 2, on 8-byte registers
        constexpr int MQ = M / 4;
        uint32_t rk[2][KWN];
        uint2 R[2][MQ];
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          uint32_t A[KWN];
#pragma unroll
          for (int x = 0; x < KWN; ++x) A[x] = (gid & 4) ? kw[tt][e][(x + 1) % KWN] : kw[tt][e][x];
#pragma unroll
          for (int x = 0; x < KWN; ++x) rk[e][x] = __funnelshift_r(A[x], A[(x + 1) % KWN], 8 * (gid & 3));
        }
#pragma unroll
        for (int u = 0; u < MQ; ++u) {
          const uint32_t off = (uint32_t)((4 * ESZ * (u + gid)) & (ROWBK - 1));
          if constexpr (MP8) {  // as at dsub 2
            const uint32_t lw = baseK | off, sel = 0x7604u | ((uint32_t)(u & 3) << 4);
            R[0][u] = lds64(__byte_perm(rk[0][u >> 2], lw, sel));
            R[1][u] = lds64(__byte_perm(rk[1][u >> 2], lw, sel));
          } else {
            R[0][u] = lds64(baseK + off + byte_of(rk[0], u) * ROWBK);
            R[1][u] = lds64(baseK + off + byte_of(rk[1], u) * ROWBK);
          }
        }
#pragma unroll
        for (int b = 1; b < (KCLS ? 4 : 8) && b < MQ; b <<= 1) {
          const bool sh = (gid & b) != 0;
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            uint2 Tm[MQ];
#pragma unroll
            for (int i = 0; i < MQ; ++i) Tm[i] = sh ? R[e][(i - b + MQ) % MQ] : R[e][i];
#pragma unroll
            for (int i = 0; i < MQ; ++i) R[e][i] = Tm[i];
          }
        }
#pragma unroll
        for (int r = 0; r < NKT; ++r)
          mma_16816<T>(acc2[r & 1], R[0][r].x, R[1][r].x, R[0][r].y, R[1][r].y, bq[2 * r], bq[2 * r + 1]);
      } else {
#else
      {
#endif
#pragma unroll
      for (int r = 0; r < NKT; ++r) {
        float (&acc)[4] = acc2[r & 1];
        uint32_t a0, a1, a2, a3;
        if constexpr (DSUB == 2) {
          const int w0 = 2 * r, w1 = 2 * r + 1;
          a0 = lds32(baseK + 4 * w0 * ESZ + byte_of(kw[tt][0], w0) * ROWBK);
          a1 = lds32(baseK + 4 * w0 * ESZ + byte_of(kw[tt][1], w0) * ROWBK);
          a2 = lds32(baseK + 4 * w1 * ESZ + byte_of(kw[tt][0], w1) * ROWBK);
          a3 = lds32(baseK + 4 * w1 * ESZ + byte_of(kw[tt][1], w1) * ROWBK);
        } else {
          const uint2 e0 = lds64(baseK + 4 * r * ESZ + byte_of(kw[tt][0], r) * ROWBK);
          const uint2 e1 = lds64(baseK + 4 * r * ESZ + byte_of(kw[tt][1], r) * ROWBK);
          a0 = e0.x; a1 = e1.x; a2 = e0.y; a3 = e1.y;
        }
        mma_16816<T>(acc, a0, a1, a2, a3, bq[2 * r], bq[2 * r + 1]);
      }
      }
#pragma unroll
      for (int z = 0; z < 4; ++z) {
#if PQ_WIN
        const bool ok = (unsigned)(16 * tt + gid + 8 * (z >> 1) - lb) < lim;
#else
        const bool ok = t0 + 16 * tt + gid + 8 * (z >> 1) < hi_k;
#endif
        sc[tt][z] = ok ? (acc2[0][z] + acc2[1][z]) * a.scale_log2 : -INFINITY;
      }
    }
    if (!PF && more) loadK(c + NW, kw);
    // ---- online softmax per head (lanes of one tig share heads 2tig, 2tig+1) ----
    uint32_t pk[2][2];  // [tt][row half]: half2 (head 2tig, head 2tig+1) of token gid / gid+8
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float cmax = fmaxf(fmaxf(sc[0][e], sc[0][e + 2]), fmaxf(sc[1][e], sc[1][e + 2]));
#pragma unroll
      for (int o2 = KCLS ? 2 : 4; o2 < 32; o2 <<= 1) cmax = fmaxf(cmax, __shfl_xor_sync(FULL, cmax, o2));
      const float mnew = fmaxf(m_run[e], cmax);  // finite: token t0 is valid
      const float alpha = exp2f(m_run[e] - mnew);
      m_run[e] = mnew;
      l_run[e] *= alpha;
#pragma unroll
      for (int r = 0; r < NVT; ++r) { o[r][e] *= alpha; o[r][e + 2] *= alpha; }
#pragma unroll
      for (int tt = 0; tt < 2; ++tt) {
        sc[tt][e] = exp2f(sc[tt][e] - mnew);
        sc[tt][e + 2] = exp2f(sc[tt][e + 2] - mnew);
        l_run[e] += sc[tt][e] + sc[tt][e + 2];
      }
    }
#pragma unroll
    for (int tt = 0; tt < 2; ++tt) {
      pk[tt][0] = pack2<T>(sc[tt][0], sc[tt][1]);
      pk[tt][1] = pack2<T>(sc[tt][2], sc[tt][3]);
    }
    if (v_pending) {  // first value step of this warp: the V table must be in
      wait_table(1);
      v_pending = false;
    }
    // ---- values ----
#pragma unroll
    for (int tt = 0; tt < 2; ++tt) {
      const uint32_t xa = __shfl_sync(FULL, pk[tt][0], srcA), xb = __shfl_sync(FULL, pk[tt][0], srcB);
      const uint32_t ya = __shfl_sync(FULL, pk[tt][1], srcA), yb = __shfl_sync(FULL, pk[tt][1], srcB);
      const uint32_t b0 = bval ? __byte_perm(xa, xb, psel) : 0u;
      const uint32_t b1 = bval ? __byte_perm(ya, yb, psel) : 0u;
      if constexpr (VCLS) {
        uint32_t vr[4][2];  // code words rotated by 2 cv bytes: byte r is subspace VB gid + (r + 2 cv) mod 8
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          vr[j][0] = __funnelshift_r(vw[tt][j][0], vw[tt][j][1], 16 * cv);
          vr[j][1] = __funnelshift_r(vw[tt][j][1], vw[tt][j][0], 16 * cv);
        }
#pragma unroll
        for (int r = 0; r < VR; ++r) {
          const uint32_t lw = baseVh | ((uint32_t)(32 * (r + 2 * cv)) & 255u), sel = 0x7604u | ((uint32_t)(r & 3) << 4);
          const uint32_t e0 = lds32(__byte_perm(vr[0][r >> 2], lw, sel));
          const uint32_t e1 = lds32(__byte_perm(vr[1][r >> 2], lw, sel));
          const uint32_t e2 = lds32(__byte_perm(vr[2][r >> 2], lw, sel));
          const uint32_t e3 = lds32(__byte_perm(vr[3][r >> 2], lw, sel));
          mma_16816<T>(o[r], __byte_perm(e0, e1, 0x5410u), __byte_perm(e0, e1, 0x7632u), __byte_perm(e2, e3, 0x5410u),
                       __byte_perm(e2, e3, 0x7632u), b0, b1);
        }
        continue;
      }
#pragma unroll
      for (int r = 0; r < VR; ++r) {
        if constexpr (DSUB == 2) {
          const uint32_t e0 = lds32(baseV + 8 * r * ESZ + byte_of(vw[tt][0], r) * ROWBV);
          const uint32_t e1 = lds32(baseV + 8 * r * ESZ + byte_of(vw[tt][1], r) * ROWBV);
          const uint32_t e2 = lds32(baseV + 8 * r * ESZ + byte_of(vw[tt][2], r) * ROWBV);
          const uint32_t e3 = lds32(baseV + 8 * r * ESZ + byte_of(vw[tt][3], r) * ROWBV);
          mma_16816<T>(o[r], __byte_perm(e0, e1, 0x5410u), __byte_perm(e0, e1, 0x7632u), __byte_perm(e2, e3, 0x5410u),
                       __byte_perm(e2, e3, 0x7632u), b0, b1);
        } else {
          const uint2 e0 = lds64(baseV + 8 * r * ESZ + byte_of(vw[tt][0], r) * ROWBV);
          const uint2 e1 = lds64(baseV + 8 * r * ESZ + byte_of(vw[tt][1], r) * ROWBV);
          const uint2 e2 = lds64(baseV + 8 * r * ESZ + byte_of(vw[tt][2], r) * ROWBV);
          const uint2 e3 = lds64(baseV + 8 * r * ESZ + byte_of(vw[tt][3], r) * ROWBV);
          mma_16816<T>(o[2 * r], __byte_perm(e0.x, e1.x, 0x5410u), __byte_perm(e0.x, e1.x, 0x7632u),
                       __byte_perm(e2.x, e3.x, 0x5410u), __byte_perm(e2.x, e3.x, 0x7632u), b0, b1);
          mma_16816<T>(o[2 * r + 1], __byte_perm(e0.y, e1.y, 0x5410u), __byte_perm(e0.y, e1.y, 0x7632u),
                       __byte_perm(e2.y, e3.y, 0x5410u), __byte_perm(e2.y, e3.y, 0x7632u), b0, b1);
        }
      }
    }
    if (PF) {
      if (more) {
#pragma unroll
        for (int tt = 0; tt < 2; ++tt) {
#pragma unroll
          for (int e = 0; e < 2; ++e)
#pragma unroll
            for (int x = 0; x < KWN; ++x) kw[tt][e][x] = kn[tt][e][x];
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int x = 0; x < VWN; ++x) vw[tt][j][x] = vn[tt][j][x];
        }
      }
    } else if (more) {
      loadV(c + NW, vw);
    }
    // (trace builds, 8 warps) the end of each warp's first chunk, in the warp-end slots of warps 8-15: the first chunk's
    // time against the loop's per-chunk average says whether its codes' arrival after the wait is on the path
    if constexpr (NW <= 8) {
      if (c == warp) TRACE_W(8 + warp);
    }
  }

  TRACE_W(warp);
  // ---- epilogue: l over the 8 gid lanes; per-warp (o, m, l) through shared memory ----
#pragma unroll
  for (int e = 0; e < 2; ++e)
#pragma unroll
    for (int o2 = KCLS ? 2 : 4; o2 < 32; o2 <<= 1) l_run[e] += __shfl_xor_sync(FULL, l_run[e], o2);
  if constexpr (VCLS) {  // class 1's accumulator s (lane tig + 2) is output tile (s + 2) mod 8 of lane tig's heads
#pragma unroll
    for (int s2 = 0; s2 < NVT; ++s2)
#pragma unroll
      for (int z = 0; z < 4; ++z) {
        const float v = __shfl_down_sync(FULL, o[s2][z], 2);
        if (tig < 2) o[(s2 + 2) % NVT][z] += v;
      }
  }
  __syncthreads();
  TRACE_P(4);
  float* red = reinterpret_cast<float*>(smem);  // [NW][GB][D]
  float* wm = red + NW * GB * D;
  float* wl = wm + NW * GB;
#pragma unroll
  for (int e = 0; e < 2; ++e) {
    const int g = 2 * tig + e;
    if (g < GB) {
#pragma unroll
      for (int r = 0; r < NVT; ++r) {
        int d0, d1;  // output dims of rows gid, gid+8 of dim tile r
        if constexpr (DSUB == 2) { d0 = 2 * (VB * gid + r); d1 = d0 + 1; }
        else { d0 = 4 * (VB * gid + (r >> 1)) + 2 * (r & 1); d1 = d0 + 1; }
        red[(warp * GB + g) * D + d0] = o[r][e];
        red[(warp * GB + g) * D + d1] = o[r][e + 2];
      }
      if (gid == 0) { wm[warp * GB + g] = m_run[e]; wl[warp * GB + g] = l_run[e]; }
    }
  }
  __syncthreads();
  merge_warps<GB, D, NW>(a, red, wm, wl, prow, cm_slot);
  TRACE_P(5);
  if constexpr (CM) cm_split_done();
  cluster_exit();
}

// residual window (dense) + merge of the S partials; one block of NWM warps per (q head, batch).
// Residual: warp w takes tokens r_lo + w*RT + k*NWM*RT (RT = 16 per round); lane l owns the EV = D/32
// consecutive elements l*EV.. of every row, so each token's K and V rows are one coalesced warp load
// and all 2*RT rows of a round are in flight at once (with q). Scores: per-lane partial dots reduced
// by a transposing butterfly (lane t & 15 ends with token t's score). 4 warps and <= 128 registers so
// that a merge block fits beside a 12-warp partial block: with programmatic dependent launch the
// residual part runs while the partial kernel still runs. After griddepcontrol.wait every thread
// merges its output element over the S partials on its own (the lse values are broadcast loads),
// online in groups of MERGE_PF whose loads are issued together: one global round trip per group, no barrier.
// ---------------------------------------------------------------------------------------------
static char g_err[512] = "";
// programmatic dependent launch (MILLION_CUDA_PDL): 0 off; 1 the merge grid only (it starts while the partial grid
// runs); 2 (default) the partial grid too, where the launcher allows it (a.pdl): it starts while the previous kernel
// on the stream runs (the tensor-core kernel copies its tables before it waits for that kernel)
static int g_pdl = 2;
static bool partial_pdl(const PQArgs& a) { return g_pdl >= 2 && a.pdl; }
// MILLION_CUDA_SOLO: a partial grid launched early (partial_pdl) whose blocks could share an SM (the d=64 tables
// leave room for 3) but that fits one block per SM may ask for half an SM's shared memory per block, so that the
// next call's blocks, placed while this call's still run, cannot pile onto the free SMs. 0: never; 2: always; 1
// (default): where the grid covers more than 3/4 of the SMs. H100, 2026-12-06 (docs/kernel_notes.md), SmolLM2 shape:
// B=8 (120 blocks) 4K / 16K / 32K 12.7 / 32.8 / 60.1 us without, 10.4 / 20.8 / 35.0 with; B=1 16K (96 blocks) 8.2
// without, 8.5 with
// a one-digit environment setting 0..hi, or def when unset or anything else (the Python side names bad values)
static int env_digit(const char* name, int hi, int def) {
  const char* e = getenv(name);
  return (e && e[0] >= '0' && e[0] <= '0' + hi && e[1] == 0) ? e[0] - '0' : def;
}
static int g_solo = 1;
static bool solo(long long blocks, int occ, int sms) {
  if (!g_solo || occ <= 1 || blocks > sms) return false;
  return g_solo == 2 || 4 * blocks > 3LL * sms;
}
// MILLION_CUDA_MERGE8: the merge grid as 64-register blocks (pq_merge_kernel<T, D, 8>). 0: never; 2: always; 1: at
// 2 bits (dsub 4) or with grouped query heads (Hq > Hkv) where the merge blocks that fit beside a one-wave partial
// grid (merge_slots) are fewer than the merge grid's blocks, and 64-register blocks fit all of them. There the
// partial blocks end within ~1 us of each other, so the residual windows of merge blocks that enter only as partial
// blocks exit lie on the critical path (H100 timelines, MHA B=1 32K 2-bit: 2-3.3 us; GQA B=1 32K 4-bit, 2026-12-07:
// 12 of 32 merge blocks entering at 23.8 us, the call ending at 29.4 instead of 27.4); at 4 bits with MHA the partial
// blocks' ends spread over ~4 us and hide those windows, and 8 blocks per SM made the merge after the wait longer
// (docs/kernel_notes.md, 2026-12-06). 1 by default since H100, 2026-12-07: GQA B=1 32K 4-bit 23.7 -> 22.55 us, 2-bit
// 22.85 -> 22.05, MHA B=1 32K 2-bit 30.7 -> 30.0, no cell of 36 more than 0.5% slower in both rounds
static int g_merge8 = 1;
// MILLION_CUDA_WINP: the residual window attended by the FFMA partial blocks at 2 bits (dsub 4, GB 1, host-laid tables;
// the kernel's WP instance, window_rows rows per split staged in shared memory) instead of by the merge blocks.
// 0: never; 2: wherever the rows fit; 1: on a one-wave partial grid beside which some merge blocks would not fit
// (merge_slots), so that they would attend their windows only after partial blocks exit (H100 timelines, MHA B=1 32K
// 2-bit: the call's last 3-4.6 us; docs/kernel_notes.md, 2026-12-06). Measured with =1 (H100, 2026-12-06): MHA B=1 32K
// 2-bit 31.5 -> 30.5 us on the kernels before the byte-permute lookups (20:08 UTC), 31.0 -> 32.0 on them (20:55 UTC),
// hence 0 by default
static int g_winp = 0;
static bool merge8(int B, int Hq, int Hkv, int dsub, long long slots, long long slots8) {
  if (g_merge8 == 0) return false;
  return g_merge8 == 2 || ((dsub == 4 || Hq > Hkv) && (long long)B * Hq > slots && (long long)B * Hq <= slots8);
}

// per kernel instantiation and device (a function's attributes belong to one device's context: a kernel configured
// on one GPU is not configured on the next): attributes set, blocks per SM at its own shared memory
constexpr int MAX_DEVICES = 64;
struct KernelState {
  bool configured = false;
  int occ = 1, half = 0, sms = 0;
  int regs_sm = 0, regs_block = 0;  // an SM's registers; one block's, as allocated (per warp, in units of 256)
  int optin = 0;                    // a block's dynamic shared memory limit (beside its static shared memory)
};
// registers a block of `threads` threads of `kern` holds on an SM (0 where the attributes cannot be read)
static int block_registers(const void* kern, int threads) {
  cudaFuncAttributes fa;
  if (cudaFuncGetAttributes(&fa, kern) != cudaSuccess) return 0;
  return (fa.numRegs * 32 + 255) / 256 * 256 * ((threads + 31) / 32);
}
// a merge kernel's blocks per SM and registers per block on device dev, read once per device
template <typename T, int D, int MINB>
static const KernelState& merge_state(int dev) {
  static KernelState st[MAX_DEVICES];
  KernelState& m = st[dev];
  if (!m.configured) {
    const void* k = (const void*)pq_merge_kernel<T, D, MINB>;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&m.occ, pq_merge_kernel<T, D, MINB>, 128, 0) != cudaSuccess) m.occ = 0;
    m.regs_block = block_registers(k, 128);
    m.configured = true;
  }
  return m;
}
// the merge blocks that can run while a one-wave partial grid of `blocks` blocks (state ps) runs: m.occ on each SM it
// leaves free, plus those that fit beside a partial block's registers; 0 when the grid takes more than one wave
static long long merge_slots(const KernelState& ps, const KernelState& m, long long blocks) {
  if (blocks > ps.sms || m.regs_block <= 0) return 0;
  const long long beside = ps.regs_block > 0 ? (ps.regs_sm - ps.regs_block) / m.regs_block : 0;
  return (ps.sms - blocks) * m.occ + blocks * (beside > 0 ? beside : 0);
}
// the current device's index, or -1 (with g_err set) when it has none or too high an index
static int current_device() {
  int dev = -1;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= MAX_DEVICES) {
    snprintf(g_err, sizeof g_err, "current CUDA device %d: expected 0..%d", dev, MAX_DEVICES - 1);
    return -1;
  }
  return dev;
}

// residual-window rows staged with 16-byte copies: 16-byte aligned rows and strides
static bool window_aligned(const PQArgs& a) {
  return a.kres && a.vres && ((reinterpret_cast<uintptr_t>(a.kres) | reinterpret_cast<uintptr_t>(a.vres)) & 15u) == 0 &&
         ((a.skr_b | a.skr_h | a.skr_t | a.svr_b | a.svr_h | a.svr_t) & 7) == 0;
}

// kern_w (states_w): the partial kernel's window instance, where it has one (the FFMA kernel at dsub 4, GB 1)
template <typename T, int D>
static int launch_k(void (*kern)(const PQArgs), int smem, int nthreads, KernelState* states, const PQArgs& a,
                    cudaStream_t st, void (*kern_w)(const PQArgs) = nullptr, KernelState* states_w = nullptr) {
  const int dev = current_device();
  if (dev < 0) return 1;
  KernelState& ks = states[dev];
  if (!ks.configured) {
    int smem_sm = 0;
    cudaDeviceGetAttribute(&smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev);
    cudaDeviceGetAttribute(&ks.sms, cudaDevAttrMultiProcessorCount, dev);
    ks.half = smem_sm / 2;
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         smem > ks.half ? smem : ks.half);
    if (e == cudaSuccess) e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ks.occ, kern, nthreads, smem);
    if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "kernel set-up: %s", cudaGetErrorString(e)); return 1; }
    cudaDeviceGetAttribute(&ks.regs_sm, cudaDevAttrMaxRegistersPerMultiprocessor, dev);
    ks.regs_block = block_registers((const void*)kern, nthreads);
    ks.configured = true;
  }
  if (a.B > 0 && a.Hq > 0) {
    dim3 grid(a.S, a.Hkv * a.ngroups, a.B);
    const long long blocks = (long long)a.S * a.Hkv * a.ngroups * a.B;
    bool win = false;  // the window instance, and the merge that attends no window
    if (kern_w && g_winp && a.kind == 2 && a.R > 0 && a.cluster == 1 && window_aligned(a)) {
      KernelState& kw = states_w[dev];
      if (!kw.configured) {  // its limit: the device's, less its static shared memory
        cudaFuncAttributes fa;
        cudaDeviceGetAttribute(&kw.optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
        cudaError_t e = cudaFuncGetAttributes(&fa, (const void*)kern_w);
        if (e == cudaSuccess) {
          kw.optin -= (int)fa.sharedSizeBytes;
          e = cudaFuncSetAttribute(kern_w, cudaFuncAttributeMaxDynamicSharedMemorySize, kw.optin);
        }
        if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "window kernel set-up: %s", cudaGetErrorString(e)); return 1; }
        kw.configured = true;
      }
      const int bytes = 2 * window_rows(a.R, a.S) * D * 2;
      win = smem + bytes <= kw.optin &&
            (g_winp == 2 ||
             (blocks <= ks.sms && (long long)a.B * a.Hq > merge_slots(ks, merge_state<T, D, 0>(dev), blocks)));
      if (win) {
        kern = kern_w;
        smem += bytes;
      }
    }
    if (partial_pdl(a) && solo(blocks, ks.occ, ks.sms) && smem < ks.half) smem = ks.half;
    if (a.cluster > 1 && a.S % a.cluster) {
      snprintf(g_err, sizeof g_err, "S=%d not a multiple of cluster=%d", a.S, a.cluster);
      return 3;
    }
    cudaLaunchConfig_t pc = {};
    pc.gridDim = grid;
    pc.blockDim = dim3(nthreads);
    pc.dynamicSmemBytes = smem;
    pc.stream = st;
    cudaLaunchAttribute ca[2];
    int na = 0;
    if (a.cluster > 1) {  // clusters of splits share the table loads (multicast)
      ca[na].id = cudaLaunchAttributeClusterDimension;
      ca[na].val.clusterDim.x = a.cluster;
      ca[na].val.clusterDim.y = 1;
      ca[na].val.clusterDim.z = 1;
      ++na;
    }
    if (partial_pdl(a)) {
      ca[na].id = cudaLaunchAttributeProgrammaticStreamSerialization;
      ca[na].val.programmaticStreamSerializationAllowed = 1;
      ++na;
    }
    pc.attrs = ca;
    pc.numAttrs = na;
    cudaError_t pe = cudaLaunchKernelEx(&pc, kern, a);
    if (pe != cudaSuccess) { snprintf(g_err, sizeof g_err, "partial launch: %s", cudaGetErrorString(pe)); return 2; }
    // merge kernel as a programmatic dependent launch (overlaps its launch, q and residual-window
    // work with the partial kernel's tail; captured into CUDA graphs as a programmatic edge)
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(a.Hq, a.B);
    cfg.blockDim = dim3(128);
    cfg.dynamicSmemBytes = 0;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = g_pdl >= 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    const bool m8 = g_merge8 != 0 && merge8(a.B, a.Hq, a.Hkv, D / a.M, merge_slots(ks, merge_state<T, D, 0>(dev), blocks),
                                            merge_slots(ks, merge_state<T, D, 8>(dev), blocks));
    cudaError_t le = cudaLaunchKernelEx(&cfg, win ? pq_merge_kernel<T, D, 0, false>
                                              : m8 ? pq_merge_kernel<T, D, 8> : pq_merge_kernel<T, D>, a);
    if (le != cudaSuccess) { snprintf(g_err, sizeof g_err, "merge launch: %s", cudaGetErrorString(le)); return 2; }
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "launch: %s", cudaGetErrorString(e)); return 2; }
  return 0;
}

template <typename T, int D, int DSUB, int GB, int NW, bool VF = false>
static int launch_t(const PQArgs& a, cudaStream_t st) {
  static KernelState configured[MAX_DEVICES];
  constexpr int smem = p8_on<D, DSUB, GB>() ? 3 * 65536 : 2 * 256 * D * 2;
  if constexpr (GB == 1 && DSUB == 4) {
    static KernelState configured_w[MAX_DEVICES];
    return launch_k<T, D>(pq_partial_kernel<T, D, DSUB, GB, NW, VF>, smem, NW * 32, configured, a, st,
                          pq_partial_kernel<T, D, DSUB, GB, NW, VF, true>, configured_w);
  }
  return launch_k<T, D>(pq_partial_kernel<T, D, DSUB, GB, NW, VF>, smem, NW * 32, configured, a, st);
}

// packed fp16 LUT kernel (fp16, GB >= 2): LUT [256][M] x 8 bytes + V table [256][M] x 2*DSUB bytes
template <int D, int DSUB, int GB, int NW>
static int launch_lut(const PQArgs& a, cudaStream_t st) {
  static KernelState configured[MAX_DEVICES];
  constexpr int M = D / DSUB;
  return launch_k<__half, D>(pq_partial_lut_kernel<D, DSUB, GB, NW>, 256 * M * (8 + 2 * DSUB) + talign<D>(), NW * 32,
                             configured, a, st);
}

// tensor-core kernel: two padded tables [256][M * 2*DSUB + 16 bytes]
template <typename T, int D, int DSUB, int GB, int NW, bool PF>
static int launch_mma(const PQArgs& a, cudaStream_t st) {
  static KernelState configured[MAX_DEVICES];
  constexpr int M = D / DSUB, ROWB = M * 2 * DSUB + 16;
  constexpr int tables = mma_vpad<D, DSUB>() == 0 ? 3 * 65536 : 2 * 256 * ROWB + (mp8_on<D, DSUB>() ? 65536 : (int)talign<D>()),
                epi = (NW * GB * D + 2 * NW * GB) * 4;
  return launch_k<T, D>(pq_partial_mma_kernel<T, D, DSUB, GB, NW, PF>, tables > epi ? tables : epi, NW * 32,
                        configured, a, st);
}
// tensor-core kernel with the cluster merge (a.cmerge): grid (S + 1, H_kv * ngroups, B) in clusters of S + 1
// (the S splits of a head and its merge block; up to 16, the non-portable H100 limit), one launch
template <typename T, int D, int DSUB, int GB, int NW>
static int launch_mma_cm(const PQArgs& a, cudaStream_t st) {
  static bool configured_on[MAX_DEVICES] = {};
  const int dev = current_device();
  if (dev < 0) return 1;
  bool& configured = configured_on[dev];
  constexpr int M = D / DSUB, ROWB = M * 2 * DSUB + 16;
  constexpr int tables = 2 * 256 * ROWB, epi = cm_slot_off<GB, D, NW>() + cm_slot_bytes<GB, D>();
  constexpr int merge_scratch = (NW / (D / 32)) * ((D / 32) * D + 2 * (D / 32)) * 4;
  constexpr int smem0 = tables > epi ? tables : epi, smem = smem0 > merge_scratch ? smem0 : merge_scratch;
  auto kern = pq_partial_mma_kernel<T, D, DSUB, GB, NW, true, true>;
  if (!configured) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (e == cudaSuccess) e = cudaFuncSetAttribute(kern, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "cudaFuncSetAttribute: %s", cudaGetErrorString(e)); return 1; }
    configured = true;
  }
  if (a.B > 0 && a.Hq > 0) {
    cudaLaunchConfig_t pc = {};
    pc.gridDim = dim3(a.S + 1, a.Hkv * a.ngroups, a.B);
    pc.blockDim = dim3(NW * 32);
    pc.dynamicSmemBytes = smem;
    pc.stream = st;
    cudaLaunchAttribute ca[2];
    ca[0].id = cudaLaunchAttributeClusterDimension;
    ca[0].val.clusterDim.x = a.S + 1;
    ca[0].val.clusterDim.y = 1;
    ca[0].val.clusterDim.z = 1;
    ca[1].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    ca[1].val.programmaticStreamSerializationAllowed = 1;
    pc.attrs = ca;
    pc.numAttrs = partial_pdl(a) ? 2 : 1;
    cudaError_t pe = cudaLaunchKernelEx(&pc, kern, a);
    if (pe != cudaSuccess) { snprintf(g_err, sizeof g_err, "cluster-merge launch (S=%d): %s", a.S, cudaGetErrorString(pe)); return 2; }
  }
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) { snprintf(g_err, sizeof g_err, "launch: %s", cudaGetErrorString(e)); return 2; }
  return 0;
}
// num_warps 8 / 12: codes of the next chunk prefetched a chunk ahead (registers allow it);
// 16: loaded after their use (128 registers). Measured (docs/benchmarks.md): 8 warps fastest; the
// prefetch is within noise of loading after use (8 warps, GQA 32K: 34.8 vs 34.5 us)
template <typename T, int D, int DSUB, int GB>
static int launch_mma_nw(const PQArgs& a, cudaStream_t st) {
  if (a.cmerge) return launch_mma_cm<T, D, DSUB, GB, 8>(a, st);  // (8 warps only: checked by the caller)
  if (a.num_warps == 8) return launch_mma<T, D, DSUB, GB, 8, true>(a, st);
  if (a.num_warps == 12) return launch_mma<T, D, DSUB, GB, 12, true>(a, st);
  if (a.num_warps == 16) return launch_mma<T, D, DSUB, GB, 16, false>(a, st);
  snprintf(g_err, sizeof g_err, "tensor-core kernel: unsupported num_warps=%d (8, 12 or 16)", a.num_warps);
  return 3;
}

template <int D, int DSUB, int GB>
static int launch_lut_nw(const PQArgs& a, cudaStream_t st) {
  if (a.num_warps == 8) return launch_lut<D, DSUB, GB, 8>(a, st);
  if (a.num_warps == 12) return launch_lut<D, DSUB, GB, 12>(a, st);
  if (a.num_warps == 16) return launch_lut<D, DSUB, GB, 16>(a, st);
  snprintf(g_err, sizeof g_err, "unsupported num_warps=%d", a.num_warps);
  return 3;
}

template <typename T, int D, int DSUB>
static int launch_g(const PQArgs& a, cudaStream_t st) {
  if (a.kind == 1) {  // tensor-core kernel (fp16 and bf16, any GB <= 4)
    switch (a.GB) {
      case 1: return launch_mma_nw<T, D, DSUB, 1>(a, st);
      case 2: return launch_mma_nw<T, D, DSUB, 2>(a, st);
      case 3: return launch_mma_nw<T, D, DSUB, 3>(a, st);
      case 4: return launch_mma_nw<T, D, DSUB, 4>(a, st);
    }
  }
  // num_warps > 0 selects the packed-LUT kernel (fp16 GQA only); 0 the FFMA kernel
  if constexpr (std::is_same<T, __half>::value) {
    if (a.num_warps > 0 && a.GB >= 2) {
      switch (a.GB) {
        case 2: return launch_lut_nw<D, DSUB, 2>(a, st);
        case 3: return launch_lut_nw<D, DSUB, 3>(a, st);
        case 4: return launch_lut_nw<D, DSUB, 4>(a, st);
      }
    }
  }
  if constexpr (std::is_same<T, __half>::value || PQ_BFH) {
    if (a.kind == 4) {  // kind 2 with the values of each chunk accumulated in half2 (PQ_BFH: bf16 too, fp16 V table)
      PQArgs b = a;
      b.kind = 2;
      return launch_t<T, D, DSUB, 1, 16, true>(b, st);
    }
  }
  switch (a.GB) {
    case 1: return launch_t<T, D, DSUB, 1, 16>(a, st);
    case 2: return launch_t<T, D, DSUB, 2, 8>(a, st);
    case 3: return launch_t<T, D, DSUB, 3, 8>(a, st);
    case 4: return launch_t<T, D, DSUB, 4, 8>(a, st);
  }
  snprintf(g_err, sizeof g_err, "unsupported GB=%d", a.GB);
  return 3;
}

template <typename T>
static int launch_d(const PQArgs& a, cudaStream_t st) {
  if (a.D == 128 && a.M == 64) return launch_g<T, 128, 2>(a, st);
  if (a.D == 128 && a.M == 32) return launch_g<T, 128, 4>(a, st);
  if (a.D == 64 && a.M == 32) return launch_g<T, 64, 2>(a, st);
  if (a.D == 64 && a.M == 16) return launch_g<T, 64, 4>(a, st);
  snprintf(g_err, sizeof g_err, "unsupported D=%d M=%d", a.D, a.M);
  return 3;
}

extern "C" {
int million_pq_abi_version() { return 9; }
int million_pq_args_size() { return (int)sizeof(PQArgs); }
// bytes of padding per K table row of the tensor-core kernel at dsub 2 or 4 (ops.cuda_attention.mma_tables)
int million_pq_mma_kpad(int dsub) { return dsub == 2 ? mma_kpad<2>() : mma_kpad<4>(); }
// tokens per head the tensor-core kernel's code loads need (PQ_WIN: a 32-token window; 0: any)
int million_pq_mma_window() { return PQ_WIN ? 32 : 0; }
// V row padding of the tensor-core tables for M subspaces of dsub dims (16, or 0 where PQ_VCLS applies)
int million_pq_mma_vpad(int M, int dsub) { return (dsub == 2 && M == 64) ? mma_vpad<128, 2>() : 16; }
#if PQ_BFH
// kind 4 takes bf16 inputs too, with the V table in fp16 (PQ_BFH)
int million_pq_ffma_bf16_half() { return 1; }
#endif
const char* million_pq_last_error() { return g_err; }
// diagnostic builds (-DPQ_TRACE): copy the phase timeline of the last launches to host memory; partial blocks'
// region (PQ_TRACE_BLOCKS x 32 u64) then the merge blocks' (x 8). Returns the u64 count, 0 in a production build.
int million_pq_trace_read(unsigned long long* host, int n) {
#ifdef PQ_TRACE
  const int np = PQ_TRACE_BLOCKS * 32, nm = PQ_TRACE_BLOCKS * 8, ne = PQ_TRACE_BLOCKS;
  if (!host) return np + nm + ne;
  if (n < np + nm + ne) return -1;
  if (cudaMemcpyFromSymbol(host, g_trace, sizeof(unsigned long long) * np) != cudaSuccess) return -2;
  if (cudaMemcpyFromSymbol(host + np, g_trace_merge, sizeof(unsigned long long) * nm) != cudaSuccess) return -2;
  if (cudaMemcpyFromSymbol(host + np + nm, g_trace_prev_end, sizeof(unsigned long long) * ne) != cudaSuccess) return -2;
  return np + nm + ne;
#else
  (void)host; (void)n;
  return 0;
#endif
}
int million_pq_trace_clear() {
#ifdef PQ_TRACE
  static unsigned long long z[PQ_TRACE_BLOCKS * 32];
  if (cudaMemcpyToSymbol(g_trace, z, sizeof z) != cudaSuccess) return -2;
  if (cudaMemcpyToSymbol(g_trace_merge, z, sizeof(unsigned long long) * PQ_TRACE_BLOCKS * 8) != cudaSuccess) return -2;
  if (cudaMemcpyToSymbol(g_trace_prev_end, z, sizeof(unsigned long long) * PQ_TRACE_BLOCKS) != cudaSuccess) return -2;
#endif
  return 0;
}
int million_pq_decode_attention(const PQArgs* a, void* stream) {
  static int init = 0;
  if (!init) {
    g_pdl = env_digit("MILLION_CUDA_PDL", 2, 2);
    g_solo = env_digit("MILLION_CUDA_SOLO", 2, 1);
    g_merge8 = env_digit("MILLION_CUDA_MERGE8", 2, 1);
    g_winp = env_digit("MILLION_CUDA_WINP", 2, 0);
    init = 1;
  }
  if (a->sk_t != a->M || a->sv_t != a->M) { snprintf(g_err, sizeof g_err, "codes must be contiguous over (t, m)"); return 3; }
  if (a->S < 1 || a->S > 1024) { snprintf(g_err, sizeof g_err, "S=%d out of range", a->S); return 3; }
  if ((a->kind == 2 || a->kind == 4) && (a->GB != 1 || a->num_warps != 0)) {
    snprintf(g_err, sizeof g_err, "kind %d (host-laid FFMA tables) needs GB 1 and the FFMA kernel, got GB=%d num_warps=%d",
             a->kind, a->GB, a->num_warps);
    return 3;
  }
  if (a->kind == 4 && a->dtype != 0 && !PQ_BFH) {
    snprintf(g_err, sizeof g_err, "kind 4 (half2 values) needs fp16 inputs, got dtype=%d", a->dtype);
    return 3;
  }
  if (a->cluster < 1 || a->cluster > 8 || (a->cluster > 1 && a->kind != 1 && a->kind != 2 && a->kind != 4)) {
    snprintf(g_err, sizeof g_err, "cluster=%d: 1, or 2..8 for the tensor-core kernel and the bulk-copy FFMA kernel",
             a->cluster);
    return 3;
  }
  if (a->cmerge && (a->kind != 1 || a->num_warps != 8 || a->cluster != 1 || a->S + 1 > 16)) {
    snprintf(g_err, sizeof g_err,
             "cmerge needs the tensor-core kernel with 8 warps, no table cluster and S <= 15, got kind=%d num_warps=%d "
             "cluster=%d S=%d", a->kind, a->num_warps, a->cluster, a->S);
    return 3;
  }
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  return a->dtype == 0 ? launch_d<__half>(*a, st) : launch_d<__nv_bfloat16>(*a, st);
}
}
