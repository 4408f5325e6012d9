// Tests for the CUDA softmax attention, both paths (bf16 operands: tensor cores; f32: CUDA
// cores): forward against the CPU kernel on the same bf16-representable inputs (packed sequences,
// splits of kAttentionSplitLength, GQA groups, head dims 32/64/128), the contract's bitwise
// promises on the GPU (paged decode at position t == forward row t through a shuffled block table
// whose unused slots hold NaN; a sequence packed with others == alone; every bf16 forward kernel
// (mma.sync, wgmma) gives the same bits), each checked for every forward kernel that
// runs here, the paged prefill's rows == the forward's, and argument errors (checked without a GPU
// too).
#include "kernels/softmax_attention/softmax_attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "kernels/softmax_attention/softmax_attention.h"
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
using Kernel = cuda::SoftmaxAttentionFwdKernel;

const char* KernelName(Kernel k) {
  switch (k) {
    case Kernel::kDefault:
      return "default";
    case Kernel::kMmaSync:
      return "mma.sync";
    case Kernel::kWgmma:
      return "wgmma";
  }
  return "?";
}

// The forward kernels that run here at head dim d (for bf16 operands).
std::vector<Kernel> Kernels(int64_t d) {
  std::vector<Kernel> ks;
  for (Kernel k : {Kernel::kDefault, Kernel::kMmaSync, Kernel::kWgmma}) {
    if (cuda::SoftmaxAttentionFwdKernelAvailable(k, d)) ks.push_back(k);
  }
  return ks;
}

struct Problem {
  SoftmaxAttentionParams p;
  std::vector<int32_t> cu;
  std::vector<float> q, k, v;  // bf16-representable
  int64_t t() const { return cu.back(); }
};

Problem MakeProblem(int64_t h, int64_t hkv, int64_t d, std::vector<int32_t> lens, uint64_t seed) {
  Problem pr;
  pr.p = {h, hkv, d, 1.0f / std::sqrt(static_cast<float>(d))};
  pr.cu = {0};
  for (int32_t len : lens) pr.cu.push_back(pr.cu.back() + len);
  // Scores of a few units: the softmax is neither flat nor one-hot.
  pr.q = RoundedToBf16(RandomVector(pr.t() * h * d, seed, -2.0f, 2.0f));
  pr.k = RoundedToBf16(RandomVector(pr.t() * hkv * d, seed + 1, -2.0f, 2.0f));
  pr.v = RoundedToBf16(RandomVector(pr.t() * hkv * d, seed + 2));
  return pr;
}

Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

// GPU forward (q, k, v in `in` storage: bf16 takes the tensor cores, f32 the CUDA cores); returns
// o (as floats, in o_dtype storage) and lse.
void GpuForward(const Problem& pr, DType o_dtype, std::vector<float>* o, std::vector<float>* lse,
                DType in = DType::kBF16, Kernel kernel = Kernel::kDefault) {
  const int64_t t = pr.t(), h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
  Tensor q = ToDevice(pr.q, {t, h, d}, in);
  Tensor k = ToDevice(pr.k, {t, hkv, d}, in);
  Tensor v = ToDevice(pr.v, {t, hkv, d}, in);
  Tensor od = Tensor::Empty({t, h, d}, o_dtype, Device::kCUDA);
  Tensor lsed = Tensor::Empty({t, h}, DType::kF32, Device::kCUDA);
  absl::Status s = cuda::SoftmaxAttentionFwdWithKernel(kernel, GpuTestContext(), pr.p, q, k, v,
                                                       HostI32(pr.cu), od, lsed);
  ASSERT_TRUE(s.ok()) << s;
  *o = ToHostFloats(od);
  *lse = ToHostFloats(lsed);
}

TEST(SoftmaxAttentionCudaTest, ForwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem problems[] = {
      MakeProblem(4, 2, 64, {1, 67, 1300}, 1),  // two splits, a one-token sequence
      MakeProblem(8, 2, 128, {200, 65}, 2),     // group 4, the Ring head dim
      MakeProblem(3, 3, 32, {64, 5, 130}, 3),   // no GQA, tile-sized sequence
  };
  for (const Problem& pr : problems) {
    const int64_t t = pr.t(), h = pr.p.num_heads, hkv = pr.p.num_kv_heads, d = pr.p.head_dim;
    SCOPED_TRACE(::testing::Message() << "T=" << t << " H=" << h << " Hkv=" << hkv << " D=" << d);
    Tensor o = Tensor::Empty({t, h, d}, DType::kF32), lse = Tensor::Empty({t, h}, DType::kF32);
    ASSERT_TRUE(SoftmaxAttentionFwd(Context::Cpu(2), pr.p, Tensor::FromVector(pr.q, {t, h, d}),
                                    Tensor::FromVector(pr.k, {t, hkv, d}),
                                    Tensor::FromVector(pr.v, {t, hkv, d}), HostI32(pr.cu), o, lse)
                    .ok());
    std::vector<std::pair<DType, Kernel>> runs = {{DType::kF32, Kernel::kDefault}};
    for (Kernel kernel : Kernels(d)) runs.push_back({DType::kBF16, kernel});
    for (const auto& [in, kernel] : runs) {
      SCOPED_TRACE(::testing::Message()
                   << "inputs " << DTypeName(in) << ", kernel " << KernelName(kernel));
      std::vector<float> go, glse;
      GpuForward(pr, DType::kF32, &go, &glse, in, kernel);
      // Both paths: two fp32 evaluations in different orders (and exp vs exp2): outputs are
      // convex combinations of |v| < 1 whose sums over <= 1300 keys drift by ~sqrt(n)·2^-24 each;
      // lse is O(10).
      testing::CompareOptions opt;
      opt.atol = 1e-5;
      opt.shape = {t, h, d};
      if (in == DType::kBF16) {
        // Tensor cores multiply bf16(p) by V (as FlashAttention does) while l sums the fp32 p:
        // bf16(p_j) = p_j·(1 + δ_j), |δ_j| <= u = 2^-8 (round to nearest, 8-bit significand), so
        // o − o* = Σ_j w_j·δ_j·v_j with weights w_j summing to 1: |o − o*| <= u·max|v| = 2^-8.
        // Globally the δ_j are independent of the zero-mean v_j, so sum(err²)/sum(o²) ≈ E[δ²]
        // ≈ u²/6 (rounding error uniform over an ulp, mantissas spread over [1, 2)); the bound
        // u² leaves a factor 6.
        opt.atol = 1e-5 + std::ldexp(1.0, -8);
        opt.max_nmse = std::ldexp(1.0, -16);
      }
      EXPECT_TRUE(AllClose(go, testing::ToDouble(testing::Floats(o)), opt));
      opt.atol = 1e-5;  // lse = m + log l uses the fp32 p: no bf16 rounding in it
      opt.max_nmse = 1e-8;
      opt.shape = {t, h};
      EXPECT_TRUE(AllClose(glse, testing::ToDouble(testing::Floats(lse)), opt));
      // bf16 o: the f32 result rounded once.
      std::vector<float> bo, blse;
      GpuForward(pr, DType::kBF16, &bo, &blse, in, kernel);
      EXPECT_TRUE(BitwiseEqual(bo, RoundedToBf16(go)));
      EXPECT_TRUE(BitwiseEqual(blse, glse));
    }
  }
}

// Each sequence of `packed` run alone gives its packed rows of o and lse, bitwise.
void ExpectPackedEqualsAlone(const Problem& packed, DType in, Kernel kernel = Kernel::kDefault) {
  std::vector<float> o_packed, lse_packed;
  GpuForward(packed, DType::kF32, &o_packed, &lse_packed, in, kernel);
  const int64_t h = packed.p.num_heads, hd = h * packed.p.head_dim;
  const int64_t kvd = packed.p.num_kv_heads * packed.p.head_dim;
  for (size_t b = 0; b + 1 < packed.cu.size(); ++b) {
    SCOPED_TRACE(::testing::Message() << "sequence " << b);
    const int64_t r0 = packed.cu[b], r1 = packed.cu[b + 1];
    Problem alone = packed;
    alone.cu = {0, static_cast<int32_t>(r1 - r0)};
    alone.q.assign(packed.q.begin() + r0 * hd, packed.q.begin() + r1 * hd);
    alone.k.assign(packed.k.begin() + r0 * kvd, packed.k.begin() + r1 * kvd);
    alone.v.assign(packed.v.begin() + r0 * kvd, packed.v.begin() + r1 * kvd);
    std::vector<float> o, lse;
    GpuForward(alone, DType::kF32, &o, &lse, in, kernel);
    EXPECT_TRUE(BitwiseEqual(o, {o_packed.data() + r0 * hd, static_cast<size_t>((r1 - r0) * hd)}));
    EXPECT_TRUE(
        BitwiseEqual(lse, {lse_packed.data() + r0 * h, static_cast<size_t>((r1 - r0) * h)}));
  }
}

// The CUDA-core path (f32 operands).
TEST(SoftmaxAttentionCudaTest, PackedRowsEqualAloneBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  ExpectPackedEqualsAlone(MakeProblem(8, 2, 128, {70, 1100, 3}, 4), DType::kF32);
}

// Batch invariance of the tensor-core forward: 128-row blocks straddle sequence ends and (group
// 3) positions, splits end mid-block, and a row's bits must not notice.
TEST(SoftmaxAttentionCudaTest, TensorCoreForwardPackedEqualsAloneBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (Kernel kernel : Kernels(128)) {
    SCOPED_TRACE(::testing::Message() << "D=128, H=16, Hkv=4, kernel " << KernelName(kernel));
    ExpectPackedEqualsAlone(MakeProblem(16, 4, 128, {70, 1100, 3, 33}, 8), DType::kBF16, kernel);
  }
  for (Kernel kernel : Kernels(64)) {
    SCOPED_TRACE(::testing::Message() << "D=64, H=6, Hkv=2, kernel " << KernelName(kernel));
    ExpectPackedEqualsAlone(MakeProblem(6, 2, 64, {5, 1300, 1, 200}, 9), DType::kBF16, kernel);
  }
}

// Every bf16 forward kernel gives the mma.sync kernel's bits (o f32 and lse): long sequences
// (several splits, tiles every row sees whole next to masked ones), a 128-row block's two
// warpgroups at different tile counts, group 3 straddling warps. Each problem has more work items
// than the H200 has SMs, so the wgmma forward's blocks walk several items each (the K/V ring,
// partial last tiles and the Q rows carried from one item into the next).
TEST(SoftmaxAttentionCudaTest, ForwardKernelsAgreeBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem problems[] = {MakeProblem(16, 4, 128, {2500, 37, 1}, 11),
                              MakeProblem(8, 2, 128, {3, 70, 129, 1, 640, 65, 2000, 17}, 13),
                              MakeProblem(6, 2, 64, {1500, 100, 3000, 7}, 12)};
  for (const Problem& pr : problems) {
    const int64_t d = pr.p.head_dim;
    std::vector<float> o_ref, lse_ref;
    GpuForward(pr, DType::kF32, &o_ref, &lse_ref, DType::kBF16, Kernel::kMmaSync);
    for (Kernel kernel : Kernels(d)) {
      SCOPED_TRACE(::testing::Message() << "D=" << d << ", kernel " << KernelName(kernel));
      std::vector<float> o, lse;
      GpuForward(pr, DType::kF32, &o, &lse, DType::kBF16, kernel);
      EXPECT_TRUE(BitwiseEqual(o, o_ref));
      EXPECT_TRUE(BitwiseEqual(lse, lse_ref));
    }
  }
}

// Decode of the query at position t over a shuffled paged cache == forward row t, bitwise, with
// operands in `in` storage (bf16: both on tensor cores; f32: both on CUDA cores).
void ExpectDecodeEqualsForwardRow(int64_t h, int64_t hkv, int64_t d, DType in,
                                  Kernel kernel = Kernel::kDefault) {
  const int64_t kLen = 1100, tile = kAttentionKvTile;
  const Problem pr = MakeProblem(h, hkv, d, {static_cast<int32_t>(kLen)}, 5);
  const std::vector<int32_t> positions = {0, 63, 64, 1023, 1024, 1025, 1099};
  const int64_t batch = positions.size(), max_blocks = (kLen + tile - 1) / tile;
  const int64_t num_blocks = max_blocks * batch + 3;
  // Every slot starts as NaN: a kernel that reads past seq_len or a wrong block shows it.
  std::vector<float> kc(num_blocks * tile * hkv * d, std::nanf("")), vc(kc.size(), std::nanf(""));
  std::vector<int32_t> table(batch * max_blocks, 0), seq_lens(batch);
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(7));
  std::vector<float> q_dec(batch * h * d);
  for (int64_t b = 0; b < batch; ++b) {
    const int64_t pos = positions[b];
    seq_lens[b] = static_cast<int32_t>(pos + 1);
    for (int64_t j = 0; j * tile <= pos; ++j) table[b * max_blocks + j] = perm[b * max_blocks + j];
    for (int64_t s = 0; s <= pos; ++s) {
      const int64_t slot = (table[b * max_blocks + s / tile] * tile + s % tile) * hkv * d;
      std::copy_n(pr.k.begin() + s * hkv * d, hkv * d, kc.begin() + slot);
      std::copy_n(pr.v.begin() + s * hkv * d, hkv * d, vc.begin() + slot);
    }
    std::copy_n(pr.q.begin() + pos * h * d, h * d, q_dec.begin() + b * h * d);
  }
  Tensor k_cache = ToDevice(kc, {num_blocks, tile, hkv, d}, in);
  Tensor v_cache = ToDevice(vc, {num_blocks, tile, hkv, d}, in);
  // Reshape keeps the device buffer owned (a View would drop the last owner and free it).
  Tensor tables =
      *cuda::CopyToDevice(GpuTestContext(), HostI32(table))->Reshape({batch, max_blocks});
  Tensor lens = *cuda::CopyToDevice(GpuTestContext(), HostI32(seq_lens));
  Tensor q = ToDevice(q_dec, {batch, h, d}, in);
  for (DType ot : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(::testing::Message() << "o " << DTypeName(ot));
    std::vector<float> o_fwd, lse_fwd;
    GpuForward(pr, ot, &o_fwd, &lse_fwd, in, kernel);
    Tensor o = Tensor::Empty({batch, h, d}, ot, Device::kCUDA);
    TANDEM_ASSERT_OK(
        cuda::SoftmaxAttentionDecode(GpuTestContext(), pr.p, q, k_cache, v_cache, tables, lens, o));
    const std::vector<float> got = ToHostFloats(o);
    for (int64_t b = 0; b < batch; ++b) {
      SCOPED_TRACE(::testing::Message() << "position " << positions[b]);
      EXPECT_TRUE(BitwiseEqual({got.data() + b * h * d, static_cast<size_t>(h * d)},
                               {o_fwd.data() + positions[b] * h * d, static_cast<size_t>(h * d)},
                               {h, d}));
    }
  }
}

TEST(SoftmaxAttentionCudaTest, DecodeEqualsForwardRowBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (Kernel kernel : Kernels(128)) {
    SCOPED_TRACE(::testing::Message() << "tensor cores, D=128, group 4, " << KernelName(kernel));
    ExpectDecodeEqualsForwardRow(8, 2, 128, DType::kBF16, kernel);
  }
  for (Kernel kernel : Kernels(64)) {
    SCOPED_TRACE(::testing::Message()
                 << "tensor cores, D=64, group 3 (forward warps straddle positions), "
                 << KernelName(kernel));
    ExpectDecodeEqualsForwardRow(6, 2, 64, DType::kBF16, kernel);
  }
  for (Kernel kernel : Kernels(32)) {
    SCOPED_TRACE(::testing::Message()
                 << "tensor cores, D=32, group 20 (two m16 row blocks per kv head in decode), "
                 << KernelName(kernel));
    ExpectDecodeEqualsForwardRow(40, 2, 32, DType::kBF16, kernel);
  }
  {
    SCOPED_TRACE("CUDA cores (f32 operands), D=128, group 4");
    ExpectDecodeEqualsForwardRow(8, 2, 128, DType::kF32);
  }
}

// The paged prefill of pieces of one sequence (through a shuffled block table whose unused slots
// hold NaN) == the forward's rows at those positions, bitwise: pieces from position 0, across a
// key tile, across a split, a lone last token, and a long one.
void ExpectPrefillEqualsForwardRows(int64_t h, int64_t hkv, int64_t d) {
  const int64_t kLen = 1300, tile = kAttentionKvTile;
  const Problem pr = MakeProblem(h, hkv, d, {static_cast<int32_t>(kLen)}, 9);
  const int64_t max_blocks = (kLen + tile - 1) / tile, num_blocks = max_blocks + 5;
  std::vector<float> kc(num_blocks * tile * hkv * d, std::nanf("")), vc(kc.size(), std::nanf(""));
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937(11));
  const std::vector<int32_t> table(perm.begin(), perm.begin() + max_blocks);
  for (int64_t s = 0; s < kLen; ++s) {
    const int64_t slot = (table[s / tile] * tile + s % tile) * hkv * d;
    std::copy_n(pr.k.begin() + s * hkv * d, hkv * d, kc.begin() + slot);
    std::copy_n(pr.v.begin() + s * hkv * d, hkv * d, vc.begin() + slot);
  }
  const struct {
    int64_t start, tokens;
  } spans[] = {{0, 5}, {60, 10}, {1000, 100}, {1299, 1}, {128, 300}};
  std::vector<cuda::SoftmaxPrefillPiece> pieces;
  std::vector<float> q_rows;
  for (const auto& sp : spans) {
    pieces.push_back({static_cast<int64_t>(q_rows.size()) / (h * d), sp.tokens, sp.start, 0});
    q_rows.insert(q_rows.end(), pr.q.begin() + sp.start * h * d,
                  pr.q.begin() + (sp.start + sp.tokens) * h * d);
  }
  const int64_t t = static_cast<int64_t>(q_rows.size()) / (h * d);
  Tensor k_cache = ToDevice(kc, {num_blocks, tile, hkv, d}, DType::kBF16);
  Tensor v_cache = ToDevice(vc, {num_blocks, tile, hkv, d}, DType::kBF16);
  Tensor tables = *cuda::CopyToDevice(GpuTestContext(), HostI32(table))->Reshape({1, max_blocks});
  Tensor q = ToDevice(q_rows, {t, h, d}, DType::kBF16);
  for (DType ot : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(::testing::Message() << "o " << DTypeName(ot));
    std::vector<float> o_fwd, lse_fwd;
    GpuForward(pr, ot, &o_fwd, &lse_fwd);
    Tensor o = Tensor::Empty({t, h, d}, ot, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::SoftmaxAttentionPrefillPaged(GpuTestContext(), pr.p, q, k_cache, v_cache,
                                                        tables, pieces, o));
    const std::vector<float> got = ToHostFloats(o);
    for (size_t i = 0; i < pieces.size(); ++i) {
      SCOPED_TRACE(::testing::Message() << "positions [" << spans[i].start << ", "
                                        << spans[i].start + spans[i].tokens << ")");
      const size_t n = static_cast<size_t>(spans[i].tokens * h * d);
      EXPECT_TRUE(BitwiseEqual({got.data() + pieces[i].q_row * h * d, n},
                               {o_fwd.data() + spans[i].start * h * d, n},
                               {spans[i].tokens, h, d}));
    }
  }
  // Pieces that do not fit are refused before anything runs.
  Tensor o = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
  absl::Status st = cuda::SoftmaxAttentionPrefillPaged(GpuTestContext(), pr.p, q, k_cache, v_cache,
                                                       tables, {{t - 2, 3, 0, 0}}, o);
  EXPECT_TRUE(absl::StrContains(st.message(), "pieces[0]: rows [")) << st;
  st = cuda::SoftmaxAttentionPrefillPaged(GpuTestContext(), pr.p, q, k_cache, v_cache, tables,
                                          {{0, 2, max_blocks * tile - 1, 0}}, o);
  EXPECT_TRUE(absl::StrContains(st.message(), "blocks; block_tables has")) << st;
  st = cuda::SoftmaxAttentionPrefillPaged(GpuTestContext(), pr.p, q, k_cache, v_cache, tables,
                                          {{0, 1, 0, 1}}, o);
  EXPECT_TRUE(absl::StrContains(st.message(), "pieces[0].table_row: 1")) << st;
}

TEST(SoftmaxAttentionCudaTest, PagedPrefillEqualsForwardRowsBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  {
    SCOPED_TRACE("D=128, group 4");
    ExpectPrefillEqualsForwardRows(8, 2, 128);
  }
  {
    SCOPED_TRACE("D=64, group 3");
    ExpectPrefillEqualsForwardRows(6, 2, 64);
  }
  {
    SCOPED_TRACE("D=32, group 20");
    ExpectPrefillEqualsForwardRows(40, 2, 32);
  }
}

TEST(SoftmaxAttentionCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  const Context& ctx = GpuTestContext();
  SoftmaxAttentionParams p{4, 2, 48, 0.1f};
  Tensor o = dev({5, 4, 48}, DType::kF32), lse = dev({5, 4}, DType::kF32);
  absl::Status s = cuda::SoftmaxAttentionFwd(
      ctx, p, dev({5, 4, 48}, DType::kBF16), dev({5, 2, 48}, DType::kBF16),
      dev({5, 2, 48}, DType::kBF16), HostI32({0, 5}), o, lse);
  EXPECT_EQ(s.message(), "p.head_dim: the CUDA kernels take 32, 64 or 128, got 48");
  p.head_dim = 64;
  o = dev({5, 4, 64}, DType::kF32);
  s = cuda::SoftmaxAttentionFwd(ctx, p, dev({5, 4, 64}, DType::kBF16),
                                dev({5, 2, 64}, DType::kBF16), dev({5, 2, 64}, DType::kBF16),
                                HostI32({0, 4}), o, lse);
  EXPECT_EQ(s.message(), "cu_seqlens: must end at T = 5, ends at 4");
  Tensor od = dev({2, 4, 64}, DType::kF32);
  s = cuda::SoftmaxAttentionDecode(ctx, p, dev({2, 4, 64}, DType::kBF16),
                                   dev({3, kAttentionKvTile, 2, 64}, DType::kBF16),
                                   dev({3, kAttentionKvTile, 2, 64}, DType::kBF16),
                                   HostI32({0, 1, 2, 0}), dev({2}, DType::kI32), od);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(s.message(), "block_tables: expected i32 [2, *] on cuda")) << s;
  // The tensor-core path copies 16-byte rows: bf16 data must start 16-byte aligned.
  const auto dev_at = [&](uintptr_t at, Shape shape) {
    return Tensor::View(reinterpret_cast<void*>(at), std::move(shape), DType::kBF16, Device::kCUDA);
  };
  s = cuda::SoftmaxAttentionFwd(ctx, p, dev({5, 4, 64}, DType::kBF16), dev_at(0x1008, {5, 2, 64}),
                                dev({5, 2, 64}, DType::kBF16), HostI32({0, 5}), o, lse);
  EXPECT_EQ(s.message(), "k: bf16 data must be 16-byte aligned");
  // An explicit tensor-core kernel needs bf16 operands; the wgmma ones head dim 64 or 128.
  s = cuda::SoftmaxAttentionFwdWithKernel(Kernel::kMmaSync, ctx, p, dev({5, 4, 64}, DType::kF32),
                                          dev({5, 2, 64}, DType::kF32),
                                          dev({5, 2, 64}, DType::kF32), HostI32({0, 5}), o, lse);
  EXPECT_EQ(s.message(), "kernel: the tensor-core forwards take bf16 q, k and v");
  p.head_dim = 32;
  o = dev({5, 4, 32}, DType::kF32);
  s = cuda::SoftmaxAttentionFwdWithKernel(Kernel::kWgmma, ctx, p, dev({5, 4, 32}, DType::kBF16),
                                          dev({5, 2, 32}, DType::kBF16),
                                          dev({5, 2, 32}, DType::kBF16), HostI32({0, 5}), o, lse);
  EXPECT_EQ(s.message(), "kernel: the chosen wgmma forward is not available at head_dim 32");
}

}  // namespace
}  // namespace tandem::kernels
