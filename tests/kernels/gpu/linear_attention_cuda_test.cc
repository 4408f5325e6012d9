// Tests for the CUDA chunked linear attention: forward outputs, chunk-start and boundary states
// against the CPU kernel on the same bf16-rounded inputs (packed sequences, partial chunks, an
// initial state, head dims 32/64/128), the contract's bitwise promise on the GPU (chunked prefill
// of P tokens, then decode, equals one forward pass for P and T not multiples of C, with the batch
// changing under decode), and argument errors (checked without a GPU too).
#include "kernels/linear_attention/linear_attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/linear_attention/linear_attention.h"
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

constexpr int64_t kC = kLinearAttentionChunk;

Tensor HostI32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::Empty({static_cast<int64_t>(v.size())}, DType::kI32);
  std::memcpy(t.raw_data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

Tensor Decays(int64_t h) {
  std::vector<float> x(h);
  for (int64_t i = 0; i < h; ++i) x[i] = 0.02f * std::pow(8.0f, static_cast<float>(i));
  return Tensor::FromVector(x, {h});
}

int64_t NumChunks(const std::vector<int32_t>& cu) {
  int64_t nc = 0;
  for (size_t b = 0; b + 1 < cu.size(); ++b) nc += (cu[b + 1] - cu[b] + kC - 1) / kC;
  return nc;
}

testing::CompareOptions Relative(const std::vector<float>& ref, Shape shape) {
  double max_abs = 0.0;
  for (float x : ref) max_abs = std::max(max_abs, static_cast<double>(std::fabs(x)));
  testing::CompareOptions opt;
  // Both sides are fp32 FMA chains of the same structure; only their instruction sets differ.
  opt.atol = 1e-6 * max_abs;
  opt.rtol = 1e-5;
  opt.shape = std::move(shape);
  return opt;
}

TEST(LinearAttentionCudaTest, ForwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const struct {
    int64_t h, d;
    std::vector<int32_t> lens;
  } cases[] = {{3, 64, {1, 64, 150, 7}}, {2, 128, {200}}, {2, 32, {65, 130}}};
  for (const auto& c : cases) {
    std::vector<int32_t> cu = {0};
    for (int32_t len : c.lens) cu.push_back(cu.back() + len);
    const int64_t t = cu.back(), h = c.h, d = c.d, b = c.lens.size(), nc = NumChunks(cu);
    SCOPED_TRACE(::testing::Message() << "T=" << t << " H=" << h << " D=" << d);
    const LinearAttentionParams p{h, d, 1.0f / std::sqrt(static_cast<float>(d))};
    const std::vector<float> q = RoundedToBf16(RandomVector(t * h * d, 1));
    const std::vector<float> k = RoundedToBf16(RandomVector(t * h * d, 2));
    const std::vector<float> v = RoundedToBf16(RandomVector(t * h * d, 3));
    const std::vector<float> s0 = RandomVector(b * h * d * d, 4, -0.5f, 0.5f);
    const Tensor decay = Decays(h), cu_t = HostI32(cu);
    Tensor o = Tensor::Empty({t, h, d}, DType::kF32);
    Tensor states = Tensor::Empty({nc, h, d, d}, DType::kF32);
    Tensor boundary = Tensor::Empty({b, h, d, d}, DType::kF32);
    ASSERT_TRUE(LinearAttentionFwd(Context::Cpu(2), p, Tensor::FromVector(q, {t, h, d}),
                                   Tensor::FromVector(k, {t, h, d}),
                                   Tensor::FromVector(v, {t, h, d}), decay, cu_t,
                                   Tensor::FromVector(s0, {b, h, d, d}), o, states, boundary)
                    .ok());
    Tensor go = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
    Tensor gstates = Tensor::Empty({nc, h, d, d}, DType::kF32, Device::kCUDA);
    Tensor gboundary = Tensor::Empty({b, h, d, d}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
        GpuTestContext(), p, ToDevice(q, {t, h, d}, DType::kBF16),
        ToDevice(k, {t, h, d}, DType::kBF16), ToDevice(v, {t, h, d}, DType::kBF16), decay, cu_t,
        ToDevice(s0, {b, h, d, d}), go, gstates, gboundary));
    const std::vector<float> cpu_o(o.data<float>(), o.data<float>() + o.numel());
    const std::vector<float> cpu_s(states.data<float>(), states.data<float>() + states.numel());
    const std::vector<float> cpu_b(boundary.data<float>(),
                                   boundary.data<float>() + boundary.numel());
    EXPECT_TRUE(AllClose(ToHostFloats(go), testing::ToDouble(cpu_o), Relative(cpu_o, {t, h, d})));
    EXPECT_TRUE(
        AllClose(ToHostFloats(gstates), testing::ToDouble(cpu_s), Relative(cpu_s, {nc, h, d, d})));
    EXPECT_TRUE(
        AllClose(ToHostFloats(gboundary), testing::ToDouble(cpu_b), Relative(cpu_b, {b, h, d, d})));
    // bf16 o: the f32 result rounded once.
    Tensor bo = Tensor::Empty({t, h, d}, DType::kBF16, Device::kCUDA);
    Tensor none;
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
        GpuTestContext(), p, ToDevice(q, {t, h, d}, DType::kBF16),
        ToDevice(k, {t, h, d}, DType::kBF16), ToDevice(v, {t, h, d}, DType::kBF16), decay, cu_t,
        ToDevice(s0, {b, h, d, d}), bo, none, none));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(bo), RoundedToBf16(ToHostFloats(go))));
  }
}

// Two sequences of T tokens, prefilled with P0 and P1 tokens (not multiples of C), then decoded
// token by token: together while both run, then the longer one alone (a batch-of-1 view).
TEST(LinearAttentionCudaTest, PrefillThenDecodeEqualsOnePassBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t kT = 150, h = 2, d = 128, hd = h * d;
  const int64_t prefix[2] = {37, 100};
  const LinearAttentionParams p{h, d, 1.0f / std::sqrt(128.0f)};
  const Tensor decay = Decays(h);
  std::vector<float> q[2], k[2], v[2], full[2];
  Tensor none;
  for (int s = 0; s < 2; ++s) {
    q[s] = RoundedToBf16(RandomVector(kT * hd, 10 + s));
    k[s] = RoundedToBf16(RandomVector(kT * hd, 20 + s));
    v[s] = RoundedToBf16(RandomVector(kT * hd, 30 + s));
    Tensor o = Tensor::Empty({kT, h, d}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
        GpuTestContext(), p, ToDevice(q[s], {kT, h, d}, DType::kBF16),
        ToDevice(k[s], {kT, h, d}, DType::kBF16), ToDevice(v[s], {kT, h, d}, DType::kBF16), decay,
        HostI32({0, static_cast<int32_t>(kT)}), none, o, none, none));
    full[s] = ToHostFloats(o);
  }
  // Prefill both prefixes packed in one call; the trailing partial chunks seed open_k / open_v.
  const int64_t p0 = prefix[0], p1 = prefix[1];
  std::vector<float> pq, pk, pv, open_k(2 * kC * hd, 0.0f), open_v(open_k.size(), 0.0f);
  std::vector<int32_t> open_len(2);
  for (int s = 0; s < 2; ++s) {
    const int64_t n = prefix[s], c0 = n / kC * kC;
    pq.insert(pq.end(), q[s].begin(), q[s].begin() + n * hd);
    pk.insert(pk.end(), k[s].begin(), k[s].begin() + n * hd);
    pv.insert(pv.end(), v[s].begin(), v[s].begin() + n * hd);
    std::copy(k[s].begin() + c0 * hd, k[s].begin() + n * hd, open_k.begin() + s * kC * hd);
    std::copy(v[s].begin() + c0 * hd, v[s].begin() + n * hd, open_v.begin() + s * kC * hd);
    open_len[s] = static_cast<int32_t>(n - c0);
  }
  const int64_t pt = p0 + p1;
  Tensor po = Tensor::Empty({pt, h, d}, DType::kF32, Device::kCUDA);
  Tensor state = Tensor::Empty({2, h, d, d}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
      GpuTestContext(), p, ToDevice(pq, {pt, h, d}, DType::kBF16),
      ToDevice(pk, {pt, h, d}, DType::kBF16), ToDevice(pv, {pt, h, d}, DType::kBF16), decay,
      HostI32({0, static_cast<int32_t>(p0), static_cast<int32_t>(pt)}), none, po, none, state));
  const std::vector<float> prefill = ToHostFloats(po);
  EXPECT_TRUE(BitwiseEqual({prefill.data(), static_cast<size_t>(p0 * hd)},
                           {full[0].data(), static_cast<size_t>(p0 * hd)}));
  EXPECT_TRUE(BitwiseEqual({prefill.data() + p0 * hd, static_cast<size_t>(p1 * hd)},
                           {full[1].data(), static_cast<size_t>(p1 * hd)}));
  Tensor ok = ToDevice(open_k, {2, kC, h, d}), ov = ToDevice(open_v, {2, kC, h, d});
  Tensor lens = *cuda::CopyToDevice(GpuTestContext(), HostI32(open_len));
  for (int64_t step = 0; p0 + step < kT; ++step) {
    const int64_t batch = p1 + step < kT ? 2 : 1;  // sequence 1 finishes first
    std::vector<float> sq, sk, sv;
    for (int s = 0; s < batch; ++s) {
      const int64_t t = prefix[s] + step;
      sq.insert(sq.end(), q[s].begin() + t * hd, q[s].begin() + (t + 1) * hd);
      sk.insert(sk.end(), k[s].begin() + t * hd, k[s].begin() + (t + 1) * hd);
      sv.insert(sv.end(), v[s].begin() + t * hd, v[s].begin() + (t + 1) * hd);
    }
    Tensor st = state.Rows(0, batch), bk = ok.Rows(0, batch), bv = ov.Rows(0, batch);
    Tensor bl = lens.Rows(0, batch);
    Tensor o = Tensor::Empty({batch, h, d}, DType::kF32, Device::kCUDA);
    TANDEM_ASSERT_OK(cuda::LinearAttentionDecode(
        GpuTestContext(), p, ToDevice(sq, {batch, h, d}, DType::kBF16),
        ToDevice(sk, {batch, h, d}, DType::kBF16), ToDevice(sv, {batch, h, d}, DType::kBF16), decay,
        st, bk, bv, bl, o));
    const std::vector<float> got = ToHostFloats(o);
    for (int s = 0; s < batch; ++s) {
      const int64_t t = prefix[s] + step;
      ASSERT_TRUE(BitwiseEqual({got.data() + s * hd, static_cast<size_t>(hd)},
                               {full[s].data() + t * hd, static_cast<size_t>(hd)}, {h, d}))
          << "sequence " << s << " position " << t;
    }
  }
}

TEST(LinearAttentionCudaTest, RejectsBadArguments) {
  void* fake = reinterpret_cast<void*>(0x1000);
  auto dev = [&](Shape s, DType t) { return Tensor::View(fake, std::move(s), t, Device::kCUDA); };
  const Context& ctx = GpuTestContext();
  Tensor none;
  LinearAttentionParams p{2, 48, 0.1f};
  Tensor o = dev({5, 2, 48}, DType::kF32);
  Tensor x = dev({5, 2, 48}, DType::kBF16);
  absl::Status s =
      cuda::LinearAttentionFwd(ctx, p, x, x, x, Decays(2), HostI32({0, 5}), none, o, none, none);
  EXPECT_EQ(s.message(), "p.head_dim: the CUDA kernels take 32, 64 or 128, got 48");
  p.head_dim = 64;
  Tensor y = dev({5, 2, 64}, DType::kBF16), o64 = dev({5, 2, 64}, DType::kF32);
  s = cuda::LinearAttentionFwd(ctx, p, y, y, y, dev({2}, DType::kF32), HostI32({0, 5}), none, o64,
                               none, none);
  EXPECT_EQ(s.message(), "decay: expected f32 [2] on cpu, got f32 [2] on cuda");
  s = cuda::LinearAttentionFwd(ctx, p, y, y, y,
                               Tensor::FromVector(std::vector<float>{0.1f, -1.0f}, {2}),
                               HostI32({0, 5}), none, o64, none, none);
  EXPECT_EQ(s.message(), "decay[1]: must be finite and > 0, got -1");
}

}  // namespace
}  // namespace tandem::kernels
