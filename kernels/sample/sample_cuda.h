// The sampler's counter-based random numbers on the GPU: Philox4x32-10 with the CPU's counter and
// key layout (sample.h), so a draw keyed by (seed, sample index, position) is the same on both.
// Device code uses philox.cuh directly; this entry point evaluates a batch of keys (and is what
// the gpu test compares with the CPU's Philox4x32 / UniformFromKey).
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "kernels/core/context.h"
#include "kernels/core/tensor.h"
#include "kernels/sample/sample.h"

namespace tandem::kernels::cuda {

// keys [N, 3] i64 on the GPU: (seed, sample_index, position) as the bits of uint64 values.
// words [N, 4] i32: the Philox output words (bits of uint32); bits [N] i64: UniformFromKey's 53
// random bits (the uniform is bits · 2^-53). Either output may be an undefined Tensor.
absl::Status PhiloxUniformBits(const Context& ctx, const Tensor& keys, Tensor& words, Tensor& bits);

// The GPU half of kernels::SampleRows (sample_rows.cu), for draws that are greedy or have neither
// top-k nor top-p (params otherwise ignored): logprobs [m, V] f32 on the GPU; tokens[i] is
// draws[i]'s token (−1: the row has no drawable entry) and token_logprobs[i] the row's log-prob
// of it, both on the host when this returns.
absl::Status SampleRowsOnDevice(const Context& ctx, const Tensor& logprobs,
                                const std::vector<RowDraw>& draws, std::vector<int32_t>& tokens,
                                std::vector<float>& token_logprobs);

}  // namespace tandem::kernels::cuda
