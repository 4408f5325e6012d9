// Tests for the CUDA softmax attention backward: dq, dk, dv against the CPU SoftmaxAttentionBwd on
// the same bf16-representable inputs (packed sequences of awkward lengths, GQA groups 4, 2 and 1,
// head dims 128, 64, 32) within a per-element bound derived from the bf16 rounding of P and dS;
// the contract's bitwise promises (two runs equal; a sequence alone equals its rows in a pack;
// f32 operands equal their bf16 copies; bf16 gradients are the f32 ones rounded once); and
// argument errors (checked without a GPU too). Every check runs on every backward kernel (mma.sync,
// and the split wgmma kernel at D = 128 where the device has it), each chosen explicitly; the
// split wgmma kernel is also held to the mma.sync kernel's results within the same bounds.
#include "kernels/softmax_attention/softmax_attention_bwd_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/softmax_attention/softmax_attention.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::RoundedToBf16;
using testing::ToDevice;
using testing::ToHostFloats;

struct Problem {
  SoftmaxAttentionParams p;
  std::vector<int32_t> cu;
  std::vector<float> q, k, v, d_o;  // bf16-representable
  std::vector<float> o, lse;        // the CPU forward's (f32)
  int64_t t() const { return cu.back(); }
};

Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

Problem MakeProblem(int64_t h, int64_t hkv, int64_t d, std::vector<int32_t> lens, uint64_t seed) {
  Problem pr;
  pr.p = {h, hkv, d, 1.0f / std::sqrt(static_cast<float>(d))};
  pr.cu = {0};
  for (int32_t len : lens) pr.cu.push_back(pr.cu.back() + len);
  const int64_t t = pr.t();
  // Scores of a few units: the softmax is neither flat nor one-hot.
  pr.q = RoundedToBf16(RandomVector(t * h * d, seed, -2.0f, 2.0f));
  pr.k = RoundedToBf16(RandomVector(t * hkv * d, seed + 1, -2.0f, 2.0f));
  pr.v = RoundedToBf16(RandomVector(t * hkv * d, seed + 2));
  pr.d_o = RoundedToBf16(RandomVector(t * h * d, seed + 3));
  Tensor o = Tensor::Empty({t, h, d}, DType::kF32), lse = Tensor::Empty({t, h}, DType::kF32);
  EXPECT_TRUE(SoftmaxAttentionFwd(Context::Cpu(2), pr.p, Tensor::FromVector(pr.q, {t, h, d}),
                                  Tensor::FromVector(pr.k, {t, hkv, d}),
                                  Tensor::FromVector(pr.v, {t, hkv, d}), HostI32(pr.cu), o, lse)
                  .ok());
  pr.o.assign(o.data<float>(), o.data<float>() + o.numel());
  pr.lse.assign(lse.data<float>(), lse.data<float>() + lse.numel());
  return pr;
}

struct Grads {
  std::vector<float> dq, dk, dv;
};

Grads CpuBackward(const Problem& pr) {
  const int64_t t = pr.t(), h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
  Tensor dq = Tensor::Empty({t, h, d}, DType::kF32);
  Tensor dk = Tensor::Empty({t, hkv, d}, DType::kF32), dv = Tensor::Empty({t, hkv, d}, DType::kF32);
  EXPECT_TRUE(SoftmaxAttentionBwd(Context::Cpu(2), pr.p, Tensor::FromVector(pr.q, {t, h, d}),
                                  Tensor::FromVector(pr.k, {t, hkv, d}),
                                  Tensor::FromVector(pr.v, {t, hkv, d}), HostI32(pr.cu),
                                  Tensor::FromVector(pr.o, {t, h, d}),
                                  Tensor::FromVector(pr.lse, {t, h}),
                                  Tensor::FromVector(pr.d_o, {t, h, d}), dq, dk, dv)
                  .ok());
  return {std::vector<float>(dq.data<float>(), dq.data<float>() + dq.numel()),
          std::vector<float>(dk.data<float>(), dk.data<float>() + dk.numel()),
          std::vector<float>(dv.data<float>(), dv.data<float>() + dv.numel())};
}

using Kernel = cuda::SoftmaxAttentionBwdKernel;

const char* KernelName(Kernel k) { return k == Kernel::kWgmmaSplit ? "wgmma split" : "mma.sync"; }

// The kernels that can run this head dim here.
std::vector<Kernel> KernelsFor(int64_t d) {
  std::vector<Kernel> out = {Kernel::kMmaSync};
  if (cuda::SoftmaxAttentionBwdWgmmaAvailable(d)) out.push_back(Kernel::kWgmmaSplit);
  return out;
}

// GPU backward on `kernel` with q, k, v, d_o stored as `in` and the gradients as `out`; o and lse
// f32.
Grads GpuBackward(const Problem& pr, DType in, DType out, Kernel kernel) {
  const int64_t t = pr.t(), h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
  Tensor dq = Tensor::Empty({t, h, d}, out, Device::kCUDA);
  Tensor dk = Tensor::Empty({t, hkv, d}, out, Device::kCUDA);
  Tensor dv = Tensor::Empty({t, hkv, d}, out, Device::kCUDA);
  const absl::Status s = cuda::SoftmaxAttentionBwdWithKernel(
      kernel, GpuTestContext(), pr.p, ToDevice(pr.q, {t, h, d}, in),
      ToDevice(pr.k, {t, hkv, d}, in), ToDevice(pr.v, {t, hkv, d}, in), HostI32(pr.cu),
      ToDevice(pr.o, {t, h, d}), ToDevice(pr.lse, {t, h}), ToDevice(pr.d_o, {t, h, d}, in), dq, dk,
      dv);
  EXPECT_TRUE(s.ok()) << s;
  if (!s.ok()) return {};
  return {ToHostFloats(dq), ToHostFloats(dk), ToHostFloats(dv)};
}

// Error bounds per gradient element. The GPU rounds P (for dV) and dS (for dK, dQ) to bf16 before
// the second-stage mmas, whose other operand (dO, Q, K) is exact in bf16: each product is off by
// at most 2⁻⁹ of itself, so an element is off by at most 2⁻⁹·M with M = Σ|terms| (M_dv = Σ P|dO|,
// M_dk = scale·Σ|dS||Q|, M_dq = scale·Σ|dS||K|). We allow 2⁻⁸·M (twice that, for fp32
// accumulation order and ex2.approx, both ≲ 2⁻²⁰ relative) plus 1e-5·M' where M' replaces |dS| by
// P·(|dP| + |δ|): the fp32 error of dP − δ, which cancels when dP ≈ δ.
Grads Bounds(const Problem& pr) {
  const int64_t h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
  const int64_t group = h / hkv, t = pr.t();
  const double scale = pr.p.scale;
  std::vector<double> m[3], mx[3];  // dq, dk, dv: Σ|terms|, and with |dS| → P(|dP| + |δ|)
  for (int i = 0; i < 3; ++i) m[i].assign((i == 0 ? h : hkv) * t * d, 0.0), mx[i] = m[i];
  for (size_t b = 0; b + 1 < pr.cu.size(); ++b) {
    for (int64_t hd = 0; hd < h; ++hd) {
      const int64_t g = hd / group;
      for (int64_t i = pr.cu[b]; i < pr.cu[b + 1]; ++i) {
        const float* qi = &pr.q[(i * h + hd) * d];
        const float* doi = &pr.d_o[(i * h + hd) * d];
        double delta = 0;
        for (int64_t e = 0; e < d; ++e) delta += double{doi[e]} * pr.o[(i * h + hd) * d + e];
        for (int64_t j = pr.cu[b]; j <= i; ++j) {
          const float* kj = &pr.k[(j * hkv + g) * d];
          const float* vj = &pr.v[(j * hkv + g) * d];
          double s = 0, dp = 0;
          for (int64_t e = 0; e < d; ++e) s += double{qi[e]} * kj[e], dp += double{doi[e]} * vj[e];
          const double p = std::exp(scale * s - pr.lse[i * h + hd]);
          const double ds = scale * p * std::fabs(dp - delta);
          const double dsx = scale * p * (std::fabs(dp) + std::fabs(delta));
          for (int64_t e = 0; e < d; ++e) {
            const int64_t iq = (i * h + hd) * d + e, jk = (j * hkv + g) * d + e;
            m[0][iq] += ds * std::fabs(kj[e]), mx[0][iq] += dsx * std::fabs(kj[e]);
            m[1][jk] += ds * std::fabs(qi[e]), mx[1][jk] += dsx * std::fabs(qi[e]);
            m[2][jk] += p * std::fabs(doi[e]), mx[2][jk] += p * std::fabs(doi[e]);
          }
        }
      }
    }
  }
  Grads out;
  std::vector<float>* dst[3] = {&out.dq, &out.dk, &out.dv};
  for (int i = 0; i < 3; ++i) {
    dst[i]->resize(m[i].size());
    for (size_t x = 0; x < m[i].size(); ++x) {
      (*dst[i])[x] = static_cast<float>(std::ldexp(m[i][x], -8) + 1e-5 * mx[i][x] + 1e-7);
    }
  }
  return out;
}

// Every element within its bound, and the normalised squared error near what bf16 rounding of P
// and dS gives (a uniform relative error of variance 2⁻¹⁸/3 per term; a host emulation of that
// rounding on these problems measured 2.1e-6 to 2.9e-6): at most 10·2⁻¹⁸/3 ≈ 1.3e-5.
::testing::AssertionResult Close(const std::vector<float>& got, const std::vector<float>& want,
                                 const std::vector<float>& bound, const Shape& shape) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
  size_t bad = 0, worst = 0;
  double worst_excess = 0, max_bound = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double{got[i]} - want[i]);
    max_bound = std::max<double>(max_bound, bound[i]);
    if (!(err <= bound[i])) {
      if (bad++ == 0 || err - bound[i] > worst_excess) worst = i, worst_excess = err - bound[i];
    }
  }
  if (bad > 0) {
    return ::testing::AssertionFailure()
           << bad << " elements out of their bound; worst at "
           << testing::CoordinateString(worst, shape) << ": got " << got[worst] << ", want "
           << want[worst] << ", bound " << bound[worst];
  }
  testing::CompareOptions opt;
  opt.atol = max_bound;
  opt.max_nmse = 10.0 * std::ldexp(1.0, -18) / 3.0;
  opt.shape = shape;
  return testing::AllClose(got, testing::ToDouble(want), opt);
}

TEST(SoftmaxAttentionBwdCudaTest, MatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem problems[] = {
      MakeProblem(4, 1, 128, {1, 63, 64, 65, 200, 1030}, 1),  // GQA 4, the Ring head dim
      MakeProblem(4, 2, 64, {65, 1, 130, 64, 7}, 2),          // GQA 2
      MakeProblem(2, 2, 32, {33, 100}, 3),                    // no GQA
      MakeProblem(2, 2, 128, {128, 129, 300}, 7),             // no GQA, 128-key tile edges
  };
  for (const Problem& pr : problems) {
    const int64_t t = pr.t(), h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
    SCOPED_TRACE(::testing::Message() << "T=" << t << " H=" << h << " Hkv=" << hkv << " D=" << d);
    const Grads want = CpuBackward(pr), bound = Bounds(pr);
    for (Kernel kernel : KernelsFor(d)) {
      SCOPED_TRACE(KernelName(kernel));
      const Grads got = GpuBackward(pr, DType::kBF16, DType::kF32, kernel);
      EXPECT_TRUE(Close(got.dq, want.dq, bound.dq, {t, h, d})) << "dq";
      EXPECT_TRUE(Close(got.dk, want.dk, bound.dk, {t, hkv, d})) << "dk";
      EXPECT_TRUE(Close(got.dv, want.dv, bound.dv, {t, hkv, d})) << "dv";
      // f32 operands are rounded to bf16 (exactly, here) before the mmas: the same bits.
      const Grads f32_in = GpuBackward(pr, DType::kF32, DType::kF32, kernel);
      EXPECT_TRUE(BitwiseEqual(f32_in.dq, got.dq)) << "dq, f32 operands";
      EXPECT_TRUE(BitwiseEqual(f32_in.dk, got.dk)) << "dk, f32 operands";
      EXPECT_TRUE(BitwiseEqual(f32_in.dv, got.dv)) << "dv, f32 operands";
      // bf16 gradients: the f32 results rounded once.
      const Grads bf16_out = GpuBackward(pr, DType::kBF16, DType::kBF16, kernel);
      EXPECT_TRUE(BitwiseEqual(bf16_out.dq, RoundedToBf16(got.dq))) << "dq, bf16";
      EXPECT_TRUE(BitwiseEqual(bf16_out.dk, RoundedToBf16(got.dk))) << "dk, bf16";
      EXPECT_TRUE(BitwiseEqual(bf16_out.dv, RoundedToBf16(got.dv))) << "dv, bf16";
    }
  }
}

// The split wgmma kernel against the mma.sync kernel (both within Bounds of the exact gradients;
// their bf16 roundings of P and dS differ only where their fp32 scores do, far inside the bound),
// on GQA 4 and GQA 1 with sequence ends inside and on the 64- and 128-row tile edges.
TEST(SoftmaxAttentionBwdCudaTest, SplitMatchesMmaSync) {
  TANDEM_SKIP_WITHOUT_GPU();
  if (!cuda::SoftmaxAttentionBwdWgmmaAvailable(128)) GTEST_SKIP() << "no sm_90a wgmma here";
  const Problem problems[] = {
      MakeProblem(4, 1, 128, {1, 63, 64, 65, 127, 128, 129, 700}, 11),
      MakeProblem(2, 2, 128, {192, 2, 257}, 12),
  };
  for (const Problem& pr : problems) {
    const int64_t t = pr.t(), h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
    SCOPED_TRACE(::testing::Message() << "T=" << t << " H=" << h << " Hkv=" << hkv);
    const Grads bound = Bounds(pr);
    const Grads mma = GpuBackward(pr, DType::kBF16, DType::kF32, Kernel::kMmaSync);
    const Grads split = GpuBackward(pr, DType::kBF16, DType::kF32, Kernel::kWgmmaSplit);
    EXPECT_TRUE(Close(split.dq, mma.dq, bound.dq, {t, h, d})) << "dq";
    EXPECT_TRUE(Close(split.dk, mma.dk, bound.dk, {t, hkv, d})) << "dk";
    EXPECT_TRUE(Close(split.dv, mma.dv, bound.dv, {t, hkv, d})) << "dv";
  }
}

TEST(SoftmaxAttentionBwdCudaTest, RunsAreBitwiseEqual) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem pr = MakeProblem(8, 2, 128, {300, 1030, 5}, 4);
  for (Kernel kernel : KernelsFor(128)) {
    SCOPED_TRACE(KernelName(kernel));
    const Grads a = GpuBackward(pr, DType::kBF16, DType::kF32, kernel);
    const Grads b = GpuBackward(pr, DType::kBF16, DType::kF32, kernel);
    EXPECT_TRUE(BitwiseEqual(a.dq, b.dq)) << "dq";
    EXPECT_TRUE(BitwiseEqual(a.dk, b.dk)) << "dk";
    EXPECT_TRUE(BitwiseEqual(a.dv, b.dv)) << "dv";
  }
}

// The default kernel is the split wgmma one where it is available (TANDEM_ATTENTION_BWD_WGMMA=0:
// mma.sync): the public entry point gives the bits of the kernel it claims to run.
TEST(SoftmaxAttentionBwdCudaTest, DefaultIsTheClaimedKernel) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem pr = MakeProblem(4, 1, 128, {200, 65}, 8);
  const Kernel claimed = cuda::SoftmaxAttentionBwdDefaultKernel(128);
  EXPECT_NE(claimed, Kernel::kDefault);
  EXPECT_EQ(cuda::SoftmaxAttentionBwdUsesWgmma(128), claimed != Kernel::kMmaSync);
  const Grads def = GpuBackward(pr, DType::kBF16, DType::kF32, Kernel::kDefault);
  const Grads want = GpuBackward(pr, DType::kBF16, DType::kF32, claimed);
  EXPECT_TRUE(BitwiseEqual(def.dq, want.dq)) << "dq";
  EXPECT_TRUE(BitwiseEqual(def.dk, want.dk)) << "dk";
  EXPECT_TRUE(BitwiseEqual(def.dv, want.dv)) << "dv";
}

// A sequence's gradients do not depend on what it is packed with (D = 64: the mma.sync kernel;
// D = 128: both, the split kernel's tiles being sequence-relative).
void ExpectPackedEqualsAlone(const Problem& packed, Kernel kernel) {
  const Grads pg = GpuBackward(packed, DType::kBF16, DType::kF32, kernel);
  const int64_t hd = packed.p.num_heads * packed.p.head_dim;
  const int64_t kvd = packed.p.num_kv_heads * packed.p.head_dim, h = packed.p.num_heads;
  for (size_t b = 0; b + 1 < packed.cu.size(); ++b) {
    SCOPED_TRACE(::testing::Message() << "sequence " << b);
    const int64_t r0 = packed.cu[b], r1 = packed.cu[b + 1];
    const auto rows = [&](const std::vector<float>& x, int64_t w) {
      return std::vector<float>(x.begin() + r0 * w, x.begin() + r1 * w);
    };
    Problem alone = packed;  // the same inputs, o and lse rows
    alone.cu = {0, static_cast<int32_t>(r1 - r0)};
    alone.q = rows(packed.q, hd), alone.d_o = rows(packed.d_o, hd), alone.o = rows(packed.o, hd);
    alone.k = rows(packed.k, kvd), alone.v = rows(packed.v, kvd), alone.lse = rows(packed.lse, h);
    const Grads ag = GpuBackward(alone, DType::kBF16, DType::kF32, kernel);
    EXPECT_TRUE(BitwiseEqual(ag.dq, rows(pg.dq, hd))) << "dq";
    EXPECT_TRUE(BitwiseEqual(ag.dk, rows(pg.dk, kvd))) << "dk";
    EXPECT_TRUE(BitwiseEqual(ag.dv, rows(pg.dv, kvd))) << "dv";
  }
}

TEST(SoftmaxAttentionBwdCudaTest, PackedRowsEqualAloneBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  ::testing::Test::RecordProperty("wgmma_d128",
                                  cuda::SoftmaxAttentionBwdWgmmaAvailable(128) ? 1 : 0);
  {
    SCOPED_TRACE("D=64");
    ExpectPackedEqualsAlone(MakeProblem(8, 4, 64, {70, 1030, 1, 200}, 5), Kernel::kMmaSync);
  }
  const Problem d128 = MakeProblem(8, 2, 128, {70, 1030, 1, 129, 256}, 6);  // GQA 4
  for (Kernel kernel : KernelsFor(128)) {
    SCOPED_TRACE(::testing::Message() << "D=128 " << KernelName(kernel));
    ExpectPackedEqualsAlone(d128, kernel);
  }
}

TEST(SoftmaxAttentionBwdCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  const Context& ctx = GpuTestContext();
  const auto call = [&](const SoftmaxAttentionParams& p, const Tensor& lse,
                        const std::vector<int32_t>& cu) {
    const int64_t d = p.head_dim;
    Tensor dq = dev({5, 4, d}, DType::kF32), dk = dev({5, 2, d}, DType::kF32);
    Tensor dv = dev({5, 2, d}, DType::kF32);
    return cuda::SoftmaxAttentionBwd(ctx, p, dev({5, 4, d}, DType::kBF16),
                                     dev({5, 2, d}, DType::kBF16), dev({5, 2, d}, DType::kBF16),
                                     HostI32(cu), dev({5, 4, d}, DType::kBF16), lse,
                                     dev({5, 4, d}, DType::kBF16), dq, dk, dv);
  };
  absl::Status s = call({4, 2, 48, 0.1f}, dev({5, 4}, DType::kF32), {0, 5});
  EXPECT_EQ(s.message(), "p.head_dim: the CUDA backward takes 32, 64 or 128, got 48");
  s = call({4, 2, 64, 0.1f}, dev({5, 4}, DType::kF32), {0, 4});
  EXPECT_EQ(s.message(), "cu_seqlens: must end at T = 5, ends at 4");
  s = call({4, 2, 64, 0.1f}, dev({5, 4}, DType::kBF16), {0, 5});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("lse"), absl::string_view::npos) << s;
  s = call({4, 3, 64, 0.1f}, dev({5, 4}, DType::kF32), {0, 5});
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // The wgmma kernel takes D = 128 only, whatever the device.
  Tensor dq = dev({5, 4, 64}, DType::kF32), dk = dev({5, 2, 64}, DType::kF32);
  Tensor dv = dev({5, 2, 64}, DType::kF32);
  {
    s = cuda::SoftmaxAttentionBwdWithKernel(
        Kernel::kWgmmaSplit, ctx, {4, 2, 64, 0.1f}, dev({5, 4, 64}, DType::kBF16),
        dev({5, 2, 64}, DType::kBF16), dev({5, 2, 64}, DType::kBF16), HostI32({0, 5}),
        dev({5, 4, 64}, DType::kBF16), dev({5, 4}, DType::kF32), dev({5, 4, 64}, DType::kBF16), dq,
        dk, dv);
    EXPECT_EQ(s.message(),
              "kernel: the wgmma backward needs head_dim 128 on an sm_90a build and device, got 64")
        << KernelName(Kernel::kWgmmaSplit);
  }
}

}  // namespace
}  // namespace tandem::kernels
