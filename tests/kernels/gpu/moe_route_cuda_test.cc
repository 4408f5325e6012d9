// Tests for the CUDA MoE router: forward against the CPU (scores to rounding; the same experts in
// the same rank order, weights to rounding) for grouped and ungrouped configs, exact ties to the
// lower index, tokens bitwise identical in any batch, the backward equal to the CPU's bits, and
// argument errors.
#include "kernels/moe_route/moe_route_cuda.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/moe_route/moe_route.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::AllClose;
using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::ToDevice;
using testing::ToDouble;
using testing::ToHostFloats;

struct Routed {
  std::vector<int32_t> idx;
  std::vector<float> weight, scores;
};

// Logits on a 1/256 grid in [0, 4): distinct values are far apart compared with the ulp-level
// differences of expf and std::exp, and no two pairs are symmetric (s(x) + s(−x) = 1), so CPU
// and GPU make the same choices; equal logits are exact ties on both.
std::vector<float> GridLogits(int64_t n, uint64_t seed) {
  std::vector<float> v = RandomVector(n, seed, 0.0f, 4.0f);
  for (float& x : v) x = std::floor(x * 256.0f) / 256.0f;
  return v;
}

std::vector<int32_t> HostI32(const Tensor& t) {
  auto h = cuda::CopyToHost(GpuTestContext(), t);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? std::vector<int32_t>(h->data<int32_t>(), h->data<int32_t>() + t.numel())
                : std::vector<int32_t>();
}

Routed Cpu(const MoeRouteParams& p, const std::vector<float>& logits,
           const std::vector<float>& bias, int64_t t) {
  Tensor idx = Tensor::Empty({t, p.top_k}, DType::kI32);
  Tensor w = Tensor::Empty({t, p.top_k}, DType::kF32);
  Tensor s = Tensor::Empty({t, p.num_experts}, DType::kF32);
  EXPECT_TRUE(MoeRouteFwd(Context::Cpu(1), p, Tensor::FromVector(logits, {t, p.num_experts}),
                          Tensor::FromVector(bias, {p.num_experts}), idx, w, s)
                  .ok());
  return {std::vector<int32_t>(idx.data<int32_t>(), idx.data<int32_t>() + idx.numel()),
          std::vector<float>(w.data<float>(), w.data<float>() + w.numel()),
          std::vector<float>(s.data<float>(), s.data<float>() + s.numel())};
}

Routed Gpu(const MoeRouteParams& p, const std::vector<float>& logits,
           const std::vector<float>& bias, int64_t t) {
  Tensor idx = Tensor::Empty({t, p.top_k}, DType::kI32, Device::kCUDA);
  Tensor w = Tensor::Empty({t, p.top_k}, DType::kF32, Device::kCUDA);
  Tensor s = Tensor::Empty({t, p.num_experts}, DType::kF32, Device::kCUDA);
  const absl::Status st =
      cuda::MoeRouteFwd(GpuTestContext(), p, ToDevice(logits, {t, p.num_experts}),
                        ToDevice(bias, {p.num_experts}), idx, w, s);
  EXPECT_TRUE(st.ok()) << st;
  return {HostI32(idx), ToHostFloats(w), ToHostFloats(s)};
}

const MoeRouteParams kConfigs[] = {
    {.num_experts = 256, .top_k = 8, .n_group = 8, .topk_group = 4, .routed_scaling_factor = 2.5f},
    {.num_experts = 64, .top_k = 6, .n_group = 1, .topk_group = 1, .norm_topk_prob = false},
    {.num_experts = 16, .top_k = 4, .n_group = 16, .topk_group = 5},
    {.num_experts = 1, .top_k = 1}};

TEST(MoeRouteCudaTest, ForwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 37;
  for (const MoeRouteParams& p : kConfigs) {
    SCOPED_TRACE(::testing::Message() << "E=" << p.num_experts << " K=" << p.top_k);
    const std::vector<float> logits = GridLogits(t * p.num_experts, 1);
    std::vector<float> bias = RandomVector(p.num_experts, 2, -0.05f, 0.05f);
    for (float& b : bias) b = std::floor(b * 1024.0f) / 1024.0f;
    const Routed c = Cpu(p, logits, bias, t), g = Gpu(p, logits, bias, t);
    EXPECT_TRUE(AllClose(g.scores, ToDouble(c.scores), {.atol = 1e-7, .rtol = 1e-6}));
    EXPECT_EQ(g.idx, c.idx);
    EXPECT_TRUE(AllClose(g.weight, ToDouble(c.weight), {.atol = 1e-7, .rtol = 1e-5}));
  }
}

TEST(MoeRouteCudaTest, TiesGoToTheLowerIndex) {
  TANDEM_SKIP_WITHOUT_GPU();
  const MoeRouteParams p{.num_experts = 16, .top_k = 3, .n_group = 4, .topk_group = 2};
  std::vector<float> logits(2 * 16, 0.5f);                                  // token 0: all tied
  for (int e = 0; e < 16; ++e) logits[16 + e] = e % 4 == 3 ? 1.0f : 0.25f;  // token 1
  const Routed g = Gpu(p, logits, std::vector<float>(16, 0.0f), 2);
  EXPECT_EQ(g.idx, (std::vector<int32_t>{0, 1, 2, 3, 7, 0}));
  EXPECT_EQ(g.idx, Cpu(p, logits, std::vector<float>(16, 0.0f), 2).idx);
}

TEST(MoeRouteCudaTest, TokensAreBitwiseIdenticalForAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const MoeRouteParams& p = kConfigs[0];
  const int64_t t = 300, e = p.num_experts, k = p.top_k;
  const std::vector<float> logits = RandomVector(t * e, 3, -4.0f, 4.0f);
  const std::vector<float> bias = RandomVector(e, 4, -0.1f, 0.1f);
  const Routed full = Gpu(p, logits, bias, t);
  for (const auto& [n, begin] : {std::pair<int64_t, int64_t>{1, 0}, {1, 299}, {130, 77}}) {
    const Routed part =
        Gpu(p, std::vector<float>(logits.begin() + begin * e, logits.begin() + (begin + n) * e),
            bias, n);
    EXPECT_EQ(part.idx, std::vector<int32_t>(full.idx.begin() + begin * k,
                                             full.idx.begin() + (begin + n) * k));
    EXPECT_TRUE(BitwiseEqual(part.weight, {full.weight.data() + begin * k, size_t(n * k)}));
  }
}

TEST(MoeRouteCudaTest, BackwardEqualsCpuBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 41;
  for (const MoeRouteParams& p : kConfigs) {
    SCOPED_TRACE(::testing::Message() << "E=" << p.num_experts << " K=" << p.top_k);
    const int64_t e = p.num_experts, k = p.top_k;
    const Routed routed = Cpu(p, GridLogits(t * e, 5), std::vector<float>(e, 0.0f), t);
    const std::vector<float> dw = RandomVector(t * k, 6);
    Tensor want = Tensor::Empty({t, e}, DType::kF32);
    TANDEM_ASSERT_OK(MoeRouteBwd(Context::Cpu(1), p, Tensor::FromVector(routed.scores, {t, e}),
                                 Tensor::FromVector(routed.idx, {t, k}),
                                 Tensor::FromVector(dw, {t, k}), want));
    auto idx = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(routed.idx, {t, k}));
    ASSERT_TRUE(idx.ok());
    Tensor dl = Tensor::Empty({t, e}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::MoeRouteBwd(GpuTestContext(), p, ToDevice(routed.scores, {t, e}), *idx,
                                       ToDevice(dw, {t, k}), dl));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(dl),
                             {want.data<float>(), static_cast<size_t>(want.numel())}, {t, e}));
  }
}

TEST(MoeRouteCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor logits = Tensor::View(fake, {3, 8}, DType::kF32, Device::kCUDA);
  Tensor bias = Tensor::View(fake, {8}, DType::kF32, Device::kCUDA);
  Tensor idx = Tensor::View(fake, {3, 2}, DType::kI32, Device::kCUDA);
  Tensor w = Tensor::View(fake, {3, 2}, DType::kF32, Device::kCUDA);
  MoeRouteParams p{.num_experts = 8, .top_k = 2, .n_group = 3};
  absl::Status s = cuda::MoeRouteFwd(ctx, p, logits, bias, idx, w, logits);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "n_group: must divide num_experts (8) and be at most 64, got 3");
  p.n_group = 1;
  s = cuda::MoeRouteFwd(ctx, p, logits, bias, w, w, logits);
  EXPECT_EQ(s.message(), "topk_idx: expected i32 [3, 2] on cuda, got f32 [3, 2] on cuda");
  p.num_experts = 2048;
  s = cuda::MoeRouteFwd(ctx, p, logits, bias, idx, w, logits);
  EXPECT_EQ(s.message(), "num_experts: must be in [1, 1024], got 2048");
}

}  // namespace
}  // namespace tandem::kernels
