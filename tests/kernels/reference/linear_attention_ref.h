// Plain-recurrence reference for linear attention with a per-head decay (MODEL.md §2):
//   S_t = λ·S_{t−1} + k_tᵀ v_t,   o_t = s · q_t S_t,   λ = exp(−x_h),
// and its backward, written for clarity. Templated on the scalar: fp64 is the reference, fp32
// gives the "same precision" error estimate AllClose accepts. No chunking anywhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/core/contract.h"

namespace tandem::testing::ref {

struct LinearAttentionDims {
  int64_t h = 0, d = 0;
  double scale = 0;
  std::vector<int32_t> cu;  // cu_seqlens [B + 1]
  int64_t b() const { return static_cast<int64_t>(cu.size()) - 1; }
  int64_t t() const { return cu.back(); }
  // First token of sequence `seq`, head `head`, position `t` within the sequence, in a [T, H, D].
  int64_t Row(int64_t seq, int64_t t, int64_t head) const { return ((cu[seq] + t) * h + head) * d; }
};

template <typename R>
struct LinearAttentionRefOut {
  std::vector<R> o;               // [T, H, D]
  std::vector<R> chunk_states;    // [NC, H, D, D]: the state before every chunk
  std::vector<R> boundary_state;  // [B, H, D, D]: the state after the last full chunk
};

// S_0..S_n of one (sequence, head), S_n being the state after n tokens; each [D, D].
// init is [B, H, D, D] or empty (zeros).
template <typename R>
std::vector<std::vector<R>> LinearAttentionRefStates(const LinearAttentionDims& m, int64_t seq,
                                                     int64_t head, const std::vector<R>& k,
                                                     const std::vector<R>& v, R x,
                                                     const std::vector<R>& init) {
  const int64_t d = m.d, len = m.cu[seq + 1] - m.cu[seq];
  const R lambda = std::exp(-x);
  std::vector<std::vector<R>> s(len + 1, std::vector<R>(d * d, R(0)));
  if (!init.empty()) {
    for (int64_t e = 0; e < d * d; ++e) s[0][e] = init[(seq * m.h + head) * d * d + e];
  }
  for (int64_t t = 0; t < len; ++t) {
    const R* kt = &k[m.Row(seq, t, head)];
    const R* vt = &v[m.Row(seq, t, head)];
    for (int64_t a = 0; a < d; ++a) {
      for (int64_t b = 0; b < d; ++b)
        s[t + 1][a * d + b] = lambda * s[t][a * d + b] + kt[a] * vt[b];
    }
  }
  return s;
}

template <typename R>
LinearAttentionRefOut<R> LinearAttentionRefFwd(const LinearAttentionDims& m,
                                               const std::vector<R>& q, const std::vector<R>& k,
                                               const std::vector<R>& v, const std::vector<R>& x,
                                               const std::vector<R>& init) {
  const int64_t h = m.h, d = m.d, dd = d * d, c = kLinearAttentionChunk;
  int64_t nc = 0;
  for (int64_t seq = 0; seq < m.b(); ++seq) nc += (m.cu[seq + 1] - m.cu[seq] + c - 1) / c;
  LinearAttentionRefOut<R> out{std::vector<R>(m.t() * h * d), std::vector<R>(nc * h * dd),
                               std::vector<R>(m.b() * h * dd)};
  int64_t chunk0 = 0;
  for (int64_t seq = 0; seq < m.b(); ++seq) {
    const int64_t len = m.cu[seq + 1] - m.cu[seq];
    for (int64_t head = 0; head < h; ++head) {
      auto s = LinearAttentionRefStates(m, seq, head, k, v, x[head], init);
      for (int64_t t = 0; t < len; ++t) {
        for (int64_t b = 0; b < d; ++b) {
          R acc = 0;
          for (int64_t a = 0; a < d; ++a) acc += q[m.Row(seq, t, head) + a] * s[t + 1][a * d + b];
          out.o[m.Row(seq, t, head) + b] = R(m.scale) * acc;
        }
      }
      for (int64_t ci = 0; ci * c < len; ++ci) {
        for (int64_t e = 0; e < dd; ++e)
          out.chunk_states[((chunk0 + ci) * h + head) * dd + e] = s[ci * c][e];
      }
      for (int64_t e = 0; e < dd; ++e)
        out.boundary_state[(seq * h + head) * dd + e] = s[len / c * c][e];
    }
    chunk0 += (len + c - 1) / c;
  }
  return out;
}

template <typename R>
struct LinearAttentionRefGrads {
  std::vector<R> dq, dk, dv, d_init;  // [T, H, D] ×3, [B, H, D, D]
};

// Backward of the recurrence for the loss Σ o·d_o, token by token from the last:
//   dS += s·q_tᵀ do_t;  dq_t = s·S_t do_tᵀ;  dk_t = dS v_tᵀ;  dv_t = k_t dS;  dS ← λ·dS.
template <typename R>
LinearAttentionRefGrads<R> LinearAttentionRefBwd(const LinearAttentionDims& m,
                                                 const std::vector<R>& q, const std::vector<R>& k,
                                                 const std::vector<R>& v, const std::vector<R>& x,
                                                 const std::vector<R>& init,
                                                 const std::vector<R>& d_o) {
  const int64_t h = m.h, d = m.d, dd = d * d;
  const R scale = R(m.scale);
  LinearAttentionRefGrads<R> g{std::vector<R>(q.size()), std::vector<R>(q.size()),
                               std::vector<R>(q.size()), std::vector<R>(m.b() * h * dd)};
  for (int64_t seq = 0; seq < m.b(); ++seq) {
    for (int64_t head = 0; head < h; ++head) {
      auto s = LinearAttentionRefStates(m, seq, head, k, v, x[head], init);
      std::vector<R> ds(dd, R(0));
      for (int64_t t = m.cu[seq + 1] - m.cu[seq] - 1; t >= 0; --t) {
        const int64_t r = m.Row(seq, t, head);
        for (int64_t a = 0; a < d; ++a) {
          R dq = 0;
          for (int64_t b = 0; b < d; ++b) {
            ds[a * d + b] += scale * q[r + a] * d_o[r + b];
            dq += scale * s[t + 1][a * d + b] * d_o[r + b];
          }
          g.dq[r + a] = dq;
        }
        for (int64_t a = 0; a < d; ++a) {
          for (int64_t b = 0; b < d; ++b) {
            g.dk[r + a] += ds[a * d + b] * v[r + b];
            g.dv[r + b] += k[r + a] * ds[a * d + b];
          }
        }
        for (R& e : ds) e *= std::exp(-x[head]);
      }
      for (int64_t e = 0; e < dd; ++e) g.d_init[(seq * h + head) * dd + e] = ds[e];
    }
  }
  return g;
}

}  // namespace tandem::testing::ref
