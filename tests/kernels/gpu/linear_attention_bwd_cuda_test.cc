// Tests for the CUDA chunked linear attention backward: dq, dk, dv and d_initial_state against the
// CPU LinearAttentionBwd on the same bf16-rounded inputs and the CPU forward's chunk states
// (packed sequences of 1, 63, 64, 65, 200 and 1030 tokens, a nonzero initial state, head dims
// 32/64/128), within a bound derived from the kernel's bf16 MMA operand roundings; bitwise
// promises: two runs agree, a sequence alone equals the same sequence packed with others, bf16
// outputs are the f32 ones rounded once, f32 inputs holding bf16 values equal bf16 inputs, bf16
// chunk states (what a bf16 GPU forward saves) give the f32 states' gradients; and argument
// errors (checked without a GPU too).
#include "kernels/linear_attention/linear_attention_bwd_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/linear_attention/linear_attention.h"
#include "kernels/linear_attention/linear_attention_cuda.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::RoundedToBf16;
using testing::ToDevice;
using testing::ToHostFloats;

constexpr int64_t kC = kLinearAttentionChunk;
using Vec = std::vector<float>;

Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

std::vector<int32_t> CuSeqlens(const std::vector<int32_t>& lens) {
  std::vector<int32_t> cu = {0};
  for (int32_t len : lens) cu.push_back(cu.back() + len);
  return cu;
}

int64_t NumChunks(const std::vector<int32_t>& cu) {
  int64_t nc = 0;
  for (size_t b = 0; b + 1 < cu.size(); ++b) nc += (cu[b + 1] - cu[b] + kC - 1) / kC;
  return nc;
}

// λ^C from 0.53 (the state carries far) to 2e-20 (chunks nearly independent).
Tensor Decays(int64_t h) {
  const float x[] = {0.01f, 0.1f, 0.7f};
  std::vector<float> v(h);
  for (int64_t i = 0; i < h; ++i) v[i] = x[i % 3];
  return Tensor::FromVector(v, {h});
}

// One problem: bf16-valued inputs, the CPU forward's chunk states and the CPU backward's grads.
struct Problem {
  int64_t t, h, d, b, nc;
  std::vector<int32_t> cu;
  LinearAttentionParams p;
  Tensor decay;
  Vec q, k, v, d_o, states, dq, dk, dv, dinit;  // the last four from the CPU backward
};

Vec Floats(const Tensor& t) { return Vec(t.data<float>(), t.data<float>() + t.numel()); }

Problem MakeProblem(const std::vector<int32_t>& lens, int64_t h, int64_t d, uint64_t seed) {
  Problem pr;
  pr.cu = CuSeqlens(lens);
  pr.t = pr.cu.back(), pr.h = h, pr.d = d, pr.b = lens.size(), pr.nc = NumChunks(pr.cu);
  pr.p = {h, d, 1.0f / std::sqrt(static_cast<float>(d))};
  pr.decay = Decays(h);
  const int64_t n = pr.t * h * d, t = pr.t, b = pr.b, nc = pr.nc;
  pr.q = RoundedToBf16(RandomVector(n, seed + 1));
  pr.k = RoundedToBf16(RandomVector(n, seed + 2));
  pr.v = RoundedToBf16(RandomVector(n, seed + 3));
  pr.d_o = RoundedToBf16(RandomVector(n, seed + 4));
  const Vec s0 = RandomVector(b * h * d * d, seed + 5, -0.5f, 0.5f);
  const Context ctx = Context::Cpu(2);
  auto rows = [&](const Vec& x) { return Tensor::FromVector(x, {t, h, d}); };
  Tensor o = Tensor::Empty({t, h, d}, DType::kF32), none;
  Tensor states = Tensor::Empty({nc, h, d, d}, DType::kF32);
  EXPECT_TRUE(LinearAttentionFwd(ctx, pr.p, rows(pr.q), rows(pr.k), rows(pr.v), pr.decay,
                                 HostI32(pr.cu), Tensor::FromVector(s0, {b, h, d, d}), o, states,
                                 none)
                  .ok());
  Tensor dq = Tensor::Empty({t, h, d}, DType::kF32), dk = Tensor::Empty({t, h, d}, DType::kF32);
  Tensor dv = Tensor::Empty({t, h, d}, DType::kF32);
  Tensor dinit = Tensor::Empty({b, h, d, d}, DType::kF32);
  EXPECT_TRUE(LinearAttentionBwd(ctx, pr.p, rows(pr.q), rows(pr.k), rows(pr.v), pr.decay,
                                 HostI32(pr.cu), states, rows(pr.d_o), dq, dk, dv, dinit)
                  .ok());
  pr.states = Floats(states), pr.dq = Floats(dq), pr.dk = Floats(dk), pr.dv = Floats(dv);
  pr.dinit = Floats(dinit);
  return pr;
}

// The GPU backward of pr with inputs in `in` storage and grads in `out` storage, as floats.
struct GpuGrads {
  Vec dq, dk, dv, dinit;
};
GpuGrads RunGpu(const Problem& pr, DType in, DType out, DType states = DType::kF32) {
  const int64_t t = pr.t, h = pr.h, d = pr.d;
  Tensor dq = Tensor::Empty({t, h, d}, out, Device::kCUDA);
  Tensor dk = Tensor::Empty({t, h, d}, out, Device::kCUDA);
  Tensor dv = Tensor::Empty({t, h, d}, out, Device::kCUDA);
  Tensor dinit = Tensor::Empty({pr.b, h, d, d}, DType::kF32, Device::kCUDA);
  const absl::Status s = cuda::LinearAttentionBwd(
      GpuTestContext(), pr.p, ToDevice(pr.q, {t, h, d}, in), ToDevice(pr.k, {t, h, d}, in),
      ToDevice(pr.v, {t, h, d}, in), pr.decay, HostI32(pr.cu),
      ToDevice(pr.states, {pr.nc, h, d, d}, states), ToDevice(pr.d_o, {t, h, d}, in), dq, dk, dv,
      dinit);
  EXPECT_TRUE(s.ok()) << s;
  return {ToHostFloats(dq), ToHostFloats(dk), ToHostFloats(dv), ToHostFloats(dinit)};
}

// Σ|term| of every gradient element: the backward's formulas in fp64 on absolute values.
struct Magnitudes {
  std::vector<double> dq, dk, dv, dinit;
};
Magnitudes MagnitudesOf(const Problem& pr) {
  const int64_t h = pr.h, d = pr.d, dd = d * d;
  const double s = std::fabs(pr.p.scale);
  Magnitudes m{std::vector<double>(pr.q.size()), std::vector<double>(pr.q.size()),
               std::vector<double>(pr.q.size()), std::vector<double>(pr.b * h * dd)};
  auto at = [&](const Vec& x, int64_t row, int64_t head, int64_t e) {
    return std::fabs(static_cast<double>(x[(row * h + head) * d + e]));
  };
  std::vector<double> ds(dd), sv(kC * kC), sk(kC * kC);
  for (int64_t seq = 0, chunk0 = 0; seq < pr.b; ++seq) {
    const int64_t begin = pr.cu[seq], len = pr.cu[seq + 1] - begin, nch = (len + kC - 1) / kC;
    for (int64_t head = 0; head < h; ++head) {
      float powf[kC + 1];
      LinearAttentionDecayPowers(pr.decay.data<float>()[head], powf);
      std::fill(ds.begin(), ds.end(), 0.0);
      for (int64_t c = nch - 1; c >= 0; --c) {
        const int64_t c0 = begin + c * kC, n = std::min(kC, begin + len - c0);
        const float* st = pr.states.data() + ((chunk0 + c) * h + head) * dd;
        for (int64_t i = 0; i < n; ++i) {
          for (int64_t j = 0; j <= i; ++j) {
            double a = 0, b = 0;
            for (int64_t e = 0; e < d; ++e) {
              a += at(pr.d_o, c0 + i, head, e) * at(pr.v, c0 + j, head, e);
              b += at(pr.q, c0 + i, head, e) * at(pr.k, c0 + j, head, e);
            }
            sv[i * kC + j] = powf[i - j] * a, sk[i * kC + j] = powf[i - j] * b;
          }
        }
        for (int64_t r = 0; r < n; ++r) {
          const int64_t o = ((c0 + r) * h + head) * d;
          for (int64_t e = 0; e < d; ++e) {
            double q_state = 0, k_state = 0, v_state = 0, q_in = 0, k_in = 0, v_in = 0;
            for (int64_t x = 0; x < d; ++x) {
              q_state += at(pr.d_o, c0 + r, head, x) * std::fabs(st[e * d + x]);
              k_state += at(pr.v, c0 + r, head, x) * ds[e * d + x];
              v_state += at(pr.k, c0 + r, head, x) * ds[x * d + e];
            }
            for (int64_t j = 0; j <= r; ++j) q_in += sv[r * kC + j] * at(pr.k, c0 + j, head, e);
            for (int64_t i = r; i < n; ++i) {
              k_in += sv[i * kC + r] * at(pr.q, c0 + i, head, e);
              v_in += sk[i * kC + r] * at(pr.d_o, c0 + i, head, e);
            }
            m.dq[o + e] = s * (powf[r + 1] * q_state + q_in);
            m.dk[o + e] = s * k_in + powf[kC - 1 - r] * k_state;
            m.dv[o + e] = s * v_in + powf[kC - 1 - r] * v_state;
          }
        }
        for (int64_t a = 0; a < d; ++a) {
          for (int64_t e = 0; e < d; ++e) {
            double g = 0;
            for (int64_t i = 0; i < n; ++i) {
              g += s * powf[i + 1] * at(pr.q, c0 + i, head, a) * at(pr.d_o, c0 + i, head, e);
            }
            ds[a * d + e] = powf[kC] * ds[a * d + e] + g;
          }
        }
      }
      std::copy(ds.begin(), ds.end(), m.dinit.begin() + (seq * h + head) * dd);
    }
    chunk0 += nch;
  }
  return m;
}

// The bound on |GPU − CPU|. A bf16 operand carries a relative error ≤ u = 2^-8 (8-bit
// significand). The longest chain of roundings is two: dk, dv's state term uses dS rounded to
// bf16, and dS itself sums bf16-rounded s·λ^{i+1}·q_i; every other term passes one rounding (S_c,
// or a weighted score). So each term is off by ≤ (2u + u²)·|term|, and the sum by ≤ 2u·Σ|term|
// + fp32 accumulation on both sides (≤ a few hundred ulps of Σ|term|, under 1e-4 of it).
::testing::AssertionResult WithinBound(const Vec& gpu, const Vec& cpu,
                                       const std::vector<double>& mag, const char* what) {
  constexpr double kRel = 2.0 / 256.0 + 1e-4;
  size_t bad = 0, worst = 0;
  double worst_ratio = 0.0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double err = std::fabs(static_cast<double>(gpu[i]) - cpu[i]);
    const double ratio = err / (kRel * mag[i] + 1e-30);
    if (!(ratio <= 1.0)) ++bad;
    if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << what << ": " << bad << " of " << gpu.size() << " elements outside the bound; worst at "
         << worst << ": gpu " << gpu[worst] << " cpu " << cpu[worst] << " bound "
         << kRel * mag[worst];
}

// Per element within the derived bound, and globally (normalised squared error ≤ 1e-4, 25x the
// (u/√3)² of independent roundings) so that systematic errors smaller than the bound still fail.
void ExpectClose(const Vec& gpu, const Vec& cpu, const std::vector<double>& mag, const char* what) {
  EXPECT_TRUE(WithinBound(gpu, cpu, mag, what));
  testing::CompareOptions opt;
  opt.atol = (2.0 / 256.0 + 1e-4) * *std::max_element(mag.begin(), mag.end());
  opt.max_nmse = 1e-4;
  EXPECT_TRUE(AllClose(gpu, testing::ToDouble(cpu), opt)) << what;
}

void ExpectMatchesCpu(const Problem& pr, const GpuGrads& g) {
  const Magnitudes m = MagnitudesOf(pr);
  ExpectClose(g.dq, pr.dq, m.dq, "dq");
  ExpectClose(g.dk, pr.dk, m.dk, "dk");
  ExpectClose(g.dv, pr.dv, m.dv, "dv");
  ExpectClose(g.dinit, pr.dinit, m.dinit, "d_initial_state");
}

// Runs without a GPU: the magnitudes behind the bound really bound the CPU gradients.
TEST(LinearAttentionBwdCudaTest, MagnitudesBoundCpuGradients) {
  const Problem pr = MakeProblem({1, 65, 130}, 3, 64, 400);
  const Magnitudes m = MagnitudesOf(pr);
  const std::pair<const Vec*, const std::vector<double>*> pairs[] = {
      {&pr.dq, &m.dq}, {&pr.dk, &m.dk}, {&pr.dv, &m.dv}, {&pr.dinit, &m.dinit}};
  for (const auto& [values, mag] : pairs) {
    double ratio = 0.0;
    for (size_t i = 0; i < values->size(); ++i) {
      ASSERT_LE(std::fabs((*values)[i]), (*mag)[i] * (1.0 + 1e-5) + 1e-30) << "element " << i;
      ratio = std::max(ratio, std::fabs((*values)[i]) / ((*mag)[i] + 1e-30));
    }
    EXPECT_GT(ratio, 0.05);  // and are not vacuously large
  }
}

TEST(LinearAttentionBwdCudaTest, PackedSequencesMatchCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem pr = MakeProblem({1, 63, 64, 65, 200, 1030}, 3, 128, 100);
  const GpuGrads g = RunGpu(pr, DType::kBF16, DType::kF32);
  ExpectMatchesCpu(pr, g);
  // Deterministic: a second run returns the same bits.
  const GpuGrads again = RunGpu(pr, DType::kBF16, DType::kF32);
  EXPECT_TRUE(BitwiseEqual(g.dq, again.dq));
  EXPECT_TRUE(BitwiseEqual(g.dk, again.dk));
  EXPECT_TRUE(BitwiseEqual(g.dv, again.dv));
  EXPECT_TRUE(BitwiseEqual(g.dinit, again.dinit));
  // f32 inputs holding bf16 values reach the tensor cores unchanged; bf16 grads are rounded once.
  const GpuGrads f32_in = RunGpu(pr, DType::kF32, DType::kF32);
  EXPECT_TRUE(BitwiseEqual(g.dq, f32_in.dq));
  EXPECT_TRUE(BitwiseEqual(g.dk, f32_in.dk));
  EXPECT_TRUE(BitwiseEqual(g.dv, f32_in.dv));
  const GpuGrads bf16_out = RunGpu(pr, DType::kBF16, DType::kBF16);
  EXPECT_TRUE(BitwiseEqual(bf16_out.dq, RoundedToBf16(g.dq)));
  EXPECT_TRUE(BitwiseEqual(bf16_out.dk, RoundedToBf16(g.dk)));
  EXPECT_TRUE(BitwiseEqual(bf16_out.dv, RoundedToBf16(g.dv)));
  EXPECT_TRUE(BitwiseEqual(bf16_out.dinit, g.dinit));
}

TEST(LinearAttentionBwdCudaTest, SmallerHeadDimsMatchCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const auto& [d, lens] : {std::pair<int64_t, std::vector<int32_t>>{64, {65, 130}},
                                std::pair<int64_t, std::vector<int32_t>>{32, {1, 200}}}) {
    SCOPED_TRACE(::testing::Message() << "D=" << d);
    const Problem pr = MakeProblem(lens, 2, d, 200 + d);
    ExpectMatchesCpu(pr, RunGpu(pr, DType::kBF16, DType::kF32));
  }
}

// Empty sequences (zero state gradient) beside ones whose chunk counts leave the scan's pipeline
// stages partly filled; f32 inputs (weighted while staged) give the bits of bf16 ones (weighted in
// the tensor-core fragments).
TEST(LinearAttentionBwdCudaTest, EmptyAndOddLengthSequencesMatchCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem pr = MakeProblem({0, 777, 0, 64, 450}, 2, 64, 500);
  const GpuGrads g = RunGpu(pr, DType::kBF16, DType::kF32);
  ExpectMatchesCpu(pr, g);
  const GpuGrads f32_in = RunGpu(pr, DType::kF32, DType::kF32);
  EXPECT_TRUE(BitwiseEqual(g.dq, f32_in.dq));
  EXPECT_TRUE(BitwiseEqual(g.dk, f32_in.dk));
  EXPECT_TRUE(BitwiseEqual(g.dv, f32_in.dv));
  EXPECT_TRUE(BitwiseEqual(g.dinit, f32_in.dinit));
}

// The 1030-token sequence alone gives the same bits as inside a packed batch.
TEST(LinearAttentionBwdCudaTest, AloneEqualsPackedBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem packed = MakeProblem({63, 1030, 200}, 2, 128, 300);
  Problem alone = MakeProblem({1030}, 2, 128, 300);  // shapes and params; inputs replaced below
  const int64_t hd = packed.h * packed.d, r0 = 63, n = 1030;
  auto slice = [&](const Vec& x) { return Vec(x.begin() + r0 * hd, x.begin() + (r0 + n) * hd); };
  alone.q = slice(packed.q), alone.k = slice(packed.k), alone.v = slice(packed.v);
  alone.d_o = slice(packed.d_o);
  const int64_t dd = packed.d * packed.d, c0 = 1, nc = (n + kC - 1) / kC;  // chunks of sequence 1
  alone.states = Vec(packed.states.begin() + c0 * packed.h * dd,
                     packed.states.begin() + (c0 + nc) * packed.h * dd);
  const GpuGrads a = RunGpu(alone, DType::kBF16, DType::kF32);
  const GpuGrads p = RunGpu(packed, DType::kBF16, DType::kF32);
  EXPECT_TRUE(BitwiseEqual(a.dq, slice(p.dq)));
  EXPECT_TRUE(BitwiseEqual(a.dk, slice(p.dk)));
  EXPECT_TRUE(BitwiseEqual(a.dv, slice(p.dv)));
  EXPECT_TRUE(BitwiseEqual(
      a.dinit, Vec(p.dinit.begin() + packed.h * dd, p.dinit.begin() + 2 * packed.h * dd)));
}

// The backward rounds S_c to bf16 for its products, so bf16 chunk states (round to nearest even,
// as ToDevice and the forward's scan round) must give exactly the f32 states' gradients.
TEST(LinearAttentionBwdCudaTest, Bf16ChunkStatesGiveTheSameBits) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (int64_t d : {32, 64, 128}) {
    SCOPED_TRACE(::testing::Message() << "D=" << d);
    const Problem pr = MakeProblem({65, 200, 1}, 2, d, 400 + d);
    const GpuGrads f32 = RunGpu(pr, DType::kBF16, DType::kF32);
    const GpuGrads b16 = RunGpu(pr, DType::kBF16, DType::kF32, DType::kBF16);
    EXPECT_TRUE(BitwiseEqual(b16.dq, f32.dq)) << "dq";
    EXPECT_TRUE(BitwiseEqual(b16.dk, f32.dk)) << "dk";
    EXPECT_TRUE(BitwiseEqual(b16.dv, f32.dv)) << "dv";
    EXPECT_TRUE(BitwiseEqual(b16.dinit, f32.dinit)) << "d_initial_state";
  }
}

// A bf16 forward asked for bf16 chunk states writes its own bf16 operand states there (no f32
// copy): the output is the f32-states run's bit for bit and the states are those rounded once.
TEST(LinearAttentionBwdCudaTest, ForwardWritesBf16ChunkStates) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem pr = MakeProblem({65, 1030}, 2, 128, 500);
  const int64_t t = pr.t, h = pr.h, d = pr.d;
  const Tensor q = ToDevice(pr.q, {t, h, d}, DType::kBF16);
  const Tensor k = ToDevice(pr.k, {t, h, d}, DType::kBF16);
  const Tensor v = ToDevice(pr.v, {t, h, d}, DType::kBF16);
  Tensor none;
  Tensor o32 = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
  Tensor o16 = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
  Tensor s32 = Tensor::Empty({pr.nc, h, d, d}, DType::kF32, Device::kCUDA);
  Tensor s16 = Tensor::Empty({pr.nc, h, d, d}, DType::kBF16, Device::kCUDA);
  const Context& ctx = GpuTestContext();
  TANDEM_ASSERT_OK(
      cuda::LinearAttentionFwd(ctx, pr.p, q, k, v, pr.decay, HostI32(pr.cu), none, o32, s32, none));
  TANDEM_ASSERT_OK(
      cuda::LinearAttentionFwd(ctx, pr.p, q, k, v, pr.decay, HostI32(pr.cu), none, o16, s16, none));
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(o16), ToHostFloats(o32))) << "o";
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(s16), RoundedToBf16(ToHostFloats(s32)))) << "states";
  // bf16 states need bf16 q, k, v (the f32 forward keeps f32 states).
  const Tensor q32 = ToDevice(pr.q, {t, h, d});
  EXPECT_FALSE(cuda::LinearAttentionFwd(ctx, pr.p, q32, q32, q32, pr.decay, HostI32(pr.cu), none,
                                        o16, s16, none)
                   .ok());
}

TEST(LinearAttentionBwdCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  const Context& ctx = GpuTestContext();
  Tensor none;
  LinearAttentionParams p{2, 48, 0.1f};
  Tensor x = dev({5, 2, 48}, DType::kBF16);
  absl::Status s = cuda::LinearAttentionBwd(ctx, p, x, x, x, Decays(2), HostI32({0, 5}),
                                            dev({1, 2, 48, 48}, DType::kF32), x, x, x, x, none);
  EXPECT_EQ(s.message(), "p.head_dim: the CUDA kernels take 32, 64 or 128, got 48");
  p.head_dim = 64;
  Tensor y = dev({5, 2, 64}, DType::kBF16), states = dev({1, 2, 64, 64}, DType::kF32);
  s = cuda::LinearAttentionBwd(ctx, p, y, y, y, dev({2}, DType::kF32), HostI32({0, 5}), states, y,
                               y, y, y, none);
  EXPECT_EQ(s.message(), "decay: expected f32 [2] on cpu, got f32 [2] on cuda");
  s = cuda::LinearAttentionBwd(ctx, p, y, y, y, Decays(2), HostI32({0, 5, 70}), states, y, y, y, y,
                               none);
  EXPECT_EQ(s.message(), "cu_seqlens[2]: must equal T = 5, got 70");
  s = cuda::LinearAttentionBwd(ctx, p, y, y, y, Decays(2), HostI32({0, 2, 5}), states, y, y, y, y,
                               none);
  EXPECT_EQ(s.message(),
            "chunk_states: expected f32 [2, 2, 64, 64] on cuda, got f32 [1, 2, 64, 64] on cuda");
}

}  // namespace
}  // namespace tandem::kernels
