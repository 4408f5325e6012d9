// The arithmetic and countdown verifiers. Ground truth and task parameters come from the dataset
// row; any malformed row is a per-sample InvalidArgument, so a bad row never fails a batch.
#include "rewards/synthetic.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "rewards/expression.h"
#include "rewards/math_answer.h"
#include "rewards/reward_config.h"

namespace tandem::rewards {
namespace {

absl::StatusOr<int64_t> ParseTarget(absl::string_view text, absl::string_view what) {
  auto n = ParseNumber(text);
  if (!n || !n->is_integer() || n->num > INT64_MAX || n->num < INT64_MIN) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": expected an integer, got '", text, "'"));
  }
  return static_cast<int64_t>(n->num);
}

// The arithmetic expression that ends just before the prompt's last '='.
absl::StatusOr<int64_t> EvaluatePromptExpression(absl::string_view prompt) {
  const size_t eq = prompt.rfind('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError("arithmetic: empty ground_truth and no '=' in the prompt");
  }
  size_t begin = eq;
  while (begin > 0 && absl::string_view("0123456789+-*/() ").find(prompt[begin - 1]) !=
                          absl::string_view::npos) {
    --begin;
  }
  auto e = EvaluateExpression(prompt.substr(begin, eq - begin));
  if (!e.ok()) return e.status();
  if (e->value.den != 1) return absl::InvalidArgumentError("arithmetic: result is not an integer");
  return e->value.num;
}

class Arithmetic : public RewardFunction {
 public:
  explicit Arithmetic(bool reverse_digits) : reverse_digits_(reverse_digits) {}
  std::string name() const override { return "arithmetic"; }

  RewardOutcome Score(const RewardInput& in) override {
    absl::StatusOr<int64_t> expected =
        absl::StripAsciiWhitespace(in.ground_truth).empty()
            ? EvaluatePromptExpression(in.prompt)
            : ParseTarget(in.ground_truth, "arithmetic ground_truth");
    if (!expected.ok()) return expected.status();
    std::optional<std::string> answer = ExtractMathAnswer(in.response, /*boxed_only=*/false);
    if (answer && reverse_digits_) {
      const bool negative = !answer->empty() && (*answer)[0] == '-';
      std::reverse(answer->begin() + (negative ? 1 : 0), answer->end());
    }
    auto got = answer ? ParseNumber(*answer) : std::nullopt;
    const bool correct = got && got->is_integer() && got->num == *expected;
    RewardResult r;
    r.score = correct ? 1.0 : 0.0;
    r.metrics = {{"answer_found", answer ? 1.0 : 0.0}, {"correct", correct ? 1.0 : 0.0}};
    return r;
  }

 private:
  bool reverse_digits_;
};

struct CountdownTask {
  int64_t target = 0;
  std::vector<int64_t> numbers;
};

absl::StatusOr<std::vector<int64_t>> ReadNumbers(const nlohmann::json& j, absl::string_view where) {
  if (!j.contains("numbers") || !j["numbers"].is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat("countdown: ", where, " has no \"numbers\" array"));
  }
  std::vector<int64_t> numbers;
  for (const auto& v : j["numbers"]) {
    if (!v.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("countdown: ", where, " numbers: ", v.dump(), " is not an integer"));
    }
    numbers.push_back(v.get<int64_t>());
  }
  return numbers;
}

absl::StatusOr<CountdownTask> ParseCountdownTask(const RewardInput& in) {
  CountdownTask task;
  absl::string_view gt = absl::StripAsciiWhitespace(in.ground_truth);
  if (absl::StartsWith(gt, "{")) {
    auto j = nlohmann::json::parse(gt.begin(), gt.end(), nullptr, false);
    if (j.is_discarded() || !j.contains("target") || !j["target"].is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat("countdown: ground_truth must hold an integer \"target\", got '", gt, "'"));
    }
    task.target = j["target"].get<int64_t>();
    auto numbers = ReadNumbers(j, "ground_truth");
    if (!numbers.ok()) return numbers.status();
    task.numbers = *std::move(numbers);
    return task;
  }
  auto target = ParseTarget(gt, "countdown ground_truth");
  if (!target.ok()) return target.status();
  task.target = *target;
  auto extra = nlohmann::json::parse(in.extra_json.empty() ? "{}" : in.extra_json, nullptr, false);
  if (extra.is_discarded() || !extra.is_object()) {
    return absl::InvalidArgumentError("countdown: extra_json is not a JSON object");
  }
  auto numbers = ReadNumbers(extra, "extra_json");
  if (!numbers.ok()) return numbers.status();
  task.numbers = *std::move(numbers);
  return task;
}

// True when `used` is a sub-multiset of `given` (equal multisets when `all`).
bool UsesNumbers(std::vector<int64_t> used, std::vector<int64_t> given, bool all) {
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  if (all) return used == given;
  return std::includes(given.begin(), given.end(), used.begin(), used.end());
}

class Countdown : public RewardFunction {
 public:
  Countdown(double format_score, bool use_all) : format_score_(format_score), use_all_(use_all) {}
  std::string name() const override { return "countdown"; }

  RewardOutcome Score(const RewardInput& in) override {
    auto task = ParseCountdownTask(in);
    if (!task.ok()) return task.status();
    RewardResult r;
    r.metrics = {{"valid_expression", 0.0}, {"numbers_ok", 0.0}, {"correct", 0.0}};
    std::optional<std::string> expr = ExtractCountdownExpression(in.response);
    auto value = expr ? EvaluateExpression(*expr) : absl::NotFoundError("no expression");
    if (!value.ok()) return r;  // no parseable expression: score 0
    const bool numbers_ok = UsesNumbers(value->numbers, task->numbers, use_all_);
    const bool hits = value->value == Rational{task->target, 1};
    r.metrics["valid_expression"] = 1.0;
    r.metrics["numbers_ok"] = numbers_ok ? 1.0 : 0.0;
    r.metrics["correct"] = numbers_ok && hits ? 1.0 : 0.0;
    r.score = numbers_ok && hits ? 1.0 : format_score_;
    return r;
  }

 private:
  double format_score_;
  bool use_all_;
};

}  // namespace

std::optional<std::string> ExtractCountdownExpression(absl::string_view response) {
  std::string text;
  const size_t open = response.rfind("<answer>");
  const size_t close = response.rfind("</answer>");
  if (open != absl::string_view::npos && close != absl::string_view::npos && close > open) {
    text = std::string(response.substr(open + 8, close - open - 8));
  } else if (auto boxed = ExtractBoxed(response)) {
    text = *boxed;
  } else {
    const size_t think = response.rfind("</think>");
    absl::string_view rest =
        think == absl::string_view::npos ? response : response.substr(think + 8);
    rest = absl::StripTrailingAsciiWhitespace(rest);
    text = std::string(
        rest.substr(rest.rfind('\n') == absl::string_view::npos ? 0 : rest.rfind('\n') + 1));
  }
  // "(3+5)*2 = 16": the left side is the expression.
  text = text.substr(0, text.find('='));
  absl::StripAsciiWhitespace(&text);
  if (text.empty()) return std::nullopt;
  return text;
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeArithmeticReward(absl::string_view json) {
  auto c = RewardConfig::Parse("arithmetic", json, {"reverse_digits"});
  if (!c.ok()) return c.status();
  const bool reverse = c->Get("reverse_digits", false);
  if (!c->status().ok()) return c->status();
  return std::unique_ptr<RewardFunction>(std::make_unique<Arithmetic>(reverse));
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeCountdownReward(absl::string_view json) {
  auto c = RewardConfig::Parse("countdown", json, {"format_score", "use_all"});
  if (!c.ok()) return c.status();
  const double format_score = c->Get("format_score", 0.1);
  const bool use_all = c->Get("use_all", false);
  if (!c->status().ok()) return c->status();
  return std::unique_ptr<RewardFunction>(std::make_unique<Countdown>(format_score, use_all));
}

}  // namespace tandem::rewards
