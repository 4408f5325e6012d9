// Tests for the CUDA embedding: the forward is an exact row copy (f32 and bf16 storage, ids on
// either device), the backward equals the CPU's bits (same per-id token order, no atomics) with
// repeated ids, and the id checks on the host.
#include "kernels/embedding/embedding_cuda.h"

#include <cmath>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/embedding/embedding.h"
#include "tests/kernels/gpu/gpu_test_util.h"
#include "tests/testing/compare.h"

namespace tandem::kernels {
namespace {

using testing::BitwiseEqual;
using testing::GpuTestContext;
using testing::RandomVector;
using testing::RoundedToBf16;
using testing::ToDevice;
using testing::ToHostFloats;

std::vector<int32_t> Ids(int64_t t, int64_t v, uint64_t seed) {
  std::vector<int32_t> out;
  for (float f : RandomVector(t, seed, 0.0f, static_cast<float>(v))) {
    out.push_back(std::min(static_cast<int32_t>(f), static_cast<int32_t>(v - 1)));
  }
  return out;
}

Tensor DeviceI32(const std::vector<int32_t>& v) {
  auto d = cuda::CopyToDevice(GpuTestContext(), Tensor::FromVector(v, {int64_t(v.size())}));
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *d : Tensor();
}

std::vector<float> Vec(const Tensor& t) {
  return std::vector<float>(t.data<float>(), t.data<float>() + t.numel());
}

TEST(EmbeddingCudaTest, ForwardCopiesRows) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t v = 1000, d = 300, t = 77;
  const std::vector<float> table = RandomVector(v * d, 1);
  const std::vector<int32_t> ids = Ids(t, v, 2);
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    SCOPED_TRACE(DTypeName(dtype));
    const std::vector<float> tab = dtype == DType::kBF16 ? RoundedToBf16(table) : table;
    Tensor want = Tensor::Empty({t, d}, DType::kF32);
    TANDEM_ASSERT_OK(EmbeddingFwd(Context::Cpu(1), Tensor::FromVector(tab, {v, d}),
                                  Tensor::FromVector(ids, {t}), want));
    for (bool host_ids : {true, false}) {
      Tensor out = Tensor::Empty({t, d}, dtype, Device::kCUDA);
      TANDEM_ASSERT_OK(cuda::EmbeddingFwd(GpuTestContext(), ToDevice(table, {v, d}, dtype),
                                          host_ids ? Tensor::FromVector(ids, {t}) : DeviceI32(ids),
                                          out));
      EXPECT_TRUE(BitwiseEqual(ToHostFloats(out), Vec(want)));
    }
  }
}

TEST(EmbeddingCudaTest, ForwardDeviceIdOutsideVocabularyGivesNanRow) {
  TANDEM_SKIP_WITHOUT_GPU();
  const int64_t v = 10, d = 4;
  Tensor out = Tensor::Empty({3, d}, DType::kF32, Device::kCUDA);
  TANDEM_ASSERT_OK(cuda::EmbeddingFwd(GpuTestContext(), ToDevice(RandomVector(v * d, 3), {v, d}),
                                      DeviceI32({2, 10, -1}), out));
  const std::vector<float> y = ToHostFloats(out);
  for (int64_t i = 0; i < 3 * d; ++i) EXPECT_EQ(std::isnan(y[i]), i >= d) << i;
}

TEST(EmbeddingCudaTest, BackwardEqualsCpuBitwise) {
  TANDEM_SKIP_WITHOUT_GPU();
  // Few ids among many tokens: long runs of repeats whose sums depend on the order.
  for (const auto& [v, d, t] :
       {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {5, 300, 1000}, {2000, 64, 513}}) {
    SCOPED_TRACE(::testing::Message() << "V=" << v << " D=" << d << " T=" << t);
    const std::vector<int32_t> ids = Ids(t, v, 4);
    const std::vector<float> dout = RandomVector(t * d, 5), dt0 = RandomVector(v * d, 6);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      SCOPED_TRACE(DTypeName(dtype));
      const std::vector<float> g = dtype == DType::kBF16 ? RoundedToBf16(dout) : dout;
      Tensor want = Tensor::FromVector(dt0, {v, d});
      TANDEM_ASSERT_OK(EmbeddingBwd(Context::Cpu(2), Tensor::FromVector(ids, {t}),
                                    Tensor::FromVector(g, {t, d}), want));
      for (bool host_ids : {true, false}) {
        Tensor dtable = ToDevice(dt0, {v, d});  // accumulated into
        TANDEM_ASSERT_OK(cuda::EmbeddingBwd(
            GpuTestContext(), host_ids ? Tensor::FromVector(ids, {t}) : DeviceI32(ids),
            ToDevice(dout, {t, d}, dtype), dtable));
        EXPECT_TRUE(BitwiseEqual(ToHostFloats(dtable), Vec(want), {v, d}));
      }
    }
  }
}

TEST(EmbeddingCudaTest, RejectsBadArguments) {
  const Context& ctx = GpuTestContext();
  void* fake = reinterpret_cast<void*>(0x1000);  // never dereferenced: validation fails first
  Tensor table = Tensor::View(fake, {10, 4}, DType::kF32, Device::kCUDA);
  Tensor out = Tensor::View(fake, {2, 4}, DType::kF32, Device::kCUDA);
  absl::Status s =
      cuda::EmbeddingFwd(ctx, table, Tensor::FromVector(std::vector<int32_t>{3, 10}, {2}), out);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "ids: ids[1] = 10 is outside the vocabulary [0, 10)");
  s = cuda::EmbeddingBwd(ctx, Tensor::FromVector(std::vector<int32_t>{-1, 0}, {2}), out, table);
  EXPECT_EQ(s.message(), "ids: ids[0] = -1 is outside the vocabulary [0, 10)");
  s = cuda::EmbeddingBwd(ctx, Tensor::FromVector(std::vector<int32_t>{1, 0}, {2}), table, table);
  EXPECT_EQ(s.message(), "dout: expected f32 [2, 4] on cuda, got f32 [10, 4] on cuda");
}

}  // namespace
}  // namespace tandem::kernels
