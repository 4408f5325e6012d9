// Internal to kernels/sample: the checks both devices' SampleRows make, so that a bad draw gets the
// same error on either.
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/sample/sample.h"

namespace tandem::kernels::internal {

// top_k >= 0 and top_p in (0, 1].
absl::Status CheckSamplingParams(const SamplingParams& params);

// draws[index]: row in [0, rows) and CheckSamplingParams, the field named as draws[index].<field>.
absl::Status CheckRowDraw(const RowDraw& draw, int64_t rows, size_t index);

}  // namespace tandem::kernels::internal
