// Tests for the routed experts: forward and backward against the fp64 reference (itself checked by
// finite differences), batch invariance of a token's output bits, thread-count invariance, experts
// with no tokens, K = 1, T = 1 and argument checks.
#include "kernels/moe_experts/moe_experts.h"

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/reference/moe_experts_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

// A problem in fp32 (the kernel's inputs); the reference sees the same values widened.
struct Problem {
  int64_t t, k, e, dm, i;
  std::vector<float> x, weight, gate, up, down;
  std::vector<int32_t> idx;

  testing::ExpertsRefProblem Ref() const {
    return {t,
            k,
            e,
            dm,
            i,
            ToDouble(x),
            idx,
            ToDouble(weight),
            ToDouble(gate),
            ToDouble(up),
            ToDouble(down)};
  }
  MoeExpertsWeights Weights() const {
    return {Tensor::FromVector(gate, {e, i, dm}), Tensor::FromVector(up, {e, i, dm}),
            Tensor::FromVector(down, {e, dm, i})};
  }
  Tensor X() const { return Tensor::FromVector(x, {t, dm}); }
  Tensor Idx() const { return Tensor::FromVector(idx, {t, k}); }
  Tensor Weight() const { return Tensor::FromVector(weight, {t, k}); }
};

// K distinct experts per token; experts >= `used_experts` get no tokens.
Problem MakeProblem(int64_t t, int64_t k, uint64_t seed, int64_t used_experts = 7, int64_t e = 8,
                    int64_t dm = 32, int64_t i = 16) {
  Problem p{t, k, e, dm, i, {}, {}, {}, {}, {}, {}};
  p.x = RandomVector(t * dm, seed, -1.0f, 1.0f);
  p.weight = RandomVector(t * k, seed + 1, 0.1f, 1.5f);
  p.gate = RandomVector(e * i * dm, seed + 2, -0.3f, 0.3f);
  p.up = RandomVector(e * i * dm, seed + 3, -0.3f, 0.3f);
  p.down = RandomVector(e * dm * i, seed + 4, -0.3f, 0.3f);
  std::mt19937_64 rng(seed + 5);
  std::vector<int32_t> experts(used_experts);
  std::iota(experts.begin(), experts.end(), 0);
  for (int64_t tok = 0; tok < t; ++tok) {
    std::shuffle(experts.begin(), experts.end(), rng);
    p.idx.insert(p.idx.end(), experts.begin(), experts.begin() + k);
  }
  return p;
}

Tensor Forward(const Problem& p, MoeExpertsActivations* acts, int threads = 1) {
  Tensor out = Tensor::Empty({p.t, p.dm}, DType::kF32);
  absl::Status s =
      MoeExpertsFwd(Context::Cpu(threads), p.X(), p.Idx(), p.Weight(), p.Weights(), out, acts);
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

struct Grads {
  Tensor dx, dweight;
  MoeExpertsWeights dw;
};

// Backward with the weight gradients starting from `init` (to check they accumulate).
Grads Backward(const Problem& p, const std::vector<float>& dout, float init, int threads = 1) {
  MoeExpertsActivations acts;
  Forward(p, &acts, threads);
  Grads g{Tensor::Empty({p.t, p.dm}, DType::kF32), Tensor::Empty({p.t, p.k}, DType::kF32),
          p.Weights()};
  for (Tensor* w : {&g.dw.gate, &g.dw.up, &g.dw.down}) {
    std::fill(w->data<float>(), w->data<float>() + w->numel(), init);
  }
  absl::Status s =
      MoeExpertsBwd(Context::Cpu(threads), p.X(), p.Idx(), p.Weight(), p.Weights(), acts,
                    Tensor::FromVector(dout, {p.t, p.dm}), g.dx, g.dweight, g.dw);
  EXPECT_TRUE(s.ok()) << s;
  return g;
}

std::vector<double> Plus(std::vector<double> v, double c) {
  for (double& x : v) x += c;
  return v;
}

void ExpectForwardMatchesReference(const Problem& p) {
  MoeExpertsActivations acts;
  Tensor out = Forward(p, &acts);
  testing::ExpertsRefForward ref = testing::MoeExpertsFwdRef(p.Ref());
  const testing::CompareOptions opt{.atol = 1e-5, .rtol = 1e-5};
  EXPECT_TRUE(AllClose(Floats(out), ref.out, opt));
  EXPECT_TRUE(AllClose(Floats(acts.gate), ref.gate, opt));
  EXPECT_TRUE(AllClose(Floats(acts.up), ref.up, opt));
  EXPECT_TRUE(AllClose(Floats(acts.y), ref.y, opt));
  EXPECT_TRUE(BitwiseEqual(Floats(out), Floats(Forward(p, nullptr))));
}

void ExpectBackwardMatchesReference(const Problem& p, uint64_t seed) {
  std::vector<float> dout = RandomVector(p.t * p.dm, seed);
  const float init = 0.25f;
  Grads g = Backward(p, dout, init);
  testing::ExpertsRefGrads ref = testing::MoeExpertsBwdRef(p.Ref(), ToDouble(dout));
  const testing::CompareOptions opt{.atol = 1e-5, .rtol = 1e-5};
  EXPECT_TRUE(AllClose(Floats(g.dx), ref.dx, opt));
  EXPECT_TRUE(AllClose(Floats(g.dweight), ref.dweight, opt));
  EXPECT_TRUE(AllClose(Floats(g.dw.gate), Plus(ref.dgate_w, init), opt));
  EXPECT_TRUE(AllClose(Floats(g.dw.up), Plus(ref.dup_w, init), opt));
  EXPECT_TRUE(AllClose(Floats(g.dw.down), Plus(ref.ddown_w, init), opt));
}

TEST(MoeExpertsTest, ForwardMatchesReference) {
  ExpectForwardMatchesReference(MakeProblem(13, 2, 1));  // expert 7 gets no tokens
  ExpectForwardMatchesReference(MakeProblem(5, 2, 2, /*used_experts=*/3));
}

TEST(MoeExpertsTest, ReferenceBackwardMatchesFiniteDifferences) {
  const Problem small = MakeProblem(3, 2, 3, /*used_experts=*/3, /*e=*/4, /*dm=*/6, /*i=*/5);
  const testing::ExpertsRefProblem base = small.Ref();
  const std::vector<double> dout = ToDouble(RandomVector(3 * 6, 4));
  const testing::ExpertsRefGrads grads = testing::MoeExpertsBwdRef(base, dout);
  struct Param {
    std::vector<double> testing::ExpertsRefProblem::*field;
    const std::vector<double>* grad;
  };
  for (Param prm : {Param{&testing::ExpertsRefProblem::x, &grads.dx},
                    Param{&testing::ExpertsRefProblem::weight, &grads.dweight},
                    Param{&testing::ExpertsRefProblem::gate, &grads.dgate_w},
                    Param{&testing::ExpertsRefProblem::up, &grads.dup_w},
                    Param{&testing::ExpertsRefProblem::down, &grads.ddown_w}}) {
    auto loss = [&](const std::vector<double>& v) {
      testing::ExpertsRefProblem q = base;
      q.*prm.field = v;
      std::vector<double> out = testing::MoeExpertsFwdRef(q).out;
      double l = 0;
      for (size_t j = 0; j < out.size(); ++j) l += dout[j] * out[j];
      return l;
    };
    const std::vector<double>& v = base.*prm.field;
    for (size_t j = 0; j < v.size(); ++j) {
      EXPECT_NEAR(testing::FiniteDifference(loss, v, j), (*prm.grad)[j], 1e-8) << "coord " << j;
    }
  }
}

TEST(MoeExpertsTest, BackwardMatchesReferenceAndAccumulates) {
  ExpectBackwardMatchesReference(MakeProblem(13, 2, 10), 11);
}

TEST(MoeExpertsTest, SingleTokenAndSingleExpertPerToken) {
  ExpectForwardMatchesReference(MakeProblem(1, 2, 20));
  ExpectBackwardMatchesReference(MakeProblem(1, 2, 20), 21);
  ExpectForwardMatchesReference(MakeProblem(9, 1, 22));
  ExpectBackwardMatchesReference(MakeProblem(9, 1, 22), 23);
  ExpectForwardMatchesReference(MakeProblem(1, 1, 24));
  ExpectBackwardMatchesReference(MakeProblem(1, 1, 24), 25);
}

// Copies token `src` of `from` into position `dst` of `to` (same weights).
void PlaceToken(const Problem& from, int64_t src, Problem& to, int64_t dst) {
  std::copy_n(from.x.begin() + src * from.dm, from.dm, to.x.begin() + dst * to.dm);
  std::copy_n(from.idx.begin() + src * from.k, from.k, to.idx.begin() + dst * to.k);
  std::copy_n(from.weight.begin() + src * from.k, from.k, to.weight.begin() + dst * to.k);
}

TEST(MoeExpertsTest, TokenOutputDoesNotDependOnTheBatch) {
  const Problem alone = MakeProblem(1, 2, 30, /*used_experts=*/8);
  MoeExpertsActivations alone_acts;
  Tensor alone_out = Forward(alone, &alone_acts);
  for (uint64_t seed : {31, 32, 33}) {
    Problem batch = MakeProblem(17 + seed % 5, 2, seed, /*used_experts=*/8);
    batch.gate = alone.gate;
    batch.up = alone.up;
    batch.down = alone.down;
    const int64_t at = static_cast<int64_t>(seed % 4) * 3;
    PlaceToken(alone, 0, batch, at);
    for (int threads : {1, 2}) {
      MoeExpertsActivations acts;
      Tensor out = Forward(batch, &acts, threads);
      EXPECT_TRUE(BitwiseEqual(Floats(alone_out), Floats(out.Rows(at, at + 1))));
      EXPECT_TRUE(BitwiseEqual(Floats(alone_acts.y), Floats(acts.y.Rows(at * 2, at * 2 + 2))));
    }
  }
}

TEST(MoeExpertsTest, ThreadCountDoesNotChangeBits) {
  const Problem p = MakeProblem(61, 2, 40, /*used_experts=*/6);
  MoeExpertsActivations a1, a2;
  EXPECT_TRUE(BitwiseEqual(Floats(Forward(p, &a1, 1)), Floats(Forward(p, &a2, 2))));
  EXPECT_TRUE(BitwiseEqual(Floats(a1.gate), Floats(a2.gate)));
  EXPECT_TRUE(BitwiseEqual(Floats(a1.y), Floats(a2.y)));
  std::vector<float> dout = RandomVector(p.t * p.dm, 41);
  Grads g1 = Backward(p, dout, 0.0f, 1), g2 = Backward(p, dout, 0.0f, 2);
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dx), Floats(g2.dx)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dweight), Floats(g2.dweight)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dw.gate), Floats(g2.dw.gate)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dw.up), Floats(g2.dw.up)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dw.down), Floats(g2.dw.down)));
  // Experts 6 and 7 saw no tokens: their gradients stay exactly zero.
  const int64_t per_expert = p.i * p.dm;
  for (const Tensor* w : {&g1.dw.gate, &g1.dw.up, &g1.dw.down}) {
    const float* d = w->data<float>() + 6 * per_expert;
    EXPECT_TRUE(std::all_of(d, d + 2 * per_expert, [](float v) { return v == 0.0f; }));
  }
}

TEST(MoeExpertsTest, RejectsBadArguments) {
  Problem p = MakeProblem(4, 2, 50);
  Tensor out = Tensor::Empty({p.t, p.dm}, DType::kF32);
  Context ctx = Context::Cpu(1);
  EXPECT_TRUE(MoeExpertsFwd(ctx, p.X(), p.Idx(), p.Weight(), p.Weights(), out, nullptr).ok());
  p.idx[5] = 8;
  absl::Status s = MoeExpertsFwd(ctx, p.X(), p.Idx(), p.Weight(), p.Weights(), out, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("topk_idx"), std::string::npos) << s;
  p.idx[5] = 0;
  MoeExpertsWeights w = p.Weights();
  w.down = Tensor::Zeros({8, 16, 32}, DType::kF32);  // transposed
  s = MoeExpertsFwd(ctx, p.X(), p.Idx(), p.Weight(), w, out, nullptr);
  EXPECT_NE(s.message().find("w.down"), std::string::npos) << s;
  Tensor short_weight = Tensor::Zeros({4, 1}, DType::kF32);
  s = MoeExpertsFwd(ctx, p.X(), p.Idx(), short_weight, p.Weights(), out, nullptr);
  EXPECT_NE(s.message().find("topk_weight"), std::string::npos) << s;
}

}  // namespace
}  // namespace tandem::kernels
