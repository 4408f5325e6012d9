// CPU backward of causal GQA softmax attention, deterministic without atomics. P is recomputed
// from the saved lse; with δ_i = rowsum(dO_i ∘ O_i) and dS_ij = P_ij·(dO_i·v_j − δ_i):
//   dq_i = scale·Σ_{j≤i} dS_ij·k_j          (one pass per query row, keys ascending)
//   dk_j = scale·Σ_h Σ_{i≥j} dS_ij·q_i,  dv_j = Σ_h Σ_{i≥j} P_ij·dO_i
//                                           (one pass per key row, heads then queries ascending)
// Every gradient element is owned by one work item, so the thread count never changes a bit.
#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/softmax_attention/attention_internal.h"
#include "kernels/softmax_attention/attention_row.h"
#include "kernels/softmax_attention/softmax_attention.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/softmax_attention/softmax_attention_bwd_cuda.h"
#endif

namespace tandem::kernels {
namespace {

// Pointers and sizes shared by the two passes.
struct BwdArgs {
  const float* q;      // [T, H, D]
  const float* k;      // [T, Hkv, D]
  const float* v;      // [T, Hkv, D]
  const float* lse;    // [T, H]
  const float* d_o;    // [T, H, D]
  const float* delta;  // [T, H] rowsum(dO ∘ O)
  int64_t H, Hkv, D;
  float scale;
};

// dq for query rows pos0..pos1 of the heads of kv head g.
void DqBlock(const cpu::VectorKernels& kern, const BwdArgs& a, const internal::RowBlock& it,
             float* dq, float* acc) {
  const int64_t group = a.H / a.Hkv, D = a.D;
  for (int64_t pos = it.pos0; pos < it.pos1; ++pos) {
    for (int64_t h = it.kv_head * group; h < (it.kv_head + 1) * group; ++h) {
      const int64_t row = (it.seq_start + pos) * a.H + h;
      const float* qi = a.q + row * D;
      const float* doi = a.d_o + row * D;
      std::fill(acc, acc + D, 0.0f);
      for (int64_t j = 0; j <= pos; ++j) {
        const int64_t kv_off = ((it.seq_start + j) * a.Hkv + it.kv_head) * D;
        const float p = std::exp(a.scale * kern.dot(qi, a.k + kv_off, D) - a.lse[row]);
        const float ds = p * (kern.dot(doi, a.v + kv_off, D) - a.delta[row]);
        kern.axpy(ds, a.k + kv_off, acc, D);
      }
      for (int64_t i = 0; i < D; ++i) dq[row * D + i] = a.scale * acc[i];
    }
  }
}

// dk, dv for key rows pos0..pos1 of kv head g.
void DkDvBlock(const cpu::VectorKernels& kern, const BwdArgs& a, const internal::RowBlock& it,
               float* dk, float* dv, float* work) {
  const int64_t group = a.H / a.Hkv, D = a.D;
  float* dk_acc = work;
  float* dv_acc = work + D;
  for (int64_t pos = it.pos0; pos < it.pos1; ++pos) {
    const int64_t kv_row = (it.seq_start + pos) * a.Hkv + it.kv_head;
    const float* kj = a.k + kv_row * D;
    const float* vj = a.v + kv_row * D;
    std::fill(work, work + 2 * D, 0.0f);
    for (int64_t h = it.kv_head * group; h < (it.kv_head + 1) * group; ++h) {
      for (int64_t i = pos; i < it.seq_len; ++i) {
        const int64_t row = (it.seq_start + i) * a.H + h;
        const float* qi = a.q + row * D;
        const float* doi = a.d_o + row * D;
        const float p = std::exp(a.scale * kern.dot(qi, kj, D) - a.lse[row]);
        kern.axpy(p, doi, dv_acc, D);
        const float ds = p * (kern.dot(doi, vj, D) - a.delta[row]);
        kern.axpy(ds, qi, dk_acc, D);
      }
    }
    for (int64_t i = 0; i < D; ++i) {
      dk[kv_row * D + i] = a.scale * dk_acc[i];
      dv[kv_row * D + i] = dv_acc[i];
    }
  }
}

}  // namespace

absl::Status SoftmaxAttentionBwd(const Context& ctx, const SoftmaxAttentionParams& p,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& cu_seqlens, const Tensor& o, const Tensor& lse,
                                 const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::SoftmaxAttentionBwd(ctx, p, q, k, v, cu_seqlens, o, lse, d_o, dq, dk, dv));
  TANDEM_RETURN_IF_ERROR(internal::CheckPackedInputs(p, q, k, v, cu_seqlens));
  const int64_t T = q.dim(0), H = p.num_heads, Hkv = p.num_kv_heads, D = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o, "o", DType::kF32, {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(lse, "lse", DType::kF32, {T, H}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(d_o, "d_o", DType::kF32, {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dq, "dq", DType::kF32, {T, H, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dk, "dk", DType::kF32, {T, Hkv, D}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dv, "dv", DType::kF32, {T, Hkv, D}));
  const cpu::VectorKernels& kern = cpu::Kernels();
  std::vector<float> delta(T * H);  // [T, H]
  ctx.ParallelFor(T * H, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      delta[r] = kern.dot(d_o.data<float>() + r * D, o.data<float>() + r * D, D);
    }
  });
  const BwdArgs args{q.data<float>(),
                     k.data<float>(),
                     v.data<float>(),
                     lse.data<float>(),
                     d_o.data<float>(),
                     delta.data(),
                     H,
                     Hkv,
                     D,
                     p.scale};
  const std::vector<internal::RowBlock> items = internal::MakeRowBlocks(cu_seqlens, Hkv);
  const int64_t n = static_cast<int64_t>(items.size());
  internal::RoundRobin(ctx, n, D, [&](int64_t i, float* work) {
    DqBlock(kern, args, items[i], dq.data<float>(), work);
  });
  internal::RoundRobin(ctx, n, 2 * D, [&](int64_t i, float* work) {
    DkDvBlock(kern, args, items[i], dk.data<float>(), dv.data<float>(), work);
  });
  return absl::OkStatus();
}

}  // namespace tandem::kernels
