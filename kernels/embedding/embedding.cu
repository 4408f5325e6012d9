// CUDA embedding: the forward copies rows (one thread per element, grid-stride); the backward
// groups tokens by id on the host (stable, so ascending t within an id), uploads the grouping and
// gives each (id, column) one thread that sums that id's tokens in order. No atomics.
#include <cuda_runtime.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_device.cuh"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/embedding/embedding_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

__global__ void FwdKernel(int64_t n, int64_t d, int64_t vocab, FloatPtr table, const int32_t* ids,
                          FloatPtr out) {
  for (int64_t i = blockIdx.x * int64_t{kThreads} + threadIdx.x; i < n;
       i += int64_t{gridDim.x} * kThreads) {
    const int64_t t = i / d, c = i % d;
    const int32_t id = ids[t];
    out.Store(i, id >= 0 && id < vocab ? table.Load(int64_t{id} * d + c) : NAN);
  }
}

// Block (run, column block): run r covers sorted positions [run_start[r], run_start[r + 1]), all
// with id run_id[r]; token_of[q] is the token at sorted position q (ascending within a run).
__global__ void __launch_bounds__(kThreads)
    BwdKernel(int64_t d, const int32_t* run_start, const int32_t* run_id, const int32_t* token_of,
              FloatPtr dout, float* dtable) {
  const int64_t c = int64_t{blockIdx.y} * kThreads + threadIdx.x;
  if (c >= d) return;
  const int r = blockIdx.x;
  float* dst = dtable + int64_t{run_id[r]} * d + c;
  float acc = *dst;
  for (int32_t q = run_start[r]; q < run_start[r + 1]; ++q) {
    acc = __fadd_rn(acc, dout.Load(int64_t{token_of[q]} * d + c));
  }
  *dst = acc;
}

DType FloatType(const Tensor& t) { return t.dtype() == DType::kBF16 ? DType::kBF16 : DType::kF32; }

// Host copy of ids (either device), each checked to lie in [0, vocab).
absl::StatusOr<Tensor> HostIds(const Context& ctx, const Tensor& ids, int64_t vocab) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(ids, "ids", DType::kI32, {-1}, ids.device()));
  Tensor host = ids;
  if (ids.device() == Device::kCUDA) {
    TANDEM_ASSIGN_OR_RETURN(host, CopyToHost(ctx, ids));
  }
  const int32_t* p = host.data<int32_t>();
  for (int64_t t = 0; t < host.dim(0); ++t) {
    TANDEM_CHECK_ARG(p[t] >= 0 && p[t] < vocab, "ids: ids[", t, "] = ", p[t],
                     " is outside the vocabulary [0, ", vocab, ")");
  }
  return host;
}

template <typename T>
absl::Status Upload(cudaStream_t stream, const std::vector<T>& host, T** dev) {
  const size_t bytes = std::max<size_t>(1, host.size()) * sizeof(T);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMallocAsync(reinterpret_cast<void**>(dev), bytes, stream));
  return UploadAsync(*dev, host.data(), host.size() * sizeof(T), stream);
}

}  // namespace

absl::Status EmbeddingFwd(const Context& ctx, const Tensor& table, const Tensor& ids, Tensor& out) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(table, "table", FloatType(table), {-1, -1}, Device::kCUDA));
  const int64_t vocab = table.dim(0), d = table.dim(1);
  Tensor dev_ids = ids;
  if (ids.device() == Device::kCPU) {
    TANDEM_ASSIGN_OR_RETURN(Tensor host, HostIds(ctx, ids, vocab));
    TANDEM_ASSIGN_OR_RETURN(dev_ids, CopyToDevice(ctx, host));
  }
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dev_ids, "ids", DType::kI32, {-1}, Device::kCUDA));
  TANDEM_RETURN_IF_ERROR(ExpectTensor(out, "out", FloatType(out), {ids.dim(0), d}, Device::kCUDA));
  const int64_t n = out.numel();
  if (n == 0) return absl::OkStatus();
  const int64_t blocks = std::min((n + kThreads - 1) / kThreads, kMaxBlocks);
  FwdKernel<<<static_cast<unsigned>(blocks), kThreads, 0, StreamOf(ctx)>>>(
      n, d, vocab, ToFloatPtr(table), dev_ids.data<int32_t>(), ToFloatPtr(out));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  // A host-made dev_ids is freed by its destructor: cudaFree waits for the kernel.
  return absl::OkStatus();
}

absl::Status EmbeddingBwd(const Context& ctx, const Tensor& ids, const Tensor& dout,
                          Tensor& dtable) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dtable, "dtable", DType::kF32, {-1, -1}, Device::kCUDA));
  const int64_t d = dtable.dim(1);
  TANDEM_ASSIGN_OR_RETURN(Tensor host, HostIds(ctx, ids, dtable.dim(0)));
  const int64_t t = host.dim(0);
  TANDEM_RETURN_IF_ERROR(ExpectTensor(dout, "dout", FloatType(dout), {t, d}, Device::kCUDA));
  TANDEM_CHECK_ARG(t <= 0x7fffffff, "ids: at most 2^31 - 1 tokens, got ", t);
  if (t == 0 || d == 0) return absl::OkStatus();
  const int32_t* id = host.data<int32_t>();
  std::vector<int32_t> token_of(t), run_start, run_id;
  std::iota(token_of.begin(), token_of.end(), 0);
  std::stable_sort(token_of.begin(), token_of.end(),
                   [&](int32_t a, int32_t b) { return id[a] < id[b]; });
  for (int64_t q = 0; q < t; ++q) {
    if (q == 0 || id[token_of[q]] != id[token_of[q - 1]]) {
      run_start.push_back(static_cast<int32_t>(q));
      run_id.push_back(id[token_of[q]]);
    }
  }
  run_start.push_back(static_cast<int32_t>(t));
  const cudaStream_t stream = StreamOf(ctx);
  int32_t *dev_start = nullptr, *dev_id = nullptr, *dev_token = nullptr;
  TANDEM_RETURN_IF_ERROR(Upload(stream, run_start, &dev_start));
  TANDEM_RETURN_IF_ERROR(Upload(stream, run_id, &dev_id));
  TANDEM_RETURN_IF_ERROR(Upload(stream, token_of, &dev_token));
  const dim3 grid(static_cast<unsigned>(run_id.size()),
                  static_cast<unsigned>((d + kThreads - 1) / kThreads));
  BwdKernel<<<grid, kThreads, 0, stream>>>(d, dev_start, dev_id, dev_token, ToFloatPtr(dout),
                                           dtable.data<float>());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  for (int32_t* p : {dev_start, dev_id, dev_token}) {
    TANDEM_CUDA_RETURN_IF_ERROR(cudaFreeAsync(p, stream));
  }
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
