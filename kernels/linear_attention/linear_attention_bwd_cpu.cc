// CPU chunked linear attention backward from the saved chunk states. For chunk c with state S_c
// and dS the gradient of the state after the chunk (zero after a sequence's last chunk):
//   dq_i = s·(λ^{i+1}·S_c do_iᵀ + Σ_{j≤i} λ^{i−j}(do_i·v_j) k_j)          (the forward's form)
//   dk_j = s·Σ_{i≥j} λ^{i−j}(v_j·do_i) q_i + λ^{C−1−j}·dS v_jᵀ
//   dv_j = s·Σ_{i≥j} λ^{i−j}(k_j·q_i) do_i + λ^{C−1−j}·k_j dS
//   dS_c = λ^C·dS + Σ_i (s·λ^{i+1}·q_i)ᵀ do_i
// Threads split (sequence, head) pairs only: deterministic for any thread count.
#include <algorithm>
#include <cstring>

#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/linear_attention/linear_attention_internal.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/linear_attention/linear_attention_bwd_cuda.h"
#endif

namespace tandem::kernels {
namespace {

using cpu::kChunk;

struct BwdScratch {
  explicit BwdScratch(int64_t d)
      : chunk(d),
        st(new float[d * d]),
        ds(new float[d * d]),
        dst(new float[d * d]),
        acc(new float[d * d]),
        qwt(new float[d * kChunk]) {}
  cpu::ChunkScratch chunk;
  std::unique_ptr<float[]> st, ds, dst, acc, qwt;  // [D,D] ×4, [D,C]
  float pow[kChunk + 1];
};

// out_j = s·Σ_{i=j..n−1} pow[i−j]·(a_j·b_i)·c_i + pow[C−1−j]·(a_j m), j < n; m is [D, D].
void AntiCausalRows(int64_t n, int64_t d, const float* a, const float* b, const float* c,
                    int64_t ld, const float* m, const float* pow, float scale, cpu::ChunkScratch& s,
                    float* out) {
  float* bt = s.kt.get();
  float* scores = s.scores.get();  // [j, i] = a_j·b_i
  float* state_term = s.inter.get();
  cpu::TransposeRows(n, d, b, ld, bt, kChunk);
  cpu::Scores(n, n, d, a, ld, bt, scores);
  cpu::InterTerm(n, d, a, ld, m, state_term);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t i = j; i < n; ++i) s.w[i - j] = pow[i - j] * scores[j * kChunk + i];
    cpu::ActiveVecMat()(1, n - j, d, s.w.get(), 0, c + j * ld, ld, s.intra.get(), d);
    const float decay = pow[kChunk - 1 - j];
    for (int64_t x = 0; x < d; ++x) {
      out[j * ld + x] = scale * s.intra[x] + decay * state_term[j * d + x];
    }
  }
}

// ds = pow[C]·ds + Σ_{i<n} (s·pow[i+1]·q_i)ᵀ do_i.
void StateGradStep(int64_t n, int64_t d, const float* q, const float* d_o, int64_t ld,
                   const float* pow, float scale, BwdScratch& s) {
  float* qwt = s.qwt.get();
  for (int64_t a = 0; a < d; ++a) {
    for (int64_t i = 0; i < n; ++i) qwt[a * kChunk + i] = (scale * pow[i + 1]) * q[i * ld + a];
  }
  cpu::ActiveVecMat()(d, n, d, qwt, kChunk, d_o, ld, s.acc.get(), d);
  for (int64_t e = 0; e < d * d; ++e) s.ds[e] = pow[kChunk] * s.ds[e] + s.acc[e];
}

struct BwdArgs {
  const LinearAttentionParams& p;
  const float *q, *k, *v, *decay, *chunk_states, *d_o;
  const int32_t* cu;
  const int64_t* chunk_start;
  float *dq, *dk, *dv, *d_initial_state;  // d_initial_state may be null
};

void BackwardOneHead(const BwdArgs& a, int64_t seq, int64_t head, BwdScratch& s) {
  const int64_t h = a.p.num_heads, d = a.p.head_dim, ld = h * d, dd = d * d;
  const float scale = a.p.scale;
  LinearAttentionDecayPowers(a.decay[head], s.pow);
  std::fill(s.ds.get(), s.ds.get() + dd, 0.0f);
  const int64_t begin = a.cu[seq], len = a.cu[seq + 1] - begin;
  for (int64_t c = (len + kChunk - 1) / kChunk - 1; c >= 0; --c) {
    const int64_t c0 = begin + c * kChunk, n = std::min<int64_t>(kChunk, a.cu[seq + 1] - c0);
    const int64_t off = (c0 * h + head) * d;
    if (c > 0) {  // the previous chunk comes next
      const int64_t prev = off - kChunk * ld;
      cpu::PrefetchRows(kChunk, d, ld, a.q + prev, a.k + prev, a.v + prev);
    }
    const float* state = a.chunk_states + ((a.chunk_start[seq] + c) * h + head) * dd;
    cpu::TransposeRows(d, d, state, d, s.st.get(), d);
    cpu::ChunkOutputs(0, n, d, a.d_o + off, ld, a.v + off, a.k + off, ld, s.st.get(), s.pow, scale,
                      s.chunk, a.dq + off, ld);
    cpu::TransposeRows(d, d, s.ds.get(), d, s.dst.get(), d);
    AntiCausalRows(n, d, a.v + off, a.d_o + off, a.q + off, ld, s.dst.get(), s.pow, scale, s.chunk,
                   a.dk + off);
    AntiCausalRows(n, d, a.k + off, a.q + off, a.d_o + off, ld, s.ds.get(), s.pow, scale, s.chunk,
                   a.dv + off);
    StateGradStep(n, d, a.q + off, a.d_o + off, ld, s.pow, scale, s);
  }
  if (a.d_initial_state != nullptr) {
    std::memcpy(a.d_initial_state + (seq * h + head) * dd, s.ds.get(), dd * sizeof(float));
  }
}

}  // namespace

absl::Status LinearAttentionBwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& chunk_states,
                                const Tensor& d_o, Tensor& dq, Tensor& dk, Tensor& dv,
                                Tensor& d_initial_state) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::LinearAttentionBwd(ctx, p, q, k, v, decay, cu_seqlens, chunk_states, d_o, dq, dk,
                                    dv, d_initial_state));
  TANDEM_RETURN_IF_ERROR(cpu::CheckQkv(p, q, k, v, decay));
  const int64_t t = q.dim(0), h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(cpu::CheckCuSeqlens(cu_seqlens, t));
  const int64_t b = cu_seqlens.dim(0) - 1;
  const int32_t* cu = cu_seqlens.data<int32_t>();
  const std::vector<int64_t> chunk_start = cpu::ChunkStarts(cu, b);
  TANDEM_RETURN_IF_ERROR(
      ExpectTensor(chunk_states, "chunk_states", DType::kF32, {chunk_start[b], h, d, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(d_o, "d_o", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dq, "dq", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dk, "dk", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dv, "dv", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(cpu::CheckStateOrUndefined(d_initial_state, "d_initial_state", b, h, d));

  const BwdArgs args{p,
                     q.data<float>(),
                     k.data<float>(),
                     v.data<float>(),
                     decay.data<float>(),
                     chunk_states.data<float>(),
                     d_o.data<float>(),
                     cu,
                     chunk_start.data(),
                     dq.data<float>(),
                     dk.data<float>(),
                     dv.data<float>(),
                     d_initial_state.defined() ? d_initial_state.data<float>() : nullptr};
  ctx.ParallelFor(b * h, [&](int64_t w0, int64_t w1) {
    BwdScratch scratch(d);
    for (int64_t w = w0; w < w1; ++w) BackwardOneHead(args, w / h, w % h, scratch);
  });
  return absl::OkStatus();
}

}  // namespace tandem::kernels
