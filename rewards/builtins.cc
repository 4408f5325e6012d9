// Built-in rewards: exact_match, math_answer, format and length_penalty, and the by-name registry
// (the synthetic tasks' verifiers are in synthetic.cc).
#include "rewards/builtins.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "rewards/math_answer.h"
#include "rewards/reward_config.h"
#include "rewards/synthetic.h"

namespace tandem::rewards {
namespace {

// The text after the last </think>, or all of it when there is none.
absl::string_view AfterThink(absl::string_view text) {
  size_t end = text.rfind("</think>");
  return end == absl::string_view::npos ? text : text.substr(end + 8);
}

std::string CollapseWhitespace(absl::string_view text) {
  std::string out;
  for (char c : absl::StripAsciiWhitespace(text)) {
    if (absl::ascii_isspace(static_cast<unsigned char>(c))) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

class ExactMatch : public RewardFunction {
 public:
  struct Options {
    bool normalize_whitespace = true;
    bool ignore_case = false;
    bool strip_think = true;
  };
  explicit ExactMatch(Options o) : o_(o) {}
  std::string name() const override { return "exact_match"; }

  RewardOutcome Score(const RewardInput& in) override {
    std::string a(o_.strip_think ? AfterThink(in.response) : in.response);
    std::string b = in.ground_truth;
    if (o_.normalize_whitespace) a = CollapseWhitespace(a), b = CollapseWhitespace(b);
    if (o_.ignore_case) absl::AsciiStrToLower(&a), absl::AsciiStrToLower(&b);
    RewardResult r;
    r.score = a == b ? 1.0 : 0.0;
    return r;
  }

 private:
  Options o_;
};

class MathAnswer : public RewardFunction {
 public:
  struct Options {
    double tolerance = 1e-6;
    double format_score = 0.0;
    bool boxed_only = false;
  };
  explicit MathAnswer(Options o) : o_(o) {}
  std::string name() const override { return "math_answer"; }

  RewardOutcome Score(const RewardInput& in) override {
    std::optional<std::string> answer = ExtractMathAnswer(in.response, o_.boxed_only);
    const bool correct = answer && AnswersEquivalent(*answer, in.ground_truth, o_.tolerance);
    RewardResult r;
    r.score = correct ? 1.0 : (answer ? o_.format_score : 0.0);
    r.metrics = {{"answer_found", answer ? 1.0 : 0.0}, {"correct", correct ? 1.0 : 0.0}};
    return r;
  }

 private:
  Options o_;
};

// <think>reasoning</think> answer. Prompts that end with the open tag (R1-style templates put it
// there) count as having opened the think block for the response.
class Format : public RewardFunction {
 public:
  struct Options {
    std::string open = "<think>";
    std::string close = "</think>";
    std::string answer_tag;  // e.g. "answer": require <answer>...</answer> after the think block
  };
  explicit Format(Options o) : o_(std::move(o)) {}
  std::string name() const override { return "format"; }

  RewardOutcome Score(const RewardInput& in) override {
    std::string text(absl::StripLeadingAsciiWhitespace(in.response));
    if (absl::EndsWith(absl::StripTrailingAsciiWhitespace(in.prompt), o_.open) &&
        !absl::StartsWith(text, o_.open)) {
      text = o_.open + text;
    }
    const bool think = absl::StartsWith(text, o_.open) && Count(text, o_.open) == 1 &&
                       Count(text, o_.close) == 1 && text.find(o_.close) >= o_.open.size();
    bool answer = false;
    if (think) {
      absl::string_view rest = absl::StripAsciiWhitespace(AfterClose(text));
      if (o_.answer_tag.empty()) {
        answer = !rest.empty();
      } else {
        const std::string open = "<" + o_.answer_tag + ">", close = "</" + o_.answer_tag + ">";
        answer = absl::StartsWith(rest, open) && absl::EndsWith(rest, close) &&
                 Count(rest, open) == 1 && Count(rest, close) == 1;
      }
    }
    RewardResult r;
    r.score = think && answer ? 1.0 : 0.0;
    r.metrics = {{"has_think", think ? 1.0 : 0.0}, {"has_answer", answer ? 1.0 : 0.0}};
    return r;
  }

 private:
  static size_t Count(absl::string_view text, absl::string_view needle) {
    size_t n = 0;
    for (size_t p = text.find(needle); p != absl::string_view::npos;
         p = text.find(needle, p + needle.size())) {
      ++n;
    }
    return n;
  }
  absl::string_view AfterClose(absl::string_view text) const {
    return text.substr(text.find(o_.close) + o_.close.size());
  }

  Options o_;
};

// DAPO-style soft overlong penalty: free up to max_length - buffer, linear to -1 at max_length.
class LengthPenalty : public RewardFunction {
 public:
  struct Options {
    int64_t max_length = 0;
    int64_t buffer = 0;
    std::string unit = "bytes";  // "bytes", "chars" (UTF-8 code points) or "words"
  };
  explicit LengthPenalty(Options o) : o_(std::move(o)) {}
  std::string name() const override { return "length_penalty"; }

  RewardOutcome Score(const RewardInput& in) override {
    const int64_t length = Length(in.response);
    const int64_t free_length = o_.max_length - o_.buffer;
    double score = 0.0;
    if (length > o_.max_length) {
      score = -1.0;
    } else if (length > free_length) {
      score = static_cast<double>(free_length - length) / static_cast<double>(o_.buffer);
    }
    RewardResult r;
    r.score = score;
    r.metrics["length"] = static_cast<double>(length);
    return r;
  }

 private:
  int64_t Length(absl::string_view text) const {
    if (o_.unit == "chars") {
      return std::count_if(text.begin(), text.end(),
                           [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; });
    }
    if (o_.unit == "words") {
      int64_t words = 0;
      bool in_word = false;
      for (char c : text) {
        const bool space = absl::ascii_isspace(static_cast<unsigned char>(c));
        words += !space && !in_word;
        in_word = !space;
      }
      return words;
    }
    return static_cast<int64_t>(text.size());
  }

  Options o_;
};

using Factory = std::function<absl::StatusOr<std::unique_ptr<RewardFunction>>(absl::string_view)>;

template <typename T>
absl::StatusOr<std::unique_ptr<RewardFunction>> Finish(const RewardConfig& c, T reward) {
  if (!c.status().ok()) return c.status();
  return std::unique_ptr<RewardFunction>(std::make_unique<T>(std::move(reward)));
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeExactMatch(absl::string_view json) {
  auto c = RewardConfig::Parse("exact_match", json,
                               {"normalize_whitespace", "ignore_case", "strip_think"});
  if (!c.ok()) return c.status();
  ExactMatch::Options o;
  o.normalize_whitespace = c->Get("normalize_whitespace", o.normalize_whitespace);
  o.ignore_case = c->Get("ignore_case", o.ignore_case);
  o.strip_think = c->Get("strip_think", o.strip_think);
  return Finish(*c, ExactMatch(o));
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeMathAnswer(absl::string_view json) {
  auto c = RewardConfig::Parse("math_answer", json, {"tolerance", "format_score", "boxed_only"});
  if (!c.ok()) return c.status();
  MathAnswer::Options o;
  o.tolerance = c->Get("tolerance", o.tolerance);
  o.format_score = c->Get("format_score", o.format_score);
  o.boxed_only = c->Get("boxed_only", o.boxed_only);
  if (!(o.tolerance >= 0)) {
    return absl::InvalidArgumentError("math_answer config: option 'tolerance' must be >= 0");
  }
  return Finish(*c, MathAnswer(o));
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeFormat(absl::string_view json) {
  auto c = RewardConfig::Parse("format", json, {"open", "close", "answer_tag"});
  if (!c.ok()) return c.status();
  Format::Options o;
  o.open = c->Get("open", o.open);
  o.close = c->Get("close", o.close);
  o.answer_tag = c->Get("answer_tag", o.answer_tag);
  if (o.open.empty() || o.close.empty()) {
    return absl::InvalidArgumentError(
        "format config: options 'open' and 'close' must be non-empty");
  }
  return Finish(*c, Format(o));
}

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeLengthPenalty(absl::string_view json) {
  auto c = RewardConfig::Parse("length_penalty", json, {"max_length", "buffer", "unit"});
  if (!c.ok()) return c.status();
  LengthPenalty::Options o;
  o.max_length = c->Get<int64_t>("max_length", 0);
  o.buffer = c->Get<int64_t>("buffer", o.max_length / 4);
  o.unit = c->Get("unit", o.unit);
  if (!c->status().ok()) return c->status();
  if (o.max_length <= 0) {
    return absl::InvalidArgumentError(
        "length_penalty config: option 'max_length' is required and must be > 0");
  }
  if (o.buffer <= 0 || o.buffer > o.max_length) {
    return absl::InvalidArgumentError(
        "length_penalty config: option 'buffer' must be in [1, max_length]");
  }
  if (o.unit != "bytes" && o.unit != "chars" && o.unit != "words") {
    return absl::InvalidArgumentError(absl::StrCat(
        "length_penalty config: option 'unit' must be bytes, chars or words, got '", o.unit, "'"));
  }
  return Finish(*c, LengthPenalty(o));
}

const std::map<std::string, Factory>& Registry() {
  static const auto* registry = new std::map<std::string, Factory>{
      {"exact_match", MakeExactMatch},
      {"math_answer", MakeMathAnswer},
      {"format", MakeFormat},
      {"length_penalty", MakeLengthPenalty},
      {"arithmetic", MakeArithmeticReward},
      {"countdown", MakeCountdownReward},
  };
  return *registry;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RewardFunction>> MakeBuiltinReward(absl::string_view name,
                                                                  absl::string_view config_json) {
  auto it = Registry().find(std::string(name));
  if (it == Registry().end()) {
    return absl::NotFoundError(absl::StrCat("reward '", name, "': no such built-in (known: ",
                                            absl::StrJoin(BuiltinRewardNames(), ", "), ")"));
  }
  return it->second(config_json);
}

std::vector<std::string> BuiltinRewardNames() {
  std::vector<std::string> names;
  for (const auto& [name, factory] : Registry()) names.push_back(name);
  return names;
}

}  // namespace tandem::rewards
