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
//     cp.async. A slot is refilled only after every CTA of the cluster released it (an mbarrier
//     per slot).
//   - A P warpgroup computes the chunk's scores q·kᵀ with wgmma m64n64k16 (A fragments from
//     registers, k from the swizzled slot) as soon as the chunk has landed — the same sums as
//     ChunkPTile's mma.sync chains from zero (softmax_attention_wgmma_cuda_test checks that fact) —
//     then DecayedPair (ChunkPTile's decay and causal mask), into the CTA's P.
//   - Output warps compute the outputs of a 16-row tile and 16 columns from q, P, v and bf16(S);
//     state warps hold 32 state rows each in registers, add the chunk's boundary sum and write
//     bf16(S) for the next chunk's outputs; the two meet at one barrier per chunk.
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
  static constexpr int kDepth = 4;               // chunk slots in the ring
  // Warps by role: outputs (row tile × 16 columns each), state (32 rows × kCols each), the P
  // warpgroup (16 rows of P each), then the producer.
  static constexpr int kOutWarps = 4 * (kCols / 16), kStateWarps = kD / 32, kPWarps = 4;
  static_assert((kOutWarps + kStateWarps) % 4 == 0, "the P warps form an aligned warpgroup");
  static constexpr int kSynced = 32 * (kOutWarps + kStateWarps);  // ConsumerSync's threads
  static constexpr int kProducer = kOutWarps + kStateWarps + kPWarps;
  static constexpr int kThreads = 32 * (kProducer + 1);
  // One CTA per SM: each of the 4 schedulers' 16K registers shared by its ceil(warps / 4) warps.
  static constexpr int kRegs = 16384 / (32 * ((kProducer + 4) / 4)) / 8 * 8;
  static constexpr int kLdr = TcLayout<kD>::kLdr, kLdp = TcLayout<kD>::kLdp, kLdv = kCols + 8;
  static constexpr int kBoxes = 2 * (kD / 64);  // q, k boxes of [64 columns, kC rows] per chunk
  static constexpr int kBox = 64 * kC;          // bf16 of one box (8 KB)
  static constexpr int kSlot = kBoxes * kBox + kC * kLdv;  // bf16: q, k (swizzled); v columns
  static constexpr int kP = kC * kLdp, kS = kD * kLdv;     // bf16: P; bf16(S) columns
  static_assert(kCols == 16 || kCols == 32, "16 or 32 columns per CTA");
  static_assert(kCtas % kCluster == 0, "whole clusters per head");
  static_assert(kSlot * sizeof(bf16) % 1024 == 0, "swizzled boxes stay 1024-byte aligned");
  static constexpr size_t kBf16 = size_t{kDepth} * (kSlot + kP) + 2 * kS;
  static constexpr size_t kPw = kC + 4;  // floats: the decay powers, padded to 16 bytes
  static constexpr size_t kBytes =       // and room to align the base to 1024 bytes
      1024 + sizeof(bf16) * kBf16 + sizeof(float) * kPw + sizeof(uint64_t) * 3 * kDepth;
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
// The output and state warps only (the producer and the P warps run ahead on their own).
template <int kThreads>
__device__ __forceinline__ void ConsumerSync() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kThreads) : "memory");
}

// bf16 of a 16 × 8kN state slice (mma accumulator layout, rows row0..) into s [kD][ld] — the
// rounding StoreStateSlice gives the two-launch forward's chunk-start states.
template <int kN>
__device__ __forceinline__ void StoreBf16Slice(const float (&st)[kN][4], bf16* s, int ld,
                                               int row0) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
  for (int nt = 0; nt < kN; ++nt) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      *reinterpret_cast<uint32_t*>(s + (row0 + g + 8 * r) * ld + 8 * nt + 2 * t) =
          Pack(st[nt][2 * r], st[nt][2 * r + 1]);
    }
  }
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
  bf16* pbuf = slots + F::kDepth * F::kSlot;
  bf16* sbuf = pbuf + F::kDepth * F::kP;
  float* pw = reinterpret_cast<float*>(sbuf + 2 * F::kS);
  uint64_t* full = reinterpret_cast<uint64_t*>(pw + F::kPw);  // q, k, v of the slot landed
  uint64_t* pfull = full + F::kDepth;                         // P of the slot landed
  uint64_t* empty = pfull + F::kDepth;                        // all CTAs done with the slot
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
      ptx::mbarrier_init(&pfull[s], F::kPWarps);
      ptx::mbarrier_init(&empty[s], F::kCluster);
    }
    ptx::fence_mbarrier_init(ptx::sem_release, ptx::scope_cluster);
  }
  for (int i = threadIdx.x; i <= kC; i += F::kThreads) pw[i] = a.pow[head * (kC + 1) + i];
  cluster.sync();  // barriers and powers in place before any CTA writes into another
  auto view = [&](int slot) {
    TcSmem<kD> s;
    s.q = slots + slot * F::kSlot;
    s.k = s.q + (F::kBoxes / 2) * F::kBox;
    s.v = s.k + (F::kBoxes / 2) * F::kBox;
    s.p = pbuf + slot * F::kP;
    s.ldv = s.lds = F::kLdv;
    s.pw = pw;
    return s;
  };

  if (warp == F::kProducer) {
    const uint16_t all = static_cast<uint16_t>((1u << F::kCluster) - 1);
    constexpr int kPieces = F::kCols / 8;  // 16-byte pieces of a v row
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      if (c >= F::kDepth) fused::WaitCta(&empty[slot], ((c / F::kDepth) - 1) & 1);
      const ChunkItem it = a.items[begin + c];
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
                                    (is_q ? s.q : s.k) + (col / 64) * F::kBox, is_q ? &tmq : &tmk,
                                    coords, &full[slot], all);
        }
      }
    }
  } else if (warp >= F::kOutWarps + F::kStateWarps) {
    // P warpgroup: the chunk's scores q·kᵀ by wgmma (warp w: rows 16w ..), the k-ordered sums
    // ChunkPTile's mma.sync chains give, then DecayedPair's decay and mask, into this CTA's P.
    const int w = warp - F::kOutWarps - F::kStateWarps;
    const int g = lane / 4, t = lane % 4;
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      fused::WaitCta(&full[slot], (c / F::kDepth) & 1);
      const TcSmem<kD> s = view(slot);
      uint32_t qf[kD / 16][4];
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) LoadA<SwizzledRows>(s.q, 0, 16 * w, 16 * ks, qf[ks]);
      float sc[8][4];
#pragma unroll
      for (int n = 0; n < 8; ++n) sc[n][0] = sc[n][1] = sc[n][2] = sc[n][3] = 0.0f;
      static_assert(F::kBox * sizeof(bf16) == wgmma::kSwBlockBytes, "k boxes are swizzle blocks");
      const unsigned char* kb = reinterpret_cast<const unsigned char*>(s.k);
      wgmma::WgFence();
#pragma unroll
      for (int ks = 0; ks < kD / 16; ++ks) {
        wgmma::WgmmaN64<false>(sc, qf[ks], wgmma::KMajorDesc(kb, ks));
      }
      wgmma::WgCommit();
      wgmma::WgWait<0>();
      wgmma::FenceRegs(sc);
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) {
        if (nt >= 2 * (w + 1)) break;  // keys past the row tile: never read
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          const int i = 16 * w + g + 8 * rr, j = 8 * nt + 2 * t;
          *reinterpret_cast<uint32_t*>(s.p + i * F::kLdp + j) =
              DecayedPair(pw, i, j, sc[nt][2 * rr], sc[nt][2 * rr + 1]);
        }
      }
      fused::WarpArrive(&pfull[slot]);
    }
  } else {
    // Output warps: row tile `warp % 4`, columns 16(warp / 4).. of the CTA's; state warps: rows
    // 32sw .. 32sw + 31, all of the CTA's columns.
    const bool state_warp = warp >= F::kOutWarps;
    const int sw = warp - F::kOutWarps;
    const int64_t dd = int64_t{kD} * kD, sh = int64_t{seq} * a.h + head;
    float st[2][kN / 2][2][4];  // state warps: [row tile][column pair][n-tile][e]
    float ps[kC / 16][4];
    const float pow_c = pw[kC];
    if (state_warp) {
      KeyScales(pw, ps);
#pragma unroll
      for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
        for (int cp = 0; cp < kN / 2; ++cp) {
          const int row0 = 32 * sw + 16 * rt;
          LoadSlice<kD>(a.init != nullptr ? a.init + sh * dd : nullptr, row0, b0 + 16 * cp,
                        st[rt][cp]);
          fused::StoreBf16Slice<2>(st[rt][cp], sbuf + 16 * cp, F::kLdv, row0);
        }
      }
    }
    for (int c = 0; c < count; ++c) {
      const int slot = c % F::kDepth;
      const uint32_t parity = (c / F::kDepth) & 1;
      fused::ConsumerSync<F::kSynced>();  // bf16(S) of chunk c written; chunk c − 1 done
      if (threadIdx.x == 0 && c >= 1 && c - 1 + F::kDepth < count) {
        uint64_t* bar = &empty[(c - 1) % F::kDepth];
#pragma unroll
        for (int r = 0; r < F::kCluster; ++r) fused::ArriveRemote(bar, r);
      }
      fused::WaitCta(&full[slot], parity);
      TcSmem<kD> s = view(slot);
      s.s = sbuf + (c % 2) * F::kS;
      if (!state_warp) {
        const ChunkItem it = a.items[begin + c];
        const int c0 = 16 * (warp / 4);
        fused::WaitCta(&pfull[slot], parity);
        OutputTile<kD, 2, SwizzledRows>(
            s, a.scale, warp % 4, c0, [&](int i, int b, float x0, float x1) {
              if (i < it.n) Store2(a.o, (int64_t{it.row0} + i) * ld + head * kD + b0 + b, x0, x1);
            });
      } else if (c < full_chunks) {
#pragma unroll
        for (int rt = 0; rt < 2; ++rt) {
          const int row0 = 32 * sw + 16 * rt;
          float sum[kN][4];
          BoundaryTile<kN, SwizzledRows>(s.k, 0, row0, s.v, F::kLdv, ps, sum);
#pragma unroll
          for (int n = 0; n < kN; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              float& x = st[rt][n / 2][n % 2][e];
              x = NextState(pow_c, x, sum[n][e]);
            }
          }
#pragma unroll
          for (int cp = 0; cp < kN / 2; ++cp) {
            fused::StoreBf16Slice<2>(st[rt][cp], sbuf + ((c + 1) % 2) * F::kS + 16 * cp, F::kLdv,
                                     row0);
          }
        }
      }
    }
    if (state_warp && a.boundary != nullptr) {
#pragma unroll
      for (int rt = 0; rt < 2; ++rt) {
#pragma unroll
        for (int cp = 0; cp < kN / 2; ++cp) {
          StoreSlice<kD>(st[rt][cp], a.boundary + sh * dd, 32 * sw + 16 * rt, b0 + 16 * cp);
        }
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

// t: the packed rows of q and k. cudaErrorNotSupported when the tensor maps cannot be built.
inline cudaError_t LaunchForwardFused(cudaStream_t stream, const TcFwdArgs& a, int batch,
                                      int64_t t) {
  CUtensorMap tmq, tmk;
  if (!HeadRowsTensorMap(&tmq, a.q, t, a.h, FusedDefault::kD, kC) ||
      !HeadRowsTensorMap(&tmk, a.k, t, a.h, FusedDefault::kD, kC)) {
    return cudaErrorNotSupported;
  }
  return LaunchFusedShape<kFusedCols, kFusedCluster>(stream, a, batch, tmq, tmk);
}

}  // namespace tandem::kernels::cuda::linear
