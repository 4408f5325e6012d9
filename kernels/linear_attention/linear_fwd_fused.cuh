// Internal to kernels/linear_attention (include from .cu files only): the fused tensor-core forward
// (bf16 q, k, v). One block walks one (sequence, head, kD × 16 column slice of the state) through
// the sequence's chunks in order: it owns whole state columns, so o[:, slice] needs no other
// block — per chunk it recomputes the decayed causal weights P (ChunkP), writes
// o[:, slice] = s·(λ^{i+1}·q·bf16(S[:, slice]) + P·V[:, slice]) (OutputTile) and advances its fp32
// state slice (BoundaryTile, NextState) held in registers, while cp.async keeps the next chunks'
// q, k and v slice in flight. No chunk-start state leaves the block (fp32 chunk_states only when
// asked), and every element's arithmetic is the two-launch path's and the decode's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/core/cuda_device.cuh"
#include "kernels/linear_attention/linear_attention_mma.cuh"
#include "kernels/linear_attention/linear_fwd_output.cuh"

namespace tandem::kernels::cuda::linear {

inline constexpr int kFusedWarps = 8, kFusedThreads = 32 * kFusedWarps;

template <int kD>
struct FusedShape {
  using L = TcLayout<kD>;
  static constexpr int kW = 16, kLdw = kW + 8;  // slice columns; stride of the v and S slices
  static constexpr int kStages = 4;
  static constexpr int kSlot = kC * (2 * L::kLdr + kLdw);       // bf16 of one chunk's q, k, v slice
  static constexpr int kNt = kW / 8, kItems = (kD / 16) * kNt;  // 16 × 8 tiles of the slice
  static constexpr int kBn = kItems >= 2 * kFusedWarps ? 2 : 1;  // state n-tiles per warp
  static_assert(kItems <= kFusedWarps * kBn && kNt % kBn == 0, "state tiles per warp");
  static_assert(4 * kNt == kFusedWarps, "OutputTile: one 16 × 8 tile per warp");
  static constexpr size_t kBytes =
      sizeof(bf16) * (kStages * kSlot + 2 * kD * kLdw + kC * L::kLdp) + sizeof(float) * (kC + 4);
};

// cp.async of the q, k rows and v columns b0.. of the chunk at packed row row0 (n rows; the rest
// zero) into slot: q [kC][kLdr], k [kC][kLdr], v [kC][kLdw].
template <int kD>
__device__ __forceinline__ void IssueFusedChunk(const TcFwdArgs& a, int64_t row0, int n, int head,
                                                int b0, bf16* slot) {
  using F = FusedShape<kD>;
  using L = TcLayout<kD>;
  constexpr int kQ = kD / 8, kV = 2 * kQ + F::kW / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < kC * kV; idx += kFusedThreads) {
    const int j = idx / kV, p = idx % kV;
    const int64_t row = (row0 + j) * a.h * kD + head * kD;
    bf16* dst;
    const bf16* src;
    if (p < kQ) {
      dst = slot + j * L::kLdr + 8 * p, src = a.q + row + 8 * p;
    } else if (p < 2 * kQ) {
      dst = slot + (kC + j) * L::kLdr + 8 * (p - kQ), src = a.k + row + 8 * (p - kQ);
    } else {
      dst = slot + 2 * kC * L::kLdr + j * F::kLdw + 8 * (p - 2 * kQ);
      src = a.v + row + b0 + 8 * (p - 2 * kQ);
    }
    if (j < n) {
      CpAsync16(dst, src);
    } else {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
}

// Grid (B·H, kD / kW): the chunks of one sequence in order for one head and column slice.
template <int kD>
__global__ void __launch_bounds__(kFusedThreads, 1) FusedKernelTc(TcFwdArgs a) {
  using F = FusedShape<kD>;
  using L = TcLayout<kD>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* slots = reinterpret_cast<bf16*>(smem_raw);
  bf16* sbuf = slots + F::kStages * F::kSlot;  // [2][kD][kLdw]: bf16(S) slice, double-buffered
  TcSmem<kD> s;
  s.p = sbuf + 2 * kD * F::kLdw;
  s.pw = reinterpret_cast<float*>(s.p + kC * L::kLdp);
  s.ldv = s.lds = F::kLdw;
  const int seq = blockIdx.x / a.h, head = blockIdx.x % a.h, b0 = blockIdx.y * F::kW;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int rt = warp * F::kBn / F::kNt, nt0 = warp * F::kBn % F::kNt;  // this warp's state tiles
  const bool owner = warp * F::kBn < F::kItems;
  const int64_t dd = kD * kD, sh = int64_t{seq} * a.h + head;
  LoadPowers(a.pow, head, s.pw);
  const float pow_c = a.pow[head * (kC + 1) + kC];
  float ps[kC / 16][4];
  KeyScales(a.pow + head * (kC + 1), ps);
  // Element (nt, e) of this lane: state row 16rt + g + 8(e/2), slice column 8(nt0 + nt) + 2t + e%2.
  auto offset = [&](int nt, int e) {
    return (16 * rt + g + 8 * (e / 2)) * kD + b0 + 8 * (nt0 + nt) + 2 * t + e % 2;
  };
  auto put_bf16 = [&](bf16* buf, const float(&st)[F::kBn][4]) {
#pragma unroll
    for (int nt = 0; nt < F::kBn; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        *reinterpret_cast<__nv_bfloat162*>(buf + (16 * rt + g + 8 * (e / 2)) * F::kLdw +
                                           8 * (nt0 + nt) + 2 * t) =
            __floats2bfloat162_rn(st[nt][e], st[nt][e + 1]);
      }
    }
  };
  auto put_f32 = [&](float* dst, const float(&st)[F::kBn][4]) {
#pragma unroll
    for (int nt = 0; nt < F::kBn; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        *reinterpret_cast<float2*>(dst + offset(nt, e)) = make_float2(st[nt][e], st[nt][e + 1]);
      }
    }
  };
  float st[F::kBn][4] = {};
  if (owner && a.init != nullptr) {
#pragma unroll
    for (int nt = 0; nt < F::kBn; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const float2 x = *reinterpret_cast<const float2*>(a.init + sh * dd + offset(nt, e));
        st[nt][e] = x.x, st[nt][e + 1] = x.y;
      }
    }
  }
  if (owner) put_bf16(sbuf, st);
  const int begin = a.seq_chunk[seq], count = a.seq_chunk[seq + 1] - begin;
  const int64_t row0 = count > 0 ? a.items[begin].row0 : 0;
  const int last_n = count > 0 ? a.items[begin + count - 1].n : kC;
  const int full = last_n < kC ? count - 1 : count;  // chunks after which the state advances
  auto rows_of = [&](int rel) { return rel + 1 < count ? kC : last_n; };
#pragma unroll
  for (int c = 0; c < F::kStages - 1; ++c) {
    if (c < count)
      IssueFusedChunk<kD>(a, row0 + c * kC, rows_of(c), head, b0, slots + c * F::kSlot);
    CpAsyncCommit();
  }
  const int64_t ld = int64_t{a.h} * kD;
  for (int rel = 0; rel < count; ++rel) {
    CpAsyncWait<F::kStages - 2>();  // chunk rel's group has landed (this thread's part)
    __syncthreads();  // everyone's part; the slot refilled next, P and the other S buffer are free
    const int next = rel + F::kStages - 1;
    if (next < count) {
      IssueFusedChunk<kD>(a, row0 + int64_t{next} * kC, rows_of(next), head, b0,
                          slots + next % F::kStages * F::kSlot);
    }
    CpAsyncCommit();
    if (owner && a.states != nullptr)
      put_f32(a.states + (int64_t{begin + rel} * a.h + head) * dd, st);
    bf16* slot = slots + rel % F::kStages * F::kSlot;
    s.q = slot, s.k = slot + kC * L::kLdr, s.v = slot + 2 * kC * L::kLdr;
    s.s = sbuf + rel % 2 * kD * F::kLdw;
    ChunkP<kD>(s, warp % 4, warp / 4, 2);
    __syncthreads();
    const int n = rows_of(rel);
    const int64_t r0 = row0 + int64_t{rel} * kC;
    OutputTile<kD, 1>(s, a.scale, warp % 4, 8 * (warp / 4), [&](int i, int b, float x0, float x1) {
      if (i < n) Store2(a.o, (r0 + i) * ld + head * kD + b0 + b, x0, x1);
    });
    if (rel >= full) break;  // the sequence's partial last chunk: no state after it
    if (owner) {
      float sum[F::kBn][4];
      BoundaryTile<F::kBn>(s.k + 16 * rt, L::kLdr, s.v + 8 * nt0, F::kLdw, ps, sum);
#pragma unroll
      for (int nt = 0; nt < F::kBn; ++nt) {
#pragma unroll
        for (int e = 0; e < 4; ++e) st[nt][e] = NextState(pow_c, st[nt][e], sum[nt][e]);
      }
      put_bf16(sbuf + (rel + 1) % 2 * kD * F::kLdw, st);
    }
  }
  CpAsyncWait<0>();
  if (owner && a.boundary != nullptr) put_f32(a.boundary + sh * dd, st);
}

template <int kD>
cudaError_t LaunchFusedTc(cudaStream_t stream, const TcFwdArgs& a, int batch) {
  using F = FusedShape<kD>;
  constexpr int smem = static_cast<int>(F::kBytes);
  const cudaError_t e = AllowSmem<&FusedKernelTc<kD>>(smem);
  if (e != cudaSuccess) return e;
  FwdPhaseEvents* ev = ForwardPhaseEvents();
  if (ev != nullptr) cudaEventRecord(ev->start, stream);
  FusedKernelTc<kD><<<dim3(batch * a.h, kD / F::kW), kFusedThreads, smem, stream>>>(a);
  if (ev != nullptr) {
    cudaEventRecord(ev->scanned, stream);
    cudaEventRecord(ev->done, stream);
  }
  return cudaGetLastError();
}

}  // namespace tandem::kernels::cuda::linear
