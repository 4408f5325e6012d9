// Token sampling with a counter-based RNG (contract rule 5). The random number for a draw is
// Philox4x32-10 keyed by the request seed, with the counter (position, sample index): a request's
// tokens never depend on what else is batched with it, on the thread count or on the step at which
// the engine happened to run it.
//
// The sampler reads log_softmax(logits / temperature) — the distribution whose log-prob is reported
// for the token and recomputed by the trainer. top-k and top-p only restrict which tokens may be
// drawn; they do not change the reported log-prob.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"

namespace tandem::kernels {

// Philox4x32 with 10 rounds (Salmon et al., SC'11). counter and key as 32-bit words.
std::array<uint32_t, 4> Philox4x32(std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key);

// Identifies one draw: the request's seed, which of its n samples, and the token position.
struct SampleKey {
  uint64_t seed = 0;
  uint64_t sample_index = 0;
  uint64_t position = 0;
};

// A uniform double in [0, 1) with 53 random bits, a pure function of the key.
double UniformFromKey(const SampleKey& key);

// Tokens per partial sum of the draw's CDF (SampleToken).
inline constexpr int64_t kSampleChunk = 256;

struct SamplingParams {
  bool greedy = false;  // argmax (ties to the lower id); no random number is drawn
  int64_t top_k = 0;    // keep the k most likely tokens; 0 = all
  float top_p = 1.0f;   // keep the smallest most-likely prefix whose probability reaches top_p
};

// Draws a token from one row of log-probs [V] (already log_softmax(logits / temperature)).
// Which tokens are kept: candidates ordered by log-prob descending (ties to the lower id), the
// first top_k of them, cut after the smallest prefix whose probabilities (summed in double, in
// that order) reach top_p; without top-k and top-p, every token. The draw inverts the CDF of the
// kept tokens' probabilities e^logprob (double) in token-id order at u·total, u = UniformFromKey
// (key). The sums run per chunk of kSampleChunk consecutive token ids (ids [256c, 256c + 256)),
// each chunk's kept tokens summed from zero and the chunk sums added in order; a token's
// cumulative probability is the earlier chunks' total plus its chunk's prefix through it. The GPU
// sampler, which sums the chunks in parallel, has the same definition. Tokens with probability 0
// (−inf, NaN, underflow) are never drawn.
// Cost: one pass over the row, plus a sort of the kept prefix's candidates under top-k / top-p.
// Errors: vocab < 1, top_k < 0, top_p outside (0, 1], a row with no finite log-prob.
absl::StatusOr<int32_t> SampleToken(const float* logprobs, int64_t vocab,
                                    const SamplingParams& params, const SampleKey& key);

// One draw from a row of a log-prob matrix (SampleRows).
struct RowDraw {
  int64_t row = 0;
  SamplingParams params;
  SampleKey key;
};

struct DrawnToken {
  int32_t token = 0;
  float logprob = 0.0f;  // the row's log-prob of the token (untouched by top-k / top-p)
};

// Every draw of `draws` from logprobs [m, V] f32 on ctx's device, each by SampleToken's
// definition; result i is draws[i]'s token or why it has none (a row out of range, bad params, a
// row with no finite entry). On the CPU the draws run on ctx's thread pool. On the GPU a draw
// without top-k and top-p runs there (one block per draw; only the tokens come back), one with
// them on the host from a copy of the rows. The GPU's e^x may differ from the host's in the last
// bit, so the two devices agree on a row's token except where u·total falls within rounding of a
// boundary between two tokens' cumulative probabilities.
std::vector<absl::StatusOr<DrawnToken>> SampleRows(const Context& ctx, const Tensor& logprobs,
                                                   const std::vector<RowDraw>& draws);

}  // namespace tandem::kernels
