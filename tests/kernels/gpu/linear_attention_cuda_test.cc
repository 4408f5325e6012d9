// Tests for the CUDA chunked linear attention: forward outputs, chunk-start and boundary states
// against the CPU kernel on the same bf16-rounded inputs (packed sequences, partial chunks, an
// initial state, head dims 32/64/128, T = 64K), for the tensor-core path (bf16 q, k, v) within a
// tolerance derived from its bf16 roundings and for the f32 path within fp32 slack; the contract's
// bitwise promises on the GPU (chunked prefill of P tokens, then decode, equals one forward pass
// for P and T not multiples of C, with the batch changing under decode; a sequence alone equals
// the same sequence packed with others), and argument errors (checked without a GPU too).
#include "kernels/linear_attention/linear_attention_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/linear_attention/linear_attention.h"
#include "kernels/linear_attention/linear_fwd_timing.cuh"
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

// The f32-input path: both sides are fp32 FMA chains of the same structure.
testing::CompareOptions Relative(const std::vector<float>& ref, Shape shape) {
  double max_abs = 0.0;
  for (float x : ref) max_abs = std::max(max_abs, static_cast<double>(std::fabs(x)));
  testing::CompareOptions opt;
  opt.atol = 1e-6 * max_abs;
  opt.rtol = 1e-5;
  opt.shape = std::move(shape);
  return opt;
}

// Tolerance of the tensor-core path (bf16 q, k, v) against the CPU on the same inputs. The GPU
// rounds three fp32 quantities to bf16 (unit roundoff u = 2^-8) where the CPU keeps fp32:
//   ṽ_j = bf16(λ^{C−1−j} v_j) in the boundary sum Σ_j k_jᵀ ṽ_j: every term of every state
//     element gets a relative error ≤ u, and λ^C ≤ 1 only shrinks old errors, so |δS| ≤ u·A, where
//     A is the state of the same problem on |q|, |k|, |v|, |S0| (the CPU run on absolute values);
//   P_ij = bf16(λ^{i−j} q_i·k_j): |δ intra| ≤ u·Σ_j λ^{i−j}|q_i·k_j||v_j|;
//   bf16(S) in q·S: ≤ u·|S + δS|, so with δS the inter term is off by ≤ (2u + u²)·λ^{i+1}|q|·A.
// Hence |o_gpu − o_cpu| ≤ (2u + u²)·o_abs and |S_gpu − S_cpu| ≤ u·A elementwise, with o_abs the
// CPU output on absolute values. The remaining differences are fp32 summation orders (≤ 2^-14
// relative to the same absolute sums for ≤ 1024 chunks), covered by 0.25u. Those worst-case
// bounds allow cancelling sums a lot, so the global error is also held to what independent
// roundings give: each rounding is zero-mean with variance ≤ u²/3 relative to its term, at most
// two per term, so Σ err² / Σ o² ≈ 2u²/3; we allow 4u² (outputs) and 2u² (states).
constexpr double kU = 1.0 / 256.0;

::testing::AssertionResult WithinBound(const std::vector<float>& gpu, const std::vector<float>& cpu,
                                       const std::vector<float>& abs_run, double factor,
                                       double max_nmse) {
  size_t bad = 0, first = 0;
  double err2 = 0.0, ref2 = 0.0;
  for (size_t i = 0; i < gpu.size(); ++i) {
    const double err = std::fabs(static_cast<double>(gpu[i]) - cpu[i]);
    if (!(err <= factor * kU * abs_run[i] + 1e-30) && bad++ == 0) first = i;
    err2 += err * err;
    ref2 += static_cast<double>(cpu[i]) * cpu[i];
  }
  const double nmse = ref2 > 0.0 ? err2 / ref2 : err2;
  if (bad == 0 && nmse <= max_nmse) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " of " << gpu.size() << " beyond " << factor << "u·|bound|"
         << (bad ? ::testing::Message()
                       << " (first at " << first << ": gpu " << gpu[first] << ", cpu " << cpu[first]
                       << ", bound " << factor * kU * abs_run[first] << ")"
                 : ::testing::Message())
         << "; nmse " << nmse << " (max " << max_nmse << ")";
}

std::vector<float> Abs(std::vector<float> v) {
  for (float& x : v) x = std::fabs(x);
  return v;
}

std::vector<float> Floats(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

struct CpuRun {
  std::vector<float> o, states, boundary;
};

CpuRun RunCpu(const LinearAttentionParams& p, const std::vector<int32_t>& cu,
              const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
              const std::vector<float>& s0) {
  const int64_t t = cu.back(), h = p.num_heads, d = p.head_dim, b = cu.size() - 1;
  const int64_t nc = NumChunks(cu);
  Tensor o = Tensor::Empty({t, h, d}, DType::kF32);
  Tensor states = Tensor::Empty({nc, h, d, d}, DType::kF32);
  Tensor boundary = Tensor::Empty({b, h, d, d}, DType::kF32);
  Tensor init = s0.empty() ? Tensor() : Tensor::FromVector(s0, {b, h, d, d});
  const absl::Status st = LinearAttentionFwd(
      Context::Cpu(4), p, Tensor::FromVector(q, {t, h, d}), Tensor::FromVector(k, {t, h, d}),
      Tensor::FromVector(v, {t, h, d}), Decays(h), HostI32(cu), init, o, states, boundary);
  EXPECT_TRUE(st.ok()) << st;
  return {Floats(o), Floats(states), Floats(boundary)};
}

// GPU forward of host inputs stored as `dtype` on the device; returns o, states, boundary.
CpuRun RunGpu(const LinearAttentionParams& p, const std::vector<int32_t>& cu,
              const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
              const std::vector<float>& s0, DType dtype) {
  const int64_t t = cu.back(), h = p.num_heads, d = p.head_dim, b = cu.size() - 1;
  const int64_t nc = NumChunks(cu);
  Tensor o = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
  Tensor states = Tensor::Empty({nc, h, d, d}, DType::kF32, Device::kCUDA);
  Tensor boundary = Tensor::Empty({b, h, d, d}, DType::kF32, Device::kCUDA);
  const absl::Status st = cuda::LinearAttentionFwd(
      GpuTestContext(), p, ToDevice(q, {t, h, d}, dtype), ToDevice(k, {t, h, d}, dtype),
      ToDevice(v, {t, h, d}, dtype), Decays(h), HostI32(cu),
      s0.empty() ? Tensor() : ToDevice(s0, {b, h, d, d}), o, states, boundary);
  EXPECT_TRUE(st.ok()) << st;
  return {ToHostFloats(o), ToHostFloats(states), ToHostFloats(boundary)};
}

void CheckAgainstCpu(const LinearAttentionParams& p, const std::vector<int32_t>& cu, uint32_t seed,
                     bool with_initial_state) {
  const int64_t t = cu.back(), h = p.num_heads, d = p.head_dim, b = cu.size() - 1;
  SCOPED_TRACE(::testing::Message() << "T=" << t << " H=" << h << " D=" << d);
  const std::vector<float> q = RoundedToBf16(RandomVector(t * h * d, seed));
  const std::vector<float> k = RoundedToBf16(RandomVector(t * h * d, seed + 1));
  const std::vector<float> v = RoundedToBf16(RandomVector(t * h * d, seed + 2));
  const std::vector<float> s0 = with_initial_state
                                    ? RandomVector(b * h * d * d, seed + 3, -0.5f, 0.5f)
                                    : std::vector<float>();
  const CpuRun cpu = RunCpu(p, cu, q, k, v, s0);
  const CpuRun abs = RunCpu(p, cu, Abs(q), Abs(k), Abs(v), Abs(s0));
  const CpuRun gpu = RunGpu(p, cu, q, k, v, s0, DType::kBF16);
  EXPECT_TRUE(WithinBound(gpu.o, cpu.o, abs.o, 2.25, 4 * kU * kU)) << "o";
  EXPECT_TRUE(WithinBound(gpu.states, cpu.states, abs.states, 1.25, 2 * kU * kU)) << "states";
  EXPECT_TRUE(WithinBound(gpu.boundary, cpu.boundary, abs.boundary, 1.25, 2 * kU * kU))
      << "boundary";
}

TEST(LinearAttentionCudaTest, ForwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const struct {
    int64_t h, d;
    std::vector<int32_t> lens;
  } cases[] = {
      {3, 64, {1, 64, 150, 7}}, {2, 128, {200}}, {2, 32, {65, 130}}, {2, 128, {0, 300, 5}}};
  for (const auto& c : cases) {
    std::vector<int32_t> cu = {0};
    for (int32_t len : c.lens) cu.push_back(cu.back() + len);
    const LinearAttentionParams p{c.h, c.d, 1.0f / std::sqrt(static_cast<float>(c.d))};
    CheckAgainstCpu(p, cu, 1, true);
  }
}

// One 64K-token sequence: 1024 chunks through the scan's cp.async pipeline.
TEST(LinearAttentionCudaTest, LongSequenceMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const LinearAttentionParams p{2, 64, 0.125f};
  CheckAgainstCpu(p, {0, 65536}, 7, false);
}

// f32 q, k, v take the CUDA-core path: fp32 throughout, like the CPU.
TEST(LinearAttentionCudaTest, F32InputsMatchCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  const std::vector<int32_t> cu = {0, 1, 65, 215, 222};
  for (int64_t d : {32, 64, 128}) {
    const int64_t h = 2, t = cu.back(), b = cu.size() - 1, nc = NumChunks(cu);
    const LinearAttentionParams p{h, d, 1.0f / std::sqrt(static_cast<float>(d))};
    const std::vector<float> q = RandomVector(t * h * d, 1), k = RandomVector(t * h * d, 2);
    const std::vector<float> v = RandomVector(t * h * d, 3);
    const std::vector<float> s0 = RandomVector(b * h * d * d, 4, -0.5f, 0.5f);
    const CpuRun cpu = RunCpu(p, cu, q, k, v, s0);
    const CpuRun gpu = RunGpu(p, cu, q, k, v, s0, DType::kF32);
    EXPECT_TRUE(AllClose(gpu.o, testing::ToDouble(cpu.o), Relative(cpu.o, {t, h, d})));
    EXPECT_TRUE(
        AllClose(gpu.states, testing::ToDouble(cpu.states), Relative(cpu.states, {nc, h, d, d})));
    EXPECT_TRUE(AllClose(gpu.boundary, testing::ToDouble(cpu.boundary),
                         Relative(cpu.boundary, {b, h, d, d})));
  }
}

// bf16 o is the f32 result rounded once.
TEST(LinearAttentionCudaTest, Bf16OutputIsRoundedF32) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t t = 300, h = 2, d = 128;
  const LinearAttentionParams p{h, d, 1.0f / std::sqrt(128.0f)};
  const Tensor q = ToDevice(RandomVector(t * h * d, 1), {t, h, d}, DType::kBF16);
  const Tensor k = ToDevice(RandomVector(t * h * d, 2), {t, h, d}, DType::kBF16);
  const Tensor v = ToDevice(RandomVector(t * h * d, 3), {t, h, d}, DType::kBF16);
  Tensor none;
  Tensor fo = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
  Tensor bo = Tensor::Empty({t, h, d}, DType::kBF16, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(GpuTestContext(), p, q, k, v, Decays(h),
                                            HostI32({0, 100, 300}), none, fo, none, none));
  TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(GpuTestContext(), p, q, k, v, Decays(h),
                                            HostI32({0, 100, 300}), none, bo, none, none));
  EXPECT_TRUE(BitwiseEqual(ToHostFloats(bo), RoundedToBf16(ToHostFloats(fo))));
}

// A sequence's outputs and states do not depend on what it is packed with or where (alone it is
// the scan's only sequence; behind a 40K-token sequence its chunks sit at other slots of the
// scan's pipeline and other output blocks), nor on whether chunk_states is written.
TEST(LinearAttentionCudaTest, BatchInvarianceBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (int64_t d : {32, 64, 128}) {
    const int64_t h = 2, hd = h * d, n = 333, other = 40000;
    const LinearAttentionParams p{h, d, 1.0f / std::sqrt(static_cast<float>(d))};
    const std::vector<float> q = RandomVector((other + n) * hd, 40);
    const std::vector<float> k = RandomVector((other + n) * hd, 41);
    const std::vector<float> v = RandomVector((other + n) * hd, 42);
    auto tail = [&](const std::vector<float>& x) {
      return std::vector<float>(x.end() - n * hd, x.end());
    };
    const CpuRun alone =
        RunGpu(p, {0, static_cast<int32_t>(n)}, tail(q), tail(k), tail(v), {}, DType::kBF16);
    const CpuRun packed =
        RunGpu(p, {0, static_cast<int32_t>(other), static_cast<int32_t>(other + n)}, q, k, v, {},
               DType::kBF16);
    const size_t dd = d * d, nc_other = other / kC + (other % kC != 0);
    EXPECT_TRUE(BitwiseEqual(alone.o, {packed.o.end() - n * hd, packed.o.end()}, {n, h, d}));
    EXPECT_TRUE(BitwiseEqual(alone.states,
                             {packed.states.begin() + nc_other * h * dd, packed.states.end()}));
    EXPECT_TRUE(
        BitwiseEqual(alone.boundary, {packed.boundary.begin() + h * dd, packed.boundary.end()}));
    // Without chunk_states (and without the boundary state): same bits.
    Tensor o = Tensor::Empty({other + n, h, d}, DType::kF32, Device::kCUDA), none;
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
        GpuTestContext(), p, ToDevice(q, {other + n, h, d}, DType::kBF16),
        ToDevice(k, {other + n, h, d}, DType::kBF16), ToDevice(v, {other + n, h, d}, DType::kBF16),
        Decays(h), HostI32({0, static_cast<int32_t>(other), static_cast<int32_t>(other + n)}), none,
        o, none, none));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(o), packed.o));
  }
}

// At D = 128 a forward without chunk_states runs the fused kernel where its CTAs (8 per sequence
// and head) fit the GPU in one wave (sm_90a: the state stays on chip); with bf16 chunk_states it
// runs the two-launch forward. Both give the same outputs and boundary states, bit for bit: empty,
// one-token, whole-chunk and partial sequences, ones long enough to wrap the fused kernel's chunk
// ring many times, an initial state.
TEST(LinearAttentionCudaTest, ForwardWithoutStatesEqualsTwoLaunchForwardBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  if (!cuda::linear::ForwardIsFused(128)) {
    GTEST_SKIP() << "the fused forward is not built for this GPU (sm_90a only)";
  }
  const struct {
    int64_t h;
    std::vector<int32_t> lens;
  } cases[] = {{4, {0, 5000, 65, 700}}, {2, {0, 1, 64, 65, 700, 5000, 127, 3}}, {16, {4100}}};
  const int64_t d = 128;
  for (const auto& c : cases) {
    std::vector<int32_t> cu = {0};
    for (int32_t len : c.lens) cu.push_back(cu.back() + len);
    const int64_t h = c.h, hd = h * d, t = cu.back(), b = cu.size() - 1, nc = NumChunks(cu);
    SCOPED_TRACE(::testing::Message() << "H=" << h << " B=" << b);
    const LinearAttentionParams p{h, d, 1.0f / std::sqrt(128.0f)};
    const Tensor q = ToDevice(RandomVector(t * hd, 50), {t, h, d}, DType::kBF16);
    const Tensor k = ToDevice(RandomVector(t * hd, 51), {t, h, d}, DType::kBF16);
    const Tensor v = ToDevice(RandomVector(t * hd, 52), {t, h, d}, DType::kBF16);
    const Tensor s0 = ToDevice(RandomVector(b * h * d * d, 53, -0.5f, 0.5f), {b, h, d, d});
    Tensor none;
    Tensor o_fused = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
    Tensor o_two = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
    Tensor s_fused = Tensor::Empty({b, h, d, d}, DType::kF32, Device::kCUDA);
    Tensor s_two = Tensor::Empty({b, h, d, d}, DType::kF32, Device::kCUDA);
    Tensor states = Tensor::Empty({nc, h, d, d}, DType::kBF16, Device::kCUDA);
    ASSERT_TRUE(cuda::linear::FusedOneWave(static_cast<int>(b), static_cast<int>(h)));
    const int64_t fused_before = cuda::linear::FusedLaunches();
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(GpuTestContext(), p, q, k, v, Decays(h), HostI32(cu),
                                              s0, o_fused, none, s_fused));
    ASSERT_EQ(cuda::linear::FusedLaunches(), fused_before + 1) << "the fused forward did not run";
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(GpuTestContext(), p, q, k, v, Decays(h), HostI32(cu),
                                              s0, o_two, states, s_two));
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(o_fused), ToHostFloats(o_two), {t, h, d})) << "o";
    EXPECT_TRUE(BitwiseEqual(ToHostFloats(s_fused), ToHostFloats(s_two), {b, h, d, d}))
        << "boundary";
  }
}

// Two sequences of T tokens, prefilled with P0 and P1 tokens (not multiples of C), then decoded
// token by token: together while both run, then the longer one alone (a batch-of-1 view). Decode
// crosses the chunk boundaries at 64 and 128 with the open row at every offset of the chunk (every
// row of every 16-row tile), so the boundary advance is checked too: through the outputs after it
// and, at the end, the fp32 state itself against the one-pass forward's boundary state. The open
// rows are kept in open_dtype (bf16 only with bf16 q, k, v).
void PrefillThenDecode(int64_t d, DType dtype, DType open_dtype) {
  SCOPED_TRACE(::testing::Message() << "D=" << d << (dtype == DType::kBF16 ? " bf16" : " f32")
                                    << (open_dtype == DType::kBF16 ? ", bf16 rows" : ", f32 rows"));
  const int64_t kT = 150, h = 2, hd = h * d;
  const int64_t prefix[2] = {21, 100};  // open chunks at rows 21 and 36: other row tiles
  const LinearAttentionParams p{h, d, 1.0f / std::sqrt(static_cast<float>(d))};
  const Tensor decay = Decays(h);
  std::vector<float> q[2], k[2], v[2], full[2], boundary[2];
  Tensor none;
  for (int s = 0; s < 2; ++s) {
    q[s] = RoundedToBf16(RandomVector(kT * hd, 10 + s));
    k[s] = RoundedToBf16(RandomVector(kT * hd, 20 + s));
    v[s] = RoundedToBf16(RandomVector(kT * hd, 30 + s));
    Tensor o = Tensor::Empty({kT, h, d}, DType::kF32, Device::kCUDA);
    Tensor last = Tensor::Empty({1, h, d, d}, DType::kF32, Device::kCUDA);  // S after 2 chunks
    TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
        GpuTestContext(), p, ToDevice(q[s], {kT, h, d}, dtype), ToDevice(k[s], {kT, h, d}, dtype),
        ToDevice(v[s], {kT, h, d}, dtype), decay, HostI32({0, static_cast<int32_t>(kT)}), none, o,
        none, last));
    full[s] = ToHostFloats(o);
    boundary[s] = ToHostFloats(last);
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
      GpuTestContext(), p, ToDevice(pq, {pt, h, d}, dtype), ToDevice(pk, {pt, h, d}, dtype),
      ToDevice(pv, {pt, h, d}, dtype), decay,
      HostI32({0, static_cast<int32_t>(p0), static_cast<int32_t>(pt)}), none, po, none, state));
  const std::vector<float> prefill = ToHostFloats(po);
  EXPECT_TRUE(BitwiseEqual({prefill.data(), static_cast<size_t>(p0 * hd)},
                           {full[0].data(), static_cast<size_t>(p0 * hd)}));
  EXPECT_TRUE(BitwiseEqual({prefill.data() + p0 * hd, static_cast<size_t>(p1 * hd)},
                           {full[1].data(), static_cast<size_t>(p1 * hd)}));
  Tensor ok = ToDevice(open_k, {2, kC, h, d}, open_dtype);
  Tensor ov = ToDevice(open_v, {2, kC, h, d}, open_dtype);
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
        GpuTestContext(), p, ToDevice(sq, {batch, h, d}, dtype), ToDevice(sk, {batch, h, d}, dtype),
        ToDevice(sv, {batch, h, d}, dtype), decay, st, bk, bv, bl, o));
    const std::vector<float> got = ToHostFloats(o);
    for (int s = 0; s < batch; ++s) {
      const int64_t t = prefix[s] + step;
      ASSERT_TRUE(BitwiseEqual({got.data() + s * hd, static_cast<size_t>(hd)},
                               {full[s].data() + t * hd, static_cast<size_t>(hd)}, {h, d}))
          << "sequence " << s << " position " << t;
    }
  }
  // Both sequences advanced through position 127 by decode: the state is the forward's S_128.
  const std::vector<float> decoded = ToHostFloats(state);
  const size_t hdd = h * d * d;
  for (int s = 0; s < 2; ++s) {
    EXPECT_TRUE(BitwiseEqual({decoded.data() + s * hdd, hdd}, boundary[s], {h, d, d}))
        << "state of sequence " << s;
  }
}

TEST(LinearAttentionCudaTest, PrefillThenDecodeEqualsOnePassBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (int64_t d : {32, 64, 128}) {
    PrefillThenDecode(d, DType::kBF16, DType::kF32);
    PrefillThenDecode(d, DType::kBF16, DType::kBF16);
  }
  PrefillThenDecode(128, DType::kF32, DType::kF32);
}

// One decode step of 64 sequences in one launch, each at its own open offset (29·s mod 64: all of
// 0..63) after 0-2 full chunks, sequence 0 from an empty prompt: every output equals the one-pass
// forward's at that position; the state equals that forward's boundary state where the chunk
// filled and is untouched elsewhere (all bitwise). The open rows are kept in open_dtype.
void MixedOffsetBatchDecode(DType open_dtype) {
  SCOPED_TRACE(open_dtype == DType::kBF16 ? "bf16 rows" : "f32 rows");
  const int64_t b = 64, h = 4, d = 128, hd = h * d, hdd = h * d * d;
  const LinearAttentionParams p{h, d, 1.0f / std::sqrt(static_cast<float>(d))};
  std::vector<int32_t> cu_prompt{0}, cu_full{0}, open_len(b);
  for (int64_t s = 0; s < b; ++s) {
    const int32_t n = static_cast<int32_t>(29 * s % kC + kC * (s % 3));
    cu_prompt.push_back(cu_prompt.back() + n);
    cu_full.push_back(cu_full.back() + n + 1);
    open_len[s] = static_cast<int32_t>(n % kC);
  }
  const int64_t t = cu_full.back(), pt = cu_prompt.back();
  const std::vector<float> q = RoundedToBf16(RandomVector(t * hd, 40));
  const std::vector<float> k = RoundedToBf16(RandomVector(t * hd, 41));
  const std::vector<float> v = RoundedToBf16(RandomVector(t * hd, 42));
  auto rows = [&](const std::vector<float>& x, bool prompt) {  // prompts, or the new tokens
    std::vector<float> out;
    for (int64_t s = 0; s < b; ++s) {
      const int64_t r0 = cu_full[s], n = cu_prompt[s + 1] - cu_prompt[s];
      out.insert(out.end(), x.begin() + (prompt ? r0 : r0 + n) * hd,
                 x.begin() + (r0 + n + (prompt ? 0 : 1)) * hd);
    }
    return out;
  };
  Tensor none, o_full = Tensor::Empty({t, h, d}, DType::kF32, Device::kCUDA);
  Tensor s_full = Tensor::Empty({b, h, d, d}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
      GpuTestContext(), p, ToDevice(q, {t, h, d}, DType::kBF16),
      ToDevice(k, {t, h, d}, DType::kBF16), ToDevice(v, {t, h, d}, DType::kBF16), Decays(h),
      HostI32(cu_full), none, o_full, none, s_full));
  Tensor o_pre = Tensor::Empty({pt, h, d}, DType::kF32, Device::kCUDA);
  Tensor state = Tensor::Empty({b, h, d, d}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::LinearAttentionFwd(
      GpuTestContext(), p, ToDevice(rows(q, true), {pt, h, d}, DType::kBF16),
      ToDevice(rows(k, true), {pt, h, d}, DType::kBF16),
      ToDevice(rows(v, true), {pt, h, d}, DType::kBF16), Decays(h), HostI32(cu_prompt), none, o_pre,
      none, state));
  const std::vector<float> prefilled = ToHostFloats(state);
  std::vector<float> open_k(b * kC * hd, 0.0f), open_v(open_k.size(), 0.0f);
  for (int64_t s = 0; s < b; ++s) {
    const int64_t r = cu_full[s] + cu_prompt[s + 1] - cu_prompt[s] - open_len[s];
    std::copy(k.begin() + r * hd, k.begin() + (r + open_len[s]) * hd, open_k.begin() + s * kC * hd);
    std::copy(v.begin() + r * hd, v.begin() + (r + open_len[s]) * hd, open_v.begin() + s * kC * hd);
  }
  Tensor ok = ToDevice(open_k, {b, kC, h, d}, open_dtype);
  Tensor ov = ToDevice(open_v, {b, kC, h, d}, open_dtype);
  Tensor lens = *cuda::CopyToDevice(GpuTestContext(), HostI32(open_len));
  Tensor o = Tensor::Empty({b, h, d}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::LinearAttentionDecode(
      GpuTestContext(), p, ToDevice(rows(q, false), {b, h, d}, DType::kBF16),
      ToDevice(rows(k, false), {b, h, d}, DType::kBF16),
      ToDevice(rows(v, false), {b, h, d}, DType::kBF16), Decays(h), state, ok, ov, lens, o));
  const std::vector<float> got = ToHostFloats(o), full = ToHostFloats(o_full);
  const std::vector<float> decoded = ToHostFloats(state), boundary = ToHostFloats(s_full);
  for (int64_t s = 0; s < b; ++s) {
    const int64_t at = cu_full[s + 1] - 1;
    EXPECT_TRUE(BitwiseEqual({got.data() + s * hd, static_cast<size_t>(hd)},
                             {full.data() + at * hd, static_cast<size_t>(hd)}, {h, d}))
        << "sequence " << s << " open_len " << open_len[s];
    const std::vector<float>& want = open_len[s] + 1 == kC ? boundary : prefilled;
    EXPECT_TRUE(BitwiseEqual({decoded.data() + s * hdd, static_cast<size_t>(hdd)},
                             {want.data() + s * hdd, static_cast<size_t>(hdd)}, {h, d, d}))
        << "state of sequence " << s << " open_len " << open_len[s];
  }
  // The step moved every open_len on by one, wrapping at a full chunk, with nothing left in the
  // bits its head blocks count themselves in with.
  const Tensor lens_after = *cuda::CopyToHost(GpuTestContext(), lens);
  for (int64_t s = 0; s < b; ++s) {
    EXPECT_EQ(lens_after.data<int32_t>()[s], (open_len[s] + 1) % kC) << "sequence " << s;
  }
  // The new tokens' k, v rows were appended to the open chunk, in its own dtype.
  const std::vector<float> new_k = rows(k, false), k_after = ToHostFloats(ok);
  for (int64_t s = 0; s < b; ++s) {
    EXPECT_TRUE(
        BitwiseEqual({k_after.data() + (s * kC + open_len[s]) * hd, static_cast<size_t>(hd)},
                     {new_k.data() + s * hd, static_cast<size_t>(hd)}, {h, d}))
        << "open_k row of sequence " << s;
  }
}

TEST(LinearAttentionCudaTest, MixedOffsetBatchDecodeEqualsOnePassBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  MixedOffsetBatchDecode(DType::kF32);
  MixedOffsetBatchDecode(DType::kBF16);
}

// bf16 open rows: only with bf16 q, k, v (f32 values would be rounded), and 16-byte aligned.
TEST(LinearAttentionCudaTest, DecodeRejectsBadOpenRows) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t b = 2, h = 2, d = 64;
  const LinearAttentionParams p{h, d, 0.125f};
  auto zeros = [](Shape s, DType t) { return Tensor::Zeros(std::move(s), t, Device::kCUDA); };
  Tensor state = zeros({b, h, d, d}, DType::kF32), lens = zeros({b}, DType::kI32);
  Tensor rows16 = zeros({b, kC, h, d}, DType::kBF16), o = zeros({b, h, d}, DType::kF32);
  Tensor x32 = zeros({b, h, d}, DType::kF32), x16 = zeros({b, h, d}, DType::kBF16);
  absl::Status s = cuda::LinearAttentionDecode(GpuTestContext(), p, x32, x32, x32, Decays(h), state,
                                               rows16, rows16, lens, o);
  EXPECT_EQ(s.message(),
            "open_k: bf16 open rows need bf16 q, k and v; f32 q, k, v keep them in f32");
  Tensor wide = zeros({b * kC * h * d + 8}, DType::kBF16);
  Tensor off = Tensor::View(static_cast<char*>(wide.raw_data()) + 8, {b, kC, h, d}, DType::kBF16,
                            Device::kCUDA);
  s = cuda::LinearAttentionDecode(GpuTestContext(), p, x16, x16, x16, Decays(h), state, rows16, off,
                                  lens, o);
  EXPECT_EQ(s.message(), "open_v: bf16 data must be 16-byte aligned");
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
  // The tensor-core kernels load 16-byte rows: bf16 data must start 16-byte aligned.
  const Tensor v_off =
      Tensor::View(reinterpret_cast<void*>(0x1008), {5, 2, 64}, DType::kBF16, Device::kCUDA);
  s = cuda::LinearAttentionFwd(ctx, p, y, y, v_off, Decays(2), HostI32({0, 5}), none, o64, none,
                               none);
  EXPECT_EQ(s.message(), "v: bf16 data must be 16-byte aligned");
  Tensor state = dev({5, 2, 64, 64}, DType::kF32), open = dev({5, kC, 2, 64}, DType::kF32);
  Tensor open_len = dev({5}, DType::kI32), o_step = dev({5, 2, 64}, DType::kF32);
  s = cuda::LinearAttentionDecode(ctx, p, y, y, v_off, Decays(2), state, open, open, open_len,
                                  o_step);
  EXPECT_EQ(s.message(), "v: bf16 data must be 16-byte aligned");
}

}  // namespace
}  // namespace tandem::kernels
