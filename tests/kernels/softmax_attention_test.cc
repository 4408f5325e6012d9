// Tests for CPU causal GQA softmax attention: forward and backward against the fp64 reference
// (whose backward is first checked by finite differences), and the numerics contract (rule 2)
// bitwise: paged decode == forward row, packed == alone, any thread count.
#include "kernels/softmax_attention/softmax_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/softmax_attention/attention_internal.h"
#include "kernels/softmax_attention/attention_row.h"
#include "tests/kernels/reference/softmax_attention_ref.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using ::tandem::testing::AllClose;
using ::tandem::testing::BitwiseEqual;
using ::tandem::testing::Floats;
using ::tandem::testing::RandomVector;
using ::tandem::testing::ToDouble;

struct Problem {
  SoftmaxAttentionParams p;
  std::vector<int32_t> cu;  // [B + 1]
  Tensor q, k, v, d_o;      // [T, H, D], [T, Hkv, D] x2, [T, H, D]
  int64_t T() const { return cu.back(); }
  Tensor CuSeqlens() const { return Tensor::FromVector(cu, {static_cast<int64_t>(cu.size())}); }
  testing::ref::AttentionShape Shape() const {
    return {p.num_heads, p.num_kv_heads, p.head_dim, p.scale, cu};
  }
};

Problem MakeProblem(int64_t H, int64_t Hkv, int64_t D, const std::vector<int32_t>& lens,
                    uint64_t seed, float scale = 0.0f) {
  Problem pr;
  pr.p = {H, Hkv, D, scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(D))};
  pr.cu = {0};
  for (int32_t len : lens) pr.cu.push_back(pr.cu.back() + len);
  const int64_t T = pr.T();
  pr.q = Tensor::FromVector(RandomVector(T * H * D, seed), {T, H, D});
  pr.k = Tensor::FromVector(RandomVector(T * Hkv * D, seed + 1), {T, Hkv, D});
  pr.v = Tensor::FromVector(RandomVector(T * Hkv * D, seed + 2), {T, Hkv, D});
  pr.d_o = Tensor::FromVector(RandomVector(T * H * D, seed + 3), {T, H, D});
  return pr;
}

struct FwdOut {
  Tensor o, lse;  // [T, H, D], [T, H]
};
FwdOut RunFwd(const Problem& pr, int threads = 1) {
  FwdOut out{Tensor::Empty({pr.T(), pr.p.num_heads, pr.p.head_dim}, DType::kF32),
             Tensor::Empty({pr.T(), pr.p.num_heads}, DType::kF32)};
  Context ctx = Context::Cpu(threads);
  EXPECT_TRUE(
      SoftmaxAttentionFwd(ctx, pr.p, pr.q, pr.k, pr.v, pr.CuSeqlens(), out.o, out.lse).ok());
  return out;
}

struct BwdOut {
  Tensor dq, dk, dv;  // [T, H, D], [T, Hkv, D] x2
};
BwdOut RunBwd(const Problem& pr, const FwdOut& f, int threads = 1) {
  BwdOut g{Tensor::Empty(pr.q.shape(), DType::kF32), Tensor::Empty(pr.k.shape(), DType::kF32),
           Tensor::Empty(pr.v.shape(), DType::kF32)};
  Context ctx = Context::Cpu(threads);
  EXPECT_TRUE(SoftmaxAttentionBwd(ctx, pr.p, pr.q, pr.k, pr.v, pr.CuSeqlens(), f.o, f.lse, pr.d_o,
                                  g.dq, g.dk, g.dv)
                  .ok());
  return g;
}

struct Case {
  int64_t H, Hkv, D;
  std::vector<int32_t> lens;
  float scale;  // 0: D^-1/2
};

TEST(SoftmaxAttentionTest, FwdMatchesReference) {
  const std::vector<Case> cases = {
      {8, 8, 32, {1}, 0},                  // T = 1, MHA
      {8, 2, 32, {63}, 0},                 // GQA 4, one partial tile
      {8, 1, 32, {65}, 0},                 // GQA 8, a full tile and one key
      {4, 1, 64, {200}, 2.0f},             // sharp softmax: the running max moves between tiles
      {4, 4, 16, {1, 63, 65, 200, 7}, 0},  // ragged packed sequences
      {2, 1, 8, {1100}, 1.0f},             // two splits merged
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE(::testing::Message() << "case " << c);
    const Case& cs = cases[c];
    Problem pr = MakeProblem(cs.H, cs.Hkv, cs.D, cs.lens, 100 + c, cs.scale);
    FwdOut f = RunFwd(pr, 2);
    std::vector<double> o, lse;
    testing::ref::SoftmaxAttentionFwd(pr.Shape(), ToDouble(Floats(pr.q)), ToDouble(Floats(pr.k)),
                                      ToDouble(Floats(pr.v)), o, lse);
    EXPECT_TRUE(AllClose(Floats(f.o), o, {.atol = 1e-5, .shape = f.o.shape()}));
    EXPECT_TRUE(AllClose(Floats(f.lse), lse, {.atol = 1e-5, .shape = f.lse.shape()}));
  }
}

// The gradient chain of trust, first link: the fp64 reference backward equals central finite
// differences of the fp64 reference forward for the loss Σ d_o ∘ o.
TEST(SoftmaxAttentionTest, ReferenceBwdMatchesFiniteDifferences) {
  Problem pr = MakeProblem(4, 2, 4, {3, 5}, 7, 0.7f);
  const testing::ref::AttentionShape s = pr.Shape();
  std::vector<double> q = ToDouble(Floats(pr.q)), k = ToDouble(Floats(pr.k)),
                      v = ToDouble(Floats(pr.v)), d_o = ToDouble(Floats(pr.d_o));
  std::vector<double> dq, dk, dv;
  testing::ref::SoftmaxAttentionBwd(s, q, k, v, d_o, dq, dk, dv);
  auto loss = [&](const std::vector<double>& qq, const std::vector<double>& kk,
                  const std::vector<double>& vv) {
    std::vector<double> o, lse;
    testing::ref::SoftmaxAttentionFwd(s, qq, kk, vv, o, lse);
    return std::inner_product(o.begin(), o.end(), d_o.begin(), 0.0);
  };
  for (size_t i = 0; i < q.size(); ++i) {
    double fd = testing::FiniteDifference([&](const auto& x) { return loss(x, k, v); }, q, i);
    EXPECT_NEAR(dq[i], fd, 1e-8) << "dq[" << i << "]";
  }
  for (size_t i = 0; i < k.size(); ++i) {
    double fd_k = testing::FiniteDifference([&](const auto& x) { return loss(q, x, v); }, k, i);
    EXPECT_NEAR(dk[i], fd_k, 1e-8) << "dk[" << i << "]";
    double fd_v = testing::FiniteDifference([&](const auto& x) { return loss(q, k, x); }, v, i);
    EXPECT_NEAR(dv[i], fd_v, 1e-8) << "dv[" << i << "]";
  }
}

TEST(SoftmaxAttentionTest, BwdMatchesReference) {
  const std::vector<Case> cases = {
      {4, 4, 16, {1}, 0},
      {8, 2, 32, {1, 63, 65, 130}, 0},
      {8, 1, 16, {70}, 1.0f},
  };
  for (size_t c = 0; c < cases.size(); ++c) {
    SCOPED_TRACE(::testing::Message() << "case " << c);
    const Case& cs = cases[c];
    Problem pr = MakeProblem(cs.H, cs.Hkv, cs.D, cs.lens, 200 + c, cs.scale);
    BwdOut g = RunBwd(pr, RunFwd(pr, 2), 2);
    std::vector<double> dq, dk, dv;
    testing::ref::SoftmaxAttentionBwd(pr.Shape(), ToDouble(Floats(pr.q)), ToDouble(Floats(pr.k)),
                                      ToDouble(Floats(pr.v)), ToDouble(Floats(pr.d_o)), dq, dk, dv);
    EXPECT_TRUE(AllClose(Floats(g.dq), dq, {.atol = 1e-5, .shape = g.dq.shape()}));
    EXPECT_TRUE(AllClose(Floats(g.dk), dk, {.atol = 1e-5, .shape = g.dk.shape()}));
    EXPECT_TRUE(AllClose(Floats(g.dv), dv, {.atol = 1e-5, .shape = g.dv.shape()}));
  }
}

// Contract rule 2: a query decoded alone over a paged cache (blocks shuffled, unused cache memory
// NaN) has exactly the bits of the same row of the full causal forward pass.
TEST(SoftmaxAttentionTest, DecodeEqualsForwardRowBitwise) {
  const int64_t H = 8, Hkv = 2, D = 16, N = 1100, tile = kAttentionKvTile;
  Problem pr = MakeProblem(H, Hkv, D, {static_cast<int32_t>(N)}, 11);
  FwdOut f = RunFwd(pr);

  const int64_t used_blocks = (N + tile - 1) / tile, num_blocks = used_blocks + 6;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(5));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> k_cache(num_blocks * tile * Hkv * D, nan), v_cache(k_cache);
  for (int64_t t = 0; t < N; ++t) {
    const int64_t dst = (perm[t / tile] * tile + t % tile) * Hkv * D;
    std::copy_n(pr.k.data<float>() + t * Hkv * D, Hkv * D, k_cache.begin() + dst);
    std::copy_n(pr.v.data<float>() + t * Hkv * D, Hkv * D, v_cache.begin() + dst);
  }
  const std::vector<int64_t> positions = {0, 1, 63, 64, 65, 1023, 1024, 1025, N - 1};
  const int64_t B = positions.size(), max_blocks = used_blocks + 2;
  std::vector<float> q(B * H * D);
  std::vector<int32_t> tables(B * max_blocks, -1), seq_lens(B);  // -1: unused entries
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(pr.q.data<float>() + positions[b] * H * D, H * D, q.begin() + b * H * D);
    std::copy_n(perm.begin(), used_blocks, tables.begin() + b * max_blocks);
    seq_lens[b] = positions[b] + 1;
  }
  Tensor o = Tensor::Empty({B, H, D}, DType::kF32);
  Context ctx = Context::Cpu(2);
  ASSERT_TRUE(SoftmaxAttentionDecode(ctx, pr.p, Tensor::FromVector(q, {B, H, D}),
                                     Tensor::FromVector(k_cache, {num_blocks, tile, Hkv, D}),
                                     Tensor::FromVector(v_cache, {num_blocks, tile, Hkv, D}),
                                     Tensor::FromVector(tables, {B, max_blocks}),
                                     Tensor::FromVector(seq_lens, {B}), o)
                  .ok());
  for (int64_t b = 0; b < B; ++b) {
    SCOPED_TRACE(::testing::Message() << "position " << positions[b]);
    EXPECT_TRUE(BitwiseEqual(Floats(o.Rows(b, b + 1)),
                             Floats(f.o.Rows(positions[b], positions[b] + 1)), {H, D}));
  }
}

// A sequence's outputs and gradients do not depend on the sequences packed around it.
TEST(SoftmaxAttentionTest, PackedEqualsAloneBitwise) {
  const int64_t H = 8, Hkv = 2, D = 32, len = 200, offset = 37;
  Problem alone = MakeProblem(H, Hkv, D, {len}, 21);
  Problem packed = MakeProblem(H, Hkv, D, {offset, len, 130, 1}, 22);
  for (Tensor* t : {&packed.q, &packed.k, &packed.v, &packed.d_o}) {
    const Tensor& src = t == &packed.q   ? alone.q
                        : t == &packed.k ? alone.k
                        : t == &packed.v ? alone.v
                                         : alone.d_o;
    std::copy_n(src.data<float>(), src.numel(), t->Rows(offset, offset + len).data<float>());
  }
  FwdOut fa = RunFwd(alone), fp = RunFwd(packed);
  EXPECT_TRUE(BitwiseEqual(Floats(fa.o), Floats(fp.o.Rows(offset, offset + len)), fa.o.shape()));
  EXPECT_TRUE(
      BitwiseEqual(Floats(fa.lse), Floats(fp.lse.Rows(offset, offset + len)), fa.lse.shape()));
  BwdOut ga = RunBwd(alone, fa), gp = RunBwd(packed, fp);
  EXPECT_TRUE(BitwiseEqual(Floats(ga.dq), Floats(gp.dq.Rows(offset, offset + len))));
  EXPECT_TRUE(BitwiseEqual(Floats(ga.dk), Floats(gp.dk.Rows(offset, offset + len))));
  EXPECT_TRUE(BitwiseEqual(Floats(ga.dv), Floats(gp.dv.Rows(offset, offset + len))));
}

TEST(SoftmaxAttentionTest, ThreadCountDoesNotChangeBits) {
  Problem pr = MakeProblem(8, 2, 32, {300, 77, 1}, 31);
  FwdOut f1 = RunFwd(pr, 1);
  BwdOut g1 = RunBwd(pr, f1, 1);
  for (int threads : {2, 3}) {
    SCOPED_TRACE(::testing::Message() << threads << " threads");
    FwdOut fn = RunFwd(pr, threads);
    EXPECT_TRUE(BitwiseEqual(Floats(f1.o), Floats(fn.o), f1.o.shape()));
    EXPECT_TRUE(BitwiseEqual(Floats(f1.lse), Floats(fn.lse), f1.lse.shape()));
    BwdOut gn = RunBwd(pr, f1, threads);
    EXPECT_TRUE(BitwiseEqual(Floats(g1.dq), Floats(gn.dq), g1.dq.shape()));
    EXPECT_TRUE(BitwiseEqual(Floats(g1.dk), Floats(gn.dk), g1.dk.shape()));
    EXPECT_TRUE(BitwiseEqual(Floats(g1.dv), Floats(gn.dv), g1.dv.shape()));
  }
}

// The AVX2 build of the vector kernels promises the baseline build's bits.
TEST(SoftmaxAttentionTest, Avx2KernelsMatchGenericBitwise) {
  if (&cpu::Kernels() != &cpu::Avx2Kernels()) GTEST_SKIP() << "no AVX2+FMA on this CPU";
  const int64_t D = 37, t = 1100;  // D not a multiple of 8: exercises the tails
  std::vector<float> q = RandomVector(D, 1), k = RandomVector((t + 1) * D, 2),
                     v = RandomVector((t + 1) * D, 3);
  const cpu::KvSource kv{k.data(), v.data(), D, kAttentionKvTile * D, nullptr};
  std::vector<float> o1(D), o2(D), work(cpu::AttendRowsWorkFloats(1, D));
  float lse1, lse2;
  const cpu::QueryRow row1{q.data(), t, o1.data(), &lse1}, row2{q.data(), t, o2.data(), &lse2};
  cpu::AttendRows(cpu::GenericKernels(), kv, &row1, 1, D, 0.9f, work.data());
  cpu::AttendRows(cpu::Avx2Kernels(), kv, &row2, 1, D, 0.9f, work.data());
  EXPECT_TRUE(BitwiseEqual(o1, o2));
  EXPECT_TRUE(BitwiseEqual(std::vector<float>{lse1}, std::vector<float>{lse2}));
}

void ExpectInvalid(const absl::Status& s, const std::string& name) {
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr(name));
}

// The GPU passes' block order: costliest first, equal costs in their given order. Dense costs take
// the counting sort, sparse ones a comparison sort; both must give std::stable_sort's order.
TEST(SoftmaxAttentionTest, CostliestFirstIsAStableDescendingOrder) {
  std::mt19937 rng(5);
  for (const int64_t spread : {int64_t{7}, int64_t{1} << 40}) {  // counting sort, then sort
    std::vector<std::pair<int64_t, int>> costed;
    for (int i = 0; i < 500; ++i) {
      costed.push_back({static_cast<int64_t>(rng() % 8) * (spread / 7), i});
    }
    std::vector<std::pair<int64_t, int>> want = costed;
    std::stable_sort(want.begin(), want.end(),
                     [](const auto& x, const auto& y) { return x.first > y.first; });
    const std::vector<int> got = internal::CostliestFirst(costed);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_EQ(got[i], want[i].second) << i;
  }
  EXPECT_TRUE(internal::CostliestFirst(std::vector<std::pair<int64_t, int>>{}).empty());
  // Trailing items: value-initialised, after the sorted ones.
  const std::vector<int> with_room = internal::CostliestFirst(
      std::vector<std::pair<int64_t, int>>{{1, 7}, {3, 8}}, /*trailing=*/2);
  EXPECT_EQ(with_room, (std::vector<int>{8, 7, 0, 0}));
}

TEST(SoftmaxAttentionTest, BadPackedInputsAreInvalidArgument) {
  Problem pr = MakeProblem(4, 2, 8, {5, 3}, 41);
  Context ctx = Context::Cpu(1);
  Tensor o = Tensor::Empty({8, 4, 8}, DType::kF32), lse = Tensor::Empty({8, 4}, DType::kF32);
  auto fwd = [&](const SoftmaxAttentionParams& p, const Tensor& q, const Tensor& k,
                 const std::vector<int32_t>& cu, Tensor& out) {
    return SoftmaxAttentionFwd(ctx, p, q, k, pr.v,
                               Tensor::FromVector(cu, {static_cast<int64_t>(cu.size())}), out, lse);
  };
  ASSERT_TRUE(fwd(pr.p, pr.q, pr.k, pr.cu, o).ok());
  ExpectInvalid(fwd({4, 3, 8, 1.0f}, pr.q, pr.k, pr.cu, o), "num_kv_heads");
  ExpectInvalid(fwd({4, 2, 0, 1.0f}, pr.q, pr.k, pr.cu, o), "head_dim");
  ExpectInvalid(fwd({4, 2, 8, 0.0f}, pr.q, pr.k, pr.cu, o), "p.scale");
  ExpectInvalid(fwd({4, 2, 8, -0.5f}, pr.q, pr.k, pr.cu, o), "p.scale");
  ExpectInvalid(fwd({4, 2, 8, NAN}, pr.q, pr.k, pr.cu, o), "p.scale");
  ExpectInvalid(fwd(pr.p, Tensor::Empty({8, 4, 7}, DType::kF32), pr.k, pr.cu, o), "q:");
  ExpectInvalid(fwd(pr.p, pr.q, Tensor::Empty({7, 2, 8}, DType::kF32), pr.cu, o), "k:");
  ExpectInvalid(fwd(pr.p, pr.q, pr.k, {0, 5, 7}, o), "cu_seqlens");     // does not end at T
  ExpectInvalid(fwd(pr.p, pr.q, pr.k, {0, 6, 5, 8}, o), "cu_seqlens");  // decreasing
  ExpectInvalid(fwd(pr.p, pr.q, pr.k, {1, 8}, o), "cu_seqlens");        // does not start at 0
  Tensor bad_o = Tensor::Empty({8, 4, 8}, DType::kBF16);
  ExpectInvalid(fwd(pr.p, pr.q, pr.k, pr.cu, bad_o), "o:");
  FwdOut f = RunFwd(pr);
  BwdOut g = RunBwd(pr, f);
  Tensor bad_dk = Tensor::Empty({8, 4, 8}, DType::kF32);
  ExpectInvalid(SoftmaxAttentionBwd(ctx, pr.p, pr.q, pr.k, pr.v, pr.CuSeqlens(), f.o, f.lse, pr.d_o,
                                    g.dq, bad_dk, g.dv),
                "dk:");
  ExpectInvalid(SoftmaxAttentionBwd(ctx, pr.p, pr.q, pr.k, pr.v, pr.CuSeqlens(), f.o, o.Rows(0, 8),
                                    pr.d_o, g.dq, g.dk, g.dv),
                "lse:");
}

TEST(SoftmaxAttentionTest, BadDecodeInputsAreInvalidArgument) {
  const int64_t B = 2, H = 4, Hkv = 2, D = 8, num_blocks = 3, tile = kAttentionKvTile;
  const SoftmaxAttentionParams p{H, Hkv, D, 0.5f};
  Context ctx = Context::Cpu(1);
  Tensor q = Tensor::Zeros({B, H, D}, DType::kF32), o = Tensor::Empty({B, H, D}, DType::kF32);
  Tensor cache = Tensor::Zeros({num_blocks, tile, Hkv, D}, DType::kF32);
  auto decode = [&](const std::vector<int32_t>& tables, const std::vector<int32_t>& lens,
                    const Tensor& k_cache) {
    return SoftmaxAttentionDecode(ctx, p, q, k_cache, cache, Tensor::FromVector(tables, {B, 2}),
                                  Tensor::FromVector(lens, {B}), o);
  };
  ASSERT_TRUE(decode({2, 0, 1, -1}, {100, 64}, cache).ok());  // the -1 entry is never read
  ExpectInvalid(decode({2, 3, 1, -1}, {100, 64}, cache), "block_tables");
  ExpectInvalid(decode({2, 0, 1, -1}, {100, 65}, cache), "block_tables");
  ExpectInvalid(decode({2, 0, 1, 0}, {0, 64}, cache), "seq_lens");
  ExpectInvalid(decode({2, 0, 1, 0}, {100, 2 * tile + 1}, cache), "seq_lens");
  ExpectInvalid(decode({2, 0, 1, 0}, {1, 1}, Tensor::Zeros({num_blocks, 32, Hkv, D}, DType::kF32)),
                "k_cache");
}

}  // namespace
}  // namespace tandem::kernels
