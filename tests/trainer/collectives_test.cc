// Collectives without MPI: the local collective is the identity, and the bucketed gradient
// all-reduce hands every gradient element to the collective exactly once, in ForEachParameter
// order, and writes the result back to the right place whatever the bucket size.
#include "trainer/collectives.h"

#include <cstring>
#include <set>

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
