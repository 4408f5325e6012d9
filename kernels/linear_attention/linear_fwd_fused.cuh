// Internal to kernels/linear_attention (include from .cu files only): the fused tensor-core forward
// at D = 128 on sm_90a, taken when no chunk-start states are asked for (prefill). The two-launch
// forward writes every bf16 chunk-start state and reads it back; this one keeps the state on chip.
//
// A cluster of 8 CTAs walks one (sequence, head) through its chunks; CTA r owns the state and
// output columns 16r..16r+15, so every product it runs is a whole mma chain of the two-launch
// forward and the decode (ChunkPTile, OutputTile, BoundaryTile, NextState): the same bits.
//   - A producer warp per CTA fills a ring of chunk slots: the chunk's q and k rows by bulk copies
//     multicast to the whole cluster (each CTA issues 8 of the 64 rows of each), its own v columns
//     by cp.async. A slot is refilled only after all 8 CTAs released it (an mbarrier per slot).
//   - The decayed causal weights P of a chunk (20 tiles of 16 × 8 on or below the diagonal) are
//     computed once in the cluster, tile t by CTA t % 8, and stored into every CTA's copy with
//     st.async, one chunk ahead of their use.
//   - Of the 8 consumer warps, warps 0-3 compute the outputs of row tile `warp` from q, P, v and
//     bf16(S); warps 4-7 hold 32 state rows each in registers, add the chunk's boundary sum,
//     write bf16(S) for the next chunk's outputs, then the P tiles of the next chunk.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cuda/ptx>

#include "kernels/core/kernel_smem.h"
#include "kernels/linear_attention/linear_attention_mma.cuh"
#include "kernels/linear_attention/linear_fwd_output.cuh"
#include "kernels/linear_attention/linear_fwd_scan.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define TANDEM_LINEAR_FUSED_DEVICE 1
#else
#define TANDEM_LINEAR_FUSED_DEVICE 0
#endif

namespace tandem::kernels::cuda::linear {

struct FusedShape {
  static constexpr int kD = 128;
  static constexpr int kCols = 16;             // state and output columns per CTA
  static constexpr int kCluster = kD / kCols;  // CTAs per (sequence, head)
  static constexpr int kDepth = 4;             // chunk slots in the ring
  static constexpr int kConsumerWarps = 8, kConsumers = 32 * kConsumerWarps;
  static constexpr int kThreads = kConsumers + 32;  // and the producer warp
  static constexpr int kLdr = TcLayout<kD>::kLdr, kLdp = TcLayout<kD>::kLdp, kLdv = kCols + 8;
  static constexpr int kRowsPerCta = kC / kCluster;          // q, k rows each CTA copies
  static constexpr int kSlot = 2 * kC * kLdr + kC * kLdv;    // bf16: q, k rows; v columns
  static constexpr int kP = kC * kLdp, kS = kD * kLdv;       // bf16: P; bf16(S) columns
  static constexpr int kPTiles = (kC / 16) * (kC / 16 + 1);  // 16 × 8 tiles with j ≤ i
  static constexpr int kPTilesPerCta = (kPTiles + kCluster - 1) / kCluster;
  static constexpr uint32_t kPBytes = kPTiles * 16 * 8 * sizeof(bf16);
  static_assert(kPTilesPerCta <= 4, "the P tiles of a CTA go to warps 4-7, one each");
  static_assert(kRowsPerCta * 2 <= 32, "one bulk copy per producer lane");
  static constexpr size_t kBf16 = size_t{kDepth} * (kSlot + kP) + 2 * kS;
  static constexpr size_t kPw = kC + 4;  // floats: the decay powers, padded to 16 bytes
  static constexpr size_t kBytes =
      sizeof(bf16) * kBf16 + sizeof(float) * kPw + sizeof(uint64_t) * 3 * kDepth;
};

#if TANDEM_LINEAR_FUSED_DEVICE
namespace fused {

namespace ptx = ::cuda::ptx;

__device__ __forceinline__ void WaitCta(uint64_t* bar, uint32_t parity) {
  while (!ptx::mbarrier_try_wait_parity(bar, parity)) {
  }
}
// For phases completed by other CTAs' arrivals or stores.
__device__ __forceinline__ void WaitCluster(uint64_t* bar, uint32_t parity) {
  while (!ptx::mbarrier_try_wait_parity(ptx::sem_acquire, ptx::scope_cluster, bar, parity)) {
  }
}
// The 8 consumer warps only (the producer runs ahead on its own).
__device__ __forceinline__ void ConsumerSync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(FusedShape::kConsumers) : "memory");
}

// Tile t of P in row-tile order: row tile m holds tiles m(m+1) .. m(m+1) + 2m + 1.
__device__ __forceinline__ void PTileOf(int t, int& m, int& nt) {
  m = 0;
  while ((m + 1) * (m + 2) <= t) ++m;
  nt = t - m * (m + 1);
}

// bf16 of a 16 × 16 state slice (mma accumulator layout, rows row0..) into s [kD][kLdv] — the
// rounding StoreStateSlice gives the two-launch forward's chunk-start states.
__device__ __forceinline__ void StoreBf16Slice(const float (&st)[2][4], bf16* s, int row0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      *reinterpret_cast<uint32_t*>(s + (row0 + g + 8 * r) * FusedShape::kLdv + 8 * nt + 2 * t) =
          Pack(st[nt][2 * r], st[nt][2 * r + 1]);
    }
  }
}

}  // namespace fused
#endif

// Grid 8·B·H in clusters of 8: one cluster per (sequence, head).
__global__ void __cluster_dims__(FusedShape::kCluster, 1, 1)
    __launch_bounds__(FusedShape::kThreads, 1) FusedKernelTc(TcFwdArgs a) {
#if TANDEM_LINEAR_FUSED_DEVICE
  using F = FusedShape;
  constexpr int kD = F::kD;
  namespace ptx = ::cuda::ptx;
  namespace cg = cooperative_groups;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* slots = reinterpret_cast<bf16*>(smem_raw);
  bf16* pbuf = slots + F::kDepth * F::kSlot;
  bf16* sbuf = pbuf + F::kDepth * F::kP;
  float* pw = reinterpret_cast<float*>(sbuf + 2 * F::kS);
  uint64_t* full = reinterpret_cast<uint64_t*>(pw + F::kPw);  // q, k, v of the slot landed
  uint64_t* pfull = full + F::kDepth;                         // P of the slot landed
  uint64_t* empty = pfull + F::kDepth;                        // all CTAs done with the slot
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int seq = blockIdx.x / F::kCluster / a.h, head = blockIdx.x / F::kCluster % a.h;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int b0 = F::kCols * rank;
  const int begin = a.seq_chunk[seq], count = a.seq_chunk[seq + 1] - begin;
  const int full_chunks = count > 0 && a.items[begin + count - 1].n < kC ? count - 1 : count;
  const int64_t ld = int64_t{a.h} * kD;
  if (threadIdx.x == 0) {
    for (int s = 0; s < F::kDepth; ++s) {
      ptx::mbarrier_init(&full[s],
                         1 + 32);  // the expect_tx arrival and the producer lanes' cp.async
      ptx::mbarrier_init(&pfull[s], 1);
      ptx::mbarrier_init(&empty[s], F::kCluster);
    }
    ptx::fence_mbarrier_init(ptx::sem_release, ptx::scope_cluster);
  }
  for (int i = threadIdx.x; i <= kC; i += F::kThreads) pw[i] = a.pow[head * (kC + 1) + i];
  cluster.sync();  // barriers and powers in place before any CTA writes into another
  auto slot_q = [&](int slot) { return slots + slot * F::kSlot; };

  if (warp == F::kConsumerWarps) {
    // Producer.
    const uint16_t all = static_cast<uint16_t>((1u << F::kCluster) - 1);
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      if (c >= F::kDepth) fused::WaitCluster(&empty[slot], ((c / F::kDepth) - 1) & 1);
      const ChunkItem it = a.items[begin + c];
      bf16 *q = slot_q(slot), *k = q + kC * F::kLdr, *v = k + kC * F::kLdr;
      for (int idx = lane; idx < 2 * kC; idx += 32) {  // v columns b0.., zeros from row n on
        const int j = idx / 2, p = idx % 2;
        bf16* dst = v + j * F::kLdv + 8 * p;
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
                                       &full[slot], 2u * it.n * kD * sizeof(bf16));
        ptx::mbarrier_arrive_expect_tx(ptx::sem_release, ptx::scope_cta, ptx::space_shared,
                                       &pfull[slot], uint32_t{F::kPBytes});
      }
      if (lane < 2 * F::kRowsPerCta) {
        const int row = F::kRowsPerCta * rank + lane % F::kRowsPerCta;
        const bool is_q = lane < F::kRowsPerCta;
        if (row < it.n) {
          ptx::cp_async_bulk(ptx::space_cluster, ptx::space_global, (is_q ? q : k) + row * F::kLdr,
                             (is_q ? a.q : a.k) + (int64_t{it.row0} + row) * ld + head * kD,
                             static_cast<uint32_t>(kD * sizeof(bf16)), &full[slot], all);
        }
      }
    }
  } else {
    // Consumers.
    const bool state_warp = warp >= 4;
    const int sw = warp - 4;  // state warps: rows 32sw .. 32sw + 31
    auto view = [&](int slot) {
      TcSmem<kD> s;
      s.q = slot_q(slot);
      s.k = s.q + kC * F::kLdr;
      s.v = s.k + kC * F::kLdr;
      s.p = pbuf + slot * F::kP;
      s.ldv = s.lds = F::kLdv;
      s.pw = pw;
      return s;
    };
    // This CTA's tiles of the slot's P, into every CTA's copy.
    auto share_p = [&](int slot) {
      const int t = rank + F::kCluster * sw;
      if (sw >= F::kPTilesPerCta || t >= F::kPTiles) return;
      int m, nt;
      fused::PTileOf(t, m, nt);
      bf16* p = pbuf + slot * F::kP;
      ChunkPTile(view(slot), m, nt, [&](int i, int j, uint32_t pair) {
        uint32_t* dst = reinterpret_cast<uint32_t*>(p + i * F::kLdp + j);
#pragma unroll
        for (int r = 0; r < F::kCluster; ++r) {
          ptx::st_async(cluster.map_shared_rank(dst, r), pair,
                        cluster.map_shared_rank(&pfull[slot], r));
        }
      });
    };
    const int64_t dd = int64_t{kD} * kD, sh = int64_t{seq} * a.h + head;
    float st[2][2][4];  // state warps: two 16-row tiles × 16 columns
    float ps[kC / 16][4];
    const float pow_c = pw[kC];
    if (state_warp) {
      KeyScales(pw, ps);
#pragma unroll
      for (int rt = 0; rt < 2; ++rt) {
        const int row0 = 32 * sw + 16 * rt;
        LoadSlice<kD>(a.init != nullptr ? a.init + sh * dd : nullptr, row0, b0, st[rt]);
        fused::StoreBf16Slice(st[rt], sbuf, row0);
      }
      if (count > 0) {
        fused::WaitCta(&full[0], 0);
        share_p(0);
      }
    }
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      const uint32_t parity = (c / F::kDepth) & 1;
      fused::ConsumerSync();  // bf16(S) of chunk c written; chunk c − 1 done by every warp
      if (threadIdx.x == 0 && c >= 1 && c - 1 + F::kDepth < count) {
        uint64_t* bar = &empty[(c - 1) % F::kDepth];
#pragma unroll
        for (int r = 0; r < F::kCluster; ++r) {
          ptx::mbarrier_arrive(ptx::sem_release, ptx::scope_cluster, ptx::space_cluster,
                               cluster.map_shared_rank(bar, r));
        }
      }
      fused::WaitCta(&full[slot], parity);
      TcSmem<kD> s = view(slot);
      s.s = sbuf + (c % 2) * F::kS;
      if (!state_warp) {
        const ChunkItem it = a.items[begin + c];
        fused::WaitCluster(&pfull[slot], parity);
        OutputTile<kD, 2>(s, a.scale, warp, 0, [&](int i, int b, float x0, float x1) {
          if (i < it.n) Store2(a.o, (int64_t{it.row0} + i) * ld + head * kD + b0 + b, x0, x1);
        });
      } else {
        if (c < full_chunks) {
#pragma unroll
          for (int rt = 0; rt < 2; ++rt) {
            const int row0 = 32 * sw + 16 * rt;
            float sum[2][4];
            BoundaryTile<2>(s.k + row0, F::kLdr, s.v, F::kLdv, ps, sum);
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
#pragma unroll
              for (int e = 0; e < 4; ++e)
                st[rt][nt][e] = NextState(pow_c, st[rt][nt][e], sum[nt][e]);
            }
            fused::StoreBf16Slice(st[rt], sbuf + ((c + 1) % 2) * F::kS, row0);
          }
        }
        if (c + 1 < count) {
          const int next = (c + 1) % F::kDepth;
          fused::WaitCta(&full[next], ((c + 1) / F::kDepth) & 1);
          share_p(next);
        }
      }
    }
    if (state_warp && a.boundary != nullptr) {
#pragma unroll
      for (int rt = 0; rt < 2; ++rt)
        StoreSlice<kD>(st[rt], a.boundary + sh * dd, 32 * sw + 16 * rt, b0);
    }
  }
  cluster.sync();  // no CTA leaves while another may still write into it
#else
  __trap();
#endif
}

// Whether this device can run a cluster of the fused kernel at all (compute capability 9.0 and
// room for 8 CTAs of ~200 KB of shared memory in one GPC).
inline bool FusedForwardFits() {
  constexpr int smem = static_cast<int>(FusedShape::kBytes);
  int dev = 0, major = 0, minor = 0, clusters = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess ||
      major != 9 || minor != 0 || AllowSmem<&FusedKernelTc>(smem) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(FusedShape::kCluster);
  config.blockDim = dim3(FusedShape::kThreads);
  config.dynamicSmemBytes = smem;
  if (cudaOccupancyMaxActiveClusters(&clusters, &FusedKernelTc, &config) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return clusters > 0;
}

inline cudaError_t LaunchForwardFused(cudaStream_t stream, const TcFwdArgs& a, int batch) {
  constexpr int smem = static_cast<int>(FusedShape::kBytes);
  const cudaError_t e = AllowSmem<&FusedKernelTc>(smem);
  if (e != cudaSuccess) return e;
  FusedKernelTc<<<FusedShape::kCluster * batch * a.h, FusedShape::kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear
