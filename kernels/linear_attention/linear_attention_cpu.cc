// CPU chunked linear attention forward and decode. Threads split (sequence, head) pairs only; each
// pair runs its chunks in order with the shared pieces of linear_attention_pieces.cc, so outputs do
// not depend on the thread count, on the packing, or on whether a token came through prefill or
// decode (contract rule 3).
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/linear_attention/linear_attention_internal.h"

#ifdef TANDEM_HAVE_CUDA
#include "kernels/linear_attention/linear_attention_cuda.h"
#endif

namespace tandem::kernels {
namespace {

using cpu::kChunk;

// Per-thread scratch for one (sequence, head) pair.
struct HeadScratch {
  explicit HeadScratch(int64_t d)
      : chunk(d), state(new float[d * d]), kwt(new float[d * kChunk]), acc(new float[d * d]) {}
  cpu::ChunkScratch chunk;
  std::unique_ptr<float[]> state, kwt, acc;  // [D, D] [D, C] [D, D]
  float pow[kChunk + 1];
};

struct FwdArgs {
  const LinearAttentionParams& p;
  const float *q, *k, *v, *decay, *initial_state;  // initial_state may be null
  const int32_t* cu;
  const int64_t* chunk_start;
  float *o, *chunk_states, *boundary_state;  // the two states may be null
};

void ForwardOneHead(const FwdArgs& a, int64_t seq, int64_t head, HeadScratch& s) {
  const int64_t h = a.p.num_heads, d = a.p.head_dim, ld = h * d, dd = d * d;
  float* state = s.state.get();
  LinearAttentionDecayPowers(a.decay[head], s.pow);
  if (a.initial_state != nullptr) {
    std::memcpy(state, a.initial_state + (seq * h + head) * dd, dd * sizeof(float));
  } else {
    std::fill(state, state + dd, 0.0f);
  }
  int64_t chunk = a.chunk_start[seq];
  for (int64_t c0 = a.cu[seq]; c0 < a.cu[seq + 1]; c0 += kChunk, ++chunk) {
    const int64_t n = std::min<int64_t>(kChunk, a.cu[seq + 1] - c0);
    if (a.chunk_states != nullptr) {
      std::memcpy(a.chunk_states + (chunk * h + head) * dd, state, dd * sizeof(float));
    }
    const int64_t off = (c0 * h + head) * d;
    if (c0 + kChunk < a.cu[seq + 1]) {
      const int64_t next = off + kChunk * ld;
      cpu::PrefetchRows(std::min<int64_t>(kChunk, a.cu[seq + 1] - c0 - kChunk), d, ld, a.q + next,
                        a.k + next, a.v + next);
    }
    cpu::ChunkOutputs(0, n, d, a.q + off, ld, a.k + off, a.v + off, ld, state, s.pow, a.p.scale,
                      s.chunk, a.o + off, ld);
    if (n == kChunk) {
      cpu::BoundaryUpdate(d, a.k + off, ld, a.v + off, ld, s.pow, s.kwt.get(), s.acc.get(), state);
    }
  }
  if (a.boundary_state != nullptr) {
    std::memcpy(a.boundary_state + (seq * h + head) * dd, state, dd * sizeof(float));
  }
}

float* DataOrNull(Tensor& t) { return t.defined() ? t.data<float>() : nullptr; }

}  // namespace

absl::Status LinearAttentionFwd(const Context& ctx, const LinearAttentionParams& p, const Tensor& q,
                                const Tensor& k, const Tensor& v, const Tensor& decay,
                                const Tensor& cu_seqlens, const Tensor& initial_state, Tensor& o,
                                Tensor& chunk_states, Tensor& boundary_state) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::LinearAttentionFwd(ctx, p, q, k, v, decay, cu_seqlens, initial_state, o,
                                    chunk_states, boundary_state));
  TANDEM_RETURN_IF_ERROR(cpu::CheckQkv(p, q, k, v, decay));
  const int64_t t = q.dim(0), h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(cpu::CheckCuSeqlens(cu_seqlens, t));
  const int64_t b = cu_seqlens.dim(0) - 1;
  const int32_t* cu = cu_seqlens.data<int32_t>();
  const std::vector<int64_t> chunk_start = cpu::ChunkStarts(cu, b);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o, "o", DType::kF32, {t, h, d}));
  TANDEM_RETURN_IF_ERROR(cpu::CheckStateOrUndefined(initial_state, "initial_state", b, h, d));
  TANDEM_RETURN_IF_ERROR(
      cpu::CheckStateOrUndefined(chunk_states, "chunk_states", chunk_start[b], h, d));
  TANDEM_RETURN_IF_ERROR(cpu::CheckStateOrUndefined(boundary_state, "boundary_state", b, h, d));

  const FwdArgs args{p,
                     q.data<float>(),
                     k.data<float>(),
                     v.data<float>(),
                     decay.data<float>(),
                     initial_state.defined() ? initial_state.data<float>() : nullptr,
                     cu,
                     chunk_start.data(),
                     o.data<float>(),
                     DataOrNull(chunk_states),
                     DataOrNull(boundary_state)};
  ctx.ParallelFor(b * h, [&](int64_t w0, int64_t w1) {
    HeadScratch scratch(d);
    for (int64_t w = w0; w < w1; ++w) ForwardOneHead(args, w / h, w % h, scratch);
  });
  return absl::OkStatus();
}

namespace {

absl::Status CheckDecodeState(const LinearAttentionParams& p, int64_t b, const Tensor& state,
                              const Tensor& open_k, const Tensor& open_v, const Tensor& open_len,
                              const Tensor& o) {
  const int64_t h = p.num_heads, d = p.head_dim;
  TANDEM_RETURN_IF_ERROR(ExpectTensor(state, "state", DType::kF32, {b, h, d, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(open_k, "open_k", DType::kF32, {b, kChunk, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(open_v, "open_v", DType::kF32, {b, kChunk, h, d}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(open_len, "open_len", DType::kI32, {b}));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(o, "o", DType::kF32, {b, h, d}));
  for (int64_t i = 0; i < b; ++i) {
    const int32_t len = open_len.data<int32_t>()[i];
    TANDEM_CHECK_ARG(len >= 0 && len < kChunk, "open_len[", i, "]: must be in [0, ", kChunk,
                     "), got ", len);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status LinearAttentionDecode(const Context& ctx, const LinearAttentionParams& p,
                                   const Tensor& q, const Tensor& k, const Tensor& v,
                                   const Tensor& decay, Tensor& state, Tensor& open_k,
                                   Tensor& open_v, Tensor& open_len, Tensor& o) {
  TANDEM_DISPATCH_CUDA(
      ctx, cuda::LinearAttentionDecode(ctx, p, q, k, v, decay, state, open_k, open_v, open_len, o));
  TANDEM_RETURN_IF_ERROR(cpu::CheckQkv(p, q, k, v, decay));
  const int64_t b = q.dim(0), h = p.num_heads, d = p.head_dim, ld = h * d, dd = d * d;
  TANDEM_RETURN_IF_ERROR(CheckDecodeState(p, b, state, open_k, open_v, open_len, o));
  int32_t* lens = open_len.data<int32_t>();
  ctx.ParallelFor(b * h, [&](int64_t w0, int64_t w1) {
    HeadScratch s(d);
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t seq = w / h, head = w % h, i = lens[seq];
      const int64_t row = (seq * h + head) * d;            // in q, k, v, o
      const int64_t open = (seq * kChunk * h + head) * d;  // chunk row 0 in open_k, open_v
      float* ok = open_k.data<float>() + open;
      float* ov = open_v.data<float>() + open;
      std::memcpy(ok + i * ld, k.data<float>() + row, d * sizeof(float));
      std::memcpy(ov + i * ld, v.data<float>() + row, d * sizeof(float));
      LinearAttentionDecayPowers(decay.data<float>()[head], s.pow);
      float* st = state.data<float>() + w * dd;
      cpu::ChunkOutputs(i, i + 1, d, q.data<float>() + row, ld, ok, ov, ld, st, s.pow, p.scale,
                        s.chunk, o.data<float>() + row, ld);
      if (i + 1 == kChunk) {
        cpu::BoundaryUpdate(d, ok, ld, ov, ld, s.pow, s.kwt.get(), s.acc.get(), st);
      }
    }
  });
  for (int64_t seq = 0; seq < b; ++seq) lens[seq] = (lens[seq] + 1) % kChunk;
  return absl::OkStatus();
}

}  // namespace tandem::kernels
