// Tests for the safe arithmetic evaluator behind the countdown and arithmetic verifiers.
#include "rewards/expression.h"

#include <gtest/gtest.h>

#include <string>

namespace tandem::rewards {
namespace {

Rational Eval(const std::string& text) {
  auto e = EvaluateExpression(text);
  EXPECT_TRUE(e.ok()) << text << ": " << e.status();
  return e.ok() ? e->value : Rational{-999, 1};
}

TEST(Expression, PrecedenceAndAssociativity) {
  EXPECT_EQ(Eval("1 + 2 * 3"), (Rational{7, 1}));
  EXPECT_EQ(Eval("(1 + 2) * 3"), (Rational{9, 1}));
  EXPECT_EQ(Eval("10 - 4 - 3"), (Rational{3, 1}));
  EXPECT_EQ(Eval("100 / 10 / 5"), (Rational{2, 1}));
  EXPECT_EQ(Eval("-3 + -(-4)"), (Rational{1, 1}));
  EXPECT_EQ(Eval("7 / 2"), (Rational{7, 2}));
  EXPECT_EQ(Eval("(7 / 2) * 4"), (Rational{14, 1}));
  EXPECT_EQ(Eval("6 \xc3\x97 7"), (Rational{42, 1}));  // ×
  EXPECT_EQ(Eval("6 x 7"), (Rational{42, 1}));
  EXPECT_EQ(Eval("9 \xc3\xb7 3"), (Rational{3, 1}));  // ÷
  EXPECT_EQ(Eval("  ( ( 5 ) )  "), (Rational{5, 1}));
}

TEST(Expression, RecordsLiteralsInOrder) {
  auto e = EvaluateExpression("(25 - 5) * 3 + 4");
  ASSERT_TRUE(e.ok());
  EXPECT_EQ(e->numbers, (std::vector<int64_t>{25, 5, 3, 4}));
}

TEST(Expression, Errors) {
  for (const char* bad : {"", "1 +", "(1 + 2", "1 + 2)", "2 ** 3", "1 / 0", "1 / (2 - 2)", "abc",
                          "1 2", "3.5 + 1", "__import__('os')", "9223372036854775808",
                          "9223372036854775807 + 1", "4611686018427387904 * 2"}) {
    EXPECT_FALSE(EvaluateExpression(bad).ok()) << bad;
  }
}

TEST(Expression, LimitsBoundWork) {
  EXPECT_FALSE(EvaluateExpression(std::string(kMaxExpressionLength + 1, '1')).ok());
  const std::string deep = std::string(100, '(') + "1" + std::string(100, ')');
  auto e = EvaluateExpression(deep);
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("nesting"), std::string::npos) << e.status();
  EXPECT_FALSE(EvaluateExpression(std::string(200, '-') + "1").ok());
  const std::string ok = std::string(60, '(') + "1" + std::string(60, ')');
  EXPECT_TRUE(EvaluateExpression(ok).ok());
}

}  // namespace
}  // namespace tandem::rewards
