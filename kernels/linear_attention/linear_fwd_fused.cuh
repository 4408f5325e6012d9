// Internal to kernels/linear_attention (include from .cu files only): the fused tensor-core forward
// at D = 128 on sm_90a, taken when no chunk-start states are asked for (prefill) and its CTAs fit
// the GPU in one wave. The two-launch forward writes every bf16 chunk-start state and reads it
// back; this one keeps the state on chip.
//
// kCtas = 128 / kCols CTAs walk one (sequence, head) through its chunks; each owns kCols state and
// output columns, so every product it runs is a whole k-ordered sum of the two-launch forward and
// the decode (OutputTile, BoundaryTile, NextState, and ChunkPTile's scores and decay): the same
// bits.
//   - A producer warp per CTA fills a ring of kDepth chunk slots: the chunk's q and k as four
//     [64 columns, 64 rows] boxes by bulk tensor copies in the 128-byte swizzle, box b issued by
//     CTA b % kCluster and multicast to its cluster of kCluster CTAs; its own v columns by
//     cp.async. A slot is refilled only after every CTA of the cluster released it.
//   - State warps hold 32 state rows each in registers, scale the slot's v columns once for the
//     boundary sum, add each chunk's boundary sum as soon as its k and v have landed, and write
//     bf16(S)ᵀ of the next chunk's start into that chunk's slot, after its k boxes in their
//     swizzle: they run ahead of the outputs, whose chunks only need the state at their start.
//   - Two output warpgroups take alternate chunks. Each runs one wgmma m64n80k16 per k step from
//     the swizzled slot, A = q and B = [k; bf16(S)ᵀ]: the chunk's scores q·kᵀ and q·bf16(S) — the
//     same sums as ChunkPTile's and InterTile's mma.sync chains from zero (the fused = two-launch
//     bitwise test checks that fact) — so q is read from shared memory once.
//     DecayedPair (ChunkPTile's decay and causal mask) turns the scores into P's A fragments in
//     registers, and IntraTile and EmitOutputs finish its 16-row tile and 16 columns.
//   - Roles meet only at mbarriers (slot landed, slot done, bf16(S)ᵀ written): no role waits for
//     another's whole chunk unless it needs that chunk's result.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cuda/ptx>

#include "kernels/core/kernel_smem.h"
#include "kernels/core/tensor_map.cuh"
#include "kernels/core/wgmma.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"
#include "kernels/linear_attention/linear_fwd_output.cuh"
#include "kernels/linear_attention/linear_fwd_scan.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TANDEM_LINEAR_FUSED_DEVICE 1
#else
#define TANDEM_LINEAR_FUSED_DEVICE 0
#endif

namespace tandem::kernels::cuda::linear {

template <int kColsPerCta, int kClusterCtas>
struct FusedShape {
  static constexpr int kD = 128;
  static constexpr int kCols = kColsPerCta;      // state and output columns per CTA
  static constexpr int kN = kCols / 8;           // their mma n-tiles
  static constexpr int kCtas = kD / kCols;       // CTAs per (sequence, head)
  static constexpr int kCluster = kClusterCtas;  // of them per cluster: sharing q and k
  static constexpr int kDepth = 5;               // chunk slots in the ring
  // Warps by role: two output groups taking alternate chunks (warpgroups: a row tile × 16 columns
  // per warp), the state warps (kStateRows rows × kCols each), the producer.
  static constexpr int kGroups = 2, kGroupWarps = 4 * (kCols / 16);
  // State warps: kStateTiles 16-row tiles of the state each (one tile per warp, 8 state warps and
  // 96 registers per thread, measured 25 % slower).
  static constexpr int kStateTiles = 2, kStateRows = 16 * kStateTiles;
  static constexpr int kOutWarps = kGroups * kGroupWarps, kStateWarps = kD / kStateRows;
  static constexpr int kProducer = kOutWarps + kStateWarps;
  static constexpr int kThreads = 32 * (kProducer + 1);
  // One CTA per SM: each of the 4 schedulers' 16K registers shared by its ceil(warps / 4) warps.
  static constexpr int kRegs = 16384 / (32 * ((kProducer + 4) / 4)) / 8 * 8;
  static constexpr int kLdv = kCols + 8;
  static constexpr int kBoxes = 2 * (kD / 64);  // q, k boxes of [64 columns, kC rows] per chunk
  static constexpr int kBox = 64 * kC;          // bf16 of one box (8 KB)
  // Each k box is followed by the same 64 columns of bf16(S_c)ᵀ's kCols rows (row b: state column
  // b), so that one wgmma's B operand is [k; bf16(S)ᵀ]: the chunk's scores and q·bf16(S) at once.
  static constexpr int kKBox = kBox + kCols * 64;
  // q, k + Sᵀ; the v columns, then the same scaled for the boundary sum (bf16(λ^{C−1−j}·v_j)).
  static constexpr int kSlot = kBoxes / 2 * (kBox + kKBox) + 2 * kC * kLdv;
  static_assert(kCols == 16, "the output wgmma is m64n80: 64 keys and 16 state columns");
  static_assert(kCtas % kCluster == 0, "whole clusters per head");
  static_assert(kSlot * sizeof(bf16) % 1024 == 0 && kKBox * sizeof(bf16) % 1024 == 0,
                "swizzled boxes stay 1024-byte aligned");
  static constexpr size_t kBf16 = size_t{kDepth} * kSlot;
  static constexpr size_t kPw = kC + 4;  // floats: the decay powers, padded to 16 bytes
  static constexpr int kBarriers = 4 * kDepth;
  static constexpr size_t kBytes =  // and room to align the base to 1024 bytes
      1024 + sizeof(bf16) * kBf16 + sizeof(float) * kPw + sizeof(uint64_t) * kBarriers;
};

#if TANDEM_LINEAR_FUSED_DEVICE
namespace fused {

namespace ptx = ::cuda::ptx;

__device__ __forceinline__ void WaitCta(uint64_t* bar, uint32_t parity) {
  while (!ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}
// One arrival on the barrier at bar's offset in CTA `rank` of the cluster (release at CTA scope,
// as the reads it follows are this CTA's own).
__device__ __forceinline__ void ArriveRemote(uint64_t* bar, int rank) {
  const uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(bar));
  asm volatile(
      "{\n.reg .b32 remote;\nmapa.shared::cluster.u32 remote, %0, %1;\n"
      "mbarrier.arrive.shared::cluster.b64 _, [remote];\n}\n" ::"r"(local),
      "r"(rank)
      : "memory");
}
// One arrival per warp (lane 0, after the warp's shared-memory work).
__device__ __forceinline__ void WarpArrive(uint64_t* bar) {
  __syncwarp();
  if (threadIdx.x % 32 == 0) ptx::mbarrier_arrive(bar);
}
// Named barrier 1: the state warps (their scaled v columns written before any reads them).
template <int kWarps>
__device__ __forceinline__ void StateWarpsSync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(32 * kWarps) : "memory");
}
// bf16 of a 16 × 16 state slice (mma accumulator layout, state rows row0.., the CTA's columns
// 0..15) as bf16(S)ᵀ rows after the k boxes of a slot (k: the slot's first k box; boxes kKBox
// apart), in the boxes' 128-byte swizzle — the rounding StoreStateSlice gives the two-launch
// forward's chunk-start states. One transposing stmatrix: matrix i = (n-tile i / 2, rows
// + 8·(i % 2)) lands as 8 rows of bf16(S)ᵀ (state columns), 8 state rows (16 bytes) each.
template <int kKBox>
__device__ __forceinline__ void StoreStateT(const float (&st)[2][4], bf16* k, int row0) {
  const int lane = threadIdx.x % 32, i = lane / 8;
  const int a = row0 + 8 * (i % 2), b = 8 * (i / 2) + lane % 8;
  const bf16* row = k + (a / 64) * kKBox + 64 * kC + 64 * b + ((((a % 64) / 8) ^ (b % 8)) * 8);
  const uint32_t addr = static_cast<uint32_t>(__cvta_generic_to_shared(row));
  asm volatile(
      "stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
      "r"(Pack(st[0][0], st[0][1])), "r"(Pack(st[0][2], st[0][3])), "r"(Pack(st[1][0], st[1][1])),
      "r"(Pack(st[1][2], st[1][3]))
      : "memory");
}

}  // namespace fused
#endif

// Grid kCtas·B·H, kCtas per (sequence, head), in clusters of kCluster.
template <int kCols, int kClusterCtas>
using FusedOf = FusedShape<kCols, kClusterCtas>;

template <int kCols, int kClusterCtas>
__global__ void __cluster_dims__(FusedOf<kCols, kClusterCtas>::kCluster, 1, 1)
    __launch_bounds__((FusedOf<kCols, kClusterCtas>::kThreads))
        __maxnreg__((FusedOf<kCols, kClusterCtas>::kRegs))
            FusedKernelTc(TcFwdArgs a, const __grid_constant__ CUtensorMap tmq,
                          const __grid_constant__ CUtensorMap tmk) {
#if TANDEM_LINEAR_FUSED_DEVICE
  using F = FusedShape<kCols, kClusterCtas>;
  constexpr int kD = F::kD, kN = F::kN;
  namespace ptx = ::cuda::ptx;
  namespace cg = cooperative_groups;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw));
  bf16* slots = reinterpret_cast<bf16*>(smem_raw + ((1024u - (base & 1023u)) & 1023u));
  float* pw = reinterpret_cast<float*>(slots + F::kDepth * F::kSlot);
  uint64_t* full = reinterpret_cast<uint64_t*>(pw + F::kPw);  // q, k, v of the slot landed
  uint64_t* done = full + F::kDepth;    // this CTA's output and state warps done with the slot
  uint64_t* empty = done + F::kDepth;   // every CTA of the cluster done with the slot
  uint64_t* sfull = empty + F::kDepth;  // bf16(S)ᵀ of the slot's chunk written
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int seq = blockIdx.x / F::kCtas / a.h, head = blockIdx.x / F::kCtas % a.h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b0 = F::kCols * static_cast<int>(blockIdx.x % F::kCtas);
  const int begin = a.seq_chunk[seq], count = a.seq_chunk[seq + 1] - begin;
  const int full_chunks = count > 0 && a.items[begin + count - 1].n < kC ? count - 1 : count;
  const int64_t ld = int64_t{a.h} * kD;
  if (threadIdx.x == 0) {
    for (int s = 0; s < F::kDepth; ++s) {
      ptx::mbarrier_init(&full[s], 1 + 32);  // the expect_tx arrival, the producer lanes' cp.async
      ptx::mbarrier_init(&done[s], F::kGroupWarps + F::kStateWarps);
      ptx::mbarrier_init(&empty[s], F::kCluster);
      ptx::mbarrier_init(&sfull[s], F::kStateWarps);
    }
    ptx::fence_mbarrier_init(ptx::sem_release, ptx::scope_cluster);
  }
  for (int i = threadIdx.x; i <= kC; i += F::kThreads) pw[i] = a.pow[head * (kC + 1) + i];
  cluster.sync();  // barriers and powers in place before any CTA writes into another
  auto view = [&](int slot) {
    TcSmem<kD> s;
    s.q = slots + slot * F::kSlot;
    s.k = s.q + (F::kBoxes / 2) * F::kBox;
    s.v = s.k + (F::kBoxes / 2) * F::kKBox;
    s.ldv = F::kLdv;  // (bf16(S)ᵀ follows the k boxes; P stays in registers)
    s.pw = pw;
    return s;
  };
  // Phase parity of the n-th use (from 0) of a ring entry.
  auto phase = [](int n) { return static_cast<uint32_t>(n & 1); };

  if (warp == F::kProducer) {
    const uint16_t all = static_cast<uint16_t>((1u << F::kCluster) - 1);
    constexpr int kPieces = F::kCols / 8;  // 16-byte pieces of a v row
    ChunkItem next = count > 0 ? a.items[begin] : ChunkItem{};
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      const ChunkItem it = next;  // read a chunk ahead: off the path from a free slot to its loads
      if (c + 1 < count) next = a.items[begin + c + 1];
      if (c >= F::kDepth) {
        // This CTA is done with the slot's last chunk: tell every CTA of the cluster, then wait
        // until all of them are before anything lands in it again.
        fused::WaitCta(&done[slot], phase(c / F::kDepth - 1));
        if (lane == 0) {
#pragma unroll
          for (int r = 0; r < F::kCluster; ++r) fused::ArriveRemote(&empty[slot], r);
        }
        fused::WaitCta(&empty[slot], phase(c / F::kDepth - 1));
      }
      const TcSmem<kD> s = view(slot);
      for (int idx = lane; idx < kPieces * kC; idx += 32) {  // v columns b0.., zeros from row n
        const int j = idx / kPieces, p = idx % kPieces;
        bf16* dst = s.v + j * F::kLdv + 8 * p;
        if (j < it.n) {
          CpAsync16(dst, a.v + (int64_t{it.row0} + j) * ld + head * kD + b0 + 8 * p);
        } else {
          *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
        }
      }
      ptx::cp_async_mbarrier_arrive_noinc(&full[slot]);
      __syncwarp();  // the zeros before lane 0's (releasing) arrival
      if (lane == 0) {
        ptx::mbarrier_arrive_expect_tx(ptx::sem_release, ptx::scope_cta, ptx::space_shared,
                                       &full[slot], uint32_t{F::kBoxes * F::kBox * sizeof(bf16)});
      }
      // The chunk's q and k boxes (whole boxes: rows past the sequence are never used), box b by
      // CTA b % kCluster, each multicast to the whole cluster.
      if (lane == 0) {
        for (int b = rank; b < F::kBoxes; b += F::kCluster) {
          const bool is_q = b < F::kBoxes / 2;
          const int col = 64 * (b % (F::kBoxes / 2));
          const int32_t coords[3] = {col, head, it.row0};
          ptx::cp_async_bulk_tensor(ptx::space_cluster, ptx::space_global,
                                    is_q ? s.q + (col / 64) * F::kBox : s.k + (col / 64) * F::kKBox,
                                    is_q ? &tmq : &tmk, coords, &full[slot], all);
        }
      }
    }
  } else if (warp < F::kOutWarps) {
    // Output group warp / kGroupWarps (a warpgroup) takes the chunks c ≡ group (mod kGroups). One
    // wgmma per k step over B = [k; bf16(S_c)ᵀ] gives the chunk's scores q·kᵀ and q·bf16(S_c) —
    // the k-ordered sums of ChunkPTile's and InterTile's mma.sync chains — with warp w of the
    // warpgroup holding rows 16w.. (the mma C layout). DecayedPair's decay and mask turn the
    // scores into P's A fragments in registers; then OutputTile's IntraTile and EmitOutputs for
    // row tile w and the CTA's 16 columns.
    const int group = warp / F::kGroupWarps, m = warp % F::kGroupWarps;
    const int g = lane / 4, t = lane % 4;
    static_assert(F::kGroupWarps == 4, "an output group is one warpgroup");
    static_assert(F::kBox * sizeof(bf16) == wgmma::kSwBlockBytes, "q, k boxes are swizzle blocks");
    for (int c = group; c < count; c += F::kGroups) {
      const int slot = c % F::kDepth;
      const ChunkItem it = a.items[begin + c];
      fused::WaitCta(&full[slot], phase(c / F::kDepth));
      fused::WaitCta(&sfull[slot], phase(c / F::kDepth));
      const TcSmem<kD> s = view(slot);
      float acc[10][4];  // scores of keys 8n.. (n < 8), then inter of columns 8(n − 8)..
#pragma unroll
      for (int n = 0; n < 10; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.0f;
      const unsigned char* qb = reinterpret_cast<const unsigned char*>(s.q);
      const unsigned char* kb = reinterpret_cast<const unsigned char*>(s.k);
      wgmma::WgFence();
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
        // Accumulating from the zeros above, as the mma.sync chains start from +0.
        wgmma::WgmmaSsKkN80(acc, wgmma::KMajorDesc(qb, ks),
                            wgmma::KMajorDesc(kb, ks, F::kKBox * sizeof(bf16)));
      }
      wgmma::WgCommit();
      wgmma::WgWait<0>();
      wgmma::FenceRegs(acc);
      float intra[2][4];
      IntraTile<2>(
          s.v, F::kLdv, m, 0,
          [&](int kk, uint32_t(&pa)[4]) {
            const int i = 16 * m + g, j = 16 * kk + 2 * t;
            pa[0] = DecayedPair(pw, i, j, acc[2 * kk][0], acc[2 * kk][1]);
            pa[1] = DecayedPair(pw, i + 8, j, acc[2 * kk][2], acc[2 * kk][3]);
            pa[2] = DecayedPair(pw, i, j + 8, acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
            pa[3] = DecayedPair(pw, i + 8, j + 8, acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
          },
          intra);
      float inter[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) inter[n][e] = acc[8 + n][e];
      }
      EmitOutputs<2>(pw, a.scale, m, 0, inter, intra, [&](int i, int b, float x0, float x1) {
        if (i < it.n) Store2(a.o, (int64_t{it.row0} + i) * ld + head * kD + b0 + b, x0, x1);
      });
      fused::WarpArrive(&done[slot]);
    }
  } else {
    // State warps: rows kStateRows·sw.., all of the CTA's 16 columns, in registers; each
    // chunk's boundary sum moves them on, and bf16(S)ᵀ goes into the next chunk's slot (once that
    // has landed: the slot is then free of its previous chunk) for that chunk's output group.
    const int sw = warp - F::kOutWarps;
    const int64_t dd = int64_t{kD} * kD, sh = int64_t{seq} * a.h + head;
    constexpr int kRt = F::kStateTiles;
    const int row0 = F::kStateRows * sw;
    float st[kRt][2][4];  // [row tile][n-tile][e]
    const float pow_c = pw[kC];
    // bf16(S)ᵀ of chunk c into its slot, visible to the wgmma (async proxy) of its output group.
    auto publish = [&](int c) {
      const int slot = c % F::kDepth;
      fused::WaitCta(&full[slot], phase(c / F::kDepth));
#pragma unroll
      for (int rt = 0; rt < kRt; ++rt) {
        fused::StoreStateT<F::kKBox>(st[rt], view(slot).k, row0 + 16 * rt);
      }
      ptx::fence_proxy_async(ptx::space_shared);
      fused::WarpArrive(&sfull[slot]);
    };
#pragma unroll
    for (int rt = 0; rt < kRt; ++rt) {
      LoadSlice<kD>(a.init != nullptr ? a.init + sh * dd : nullptr, row0 + 16 * rt, b0, st[rt]);
    }
    if (count > 0) publish(0);
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      if (c < full_chunks) {
        fused::WaitCta(&full[slot], phase(c / F::kDepth));
        const TcSmem<kD> s = view(slot);
        bf16* v_scaled = s.v + kC * F::kLdv;
        {
          // The state warps scale the slot's v columns once for all of them: kVals values each,
          // key j = thread / (16 / kVals).
          constexpr int kVals = 16 * kC / (32 * F::kStateWarps), kPer = 16 / kVals;
          static_assert(F::kCols == 16 && (kVals == 8 || kVals == 4), "whole 8- or 16-byte pieces");
          const int tid = threadIdx.x - 32 * F::kOutWarps, j = tid / kPer,
                    cv = kVals * (tid % kPer);
          const float pj = pw[kC - 1 - j];
          const bf16* in = s.v + j * F::kLdv + cv;
          bf16* out = v_scaled + j * F::kLdv + cv;
          if constexpr (kVals == 8) {
            const uint4 x = *reinterpret_cast<const uint4*>(in);
            *reinterpret_cast<uint4*>(out) =
                make_uint4(ScaledPair(x.x, pj, pj), ScaledPair(x.y, pj, pj),
                           ScaledPair(x.z, pj, pj), ScaledPair(x.w, pj, pj));
          } else {
            const uint2 x = *reinterpret_cast<const uint2*>(in);
            *reinterpret_cast<uint2*>(out) =
                make_uint2(ScaledPair(x.x, pj, pj), ScaledPair(x.y, pj, pj));
          }
          fused::StateWarpsSync<F::kStateWarps>();
        }
        float sum[kRt][kN][4];
        BoundaryTile<kN, SwizzledRows<F::kKBox>, kRt>(s.k, 0, row0, v_scaled, F::kLdv,
                                                      /*ps=*/nullptr, sum);
        fused::WarpArrive(&done[slot]);  // the slot's k and v are read
#pragma unroll
        for (int rt = 0; rt < kRt; ++rt) {
#pragma unroll
          for (int n = 0; n < kN; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e)
              st[rt][n][e] = NextState(pow_c, st[rt][n][e], sum[rt][n][e]);
          }
        }
        if (c + 1 < count) publish(c + 1);
      } else {
        fused::WarpArrive(&done[slot]);
      }
    }
    if (a.boundary != nullptr) {
#pragma unroll
      for (int rt = 0; rt < kRt; ++rt) {
        StoreSlice<kD>(st[rt], a.boundary + sh * dd, row0 + 16 * rt, b0);
      }
    }
  }
  cluster.sync();  // no CTA leaves while another may still write into it
#else
  __trap();
#endif
}

// The fused forward's shape: 16 columns per CTA (8 CTAs per head), clusters of 2 — see
// docs/benchmarks.md for the measured alternatives.
inline constexpr int kFusedCols = 16, kFusedCluster = 2;
using FusedDefault = FusedShape<kFusedCols, kFusedCluster>;

// Whether this device can run a cluster of the fused kernel at all (compute capability 9.0 and
// room for its CTAs of ~200 KB of shared memory in one GPC).
struct FusedSupport {
  bool fits = false;
  int sms = 0;  // the device's multiprocessors: one CTA each in a wave
};
inline FusedSupport FusedForwardSupport() {
  using F = FusedDefault;
  constexpr int smem = static_cast<int>(F::kBytes);
  auto kernel = &FusedKernelTc<kFusedCols, kFusedCluster>;
  int dev = 0, major = 0, minor = 0, clusters = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      major != 9 || minor != 0 ||
      AllowSmem<&FusedKernelTc<kFusedCols, kFusedCluster>>(smem) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(F::kCluster);
  config.blockDim = dim3(F::kThreads);
  config.dynamicSmemBytes = smem;
  if (cudaOccupancyMaxActiveClusters(&clusters, kernel, &config) != cudaSuccess) {
    cudaGetLastError();
    return {};
  }
  return {clusters > 0, sms};
}

template <int kCols, int kClusterCtas>
cudaError_t LaunchFusedShape(cudaStream_t stream, const TcFwdArgs& a, int batch,
                             const CUtensorMap& tmq, const CUtensorMap& tmk) {
  using F = FusedShape<kCols, kClusterCtas>;
  constexpr int smem = static_cast<int>(F::kBytes);
  const cudaError_t e = AllowSmem<&FusedKernelTc<kCols, kClusterCtas>>(smem);
  if (e != cudaSuccess) return e;
  FusedKernelTc<kCols, kClusterCtas>
      <<<F::kCtas * batch * a.h, F::kThreads, smem, stream>>>(a, tmq, tmk);
  return cudaGetLastError();
}

// The fused kernel's tensor maps over q and k (t: their packed rows).
struct FusedMaps {
  CUtensorMap q, k;
};

// False when the maps cannot be built (a driver without the encoder, or one that refuses the
// data): the caller then takes the two-launch forward, which needs no maps.
inline bool BuildFusedMaps(const TcFwdArgs& a, int64_t t, FusedMaps* maps) {
  return HeadRowsTensorMap(&maps->q, a.q, t, a.h, FusedDefault::kD, kC) &&
         HeadRowsTensorMap(&maps->k, a.k, t, a.h, FusedDefault::kD, kC);
}

inline cudaError_t LaunchForwardFused(cudaStream_t stream, const TcFwdArgs& a, int batch,
                                      const FusedMaps& maps) {
  return LaunchFusedShape<kFusedCols, kFusedCluster>(stream, a, batch, maps.q, maps.k);
}

}  // namespace tandem::kernels::cuda::linear
