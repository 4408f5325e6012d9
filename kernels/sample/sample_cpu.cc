// Philox4x32-10 and inverse-CDF sampling from a row of log-probs.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/dispatch.h"
#include "kernels/core/status_macros.h"
#include "kernels/sample/sample.h"
#ifdef TANDEM_HAVE_CUDA
#include "kernels/core/cuda_util.h"
#include "kernels/sample/sample_cuda.h"
#endif

namespace tandem::kernels {
namespace {
constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1
constexpr int kPhiloxRounds = 10;

void MulHiLo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace

std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> ctr, std::array<uint32_t, 2> key) {
  for (int round = 0; round < kPhiloxRounds; ++round) {
    if (round > 0) {
      key[0] += kPhiloxW0;
      key[1] += kPhiloxW1;
    }
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo(kPhiloxM0, ctr[0], hi0, lo0);
    MulHiLo(kPhiloxM1, ctr[2], hi1, lo1);
    ctr = {hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0};
  }
  return ctr;
}

double UniformFromKey(const SampleKey& key) {
  std::array<uint32_t, 4> out = Philox4x32(
      {static_cast<uint32_t>(key.position), static_cast<uint32_t>(key.position >> 32),
       static_cast<uint32_t>(key.sample_index), static_cast<uint32_t>(key.sample_index >> 32)},
      {static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32)});
  uint64_t bits = (static_cast<uint64_t>(out[0]) << 32 | out[1]) >> 11;  // 53 bits
  return static_cast<double>(bits) * 0x1.0p-53;
}

namespace {

// top_k >= 0 and top_p in (0, 1].
absl::Status CheckSamplingParams(const SamplingParams& params) {
  if (params.top_k < 0) {
    return absl::InvalidArgumentError(absl::StrCat("top_k: expected >= 0, got ", params.top_k));
  }
  if (!(params.top_p > 0.0f && params.top_p <= 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_p: expected in (0, 1], got ", params.top_p));
  }
  return absl::OkStatus();
}

// draws[index]: row in [0, rows) and CheckSamplingParams, the field named as draws[index].<field>.
absl::Status CheckRowDraw(const RowDraw& draw, int64_t rows, size_t index) {
  if (draw.row < 0 || draw.row >= rows) {
    return absl::InvalidArgumentError(absl::StrCat("draws[", index, "].row: ", draw.row,
                                                   " is outside the ", rows, " rows of logprobs"));
  }
  const absl::Status params = CheckSamplingParams(draw.params);
  if (!params.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("draws[", index, "].", params.message()));
  }
  return absl::OkStatus();
}

// Candidate order: log-prob descending, ties to the lower id, NaN after everything (a strict weak
// order even with several NaNs, which std::sort and std::nth_element need).
struct MoreLikely {
  const float* logprobs;
  bool operator()(int32_t a, int32_t b) const {
    const float la = logprobs[a], lb = logprobs[b];
    const bool na = std::isnan(la), nb = std::isnan(lb);
    if (na || nb) return na == nb ? a < b : nb;
    if (la != lb) return la > lb;
    return a < b;
  }
};

// p = e^logprob in double; 0 for what cannot be drawn (−inf, NaN, +inf, underflow).
double Probability(float logprob) {
  const double p = std::exp(static_cast<double>(logprob));
  return p > 0.0 && p < HUGE_VAL ? p : 0.0;
}

// The most likely candidates, in candidate order, that top-k and top-p keep: the first `keep` by
// MoreLikely, cut after the smallest prefix whose probabilities (summed in double, in this order)
// reach top_p. Sorts only the best m, growing m until the prefix is decided, so a peaked
// distribution costs about one pass over the vocabulary instead of a sort of it.
std::vector<int32_t> KeptCandidates(const float* logprobs, int64_t vocab, int64_t keep,
                                    float top_p) {
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  const MoreLikely more_likely{logprobs};
  for (int64_t m = std::min<int64_t>(keep, 256);; m = std::min(keep, 8 * m)) {
    if (16 * m <= vocab) {  // a heap of m beats a selection pass only while m is small
      std::partial_sort(order.begin(), order.begin() + m, order.end(), more_likely);
    } else {
      if (m < vocab) std::nth_element(order.begin(), order.begin() + m, order.end(), more_likely);
      std::sort(order.begin(), order.begin() + m, more_likely);
    }
    double total = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      const double p = Probability(logprobs[order[i]]);
      // Past the last drawable candidate (in this order, every later one is 0 as well), or the
      // prefix reached top_p with candidate i.
      if (p == 0.0 || (top_p < 1.0f && (total += p) >= top_p)) {
        order.resize(p == 0.0 ? i : i + 1);
        return order;
      }
    }
    if (m == keep) {
      order.resize(m);
      return order;
    }
  }
}

}  // namespace

absl::StatusOr<int32_t> SampleToken(const float* logprobs, int64_t vocab,
                                    const SamplingParams& params, const SampleKey& key) {
  if (vocab < 1) return absl::InvalidArgumentError("vocab: expected at least 1 entry");
  TANDEM_RETURN_IF_ERROR(CheckSamplingParams(params));
  const auto no_entry = [] {
    return absl::InvalidArgumentError("logprobs: no finite entry in the row");
  };
  if (params.greedy) {
    const MoreLikely more_likely{logprobs};
    int32_t best = 0;
    for (int32_t v = 1; v < vocab; ++v) {
      if (more_likely(v, best)) best = v;
    }
    if (!std::isfinite(logprobs[best])) return no_entry();
    return best;
  }
  // The kept tokens in id order with their probabilities: all of them without truncation (no
  // sort), else the candidates top-k and top-p keep.
  const int64_t keep = params.top_k > 0 ? std::min(params.top_k, vocab) : vocab;
  const bool all = keep == vocab && params.top_p == 1.0f;
  std::vector<int32_t> ids;
  if (!all) {
    ids = KeptCandidates(logprobs, vocab, keep, params.top_p);
    std::sort(ids.begin(), ids.end());
  }
  const int64_t n = all ? vocab : static_cast<int64_t>(ids.size());
  const auto id_of = [&](int64_t i) { return all ? i : static_cast<int64_t>(ids[i]); };
  // The kept tokens' probabilities, and their sums per chunk of kSampleChunk token ids.
  struct Chunk {
    int64_t begin, end;  // kept tokens [begin, end) (indices into prob)
    double sum;
  };
  std::vector<double> prob(n);
  std::vector<Chunk> chunks;
  for (int64_t i = 0; i < n; ++i) {
    prob[i] = Probability(logprobs[id_of(i)]);
    if (chunks.empty() || id_of(i) / kSampleChunk != id_of(chunks.back().begin) / kSampleChunk) {
      chunks.push_back({i, i, 0.0});
    }
    chunks.back().end = i + 1;
    chunks.back().sum += prob[i];
  }
  double total = 0.0;
  for (const Chunk& c : chunks) total += c.sum;
  if (!(total > 0.0)) return no_entry();
  // Inverse CDF at u·total: the first kept token whose cumulative probability (the earlier chunks'
  // running total plus its chunk's prefix) exceeds it.
  const double target = UniformFromKey(key) * total;
  double before = 0.0;
  for (const Chunk& c : chunks) {
    if (target < before + c.sum) {  // rounding is monotone: the token is in this chunk
      double part = 0.0;
      for (int64_t i = c.begin; i < c.end; ++i) {
        part += prob[i];
        if (prob[i] > 0.0 && target < before + part) return static_cast<int32_t>(id_of(i));
      }
    }
    before += c.sum;
  }
  // u·total rounded up to the total: the last drawable token.
  for (int64_t i = n - 1; i >= 0; --i) {
    if (prob[i] > 0.0) return static_cast<int32_t>(id_of(i));
  }
  return no_entry();  // unreachable: total > 0
}

namespace {

// SampleToken for draws[i], i in `which`, from the host matrix logprobs [rows, vocab] on ctx's
// thread pool (any device's context: only its pool is used); results into out[i].
void DrawOnHost(const Context& ctx, const Tensor& logprobs, const std::vector<RowDraw>& draws,
                const std::vector<size_t>& which, std::vector<absl::StatusOr<DrawnToken>>& out) {
  const int64_t rows = logprobs.dim(0), vocab = logprobs.dim(1);
  ctx.ParallelFor(static_cast<int64_t>(which.size()), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const size_t i = which[k];
      const RowDraw& d = draws[i];
      const absl::Status checked = CheckRowDraw(d, rows, i);
      if (!checked.ok()) {
        out[i] = checked;
        continue;
      }
      const float* row = logprobs.data<float>() + d.row * vocab;
      const absl::StatusOr<int32_t> token = SampleToken(row, vocab, d.params, d.key);
      if (token.ok()) {
        out[i] = DrawnToken{*token, row[*token]};
      } else {
        out[i] = token.status();
      }
    }
  });
}

#ifdef TANDEM_HAVE_CUDA
// Whether SampleToken's result for these params needs only the row, no sorted candidates.
bool DrawsOnDevice(const SamplingParams& p, int64_t vocab) {
  return p.greedy || ((p.top_k == 0 || p.top_k >= vocab) && p.top_p == 1.0f);
}

// SampleRows for logprobs on the GPU: the draws DrawsOnDevice takes run there, the others on the
// host from a copy of the rows.
void DrawOnGpu(const Context& ctx, const Tensor& logprobs, const std::vector<RowDraw>& draws,
               std::vector<absl::StatusOr<DrawnToken>>& out) {
  const int64_t rows = logprobs.dim(0), vocab = logprobs.dim(1);
  std::vector<RowDraw> on_device;
  std::vector<size_t> device_index, host_index;
  for (size_t i = 0; i < draws.size(); ++i) {
    const absl::Status checked = CheckRowDraw(draws[i], rows, i);
    if (!checked.ok()) {
      out[i] = checked;
    } else if (DrawsOnDevice(draws[i].params, vocab)) {
      on_device.push_back(draws[i]);
      device_index.push_back(i);
    } else {
      host_index.push_back(i);
    }
  }
  if (!on_device.empty()) {
    std::vector<int32_t> tokens;
    std::vector<float> token_logprobs;
    const absl::Status drawn =
        cuda::SampleRowsOnDevice(ctx, logprobs, on_device, tokens, token_logprobs);
    for (size_t k = 0; k < device_index.size(); ++k) {
      if (!drawn.ok()) {
        out[device_index[k]] = drawn;
      } else if (tokens[k] < 0) {
        out[device_index[k]] = absl::InvalidArgumentError("logprobs: no finite entry in the row");
      } else {
        out[device_index[k]] = DrawnToken{tokens[k], token_logprobs[k]};
      }
    }
  }
  if (!host_index.empty()) {
    absl::StatusOr<Tensor> host = cuda::CopyToHost(ctx, logprobs);
    if (host.ok()) {
      DrawOnHost(ctx, *host, draws, host_index, out);
    } else {
      for (size_t i : host_index) out[i] = host.status();
    }
  }
}
#endif

}  // namespace

std::vector<absl::StatusOr<DrawnToken>> SampleRows(const Context& ctx, const Tensor& logprobs,
                                                   const std::vector<RowDraw>& draws) {
  const absl::Status shape =
      ExpectTensor(logprobs, "logprobs", DType::kF32, {-1, -1}, ctx.device());
  std::vector<absl::StatusOr<DrawnToken>> out(
      draws.size(), shape.ok() ? absl::InternalError("SampleRows: not drawn") : shape);
  if (!shape.ok()) return out;
  if (ctx.device() == Device::kCUDA) {
#ifdef TANDEM_HAVE_CUDA
    DrawOnGpu(ctx, logprobs, draws, out);
#else
    out.assign(draws.size(), internal::BuiltWithoutCuda("SampleRows"));
#endif
    return out;
  }
  std::vector<size_t> all(draws.size());
  std::iota(all.begin(), all.end(), size_t{0});
  DrawOnHost(ctx, logprobs, draws, all, out);
  return out;
}

}  // namespace tandem::kernels
