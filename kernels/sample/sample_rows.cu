// SampleRows on the GPU. A draw without top-k and top-p runs as one block that evaluates
// SampleToken's definition (sample.h) on its row: greedy is the arg max in candidate order (a
// block reduction; the order is total, so the result is unique); otherwise each thread sums whole
// chunks of kSampleChunk token ids from zero in id order, and thread 0 adds the chunk sums in
// order, finds the chunk where u·total falls and walks it token by token — the CPU's operations
// on the same values. (Draws with top-k or top-p need the sorted candidates: kernels::SampleRows
// runs those on the host.)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/cuda_util.h"
#include "kernels/core/status_macros.h"
#include "kernels/sample/philox.cuh"
#include "kernels/sample/sample_cuda.h"

namespace tandem::kernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kChunk = kSampleChunk;
constexpr size_t kMaxChunkBytes = 48 * 1024;  // the chunk sums live in default-size shared memory

struct DeviceDraw {
  int64_t row;
  uint64_t seed, sample_index, position;
  int32_t greedy;
};

// SampleToken's candidate order: log-prob descending, ties to the lower id, NaN last.
__device__ __forceinline__ bool MoreLikely(float la, int64_t a, float lb, int64_t b) {
  const bool na = isnan(la), nb = isnan(lb);
  if (na || nb) return na == nb ? a < b : nb;
  if (la != lb) return la > lb;
  return a < b;
}

// e^logprob in double; 0 for what cannot be drawn (−inf, NaN, +inf, underflow).
__device__ __forceinline__ double Probability(float logprob) {
  const double p = exp(static_cast<double>(logprob));
  return p > 0.0 && !isinf(p) ? p : 0.0;
}

__device__ int64_t GreedyToken(const float* row, int64_t vocab, int64_t* best_of) {
  const int tid = threadIdx.x;
  int64_t best = tid < vocab ? tid : 0;
  for (int64_t v = tid + kThreads; v < vocab; v += kThreads) {
    if (MoreLikely(row[v], v, row[best], best)) best = v;
  }
  best_of[tid] = best;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (tid < stride && MoreLikely(row[best_of[tid + stride]], best_of[tid + stride],
                                   row[best_of[tid]], best_of[tid])) {
      best_of[tid] = best_of[tid + stride];
    }
    __syncthreads();
  }
  return isfinite(row[best_of[0]]) ? best_of[0] : -1;  // meaningful on thread 0
}

// Thread 0's walk once chunk_sum holds every chunk's sum: the token, or −1 for a row with nothing
// drawable.
__device__ int64_t InverseCdfToken(const float* row, int64_t vocab, const double* chunk_sum,
                                   int64_t num_chunks, double u) {
  double total = 0.0;
  for (int64_t c = 0; c < num_chunks; ++c) total = __dadd_rn(total, chunk_sum[c]);
  if (!(total > 0.0)) return -1;
  const double target = __dmul_rn(u, total);
  double before = 0.0;
  for (int64_t c = 0; c < num_chunks; ++c) {
    if (target < __dadd_rn(before, chunk_sum[c])) {  // rounding is monotone: it is in this chunk
      double part = 0.0;
      for (int64_t v = c * kChunk; v < min(vocab, (c + 1) * kChunk); ++v) {
        const double p = Probability(row[v]);
        part = __dadd_rn(part, p);
        if (p > 0.0 && target < __dadd_rn(before, part)) return v;
      }
    }
    before = __dadd_rn(before, chunk_sum[c]);
  }
  for (int64_t v = vocab - 1; v >= 0; --v) {  // u·total rounded up to the total: the last drawable
    if (Probability(row[v]) > 0.0) return v;
  }
  return -1;
}

// One block per draw; dynamic shared memory: one double per chunk.
__global__ void __launch_bounds__(kThreads)
    SampleRowsKernel(const float* logprobs, int64_t vocab, const DeviceDraw* draws, int32_t* tokens,
                     float* token_logprobs) {
  extern __shared__ double chunk_sum[];
  __shared__ int64_t best_of[kThreads];
  const DeviceDraw d = draws[blockIdx.x];
  const float* row = logprobs + d.row * vocab;
  const int64_t num_chunks = (vocab + kChunk - 1) / kChunk;
  int64_t token = -1;
  if (d.greedy != 0) {
    token = GreedyToken(row, vocab, best_of);
  } else {
    for (int64_t c = threadIdx.x; c < num_chunks; c += kThreads) {
      double sum = 0.0;
      for (int64_t v = c * kChunk; v < min(vocab, (c + 1) * kChunk); ++v) {
        sum = __dadd_rn(sum, Probability(row[v]));
      }
      chunk_sum[c] = sum;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      const double u = UniformFromWords(SampleWords(d.seed, d.sample_index, d.position));
      token = InverseCdfToken(row, vocab, chunk_sum, num_chunks, u);
    }
  }
  if (threadIdx.x == 0) {
    tokens[blockIdx.x] = static_cast<int32_t>(token);
    token_logprobs[blockIdx.x] = token >= 0 ? row[token] : 0.0f;
  }
}

}  // namespace

absl::Status SampleRowsOnDevice(const Context& ctx, const Tensor& logprobs,
                                const std::vector<RowDraw>& draws, std::vector<int32_t>& tokens,
                                std::vector<float>& token_logprobs) {
  TANDEM_RETURN_IF_ERROR(ExpectTensor(logprobs, "logprobs", DType::kF32, {-1, -1}, Device::kCUDA));
  const int64_t vocab = logprobs.dim(1), n = static_cast<int64_t>(draws.size());
  tokens.assign(n, -1);
  token_logprobs.assign(n, 0.0f);
  if (n == 0) return absl::OkStatus();
  const size_t smem = sizeof(double) * static_cast<size_t>((vocab + kChunk - 1) / kChunk);
  if (smem > kMaxChunkBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "logprobs: a vocabulary of ", vocab, " entries is more than the GPU sampler's ",
        kMaxChunkBytes / sizeof(double) * kChunk, " (its chunk sums must fit shared memory)"));
  }
  std::vector<DeviceDraw> args_host;
  for (const RowDraw& d : draws) {
    TANDEM_CHECK_ARG(d.row >= 0 && d.row < logprobs.dim(0), "draws: row ", d.row, " outside the ",
                     logprobs.dim(0), " rows of logprobs");
    args_host.push_back(
        {d.row, d.key.seed, d.key.sample_index, d.key.position, d.params.greedy ? 1 : 0});
  }
  const cudaStream_t stream = StreamOf(ctx);
  StreamBuffer args, out;
  TANDEM_RETURN_IF_ERROR(args.Upload(stream, args_host));
  TANDEM_RETURN_IF_ERROR(out.Allocate(stream, static_cast<size_t>(n) * 8));
  int32_t* dev_tokens = out.as<int32_t>();
  float* dev_logprobs = reinterpret_cast<float*>(dev_tokens + n);
  SampleRowsKernel<<<static_cast<unsigned>(n), kThreads, smem, stream>>>(
      static_cast<const float*>(logprobs.raw_data()), vocab, args.as<DeviceDraw>(), dev_tokens,
      dev_logprobs);
  TANDEM_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens.data(), dev_tokens, n * sizeof(int32_t),
                                              cudaMemcpyDeviceToHost, stream));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(token_logprobs.data(), dev_logprobs,
                                              n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  TANDEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

}  // namespace tandem::kernels::cuda
