// Addition-task generator: operands drawn from SplitMix64 keyed by (seed, sample index).
#include "trainer/addition_task.h"

#include <algorithm>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "nlohmann/json.hpp"
#include "trainer/splitmix.h"

namespace tandem::trainer {
namespace {

// A uniformly random number with exactly `digits` digits (leading digit non-zero unless 1 digit).
uint64_t RandomOperand(SplitMix64& rng, int digits) {
  uint64_t lo = 1;
  for (int i = 1; i < digits; ++i) lo *= 10;
  if (digits == 1) lo = 0;
  const uint64_t hi = digits == 1 ? 10 : lo * 10;
  return lo + rng.Below(hi - lo);
}

}  // namespace

absl::StatusOr<std::vector<PromptResponse>> GenerateAdditionTask(
    int64_t count, const AdditionTaskOptions& options) {
  TANDEM_CHECK_ARG(count >= 0, "count: expected >= 0, got ", count);
  TANDEM_CHECK_ARG(1 <= options.min_digits && options.min_digits <= options.max_digits &&
                       options.max_digits <= 18,
                   "digits: expected 1 <= min_digits <= max_digits <= 18, got [",
                   options.min_digits, ", ", options.max_digits, "]");
  std::vector<PromptResponse> rows;
  rows.reserve(count);
  const uint64_t span =
      static_cast<uint64_t>(options.max_digits) - static_cast<uint64_t>(options.min_digits) + 1;
  for (int64_t i = 0; i < count; ++i) {
    SplitMix64 rng(SplitMix64::Mix(options.seed, static_cast<uint64_t>(i)));
    const int da = options.min_digits + static_cast<int>(rng.Below(span));
    const int db = options.min_digits + static_cast<int>(rng.Below(span));
    const uint64_t a = RandomOperand(rng, da), b = RandomOperand(rng, db);
    std::string sum = std::to_string(a + b);
    if (options.reverse_answer) std::reverse(sum.begin(), sum.end());
    rows.push_back({absl::StrCat(a, "+", b, "="), std::move(sum)});
  }
  return rows;
}

absl::Status WriteJsonl(const std::string& path, const std::vector<PromptResponse>& rows) {
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot open for writing"));
  for (const PromptResponse& r : rows) {
    out << nlohmann::json{{"prompt", r.prompt}, {"response", r.response}}.dump() << '\n';
  }
  out.flush();
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace tandem::trainer
