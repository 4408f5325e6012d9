// Embedding tests: lookup and scatter-add gradient vs the fp64 reference (the reference gradient
// checked by finite differences), deterministic accumulation of repeated ids for any thread
// count, and bad ids / shapes.
#include "kernels/embedding/embedding.h"

#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/reference/embedding_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

constexpr int64_t kVocab = 11;

std::vector<int32_t> Ids(int64_t t, uint64_t seed) {
  std::vector<int32_t> ids;
  for (float r : RandomVector(t, seed, 0.0f, static_cast<float>(kVocab))) {
    ids.push_back(static_cast<int32_t>(r));
  }
  return ids;
}

TEST(EmbeddingTest, ForwardCopiesRows) {
  Context ctx = Context::Cpu(2);
  for (int64_t t : {1, 6, 40}) {
    for (int64_t d : {1, 17}) {
      auto tab = RandomVector(kVocab * d, 1);
      auto ids = Ids(t, 2 + t);
      Tensor out = Tensor::Empty({t, d}, DType::kF32);
      ASSERT_TRUE(
          EmbeddingFwd(ctx, Tensor::FromVector(tab, {kVocab, d}), Tensor::FromVector(ids, {t}), out)
              .ok());
      auto ref = reference::EmbeddingFwd(ToDouble(tab), ids, d);
      EXPECT_TRUE(AllClose(Floats(out), ref, {.atol = 0, .shape = {t, d}}));
    }
  }
}

TEST(EmbeddingTest, ReferenceBackwardMatchesFiniteDifferences) {
  const int64_t d = 3;
  std::vector<int32_t> ids = {4, 1, 4, 0, 4};
  auto table = ToDouble(RandomVector(kVocab * d, 3));
  auto dout = ToDouble(RandomVector(ids.size() * d, 4));
  std::vector<double> dtable(kVocab * d, 0.0);
  reference::EmbeddingBwd(ids, dout, d, dtable);
  auto loss = [&](const std::vector<double>& tab) {
    auto out = reference::EmbeddingFwd(tab, ids, d);
    double l = 0;
    for (size_t i = 0; i < out.size(); ++i) l += out[i] * dout[i];
    return l;
  };
  for (size_t i = 0; i < table.size(); ++i) {
    EXPECT_NEAR(dtable[i], testing::FiniteDifference(loss, table, i), 1e-8) << i;
  }
}

TEST(EmbeddingTest, BackwardAccumulatesRepeatedIdsInTokenOrder) {
  for (int threads : {1, 2}) {
    Context ctx = Context::Cpu(threads);
    const int64_t t = 53, d = 37;
    auto ids = Ids(t, 5);  // 53 tokens over 11 ids: many repeats
    auto dout = RandomVector(t * d, 6);
    auto dt0 = RandomVector(kVocab * d, 7);
    Tensor dtable = Tensor::FromVector(dt0, {kVocab, d});
    ASSERT_TRUE(
        EmbeddingBwd(ctx, Tensor::FromVector(ids, {t}), Tensor::FromVector(dout, {t, d}), dtable)
            .ok());
    auto ref = ToDouble(dt0);
    reference::EmbeddingBwd(ids, ToDouble(dout), d, ref);
    EXPECT_TRUE(AllClose(Floats(dtable), ref, {.atol = 1e-6, .shape = {kVocab, d}}));
    // The promised order, spelled out in fp32: start from dtable, add tokens t ascending.
    std::vector<float> expect = dt0;
    for (int64_t r = 0; r < t; ++r) {
      for (int64_t c = 0; c < d; ++c) expect[ids[r] * d + c] += dout[r * d + c];
    }
    EXPECT_TRUE(BitwiseEqual(Floats(dtable), expect, {kVocab, d})) << threads << " threads";
  }
}

TEST(EmbeddingTest, BadInputsNameTheArgument) {
  Context ctx = Context::Cpu(1);
  Tensor table = Tensor::Zeros({kVocab, 4}, DType::kF32), out = Tensor::Zeros({3, 4}, DType::kF32);
  Tensor bad_ids = Tensor::FromVector(std::vector<int32_t>{0, 11, 2}, {3});
  absl::Status s = EmbeddingFwd(ctx, table, bad_ids, out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ids[1] = 11"), std::string::npos) << s.message();
  Tensor neg_ids = Tensor::FromVector(std::vector<int32_t>{0, 1, -1}, {3});
  s = EmbeddingBwd(ctx, neg_ids, out, table);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ids[2] = -1"), std::string::npos) << s.message();
  Tensor ids = Tensor::FromVector(std::vector<int32_t>{0, 1, 2}, {3});
  auto expect_bad = [](absl::Status s, const std::string& name) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_EQ(s.message().substr(0, name.size() + 1), name + ":") << s.message();
  };
  Tensor out_bad = Tensor::Zeros({3, 5}, DType::kF32);
  expect_bad(EmbeddingFwd(ctx, table, ids, out_bad), "out");
  expect_bad(EmbeddingFwd(ctx, table, Tensor::Zeros({3}, DType::kF32), out), "ids");
  expect_bad(EmbeddingFwd(ctx, Tensor::Zeros({kVocab}, DType::kF32), ids, out), "table");
  expect_bad(EmbeddingBwd(ctx, ids, out_bad, table), "dout");
  Tensor dtable_bf16 = Tensor::Zeros({kVocab, 4}, DType::kBF16);
  expect_bad(EmbeddingBwd(ctx, ids, out, dtable_bf16), "dtable");
}

}  // namespace
}  // namespace tandem::kernels
