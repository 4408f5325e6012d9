// Tests for the built-in rewards and their registry (rewards/builtins.h, rewards/synthetic.h).
#include "rewards/builtins.h"

#include <gtest/gtest.h>

#include "rewards/synthetic.h"

namespace tandem::rewards {
namespace {

std::unique_ptr<RewardFunction> Make(const std::string& name, const std::string& config = "") {
  auto r = MakeBuiltinReward(name, config);
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *std::move(r) : nullptr;
}

RewardInput In(std::string response, std::string ground_truth, std::string prompt = "",
               std::string extra = "") {
  RewardInput in;
  in.response = std::move(response);
  in.ground_truth = std::move(ground_truth);
  in.prompt = std::move(prompt);
  in.extra_json = std::move(extra);
  return in;
}

double ScoreOf(RewardFunction& r, const RewardInput& in) {
  RewardOutcome o = r.Score(in);
  EXPECT_TRUE(o.ok()) << o.status();
  return o.ok() ? o->score : -999;
}

TEST(Registry, NamesAndErrors) {
  EXPECT_EQ(BuiltinRewardNames(),
            (std::vector<std::string>{"arithmetic", "countdown", "exact_match", "format",
                                      "length_penalty", "math_answer"}));
  auto unknown = MakeBuiltinReward("bleu", "");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(unknown.status().message().find("math_answer"), std::string::npos);
  auto typo = MakeBuiltinReward("math_answer", R"({"tolerence": 0.1})");
  EXPECT_EQ(typo.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(typo.status().message().find("'tolerence'"), std::string::npos) << typo.status();
  auto type = MakeBuiltinReward("exact_match", R"({"ignore_case": "yes"})");
  EXPECT_NE(type.status().message().find("'ignore_case'"), std::string::npos) << type.status();
  EXPECT_FALSE(MakeBuiltinReward("format", "[1, 2]").ok());
  EXPECT_FALSE(MakeBuiltinReward("format", "{not json").ok());
  EXPECT_FALSE(MakeBuiltinReward("length_penalty", "{}").ok());  // max_length is required
  EXPECT_FALSE(MakeBuiltinReward("length_penalty", R"({"max_length": 10, "unit": "tokens"})").ok());
  EXPECT_FALSE(MakeBuiltinReward("math_answer", R"({"tolerance": -1})").ok());
}

TEST(ExactMatch, Options) {
  auto strict = Make("exact_match", R"({"normalize_whitespace": false, "strip_think": false})");
  EXPECT_EQ(ScoreOf(*strict, In("Paris", "Paris")), 1.0);
  EXPECT_EQ(ScoreOf(*strict, In(" Paris", "Paris")), 0.0);
  auto normal = Make("exact_match");
  EXPECT_EQ(ScoreOf(*normal, In("  New \n York ", "New York")), 1.0);
  EXPECT_EQ(ScoreOf(*normal, In("new york", "New York")), 0.0);
  EXPECT_EQ(ScoreOf(*normal, In("<think>hmm, Boston?</think> New York", "New York")), 1.0);
  auto caseless = Make("exact_match", R"({"ignore_case": true})");
  EXPECT_EQ(ScoreOf(*caseless, In("new YORK", "New York")), 1.0);
}

TEST(MathAnswer, ScoresAndMetrics) {
  auto math = Make("math_answer");
  EXPECT_EQ(ScoreOf(*math, In("so the answer is \\boxed{\\frac{1}{2}}", "0.5")), 1.0);
  EXPECT_EQ(ScoreOf(*math, In("#### 1,250", "1250")), 1.0);
  EXPECT_EQ(ScoreOf(*math, In("I think 17", "18")), 0.0);
  EXPECT_EQ(ScoreOf(*math, In("no idea", "18")), 0.0);
  RewardOutcome o = math->Score(In("\\boxed{3}", "4"));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->metrics.at("answer_found"), 1.0);
  EXPECT_EQ(o->metrics.at("correct"), 0.0);
  auto partial = Make("math_answer", R"({"format_score": 0.1, "boxed_only": true})");
  EXPECT_EQ(ScoreOf(*partial, In("\\boxed{3}", "4")), 0.1);
  EXPECT_EQ(ScoreOf(*partial, In("it is 4", "4")), 0.0);  // not boxed
  EXPECT_EQ(ScoreOf(*partial, In("\\boxed{4}", "4")), 1.0);
}

TEST(Format, ThinkThenAnswer) {
  auto format = Make("format");
  EXPECT_EQ(ScoreOf(*format, In("<think>reason</think>\nThe answer is 4.", "")), 1.0);
  EXPECT_EQ(ScoreOf(*format, In("  <think></think>4", "")), 1.0);
  EXPECT_EQ(ScoreOf(*format, In("<think>reason</think>   ", "")), 0.0);  // no answer
  EXPECT_EQ(ScoreOf(*format, In("The answer is 4.", "")), 0.0);          // no think
  EXPECT_EQ(ScoreOf(*format, In("4 <think>x</think> 4", "")), 0.0);      // not first
  EXPECT_EQ(ScoreOf(*format, In("<think>a</think><think>b</think>4", "")), 0.0);
  EXPECT_EQ(ScoreOf(*format, In("</think><think>4", "")), 0.0);
  EXPECT_EQ(ScoreOf(*format, In("<think>never closed 4", "")), 0.0);
  // The template opened the think block in the prompt (R1 style).
  EXPECT_EQ(ScoreOf(*format, In("reason</think> 4", "", "User: 2+2?\nAssistant: <think>\n")), 1.0);
  RewardOutcome o = format->Score(In("<think>r</think>", ""));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->metrics.at("has_think"), 1.0);
  EXPECT_EQ(o->metrics.at("has_answer"), 0.0);
  auto tagged = Make("format", R"({"answer_tag": "answer"})");
  EXPECT_EQ(ScoreOf(*tagged, In("<think>r</think> <answer>4</answer>", "")), 1.0);
  EXPECT_EQ(ScoreOf(*tagged, In("<think>r</think> 4", "")), 0.0);
  EXPECT_EQ(ScoreOf(*tagged, In("<think>r</think> <answer>4</answer> more", "")), 0.0);
}

TEST(Arithmetic, GroundTruthOrPrompt) {
  auto arith = Make("arithmetic");
  EXPECT_EQ(ScoreOf(*arith, In("168", "168")), 1.0);
  EXPECT_EQ(ScoreOf(*arith, In("The sum is \\boxed{168}.", " 168 ")), 1.0);
  EXPECT_EQ(ScoreOf(*arith, In("167", "168")), 0.0);
  EXPECT_EQ(ScoreOf(*arith, In("168.5", "168")), 0.0);
  EXPECT_EQ(ScoreOf(*arith, In("", "168")), 0.0);
  EXPECT_EQ(ScoreOf(*arith, In("168", "", "123+45=")), 1.0);  // evaluated from the prompt
  EXPECT_EQ(ScoreOf(*arith, In("-6", "", "Compute: (2 - 5) * 2 =")), 1.0);
  EXPECT_EQ(ScoreOf(*arith, In("169", "", "123+45=")), 0.0);
  EXPECT_FALSE(arith->Score(In("1", "", "no equals sign")).ok());
  EXPECT_FALSE(arith->Score(In("1", "one")).ok());
  auto reversed = Make("arithmetic", R"({"reverse_digits": true})");
  EXPECT_EQ(ScoreOf(*reversed, In("861", "168")), 1.0);
  EXPECT_EQ(ScoreOf(*reversed, In("168", "168")), 0.0);
}

TEST(Countdown, Verifier) {
  auto countdown = Make("countdown");
  const std::string task = R"({"target": 24, "numbers": [4, 6, 1, 1]})";
  EXPECT_EQ(ScoreOf(*countdown, In("<think>..</think><answer>4 * 6</answer>", task)), 1.0);
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>(6 - 1 - 1) * 4 + 8</answer>", task)), 0.1);  // 8
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>6 * 4 * 1 = 24</answer>", task)), 1.0);
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>6 * 4 + 0</answer>", task)), 0.1);  // 0 not given
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>6 * 4 * 1 * 1 * 1</answer>", task)), 0.1);  // 1 x3
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>6*4/(1-1)</answer>", task)), 0.0);  // division by 0
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>import os</answer>", task)), 0.0);
  EXPECT_EQ(ScoreOf(*countdown, In("I give up", task)), 0.0);
  EXPECT_EQ(ScoreOf(*countdown, In("work\n\\boxed{(1 + 1) * 6 * 2}", task)), 0.1);  // 2 not given
  EXPECT_EQ(ScoreOf(*countdown, In("reasoning...\n(1 + 1 + 4) * 6", task)), 0.1);   // 36
  EXPECT_EQ(ScoreOf(*countdown, In("reasoning...\n4 * (1 + 1) * 6 / 2", task)), 0.1);
  EXPECT_EQ(ScoreOf(*countdown, In("reasoning...\n(6 / (1 + 1)) * 4 * 2", task)), 0.1);
  EXPECT_EQ(ScoreOf(*countdown, In("reasoning...\n(6 + 1 + 1) * 4 / 4", task)), 0.1);
  EXPECT_EQ(ScoreOf(*countdown, In("reasoning...\n(6 - 1 - 1) * 6", task)), 0.1);
  EXPECT_EQ(ScoreOf(*countdown, In("reasoning...\n(6 / 1 / 1) * 4", task)), 1.0);
  // Fractions along the way are exact: 4 / (1 - 5/6) = 24.
  const std::string task2 = R"({"target": 24, "numbers": [4, 1, 5, 6]})";
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>4 / (1 - 5 / 6)</answer>", task2)), 1.0);
  auto strict = Make("countdown", R"({"use_all": true, "format_score": 0})");
  EXPECT_EQ(ScoreOf(*strict, In("<answer>4 * 6</answer>", task)), 0.0);
  EXPECT_EQ(ScoreOf(*strict, In("<answer>4 * 6 * 1 * 1</answer>", task)), 1.0);
  // Target and numbers may also come as ground_truth + extra_json.
  EXPECT_EQ(ScoreOf(*countdown, In("<answer>4 * 6</answer>", "24", "", R"({"numbers": [4, 6]})")),
            1.0);
  EXPECT_FALSE(countdown->Score(In("<answer>4*6</answer>", "24")).ok());  // numbers missing
  EXPECT_FALSE(countdown->Score(In("<answer>4*6</answer>", R"({"numbers": [4]})")).ok());
}

TEST(Countdown, ExtractsExpression) {
  EXPECT_EQ(ExtractCountdownExpression("a <answer> 1 + 2 </answer> b"), "1 + 2");
  EXPECT_EQ(ExtractCountdownExpression("<think>x = 3</think>\nline one\n(1+2) = 3\n"), "(1+2)");
  EXPECT_FALSE(ExtractCountdownExpression("<answer>   </answer>").has_value());
}

TEST(LengthPenalty, SoftOverlong) {
  auto bytes = Make("length_penalty", R"({"max_length": 100, "buffer": 20})");
  EXPECT_EQ(ScoreOf(*bytes, In(std::string(80, 'a'), "")), 0.0);
  EXPECT_DOUBLE_EQ(ScoreOf(*bytes, In(std::string(90, 'a'), "")), -0.5);
  EXPECT_DOUBLE_EQ(ScoreOf(*bytes, In(std::string(100, 'a'), "")), -1.0);
  EXPECT_EQ(ScoreOf(*bytes, In(std::string(101, 'a'), "")), -1.0);
  RewardOutcome o = bytes->Score(In("abc", ""));
  ASSERT_TRUE(o.ok());
  EXPECT_EQ(o->metrics.at("length"), 3.0);
  auto words = Make("length_penalty", R"({"max_length": 4, "buffer": 2, "unit": "words"})");
  EXPECT_DOUBLE_EQ(ScoreOf(*words, In(" one two\nthree ", "")), -0.5);
  auto chars = Make("length_penalty", R"({"max_length": 4, "buffer": 1, "unit": "chars"})");
  EXPECT_EQ(ScoreOf(*chars, In("\xc3\xa9\xc3\xa9\xc3\xa9", "")), 0.0);  // 3 chars, 6 bytes
}

TEST(RewardFunction, DefaultBatchKeepsOrderAndPerSampleErrors) {
  auto arith = Make("arithmetic");
  std::vector<RewardInput> batch = {In("1", "1"), In("x", "not a number"), In("2", "3")};
  std::vector<RewardOutcome> out = arith->ScoreBatch(batch);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0]->score, 1.0);
  EXPECT_FALSE(out[1].ok());
  EXPECT_EQ(out[2]->score, 0.0);
}

}  // namespace
}  // namespace tandem::rewards
