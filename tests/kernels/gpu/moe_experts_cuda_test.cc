// Tests for the CUDA routed experts: forward against the CPU kernel within per-element bounds
// derived from the bf16 rounding of the down GEMM's input and fp32 accumulation, gate/up rows equal
// to cuda::GemmNT's rows bitwise at every grouped tile height, a token's rows bitwise identical
// alone or in any batch, backward against the CPU kernel, run-to-run determinism, the deferred
// report of an out-of-range expert index and argument errors.
#include "kernels/moe_experts/moe_experts_cuda.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/gemm/gemm_cuda.h"
#include "kernels/moe_experts/moe_experts.h"
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
using testing::ToDouble;
using testing::ToHostFloats;

constexpr DType kF32 = DType::kF32, kBF16 = DType::kBF16;
constexpr Device kGpu = Device::kCUDA;

// Inputs rounded to bf16 so the CPU (f32) and the GPU (bf16 weights) see the same values.
struct Problem {
  int64_t t, k, e, dm, i;
  std::vector<float> x, weight, gate, up, down;  // [T,Dm] [T,K] [E,I,Dm] [E,I,Dm] [E,Dm,I]
  std::vector<int32_t> idx;                      // [T, K]
};

// K distinct experts per token; about half the picks go to experts 0..2, so those get many rows
// (several 128-row GEMM tiles) while others get none.
std::vector<int32_t> Routing(int64_t t, int64_t k, int64_t e, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> idx(t * k);
  for (int64_t r = 0; r < t; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      int32_t pick;
      do {
        pick = static_cast<int32_t>(rng() % 2 == 0 ? rng() % std::min<int64_t>(3, e) : rng() % e);
      } while (std::find(&idx[r * k], &idx[r * k + j], pick) != &idx[r * k + j]);
      idx[r * k + j] = pick;
    }
  }
  return idx;
}

Problem MakeProblem(int64_t t, int64_t k, int64_t e, int64_t dm, int64_t i, uint64_t seed) {
  const float sg = 2.0f / std::sqrt(float(dm)), sd = 1.0f / std::sqrt(float(i));
  return {t,
          k,
          e,
          dm,
          i,
          RoundedToBf16(RandomVector(t * dm, seed)),
          RandomVector(t * k, seed + 1, 0.05f, 1.0f),
          RoundedToBf16(RandomVector(e * i * dm, seed + 2, -sg, sg)),
          RoundedToBf16(RandomVector(e * i * dm, seed + 3, -sg, sg)),
          RoundedToBf16(RandomVector(e * dm * i, seed + 4, -sd, sd)),
          Routing(t, k, e, seed + 5)};
}

struct Fwd {
  std::vector<float> out, gate, up, y;
};

std::vector<float> Vec(const Tensor& t) {
  return t.device() == Device::kCPU
             ? std::vector<float>(t.data<float>(), t.data<float>() + t.numel())
             : ToHostFloats(t);
}

MoeExpertsWeights HostWeights(const Problem& p) {
  return {Tensor::FromVector(p.gate, {p.e, p.i, p.dm}), Tensor::FromVector(p.up, {p.e, p.i, p.dm}),
          Tensor::FromVector(p.down, {p.e, p.dm, p.i})};
}
MoeExpertsWeights DeviceWeights(const Problem& p) {
  return {ToDevice(p.gate, {p.e, p.i, p.dm}, kBF16), ToDevice(p.up, {p.e, p.i, p.dm}, kBF16),
          ToDevice(p.down, {p.e, p.dm, p.i}, kBF16)};
}
Tensor DeviceIdx(const Problem& p) {
  auto t = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(p.idx, {p.t, p.k}));
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? *t : Tensor();
}

Fwd CpuFwd(const Problem& p) {
  Tensor out = Tensor::Empty({p.t, p.dm}, kF32);
  MoeExpertsActivations acts;
  const absl::Status s = MoeExpertsFwd(
      Context::Cpu(1), Tensor::FromVector(p.x, {p.t, p.dm}), Tensor::FromVector(p.idx, {p.t, p.k}),
      Tensor::FromVector(p.weight, {p.t, p.k}), HostWeights(p), out, &acts);
  EXPECT_TRUE(s.ok()) << s;
  return {Vec(out), Vec(acts.gate), Vec(acts.up), Vec(acts.y)};
}

Fwd GpuFwd(const Problem& p, DType x_dtype = kBF16, DType out_dtype = kF32) {
  Tensor out = Tensor::Empty({p.t, p.dm}, out_dtype, kGpu);
  MoeExpertsActivations acts;
  const absl::Status s =
      cuda::MoeExpertsFwd(GpuTestContext(), ToDevice(p.x, {p.t, p.dm}, x_dtype), DeviceIdx(p),
                          ToDevice(p.weight, {p.t, p.k}), DeviceWeights(p), out, &acts);
  EXPECT_TRUE(s.ok()) << s;
  if (!s.ok()) return {};
  return {Vec(out), Vec(acts.gate), Vec(acts.up), Vec(acts.y)};
}

// |got − want| <= bound elementwise; names the first violation.
::testing::AssertionResult WithinBounds(const std::vector<float>& got,
                                        const std::vector<float>& want,
                                        const std::vector<double>& bound) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size mismatch";
  size_t bad = 0, first = 0;
  for (size_t j = 0; j < got.size(); ++j) {
    if (!(std::abs(double(got[j]) - want[j]) <= bound[j])) first = bad++ == 0 ? j : first;
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << bad << " elements out of bounds, first at " << first << ": got " << got[first]
         << ", want " << want[first] << ", bound " << bound[first];
}

// Bounds on |GPU − CPU|. gate/up: both sum the same exact bf16 products in fp32, in different
// orders: 2·Dm·u·Σ|x·w| (u = 2^-24). h = silu(gate)·up moves by at most 1.1·|up|·δg +
// |silu|·δu (|silu'| < 1.1), and the GPU rounds it to bf16 (2^-9 relative; 2^-8 allowed) before
// the down GEMM, whose own fp32 order adds 2·I·u·Σ|w·h|. out sums K weighted rows.
struct FwdBounds {
  std::vector<double> gate, up, y, out;
};

FwdBounds ForwardBounds(const Problem& p, const Fwd& c) {
  const double u = std::ldexp(1.0, -24), ub = std::ldexp(1.0, -8);
  const int64_t n = p.t * p.k;
  FwdBounds b{std::vector<double>(n * p.i), std::vector<double>(n * p.i),
              std::vector<double>(n * p.dm), std::vector<double>(p.t * p.dm, 0.0)};
  std::vector<double> h(p.i), dh(p.i);
  for (int64_t r = 0; r < n; ++r) {
    const int64_t t = r / p.k, e = p.idx[r];
    for (int64_t j = 0; j < p.i; ++j) {
      double sg = 0, su = 0;
      for (int64_t col = 0; col < p.dm; ++col) {
        sg += std::abs(double(p.x[t * p.dm + col]) * p.gate[(e * p.i + j) * p.dm + col]);
        su += std::abs(double(p.x[t * p.dm + col]) * p.up[(e * p.i + j) * p.dm + col]);
      }
      const double dg = 2 * p.dm * u * sg + 1e-30, du = 2 * p.dm * u * su + 1e-30;
      const double g = c.gate[r * p.i + j], up = c.up[r * p.i + j];
      const double silu = g / (1 + std::exp(-g));
      h[j] = silu * up;
      dh[j] = 1.1 * std::abs(up) * dg + (std::abs(silu) + 1.1 * dg) * du + 1e-6 * std::abs(h[j]);
      b.gate[r * p.i + j] = dg, b.up[r * p.i + j] = du;
    }
    for (int64_t col = 0; col < p.dm; ++col) {
      double m = 0, prop = 0;
      for (int64_t j = 0; j < p.i; ++j) {
        const double w = std::abs(double(p.down[(e * p.dm + col) * p.i + j]));
        m += w * std::abs(h[j]);
        prop += w * dh[j];
      }
      b.y[r * p.dm + col] = (ub + 2 * p.i * u) * m + prop + 1e-30;
      const double wt = p.weight[r];
      b.out[t * p.dm + col] +=
          wt * b.y[r * p.dm + col] + 2 * p.k * u * std::abs(wt * c.y[r * p.dm + col]);
    }
  }
  return b;
}

struct Shape5 {
  int64_t t, k, e, dm, i;
};
const Shape5 kShapes[] = {
    {37, 2, 8, 64, 32},     // tiny-hybrid
    {300, 4, 16, 136, 96},  // Dm, I not multiples of the 128 / 32 tiles; hot experts > 128 rows
    {1, 8, 256, 128, 64},   // one token, Ring-mini routing width
    {200, 8, 256, 128, 64}};

TEST(MoeExpertsCudaTest, ForwardMatchesCpuWithinBf16Bounds) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Shape5& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.t << " K=" << s.k << " E=" << s.e);
    const Problem p = MakeProblem(s.t, s.k, s.e, s.dm, s.i, 11);
    const Fwd c = CpuFwd(p), g = GpuFwd(p);
    const FwdBounds b = ForwardBounds(p, c);
    EXPECT_TRUE(WithinBounds(g.gate, c.gate, b.gate)) << "acts.gate";
    EXPECT_TRUE(WithinBounds(g.up, c.up, b.up)) << "acts.up";
    EXPECT_TRUE(WithinBounds(g.y, c.y, b.y)) << "acts.y";
    EXPECT_TRUE(WithinBounds(g.out, c.out, b.out)) << "out";
    // Globally the bf16 rounding of h leaves an NMSE near (2^-9)^2 / 3 ~ 1.3e-6.
    EXPECT_TRUE(AllClose(g.out, ToDouble(c.out), {.atol = 1e30, .max_nmse = 1e-5})) << "out";
    // f32 x is rounded to bf16 on the way in; x here is bf16-exact, so the bits are the same.
    EXPECT_TRUE(BitwiseEqual(GpuFwd(p, kF32).out, g.out)) << "f32 x";
    std::vector<float> rounded = RoundedToBf16(g.out);
    EXPECT_TRUE(BitwiseEqual(GpuFwd(p, kBF16, kBF16).out, rounded)) << "bf16 out";
  }
}

// Expert e's rows of acts.gate / acts.up equal cuda::GemmNT(x, W_e) rows bitwise, whichever M-tile
// height the grouped GEMM picks: T·K / E = 2.5 (16-row tiles), 37.5 (64), 300 (128).
TEST(MoeExpertsCudaTest, GateUpRowsEqualGemmNTRowsBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Shape5& s :
       {Shape5{20, 2, 16, 136, 96}, Shape5{150, 4, 16, 136, 96}, Shape5{300, 4, 4, 136, 96}}) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.t << " K=" << s.k << " E=" << s.e);
    const Problem p = MakeProblem(s.t, s.k, s.e, s.dm, s.i, 21);
    const Fwd g = GpuFwd(p);
    const MoeExpertsWeights w = DeviceWeights(p);
    const Tensor x = ToDevice(p.x, {p.t, p.dm}, kBF16);
    for (int64_t e : {int64_t{0}, s.e - 1}) {  // a hot expert and an ordinary one
      for (bool up : {false, true}) {
        const Tensor& stacked = up ? w.up : w.gate;
        Tensor we = Tensor::View(
            static_cast<uint16_t*>(const_cast<void*>(stacked.raw_data())) + e * p.i * p.dm,
            {p.i, p.dm}, kBF16, kGpu);
        Tensor c = Tensor::Empty({p.t, p.i}, kF32, kGpu);
        TANDEM_ASSERT_OK(cuda::GemmNT(GpuTestContext(), x, we, c));
        const std::vector<float> all = ToHostFloats(c);
        const std::vector<float>& got = up ? g.up : g.gate;
        for (int64_t r = 0; r < p.t * p.k; ++r) {
          if (p.idx[r] != e) continue;
          const int64_t t = r / p.k;
          ASSERT_TRUE(BitwiseEqual({got.data() + r * p.i, size_t(p.i)},
                                   {all.data() + t * p.i, size_t(p.i)}))
              << (up ? "up" : "gate") << " expert " << e << " row " << r;
        }
      }
    }
  }
}

// A token alone (16-row tiles) and in a prefill whose experts get ~300 rows (128-row tiles):
// the same out and acts.y bits.
TEST(MoeExpertsCudaTest, TokenRowsAreBitwiseIdenticalAcrossTileHeights) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem full = MakeProblem(300, 4, 4, 136, 96, 25);
  const Fwd a = GpuFwd(full);
  for (int64_t t : {0, 177}) {
    Problem one = full;
    one.t = 1;
    one.x.assign(&full.x[t * 136], &full.x[(t + 1) * 136]);
    one.weight.assign(&full.weight[t * 4], &full.weight[(t + 1) * 4]);
    one.idx.assign(&full.idx[t * 4], &full.idx[(t + 1) * 4]);
    const Fwd alone = GpuFwd(one);
    EXPECT_TRUE(BitwiseEqual(alone.out, {a.out.data() + t * 136, 136})) << "out, token " << t;
    EXPECT_TRUE(BitwiseEqual(alone.y, {a.y.data() + t * 4 * 136, 4 * 136})) << "y, token " << t;
  }
}

// The probe tokens keep their routing; everything else in the batch changes.
TEST(MoeExpertsCudaTest, TokenRowsAreBitwiseIdenticalInAnyBatch) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem full = MakeProblem(300, 8, 256, 128, 64, 31);
  Problem other = full;
  other.idx = Routing(300, 8, 256, 99);
  const int64_t probes[] = {0, 150, 299};
  for (int64_t t : probes) std::copy_n(&full.idx[t * 8], 8, &other.idx[t * 8]);
  const Fwd a = GpuFwd(full), b = GpuFwd(other);
  for (int64_t t : probes) {
    SCOPED_TRACE(::testing::Message() << "token " << t);
    Problem one = full;
    one.t = 1;
    one.x.assign(&full.x[t * 128], &full.x[(t + 1) * 128]);
    one.weight.assign(&full.weight[t * 8], &full.weight[(t + 1) * 8]);
    one.idx.assign(&full.idx[t * 8], &full.idx[(t + 1) * 8]);
    const Fwd alone = GpuFwd(one);
    const std::span<const float> row_a(a.out.data() + t * 128, 128);
    EXPECT_TRUE(BitwiseEqual(alone.out, row_a)) << "alone vs batch";
    EXPECT_TRUE(BitwiseEqual({b.out.data() + t * 128, 128}, row_a)) << "other routing";
    EXPECT_TRUE(BitwiseEqual(alone.y, {a.y.data() + t * 8 * 128, 8 * 128})) << "acts.y";
  }
}

// The rollout engine's forward keeps no activations (acts == nullptr), the trainer's does: the
// same out bits either way (the log-prob contract at the expert layer), at decode and prefill
// sizes and with bf16 and f32 x.
TEST(MoeExpertsCudaTest, ForwardWithoutActivationsIsBitwiseTheTrainingForward) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const int64_t t : {int64_t{1}, int64_t{64}, int64_t{300}}) {
    for (const DType x_dtype : {kBF16, kF32}) {
      SCOPED_TRACE(::testing::Message() << "T=" << t << " x " << DTypeName(x_dtype));
      const Problem p = MakeProblem(t, 8, 256, 128, 64, 53 + t);
      const Fwd with_acts = GpuFwd(p, x_dtype);
      Tensor out = Tensor::Empty({p.t, p.dm}, kF32, kGpu);
      TANDEM_ASSERT_OK(cuda::MoeExpertsFwd(GpuTestContext(), ToDevice(p.x, {p.t, p.dm}, x_dtype),
                                           DeviceIdx(p), ToDevice(p.weight, {p.t, p.k}),
                                           DeviceWeights(p), out, nullptr));
      EXPECT_TRUE(BitwiseEqual(Vec(out), with_acts.out));
    }
  }
}

struct Bwd {
  std::vector<float> dx, dtw, dgate, dup, ddown;  // weight gradients as deltas from their init
};

struct GradInit {
  std::vector<float> gate, up, down;
};
GradInit MakeGradInit(const Problem& p) {
  return {RandomVector(p.e * p.i * p.dm, 41), RandomVector(p.e * p.i * p.dm, 42),
          RandomVector(p.e * p.dm * p.i, 43)};
}

std::vector<float> Minus(std::vector<float> a, const std::vector<float>& b) {
  for (size_t j = 0; j < a.size(); ++j) a[j] -= b[j];
  return a;
}

Bwd CpuBwd(const Problem& p, const std::vector<float>& dout, const GradInit& g0) {
  const Context ctx = Context::Cpu(1);
  const Tensor x = Tensor::FromVector(p.x, {p.t, p.dm}),
               idx = Tensor::FromVector(p.idx, {p.t, p.k});
  const Tensor tw = Tensor::FromVector(p.weight, {p.t, p.k});
  const MoeExpertsWeights w = HostWeights(p);
  Tensor out = Tensor::Empty({p.t, p.dm}, kF32);
  MoeExpertsActivations acts;
  EXPECT_TRUE(MoeExpertsFwd(ctx, x, idx, tw, w, out, &acts).ok());
  Tensor dx = Tensor::Empty({p.t, p.dm}, kF32), dtw = Tensor::Empty({p.t, p.k}, kF32);
  MoeExpertsWeights grads{Tensor::FromVector(g0.gate, {p.e, p.i, p.dm}),
                          Tensor::FromVector(g0.up, {p.e, p.i, p.dm}),
                          Tensor::FromVector(g0.down, {p.e, p.dm, p.i})};
  const absl::Status s = MoeExpertsBwd(ctx, x, idx, tw, w, acts,
                                       Tensor::FromVector(dout, {p.t, p.dm}), dx, dtw, grads);
  EXPECT_TRUE(s.ok()) << s;
  return {Vec(dx), Vec(dtw), Minus(Vec(grads.gate), g0.gate), Minus(Vec(grads.up), g0.up),
          Minus(Vec(grads.down), g0.down)};
}

Bwd GpuBwd(const Problem& p, const std::vector<float>& dout, const GradInit& g0,
           DType dout_dtype = kF32) {
  const Context& ctx = GpuTestContext();
  const Tensor x = ToDevice(p.x, {p.t, p.dm}, kBF16), idx = DeviceIdx(p);
  const Tensor tw = ToDevice(p.weight, {p.t, p.k});
  const MoeExpertsWeights w = DeviceWeights(p);
  Tensor out = Tensor::Empty({p.t, p.dm}, kF32, kGpu);
  MoeExpertsActivations acts;
  absl::Status s = cuda::MoeExpertsFwd(ctx, x, idx, tw, w, out, &acts);
  EXPECT_TRUE(s.ok()) << s;
  Tensor dx = Tensor::Empty({p.t, p.dm}, kF32, kGpu), dtw = Tensor::Empty({p.t, p.k}, kF32, kGpu);
  MoeExpertsWeights grads{ToDevice(g0.gate, {p.e, p.i, p.dm}), ToDevice(g0.up, {p.e, p.i, p.dm}),
                          ToDevice(g0.down, {p.e, p.dm, p.i})};
  if (s.ok()) {
    s = cuda::MoeExpertsBwd(ctx, x, idx, tw, w, acts, ToDevice(dout, {p.t, p.dm}, dout_dtype), dx,
                            dtw, grads);
  }
  EXPECT_TRUE(s.ok()) << s;
  if (!s.ok()) return {};
  return {Vec(dx), Vec(dtw), Minus(Vec(grads.gate), g0.gate), Minus(Vec(grads.up), g0.up),
          Minus(Vec(grads.down), g0.down)};
}

// The GPU rounds dy, h, x, dgate and dup to bf16 where the CPU keeps fp32 (2^-9 relative each,
// at most three in the chain of any output) and starts from its own forward: the rms relative
// error stays near 3·2^-9/sqrt(3) ~ 3.4e-3 (NMSE ~ 1.2e-5). Elementwise, sums with cancellation
// are allowed 2^-5 of the largest magnitude.
::testing::AssertionResult CloseAfterBf16(const std::vector<float>& got,
                                          const std::vector<float>& want) {
  double peak = 0;
  for (float v : want) peak = std::max(peak, double(std::abs(v)));
  return AllClose(got, ToDouble(want),
                  {.atol = std::ldexp(peak, -5), .rtol = std::ldexp(1.0, -5), .max_nmse = 1e-4});
}

TEST(MoeExpertsCudaTest, BackwardMatchesCpu) {
  TANDEM_SKIP_WITHOUT_GPU();
  for (const Shape5& s : {kShapes[0], kShapes[1], kShapes[3]}) {
    SCOPED_TRACE(::testing::Message() << "T=" << s.t << " K=" << s.k << " E=" << s.e);
    const Problem p = MakeProblem(s.t, s.k, s.e, s.dm, s.i, 51);
    const std::vector<float> dout = RandomVector(p.t * p.dm, 52);
    const GradInit g0 = MakeGradInit(p);
    const Bwd c = CpuBwd(p, dout, g0), g = GpuBwd(p, dout, g0);
    EXPECT_TRUE(CloseAfterBf16(g.dx, c.dx)) << "dx";
    EXPECT_TRUE(CloseAfterBf16(g.dtw, c.dtw)) << "dtopk_weight";
    EXPECT_TRUE(CloseAfterBf16(g.dgate, c.dgate)) << "grads.gate";
    EXPECT_TRUE(CloseAfterBf16(g.dup, c.dup)) << "grads.up";
    EXPECT_TRUE(CloseAfterBf16(g.ddown, c.ddown)) << "grads.down";
  }
}

TEST(MoeExpertsCudaTest, BackwardIsDeterministicAndTokenRowsBatchInvariant) {
  TANDEM_SKIP_WITHOUT_GPU();
  const Problem p = MakeProblem(300, 8, 256, 128, 64, 61);
  const std::vector<float> dout = RandomVector(p.t * p.dm, 62);
  const GradInit g0 = MakeGradInit(p);
  const Bwd a = GpuBwd(p, dout, g0), b = GpuBwd(p, dout, g0);
  EXPECT_TRUE(BitwiseEqual(a.dx, b.dx)) << "dx";
  EXPECT_TRUE(BitwiseEqual(a.dtw, b.dtw)) << "dtopk_weight";
  EXPECT_TRUE(BitwiseEqual(a.dgate, b.dgate)) << "grads.gate";
  EXPECT_TRUE(BitwiseEqual(a.dup, b.dup)) << "grads.up";
  EXPECT_TRUE(BitwiseEqual(a.ddown, b.ddown)) << "grads.down";
  const int64_t t = 123;
  Problem one = p;
  one.t = 1;
  one.x.assign(&p.x[t * p.dm], &p.x[(t + 1) * p.dm]);
  one.weight.assign(&p.weight[t * p.k], &p.weight[(t + 1) * p.k]);
  one.idx.assign(&p.idx[t * p.k], &p.idx[(t + 1) * p.k]);
  const Bwd alone = GpuBwd(one, std::vector<float>(&dout[t * p.dm], &dout[(t + 1) * p.dm]), g0);
  EXPECT_TRUE(BitwiseEqual(alone.dx, {a.dx.data() + t * p.dm, size_t(p.dm)})) << "dx row";
  EXPECT_TRUE(BitwiseEqual(alone.dtw, {a.dtw.data() + t * p.k, size_t(p.k)})) << "dtw row";
  // bf16 dout is exact here only after rounding; its dx must equal the f32 run on rounded dout.
  const std::vector<float> dout16 = RoundedToBf16(dout);
  EXPECT_TRUE(BitwiseEqual(GpuBwd(p, dout16, g0, kBF16).dx, GpuBwd(p, dout16, g0).dx));
}

// An out-of-range expert index is found on the device without a host synchronisation: the call
// that carries it drops those rows, and the next call on the context (once the first has run)
// reports InvalidArgument naming topk_idx; the one after that is clean again.
TEST(MoeExpertsCudaTest, ReportsBadExpertIndexOnTheNextCall) {
  TANDEM_SKIP_WITHOUT_GPU();
  Problem p = MakeProblem(5, 2, 8, 64, 32, 71);
  const Tensor x = ToDevice(p.x, {p.t, p.dm}), tw = ToDevice(p.weight, {p.t, p.k});
  Tensor out = Tensor::Empty({p.t, p.dm}, kF32, kGpu);
  p.idx[7] = 8;
  TANDEM_ASSERT_OK(
      cuda::MoeExpertsFwd(GpuTestContext(), x, DeviceIdx(p), tw, DeviceWeights(p), out, nullptr));
  TANDEM_ASSERT_OK(cuda::Synchronize(GpuTestContext()));
  p.idx[7] = 1;
  absl::Status s =
      cuda::MoeExpertsFwd(GpuTestContext(), x, DeviceIdx(p), tw, DeviceWeights(p), out, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("topk_idx"), std::string::npos) << s;
  TANDEM_ASSERT_OK(
      cuda::MoeExpertsFwd(GpuTestContext(), x, DeviceIdx(p), tw, DeviceWeights(p), out, nullptr));
}

TEST(MoeExpertsCudaTest, RejectsBadArguments) {
  TANDEM_SKIP_WITHOUT_GPU();
  Problem p = MakeProblem(5, 2, 8, 64, 32, 71);
  Tensor out = Tensor::Empty({p.t, p.dm}, kF32, kGpu);
  const Tensor x = ToDevice(p.x, {p.t, p.dm}), tw = ToDevice(p.weight, {p.t, p.k});
  MoeExpertsWeights w = DeviceWeights(p);
  w.down = ToDevice(p.down, {p.e, p.dm, p.i}, kF32);
  absl::Status s = cuda::MoeExpertsFwd(GpuTestContext(), x, DeviceIdx(p), tw, w, out, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("w.down"), std::string::npos) << s;
  const Tensor host_x = Tensor::FromVector(p.x, {p.t, p.dm});
  s = cuda::MoeExpertsFwd(GpuTestContext(), host_x, DeviceIdx(p), tw, DeviceWeights(p), out,
                          nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  // The grouped tiles move 8 bf16 at a time: I = 36 is refused.
  const Problem q = MakeProblem(3, 2, 4, 64, 36, 72);
  Tensor out_q = Tensor::Empty({q.t, q.dm}, kF32, kGpu);
  s = cuda::MoeExpertsFwd(GpuTestContext(), ToDevice(q.x, {q.t, q.dm}), DeviceIdx(q),
                          ToDevice(q.weight, {q.t, q.k}), DeviceWeights(q), out_q, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

}  // namespace
}  // namespace tandem::kernels
