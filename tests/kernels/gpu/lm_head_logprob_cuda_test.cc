// Tests for the CUDA log-probabilities: LogprobFromLogits, LogSoftmax and the backward against the
// CPU kernels (vocab sizes around the block width and a real vocabulary, several temperatures),
// LogSoftmax at the target equal to the log-prob bitwise, rows bitwise identical in any batch,
// NaN / ±inf rows, the LM-head convenience with f32 and bf16 weights, and argument errors.
#include "kernels/lm_head_logprob/lm_head_logprob_cuda.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm/gemm.h"
#include "kernels/lm_head_logprob/lm_head_logprob.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::CudaDispatchContext;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::ToDevice;
using testing::ToDouble;
using testing::ToHostFloats;

std::vector<int32_t> Targets(int64_t t, int64_t v, uint64_t seed) {
  std::vector<int32_t> out;
  for (float f : RandomVector(t, seed, 0.0f, static_cast<float>(v))) {
    out.push_back(std::min(static_cast<int32_t>(f), static_cast<int32_t>(v - 1)));
  }
  return out;
}

Tensor DeviceI32(const std::vector<int32_t>& v) {
  auto d = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(v, {int64_t(v.size())}));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Tensor();
}

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

struct Result {
  std::vector<float> logprob, lse, all, lse2, dlogits;
};

Result Cpu(const std::vector<float>& x, const std::vector<int32_t>& tg,
           const std::vector<float>& dl, int64_t v, float temp) {
  const int64_t t = tg.size();
  const Context ctx = Context::Cpu(1);
  Tensor lg = Tensor::FromVector(x, {t, v}), tt = Tensor::FromVector(tg, {t});
  Tensor lp = Tensor::Empty({t}, DType::kF32), ls = Tensor::Empty({t}, DType::kF32);
  Tensor all = Tensor::Empty({t, v}, DType::kF32), ls2 = Tensor::Empty({t}, DType::kF32);
  Tensor g = Tensor::Empty({t, v}, DType::kF32);
  EXPECT_TRUE(LogprobFromLogits(ctx, lg, tt, temp, lp, ls).ok());
  EXPECT_TRUE(LogSoftmax(ctx, lg, temp, all, ls2).ok());
  EXPECT_TRUE(LogprobFromLogitsBwd(ctx, lg, tt, ls, temp, Tensor::FromVector(dl, {t}), g).ok());
  return {Vec(lp), Vec(ls), Vec(all), Vec(ls2), Vec(g)};
}

Result Gpu(const std::vector<float>& x, const std::vector<int32_t>& tg,
           const std::vector<float>& dl, int64_t v, float temp) {
  const int64_t t = tg.size();
  const Context& ctx = GpuTestContext();
  Tensor lg = ToDevice(x, {t, v}), tt = DeviceI32(tg);
  Tensor lp = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  Tensor ls = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  Tensor all = Tensor::Empty({t, v}, DType::kF32, Device::kCUDA);
  Tensor ls2 = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
  Tensor g = Tensor::Empty({t, v}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::LogprobFromLogits(ctx, lg, tt, temp, lp, ls);
  EXPECT_TRUE(s.ok()) << s;
  s = cuda::LogSoftmax(ctx, lg, temp, all, ls2);
  EXPECT_TRUE(s.ok()) << s;
  s = cuda::LogprobFromLogitsBwd(ctx, lg, tt, ls, temp, ToDevice(dl, {t}), g);
  EXPECT_TRUE(s.ok()) << s;
  return {ToHostFloats(lp), ToHostFloats(ls), ToHostFloats(all), ToHostFloats(ls2),
          ToHostFloats(g)};
}

TEST(LmHeadLogprobCudaTest, MatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t shapes[][2] = {{1, 1}, {3, 7}, {5, 511}, {4, 513}, {6, 5000}, {2, 151552}};
  for (const auto& [t, v] : shapes) {
    for (float temp : {1.0f, 0.7f, 1.3f}) {
      SCOPED_TRACE(::testing::Message() << "T=" << t << " V=" << v << " temp=" << temp);
      const std::vector<float> x = RandomVector(t * v, 1, -8.0f, 8.0f);
      const std::vector<int32_t> tg = Targets(t, v, 2);
      const std::vector<float> dl = RandomVector(t, 3);
      const Result c = Cpu(x, tg, dl, v, temp), g = Gpu(x, tg, dl, v, temp);
      // lse <= 8 / 0.7 + log V ~ 24: two fp32 orders of a sum of V positive terms and expf vs
      // std::exp (2 ulp) differ by a few ulps of the result.
      const testing::CompareOptions opt{.atol = 1e-5, .rtol = 1e-6};
      EXPECT_TRUE(AllClose(g.lse, ToDouble(c.lse), opt));
      EXPECT_TRUE(AllClose(g.logprob, ToDouble(c.logprob), opt));
      // all = z − lse with z exact, so each entry carries its row's lse error: the bound is the
      // lse bound at the largest |lse|, not a bound relative to the entry itself.
      double max_lse = 0;
      for (float l : c.lse) max_lse = std::max(max_lse, std::fabs(static_cast<double>(l)));
      EXPECT_TRUE(
          AllClose(g.all, ToDouble(c.all), {.atol = 1e-5 + 1e-6 * max_lse, .shape = {t, v}}));
      // dlogits = dl · (onehot − p) / temp: p = exp(z − lse) inherits lse's few-ulp error
      // (<= 4e-6 absolute at lse ~ 24) relatively, so |error| <= |dl| / temp · p · 4e-6.
      EXPECT_TRUE(
          AllClose(g.dlogits, ToDouble(c.dlogits), {.atol = 1e-5, .rtol = 1e-5, .shape = {t, v}}));
      // The sampler's row and the trainer's log-prob are one computation.
      EXPECT_TRUE(BitwiseEqual(g.lse, g.lse2));
      for (int64_t r = 0; r < t; ++r) {
        EXPECT_TRUE(BitwiseEqual({&g.all[r * v + tg[r]], 1}, {&g.logprob[r], 1})) << "row " << r;
      }
    }
  }
}

TEST(LmHeadLogprobCudaTest, RowsAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 40, v = 32000;
  const std::vector<float> x = RandomVector(t * v, 4, -10.0f, 10.0f), dl = RandomVector(t, 5);
  const std::vector<int32_t> tg = Targets(t, v, 6);
  const Result full = Gpu(x, tg, dl, v, 0.9f);
  for (const auto& [rows, begin] : {std::pair<int64_t, int64_t>{1, 0}, {1, 39}, {13, 7}}) {
    const std::vector<float> px(x.begin() + begin * v, x.begin() + (begin + rows) * v);
    const std::vector<int32_t> pt(tg.begin() + begin, tg.begin() + begin + rows);
    const std::vector<float> pd(dl.begin() + begin, dl.begin() + begin + rows);
    const Result part = Gpu(px, pt, pd, v, 0.9f);
    EXPECT_TRUE(BitwiseEqual(part.lse, {full.lse.data() + begin, size_t(rows)}));
    EXPECT_TRUE(BitwiseEqual(part.logprob, {full.logprob.data() + begin, size_t(rows)}));
    EXPECT_TRUE(BitwiseEqual(part.dlogits, {full.dlogits.data() + begin * v, size_t(rows * v)}));
  }
}

TEST(LmHeadLogprobCudaTest, NonFiniteRowsFollowTheCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t v = 700;
  std::vector<float> x = RandomVector(4 * v, 7);
  for (int64_t i = 0; i < v; ++i) x[i] = -INFINITY;  // row 0: all −inf
  x[v + 650] = INFINITY;                             // row 1: one +inf
  x[2 * v + 3] = NAN;                                // row 2: a NaN
  x[3 * v + 699] = -INFINITY;                        // row 3: one −inf among finite values
  const std::vector<int32_t> tg = {0, 650, 3, 5};
  const std::vector<float> dl = {1.0f, 1.0f, 1.0f, 1.0f};
  const Result c = Cpu(x, tg, dl, v, 1.0f), g = Gpu(x, tg, dl, v, 1.0f);
  EXPECT_TRUE(AllClose(g.lse, ToDouble(c.lse), {.atol = 1e-5, .rtol = 1e-6}));
  EXPECT_TRUE(AllClose(g.logprob, ToDouble(c.logprob), {.atol = 1e-5, .rtol = 1e-6}));
}

TEST(LmHeadLogprobCudaTest, SoftmaxEntropyMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const int64_t v : {int64_t{7}, int64_t{513}, int64_t{151552}}) {
    const int64_t t = 5;
    std::vector<float> x = RandomVector(t * v, 11, -8.0f, 8.0f);
    for (int64_t i = 0; i < v; ++i) x[3 * v + i] = -INFINITY;  // row 3: all −inf
    x[v + 2] = -INFINITY;                                      // row 1: a masked entry
    x[4 * v + 1] = NAN;                                        // row 4: NaN
    for (float temp : {1.0f, 0.7f}) {
      SCOPED_TRACE(::testing::Message() << "V=" << v << " temp=" << temp);
      Tensor ce = Tensor::Empty({t}, DType::kF32), cl = Tensor::Empty({t}, DType::kF32);
      ASSERT_TRUE(
          SoftmaxEntropy(Context::Cpu(1), Tensor::FromVector(x, {t, v}), temp, ce, cl).ok());
      Tensor ge = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
      Tensor gl = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
      TANDEM_ASSERT_OK(SoftmaxEntropy(CudaDispatchContext(), ToDevice(x, {t, v}), temp, ge, gl));
      const std::vector<float> he = ToHostFloats(ge), hl = ToHostFloats(gl);
      // fp32 sums on the GPU against double on the CPU: |H| <= log V ~ 12 and Σ p·z carries the
      // lse's few-ulp error, so a few ulps of max(lse, H) apart.
      for (int64_t r = 0; r < 3; ++r) {
        EXPECT_NEAR(he[r], ce.data<float>()[r], 2e-5 * (1 + std::fabs(hl[r]))) << "row " << r;
      }
      EXPECT_EQ(he[3], 0.0f);
      EXPECT_TRUE(std::isnan(he[4]));
      // Its lse is the row kernel's: LogprobFromLogits gives the same bits.
      Tensor lp = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
      Tensor lse2 = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
      TANDEM_ASSERT_OK(LogprobFromLogits(CudaDispatchContext(), ToDevice(x, {t, v}),
                                         DeviceI32(std::vector<int32_t>(t, 0)), temp, lp, lse2));
      EXPECT_TRUE(BitwiseEqual(hl, ToHostFloats(lse2)));
    }
  }
}

TEST(LmHeadLogprobCudaTest, TargetOutsideVocabularyGivesNan) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t v = 100;
  const Result g = Gpu(RandomVector(3 * v, 8), {-1, 5, 100}, {1.0f, 1.0f, 1.0f}, v, 1.0f);
  EXPECT_TRUE(std::isnan(g.logprob[0]));
  EXPECT_FALSE(std::isnan(g.logprob[1]));
  EXPECT_TRUE(std::isnan(g.logprob[2]));
}

TEST(LmHeadLogprobCudaTest, LmHeadMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 9, dm = 256, v = 3001;
  const std::vector<float> h = RandomVector(t * dm, 9), w = RandomVector(v * dm, 10, -0.1f, 0.1f);
  const std::vector<int32_t> tg = Targets(t, v, 11);
  for (DType wt : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(wt));
    // bf16 weights: the GPU GEMM rounds h to bf16 too, so the CPU runs on both rounded.
    const bool bf = wt == DType::kBF16;
    const std::vector<float> hh = bf ? testing::RoundedToBf16(h) : h;
    const std::vector<float> ww = bf ? testing::RoundedToBf16(w) : w;
    Tensor lg_c = Tensor::Empty({t, v}, DType::kF32), lp_c = Tensor::Empty({t}, DType::kF32);
    Tensor ls_c = Tensor::Empty({t}, DType::kF32);
    TANDEM_ASSERT_OK(LmHeadLogprobFwd(Context::Cpu(1), Tensor::FromVector(hh, {t, dm}),
                                      Tensor::FromVector(ww, {v, dm}), Tensor::FromVector(tg, {t}),
                                      1.0f, lg_c, lp_c, ls_c));
    Tensor lg = Tensor::Empty({t, v}, DType::kF32, Device::kCUDA);
    Tensor lp = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
    Tensor ls = Tensor::Empty({t}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::LmHeadLogprobFwd(GpuTestContext(), ToDevice(h, {t, dm}),
                                            ToDevice(w, {v, dm}, wt), DeviceI32(tg), 1.0f, lg, lp,
                                            ls));
    // |logit| <= Σ|h·w| <= 25.6; the k order differs: a few ulps of the partial sums.
    EXPECT_TRUE(AllClose(ToHostFloats(lg), ToDouble(Vec(lg_c)),
                         {.atol = 2e-5, .rtol = 1e-5, .shape = {t, v}}));
    EXPECT_TRUE(AllClose(ToHostFloats(lp), ToDouble(Vec(lp_c)), {.atol = 5e-5, .rtol = 1e-5}));
  }
}

TEST(LmHeadLogprobCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor lg = Tensor::View(fake, {2, 5}, DType::kF32, Device::kCUDA);
  Tensor tg = Tensor::View(fake, {2}, DType::kI32, Device::kCUDA);
  Tensor lp = Tensor::View(fake, {2}, DType::kF32, Device::kCUDA);
  Tensor ls = Tensor::View(fake, {3}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::LogprobFromLogits(ctx, lg, tg, 1.0f, lp, ls);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "lse: expected f32 [2] on cuda, got f32 [3] on cuda");
  s = cuda::LogprobFromLogits(ctx, lg, tg, 0.0f, lp, lp);
  EXPECT_EQ(s.message(), "temperature: expected a finite value > 0, got 0");
  Tensor host = Tensor::Zeros({2, 5}, DType::kF32);
  s = cuda::LogSoftmax(ctx, host, 1.0f, lg, lp);
  EXPECT_EQ(s.message(), "logits: expected f32 [*, *] on cuda, got f32 [2, 5] on cpu");
}

}  // namespace
}  // namespace tandem::kernels
