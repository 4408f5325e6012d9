// Tests for CPU chunked linear attention: forward and backward against the fp64 plain-recurrence
// reference (whose backward is checked by finite differences first), and the numerics contract
// (rule 3) bitwise: chunked prefill + decode == one chunked pass, packed == alone, any thread
// count, batched decode == decode alone, scalar pieces == AVX2 pieces.
#include "kernels/linear_attention/linear_attention.h"

#include <cmath>
#include <cstring>
#include <random>
#include <sstream>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/cpu_features.h"
#include "kernels/linear_attention/linear_attention_internal.h"
#include "tests/kernels/reference/linear_attention_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::CompareOptions;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;
namespace ref = ::tandem::testing::ref;

constexpr int64_t C = kLinearAttentionChunk;

std::vector<float> Vec(const Tensor& t) {
  return t.defined() ? std::vector<float>(Floats(t).begin(), Floats(t).end())
                     : std::vector<float>();
}

// Ring-mini decays x_h = 2^(−8(h'+1)/16) for H heads h' spread over 0..15 (MODEL.md §2.2):
// from 0.7071 (λ ≈ 0.49) to 0.0039 (λ ≈ 0.996).
std::vector<float> RingMiniDecays(int64_t h) {
  std::vector<float> x(h);
  for (int64_t i = 0; i < h; ++i) {
    int64_t hh = h == 1 ? 0 : i * 15 / (h - 1);
    x[i] = std::exp2(-8.0f * static_cast<float>(hh + 1) / 16.0f);
  }
  return x;
}

struct Problem {
  LinearAttentionParams p;
  std::vector<int32_t> cu;              // [B + 1]
  Tensor q, k, v, d_o, decay, initial;  // [T, H, D] ×4, [H], [B, H, D, D] or undefined
  int64_t T() const { return cu.back(); }
  int64_t B() const { return static_cast<int64_t>(cu.size()) - 1; }
  int64_t NC() const {
    int64_t n = 0;
    for (int64_t b = 0; b < B(); ++b) n += (cu[b + 1] - cu[b] + C - 1) / C;
    return n;
  }
  Tensor CuSeqlens() const { return Tensor::FromVector(cu, {static_cast<int64_t>(cu.size())}); }
  ref::LinearAttentionDims Dims() const { return {p.num_heads, p.head_dim, p.scale, cu}; }
};

Problem MakeProblem(int64_t H, int64_t D, const std::vector<int32_t>& lens, uint64_t seed,
                    bool with_initial) {
  Problem pr;
  pr.p = {H, D, 1.0f / std::sqrt(static_cast<float>(D))};
  pr.cu = {0};
  for (int32_t len : lens) pr.cu.push_back(pr.cu.back() + len);
  const int64_t T = pr.T(), B = pr.B();
  pr.q = Tensor::FromVector(RandomVector(T * H * D, seed), {T, H, D});
  pr.k = Tensor::FromVector(RandomVector(T * H * D, seed + 1), {T, H, D});
  pr.v = Tensor::FromVector(RandomVector(T * H * D, seed + 2), {T, H, D});
  pr.d_o = Tensor::FromVector(RandomVector(T * H * D, seed + 3), {T, H, D});
  pr.decay = Tensor::FromVector(RingMiniDecays(H), {H});
  if (with_initial) {
    pr.initial = Tensor::FromVector(RandomVector(B * H * D * D, seed + 4), {B, H, D, D});
  }
  return pr;
}

struct FwdOut {
  Tensor o, chunk_states, boundary;  // [T, H, D], [NC, H, D, D], [B, H, D, D]
};
FwdOut RunFwd(const Problem& pr, int threads = 1) {
  const int64_t H = pr.p.num_heads, D = pr.p.head_dim;
  FwdOut f{Tensor::Empty({pr.T(), H, D}, DType::kF32),
           Tensor::Empty({pr.NC(), H, D, D}, DType::kF32),
           Tensor::Empty({pr.B(), H, D, D}, DType::kF32)};
  Context ctx = Context::Cpu(threads);
  absl::Status st = LinearAttentionFwd(ctx, pr.p, pr.q, pr.k, pr.v, pr.decay, pr.CuSeqlens(),
                                       pr.initial, f.o, f.chunk_states, f.boundary);
  EXPECT_TRUE(st.ok()) << st;
  return f;
}

struct BwdOut {
  Tensor dq, dk, dv, d_init;  // [T, H, D] ×3, [B, H, D, D]
};
BwdOut RunBwd(const Problem& pr, const FwdOut& f, int threads = 1) {
  const int64_t H = pr.p.num_heads, D = pr.p.head_dim;
  BwdOut g{Tensor::Empty(pr.q.shape(), DType::kF32), Tensor::Empty(pr.q.shape(), DType::kF32),
           Tensor::Empty(pr.q.shape(), DType::kF32), Tensor::Empty({pr.B(), H, D, D}, DType::kF32)};
  Context ctx = Context::Cpu(threads);
  absl::Status st = LinearAttentionBwd(ctx, pr.p, pr.q, pr.k, pr.v, pr.decay, pr.CuSeqlens(),
                                       f.chunk_states, pr.d_o, g.dq, g.dk, g.dv, g.d_init);
  EXPECT_TRUE(st.ok()) << st;
  return g;
}

// fp32 kernels vs the fp64 recurrence: each element within 2× the fp32 recurrence's own error
// (same_precision) plus a few fp32 ulps of the largest output.
::testing::AssertionResult CloseToRef(const Tensor& actual, const std::vector<double>& ref64,
                                      const std::vector<float>& ref32) {
  double max_abs = 0;
  for (double r : ref64) max_abs = std::max(max_abs, std::fabs(r));
  CompareOptions opt;
  opt.atol = 4e-7 * max_abs;
  opt.same_precision = ref32;
  opt.shape = actual.shape();
  return AllClose(Floats(actual), ref64, opt);
}

struct FwdCase {
  int64_t H, D;
  std::vector<int32_t> lens;
  bool with_initial;
};

class LinearAttentionFwdTest : public ::testing::TestWithParam<FwdCase> {};

TEST_P(LinearAttentionFwdTest, MatchesRecurrence) {
  const FwdCase& c = GetParam();
  Problem pr = MakeProblem(c.H, c.D, c.lens, 11, c.with_initial);
  FwdOut f = RunFwd(pr);
  auto r64 = ref::LinearAttentionRefFwd<double>(
      pr.Dims(), ToDouble(Floats(pr.q)), ToDouble(Floats(pr.k)), ToDouble(Floats(pr.v)),
      ToDouble(Floats(pr.decay)), ToDouble(Vec(pr.initial)));
  auto r32 = ref::LinearAttentionRefFwd<float>(pr.Dims(), Vec(pr.q), Vec(pr.k), Vec(pr.v),
                                               Vec(pr.decay), Vec(pr.initial));
  EXPECT_TRUE(CloseToRef(f.o, r64.o, r32.o)) << "o";
  EXPECT_TRUE(CloseToRef(f.chunk_states, r64.chunk_states, r32.chunk_states)) << "chunk_states";
  EXPECT_TRUE(CloseToRef(f.boundary, r64.boundary_state, r32.boundary_state)) << "boundary";
}

INSTANTIATE_TEST_SUITE_P(Shapes, LinearAttentionFwdTest,
                         ::testing::Values(FwdCase{2, 32, {1}, false}, FwdCase{2, 32, {63}, false},
                                           FwdCase{2, 32, {65}, true}, FwdCase{3, 16, {130}, false},
                                           FwdCase{2, 64, {3 * C}, false},
                                           FwdCase{2, 64, {3 * C}, true},
                                           FwdCase{4, 24, {1, 70, 0, 128, 33}, true},
                                           FwdCase{3, 16, {64, 5, 130}, false}),
                         [](const ::testing::TestParamInfo<FwdCase>& info) {
                           std::ostringstream name;
                           name << "H" << info.param.H << "D" << info.param.D;
                           for (int32_t len : info.param.lens) name << "_" << len;
                           if (info.param.with_initial) name << "_init";
                           return name.str();
                         });

// Chain of trust, step 1: the fp64 reference backward matches finite differences of the fp64
// reference forward for the loss Σ o·d_o, for q, k, v and the initial state.
TEST(LinearAttentionRefTest, BackwardMatchesFiniteDifferences) {
  Problem pr = MakeProblem(2, 4, {70, 5}, 21, /*with_initial=*/true);
  const ref::LinearAttentionDims dims = pr.Dims();
  std::vector<double> x = ToDouble(Floats(pr.decay)), d_o = ToDouble(Floats(pr.d_o));
  std::vector<std::vector<double>> in = {ToDouble(Floats(pr.q)), ToDouble(Floats(pr.k)),
                                         ToDouble(Floats(pr.v)), ToDouble(Floats(pr.initial))};
  ref::LinearAttentionRefGrads<double> g =
      ref::LinearAttentionRefBwd(dims, in[0], in[1], in[2], x, in[3], d_o);
  const std::vector<double>* grads[] = {&g.dq, &g.dk, &g.dv, &g.d_init};
  std::mt19937_64 rng(5);
  for (int which = 0; which < 4; ++which) {
    for (int trial = 0; trial < 16; ++trial) {
      size_t i = rng() % in[which].size();
      auto loss = [&](const std::vector<double>& xi) {
        std::vector<std::vector<double>> args = in;
        args[which] = xi;
        auto o = ref::LinearAttentionRefFwd<double>(dims, args[0], args[1], args[2], x, args[3]).o;
        double l = 0;
        for (size_t e = 0; e < o.size(); ++e) l += o[e] * d_o[e];
        return l;
      };
      double fd = testing::FiniteDifference(loss, in[which], i);
      EXPECT_NEAR((*grads[which])[i], fd, 1e-6 * (1 + std::fabs(fd))) << which << " at " << i;
    }
  }
}

// Chain of trust, step 2: the CPU chunked backward vs the reference backward, across chunk
// boundaries, partial chunks, packed sequences and an initial state.
TEST(LinearAttentionBwdTest, MatchesReference) {
  for (bool with_initial : {false, true}) {
    Problem pr = MakeProblem(3, 32, {130, 20, 64, 1}, 31, with_initial);
    BwdOut g = RunBwd(pr, RunFwd(pr));
    auto r64 = ref::LinearAttentionRefBwd<double>(
        pr.Dims(), ToDouble(Floats(pr.q)), ToDouble(Floats(pr.k)), ToDouble(Floats(pr.v)),
        ToDouble(Floats(pr.decay)), ToDouble(Vec(pr.initial)), ToDouble(Floats(pr.d_o)));
    auto r32 = ref::LinearAttentionRefBwd<float>(pr.Dims(), Vec(pr.q), Vec(pr.k), Vec(pr.v),
                                                 Vec(pr.decay), Vec(pr.initial), Vec(pr.d_o));
    EXPECT_TRUE(CloseToRef(g.dq, r64.dq, r32.dq)) << "dq";
    EXPECT_TRUE(CloseToRef(g.dk, r64.dk, r32.dk)) << "dk";
    EXPECT_TRUE(CloseToRef(g.dv, r64.dv, r32.dv)) << "dv";
    EXPECT_TRUE(CloseToRef(g.d_init, r64.d_init, r32.d_init)) << "d_initial_state";
  }
}
// Decode state of B sequences: boundary state, open chunk and its length.
struct DecodeState {
  Tensor state, open_k, open_v, open_len;  // [B, H, D, D], [B, C, H, D] ×2, [B] i32
};

DecodeState EmptyDecodeState(int64_t B, int64_t H, int64_t D) {
  return {Tensor::Zeros({B, H, D, D}, DType::kF32), Tensor::Zeros({B, C, H, D}, DType::kF32),
          Tensor::Zeros({B, C, H, D}, DType::kF32), Tensor::Zeros({B}, DType::kI32)};
}

// One decode step of the B tokens q, k, v [B, H, D]; returns o [B, H, D].
Tensor DecodeStep(const Problem& pr, const Tensor& q, const Tensor& k, const Tensor& v,
                  DecodeState& ds, int threads = 1) {
  Tensor o = Tensor::Empty(q.shape(), DType::kF32);
  Context ctx = Context::Cpu(threads);
  absl::Status st = LinearAttentionDecode(ctx, pr.p, q, k, v, pr.decay, ds.state, ds.open_k,
                                          ds.open_v, ds.open_len, o);
  EXPECT_TRUE(st.ok()) << st;
  return o;
}

// Rule 3: chunked prefill of the first P tokens (boundary state + the trailing P mod C tokens'
// k, v copied to the open chunk), then one decode call per token, gives the one-pass chunked
// forward's bits for every token and for the final boundary state.
void CheckPrefillThenDecode(int32_t P, int32_t T, bool with_initial) {
  SCOPED_TRACE(::testing::Message() << "P=" << P << " T=" << T << " init=" << with_initial);
  Problem pr = MakeProblem(3, 32, {T}, 41, with_initial);
  const int64_t H = pr.p.num_heads, D = pr.p.head_dim;
  FwdOut full = RunFwd(pr);
  DecodeState ds = EmptyDecodeState(1, H, D);
  if (with_initial) ds.state = pr.initial.Clone();
  if (P > 0) {
    Problem pre = pr;
    pre.cu = {0, P};
    pre.q = pr.q.Rows(0, P), pre.k = pr.k.Rows(0, P), pre.v = pr.v.Rows(0, P);
    FwdOut f = RunFwd(pre);
    EXPECT_TRUE(BitwiseEqual(Floats(f.o), Floats(full.o.Rows(0, P)), f.o.shape()));
    ds.state = f.boundary;
    const int64_t first = P / C * C, row = H * D;
    std::memcpy(ds.open_k.data<float>(), pr.k.data<float>() + first * row, (P - first) * row * 4);
    std::memcpy(ds.open_v.data<float>(), pr.v.data<float>() + first * row, (P - first) * row * 4);
    ds.open_len.data<int32_t>()[0] = P % C;
  }
  for (int64_t t = P; t < T; ++t) {
    Tensor o = DecodeStep(pr, pr.q.Rows(t, t + 1), pr.k.Rows(t, t + 1), pr.v.Rows(t, t + 1), ds);
    ASSERT_TRUE(BitwiseEqual(Floats(o), Floats(full.o.Rows(t, t + 1)), o.shape())) << "t=" << t;
  }
  EXPECT_TRUE(BitwiseEqual(Floats(ds.state), Floats(full.boundary), ds.state.shape()));
  EXPECT_EQ(ds.open_len.data<int32_t>()[0], T % C);
}

TEST(LinearAttentionContractTest, PrefillThenDecodeIsBitwiseOnePass) {
  CheckPrefillThenDecode(37, 150, false);
  CheckPrefillThenDecode(64, 129, true);
  CheckPrefillThenDecode(1, 70, false);
  CheckPrefillThenDecode(0, 70, false);
  CheckPrefillThenDecode(0, 65, true);
  CheckPrefillThenDecode(128, 130, false);
}

// A sequence's outputs and states are the same bits alone as packed between others.
TEST(LinearAttentionContractTest, PackedEqualsAlone) {
  Problem packed = MakeProblem(2, 32, {70, 130, 1, 64}, 51, /*with_initial=*/true);
  const int64_t H = 2, D = 32, dd = D * D;
  Problem alone = packed;
  alone.cu = {0, 130};
  alone.q = packed.q.Rows(70, 200), alone.k = packed.k.Rows(70, 200);
  alone.v = packed.v.Rows(70, 200), alone.d_o = packed.d_o.Rows(70, 200);
  alone.initial = packed.initial.Rows(1, 2);
  FwdOut fp = RunFwd(packed), fa = RunFwd(alone);
  EXPECT_TRUE(BitwiseEqual(Floats(fa.o), Floats(fp.o.Rows(70, 200))));
  EXPECT_TRUE(BitwiseEqual(Floats(fa.chunk_states), Floats(fp.chunk_states.Rows(2, 5))));
  EXPECT_TRUE(BitwiseEqual(Floats(fa.boundary), Floats(fp.boundary.Rows(1, 2))));
  BwdOut gp = RunBwd(packed, fp), ga = RunBwd(alone, fa);
  EXPECT_TRUE(BitwiseEqual(Floats(ga.dq), Floats(gp.dq.Rows(70, 200))));
  EXPECT_TRUE(BitwiseEqual(Floats(ga.dk), Floats(gp.dk.Rows(70, 200))));
  EXPECT_TRUE(BitwiseEqual(Floats(ga.dv), Floats(gp.dv.Rows(70, 200))));
  EXPECT_TRUE(BitwiseEqual(Floats(ga.d_init), {gp.d_init.data<float>() + H * dd, H * dd}));
}

TEST(LinearAttentionContractTest, ThreadCountDoesNotChangeBits) {
  Problem pr = MakeProblem(3, 32, {70, 130, 1}, 61, /*with_initial=*/true);
  FwdOut f1 = RunFwd(pr, 1), f2 = RunFwd(pr, 2);
  EXPECT_TRUE(BitwiseEqual(Floats(f1.o), Floats(f2.o)));
  EXPECT_TRUE(BitwiseEqual(Floats(f1.chunk_states), Floats(f2.chunk_states)));
  EXPECT_TRUE(BitwiseEqual(Floats(f1.boundary), Floats(f2.boundary)));
  BwdOut g1 = RunBwd(pr, f1, 1), g2 = RunBwd(pr, f1, 2);
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dq), Floats(g2.dq)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dk), Floats(g2.dk)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.dv), Floats(g2.dv)));
  EXPECT_TRUE(BitwiseEqual(Floats(g1.d_init), Floats(g2.d_init)));
  // Decode: three sequences with the first tokens as the step's inputs.
  Problem step = MakeProblem(3, 32, {1, 1, 1}, 62, /*with_initial=*/true);
  DecodeState a = EmptyDecodeState(3, 3, 32), b = EmptyDecodeState(3, 3, 32);
  a.state = step.initial.Clone(), b.state = step.initial.Clone();
  for (int i = 0; i < 3; ++i) a.open_len.data<int32_t>()[i] = b.open_len.data<int32_t>()[i] = 62;
  for (int s = 0; s < 3; ++s) {  // crosses a chunk boundary
    Tensor o1 = DecodeStep(step, step.q, step.k, step.v, a, 1);
    Tensor o2 = DecodeStep(step, step.q, step.k, step.v, b, 2);
    EXPECT_TRUE(BitwiseEqual(Floats(o1), Floats(o2)));
  }
  EXPECT_TRUE(BitwiseEqual(Floats(a.state), Floats(b.state)));
}

// Rule 1 for decode: each row of a batch with different open_len gets its bits alone.
TEST(LinearAttentionContractTest, BatchedDecodeEqualsAlone) {
  const int64_t B = 3, H = 2, D = 32, row = H * D;
  Problem pr = MakeProblem(H, D, {1, 1, 1}, 71, /*with_initial=*/true);
  DecodeState batch = EmptyDecodeState(B, H, D);
  batch.state = pr.initial.Clone();
  batch.open_k = Tensor::FromVector(RandomVector(B * C * row, 72), {B, C, H, D});
  batch.open_v = Tensor::FromVector(RandomVector(B * C * row, 73), {B, C, H, D});
  const int32_t lens[B] = {0, 17, 63};
  std::vector<DecodeState> alone;
  for (int64_t b = 0; b < B; ++b) {
    batch.open_len.data<int32_t>()[b] = lens[b];
    alone.push_back({batch.state.Rows(b, b + 1).Clone(), batch.open_k.Rows(b, b + 1).Clone(),
                     batch.open_v.Rows(b, b + 1).Clone(),
                     Tensor::FromVector<int32_t>({lens[b]}, {1})});
  }
  for (int s = 0; s < 2; ++s) {
    Tensor o = DecodeStep(pr, pr.q, pr.k, pr.v, batch);
    for (int64_t b = 0; b < B; ++b) {
      Tensor ob =
          DecodeStep(pr, pr.q.Rows(b, b + 1), pr.k.Rows(b, b + 1), pr.v.Rows(b, b + 1), alone[b]);
      EXPECT_TRUE(BitwiseEqual(Floats(ob), Floats(o.Rows(b, b + 1)))) << "b=" << b;
      EXPECT_TRUE(BitwiseEqual(Floats(alone[b].state), Floats(batch.state.Rows(b, b + 1))));
      EXPECT_TRUE(BitwiseEqual(Floats(alone[b].open_k), Floats(batch.open_k.Rows(b, b + 1))));
      EXPECT_EQ(alone[b].open_len.data<int32_t>()[0], batch.open_len.data<int32_t>()[b]);
    }
  }
  EXPECT_EQ(batch.open_len.data<int32_t>()[2], 1);  // 63 → 0 (boundary) → 1
}

// The scalar VecMat (the fallback on CPUs without AVX2) and the AVX2 one agree bitwise on every
// blocking path: row blocks of 6, 4 and 1, column blocks of 64/32/16/8, scalar tails.
TEST(LinearAttentionPiecesTest, ScalarAndAvx2VecMatAgree) {
  if (!CpuHasAvx2Fma()) GTEST_SKIP() << "no AVX2/FMA on this CPU";
  uint64_t seed = 80;
  for (int64_t rows : {1, 3, 4, 6, 9, 10, 13}) {
    for (int64_t m : {0, 1, 5, 64, 128}) {
      for (int64_t n : {1, 7, 8, 15, 16, 33, 64, 100, 128}) {
        std::vector<float> x = RandomVector(rows * m + 1, seed++);
        std::vector<float> mat = RandomVector(m * n + 1, seed++);
        std::vector<float> a(rows * n), b(rows * n);
        cpu::VecMatScalar(rows, m, n, x.data(), m, mat.data(), n, a.data(), n);
        cpu::VecMatAvx2(rows, m, n, x.data(), m, mat.data(), n, b.data(), n);
        ASSERT_TRUE(BitwiseEqual(a, b)) << rows << "x" << m << "x" << n;
      }
    }
  }
}

TEST(LinearAttentionPiecesTest, DecayPowers) {
  float pow[C + 1];
  for (float x : RingMiniDecays(4)) {
    LinearAttentionDecayPowers(x, pow);
    EXPECT_EQ(pow[0], 1.0f);
    for (int64_t n = 0; n <= C; ++n) EXPECT_EQ(pow[n], std::exp(-(static_cast<float>(n) * x)));
  }
}

::testing::AssertionResult IsInvalidNaming(const absl::Status& st, const std::string& name) {
  if (st.code() == absl::StatusCode::kInvalidArgument &&
      std::string(st.message()).find(name) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "expected InvalidArgument naming " << name << ", got " << st;
}

TEST(LinearAttentionErrorsTest, BadForwardAndBackwardInputs) {
  const Problem good = MakeProblem(2, 16, {5, 70}, 91, /*with_initial=*/true);
  FwdOut f = RunFwd(good);
  auto fwd = [&](const Problem& pr, Tensor o, Tensor cs, Tensor bs) {
    return LinearAttentionFwd(Context::Cpu(1), pr.p, pr.q, pr.k, pr.v, pr.decay, pr.CuSeqlens(),
                              pr.initial, o, cs, bs);
  };
  auto bad = [&](auto mutate, const std::string& name) {
    Problem pr = good;
    FwdOut out{f.o.Clone(), f.chunk_states.Clone(), f.boundary.Clone()};
    mutate(pr, out);
    EXPECT_TRUE(IsInvalidNaming(fwd(pr, out.o, out.chunk_states, out.boundary), name));
    BwdOut g{f.o.Clone(), f.o.Clone(), f.o.Clone(), Tensor()};
    EXPECT_TRUE(IsInvalidNaming(
        LinearAttentionBwd(Context::Cpu(1), pr.p, pr.q, pr.k, pr.v, pr.decay, pr.CuSeqlens(),
                           out.chunk_states, pr.d_o, g.dq, g.dk, g.dv, g.d_init),
        name));
  };
  bad([](Problem& pr, FwdOut&) { pr.p.head_dim = 0; }, "head_dim");
  bad([](Problem& pr, FwdOut&) { pr.p.scale = NAN; }, "scale");
  bad([](Problem& pr, FwdOut&) { pr.q = Tensor::Zeros({75, 2, 8}, DType::kF32); }, "q");
  bad([](Problem& pr, FwdOut&) { pr.k = pr.k.Rows(0, 74); }, "k");
  bad([](Problem& pr, FwdOut&) { pr.v = Tensor::Zeros({75, 2, 16}, DType::kBF16); }, "v");
  for (float x : {0.0f, -0.5f, NAN, INFINITY}) {
    bad(
        [x](Problem& pr, FwdOut&) {
          pr.decay = Tensor::FromVector<float>({0.5f, x}, {2});
        },
        "decay[1]");
  }
  bad([](Problem& pr, FwdOut&) { pr.cu = {1, 5, 75}; }, "cu_seqlens[0]");
  bad([](Problem& pr, FwdOut&) { pr.cu = {0, 70, 5, 75}; }, "cu_seqlens");
  bad([](Problem& pr, FwdOut&) { pr.cu = {0, 5, 74}; }, "cu_seqlens[2]");
  bad([](Problem& pr, FwdOut&) { pr.cu = {0}; }, "cu_seqlens");
  bad([](Problem& pr, FwdOut& o) { o.chunk_states = o.chunk_states.Rows(0, 2); }, "chunk_states");
  // Forward-only outputs and inputs.
  Problem pr = good;
  pr.initial = pr.initial.Rows(0, 1);
  EXPECT_TRUE(IsInvalidNaming(fwd(pr, f.o, f.chunk_states, f.boundary), "initial_state"));
  EXPECT_TRUE(IsInvalidNaming(fwd(good, f.o.Rows(0, 3), f.chunk_states, f.boundary), "o"));
  EXPECT_TRUE(
      IsInvalidNaming(fwd(good, f.o, f.chunk_states, f.boundary.Rows(0, 1)), "boundary_state"));
  // Backward-only.
  Tensor dq = f.o.Clone(), dk = f.o.Clone(), dv = f.o.Clone(), dinit = Tensor();
  Tensor bad_init = f.boundary.Rows(0, 1).Clone();
  Context ctx = Context::Cpu(1);
  EXPECT_TRUE(IsInvalidNaming(
      LinearAttentionBwd(ctx, good.p, good.q, good.k, good.v, good.decay, good.CuSeqlens(),
                         f.chunk_states, good.d_o, dq, dk, dv, bad_init),
      "d_initial_state"));
  Tensor short_do = good.d_o.Rows(0, 10);
  EXPECT_TRUE(IsInvalidNaming(
      LinearAttentionBwd(ctx, good.p, good.q, good.k, good.v, good.decay, good.CuSeqlens(),
                         f.chunk_states, short_do, dq, dk, dv, dinit),
      "d_o"));
}

TEST(LinearAttentionErrorsTest, BadDecodeInputs) {
  Problem pr = MakeProblem(2, 16, {1, 1}, 92, /*with_initial=*/false);
  Context ctx = Context::Cpu(1);
  auto run = [&](DecodeState ds, Tensor o) {
    return LinearAttentionDecode(ctx, pr.p, pr.q, pr.k, pr.v, pr.decay, ds.state, ds.open_k,
                                 ds.open_v, ds.open_len, o);
  };
  Tensor o = Tensor::Empty({2, 2, 16}, DType::kF32);
  for (int32_t len : {-1, static_cast<int32_t>(C)}) {
    DecodeState ds = EmptyDecodeState(2, 2, 16);
    ds.open_len.data<int32_t>()[1] = len;
    EXPECT_TRUE(IsInvalidNaming(run(ds, o), "open_len[1]"));
  }
  DecodeState ds = EmptyDecodeState(2, 2, 16);
  DecodeState bad_state = ds, bad_k = ds, bad_v = ds, bad_len = ds;
  bad_state.state = ds.state.Rows(0, 1);
  bad_k.open_k = Tensor::Zeros({2, C - 1, 2, 16}, DType::kF32);
  bad_v.open_v = Tensor::Zeros({2, C, 2, 16}, DType::kBF16);
  bad_len.open_len = Tensor::Zeros({2}, DType::kF32);
  EXPECT_TRUE(IsInvalidNaming(run(bad_state, o), "state"));
  EXPECT_TRUE(IsInvalidNaming(run(bad_k, o), "open_k"));
  EXPECT_TRUE(IsInvalidNaming(run(bad_v, o), "open_v"));
  EXPECT_TRUE(IsInvalidNaming(run(bad_len, o), "open_len"));
  EXPECT_TRUE(IsInvalidNaming(run(ds, o.Rows(0, 1)), "o"));
  pr.decay = Tensor::FromVector<float>({0.1f, -1.0f}, {2});
  EXPECT_TRUE(IsInvalidNaming(run(ds, o), "decay[1]"));
}

}  // namespace
}  // namespace tandem::kernels
