// Collectives without MPI: the local collective is the identity, and the bucketed gradient
// all-reduce hands every gradient element to the collective exactly once, in ForEachParameter
// order, and writes the result back to the right place whatever the bucket size; the device
// path's reduction ranges.
#include "trainer/collectives.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "model/config.h"
#include "tests/testing/compare.h"

namespace tandem::trainer {
namespace {

// Pretends to be rank 0 of 3: "sums" by mapping x → 3x + 1 and records each call's size.
class FakeCollective final : public Collective {
 public:
  int Rank() const override { return 0; }
  int Size() const override { return 3; }
  absl::Status AllReduceSum(float* data, int64_t n) override {
    sizes.push_back(n);
    for (int64_t i = 0; i < n; ++i) data[i] = 3 * data[i] + 1;
    return absl::OkStatus();
  }
  absl::Status AllReduceSum(int64_t*, int64_t) override { return absl::OkStatus(); }
  absl::Status Broadcast(void*, int64_t, int) override { return absl::OkStatus(); }
  absl::Status Barrier() override { return absl::OkStatus(); }
  std::vector<int64_t> sizes;
};

TEST(CollectivesTest, LocalIsIdentity) {
  auto c = MakeLocalCollective();
  EXPECT_EQ(c->Rank(), 0);
  EXPECT_EQ(c->Size(), 1);
  std::vector<float> x = {1.5f, -2.0f};
  ASSERT_TRUE(c->AllReduceSum(x.data(), 2).ok());
  EXPECT_EQ(x, (std::vector<float>{1.5f, -2.0f}));
  EXPECT_TRUE(c->Barrier().ok());
  EXPECT_FALSE(c->Broadcast(x.data(), 8, 1).ok());
  if (!HaveMpi()) {
    EXPECT_EQ(MakeMpiCollective().status().code(), absl::StatusCode::kUnimplemented);
  }
}

TEST(CollectivesTest, GradientBucketsCoverEveryElementOnce) {
  auto config = model::LoadModelConfig("configs/models/tiny-hybrid.json");
  ASSERT_TRUE(config.ok()) << config.status();
  for (int64_t bucket : {int64_t{1}, int64_t{1000}, int64_t{5000}, int64_t{1} << 24}) {
    model::ModelWeights g = model::AllocateWeights(*config);
    int64_t total = 0, seed = 0;
    std::set<int64_t> sizes;
    std::vector<std::vector<double>> want;
    g.ForEachParameter([&](const std::string&, Tensor& t) {
      std::vector<float> x = testing::RandomVector(t.numel(), seed++);
      std::memcpy(t.data<float>(), x.data(), t.nbytes());
      std::vector<double>& w = want.emplace_back();
      for (float v : x) w.push_back(3.0f * v + 1.0f);
      total += t.numel();
      sizes.insert(t.numel());
    });
    FakeCollective fake;
    ASSERT_TRUE(AllReduceGradients(fake, g, bucket).ok());
    int64_t reduced = 0;
    for (int64_t n : fake.sizes) {
      reduced += n;
      EXPECT_TRUE(n <= bucket || sizes.count(n)) << n;  // a bucket, or one large tensor whole
    }
    EXPECT_EQ(reduced, total) << "bucket " << bucket;
    size_t i = 0;
    g.ForEachParameter([&](const std::string& name, const Tensor& t) {
      EXPECT_TRUE(testing::AllClose(testing::Floats(t), want[i++], {.atol = 0})) << name;
    });
  }
  model::ModelWeights g = model::AllocateWeights(*config);
  FakeCollective fake;
  EXPECT_FALSE(AllReduceGradients(fake, g, 0).ok());
}

}  // namespace
}  // namespace tandem::trainer

namespace tandem::trainer {
namespace {

// The device path's calls: every float of every gradient in exactly one range; a layer's
// per-expert views of each expert stack joined into one range (3 stacks per MoE layer instead of
// 3·E views); the same ranges on every call (every rank computes them alike).
TEST(CollectivesTest, ReductionRangesJoinTheExpertViewsOfAStack) {
  auto config = model::LoadModelConfig("configs/models/tiny-hybrid.json");
  ASSERT_TRUE(config.ok()) << config.status();
  model::ModelWeights w = model::AllocateWeights(*config);
  std::vector<Tensor> tensors;
  int64_t total = 0;
  w.ForEachParameter([&](const std::string&, Tensor& t) {
    tensors.push_back(t);
    total += t.numel();
  });
  const std::vector<ReductionRange> ranges = ReductionRanges(tensors);

  int64_t moe_layers = 0;
  for (int64_t l = 0; l < config->num_hidden_layers; ++l) moe_layers += config->IsMoeLayer(l);
  ASSERT_GT(moe_layers, 0);
  ASSERT_GT(config->num_experts, 1);
  EXPECT_EQ(ranges.size(), tensors.size() - moe_layers * 3 * (config->num_experts - 1));

  std::vector<std::pair<const float*, const float*>> spans;
  int64_t covered = 0;
  for (const ReductionRange& r : ranges) {
    spans.push_back({r.data, r.data + r.n});
    covered += r.n;
  }
  EXPECT_EQ(covered, total);
  std::sort(spans.begin(), spans.end(), [](const auto& a, const auto& b) {
    return std::less<const float*>()(a.first, b.first);
  });
  for (size_t i = 1; i < spans.size(); ++i) {
    EXPECT_FALSE(std::less<const float*>()(spans[i].first, spans[i - 1].second)) << "overlap";
  }
  for (const Tensor& t : tensors) {
    const float* p = t.data<float>();
    EXPECT_TRUE(std::any_of(spans.begin(), spans.end(), [&](const auto& s) {
      return !std::less<const float*>()(p, s.first) &&
             !std::less<const float*>()(s.second, p + t.numel());
    }));
  }
  const std::vector<ReductionRange> again = ReductionRanges(tensors);
  ASSERT_EQ(again.size(), ranges.size());
  for (size_t i = 0; i < ranges.size(); ++i) {
    EXPECT_EQ(again[i].data, ranges[i].data);
    EXPECT_EQ(again[i].n, ranges[i].n);
  }
}

}  // namespace
}  // namespace tandem::trainer
