// Tests for math answer extraction and numeric equivalence (rewards/math_answer.h).
#include "rewards/math_answer.h"

#include <gtest/gtest.h>

namespace tandem::rewards {
namespace {

TEST(ExtractBoxed, TakesTheLastBoxWithNestedBraces) {
  EXPECT_EQ(ExtractBoxed("first \\boxed{1} then \\boxed{\\frac{1}{2}}"), "\\frac{1}{2}");
  EXPECT_EQ(ExtractBoxed("\\boxed{ {a}+{b} }"), "{a}+{b}");
  EXPECT_EQ(ExtractBoxed("so \\fbox{7}."), "7");
  EXPECT_EQ(ExtractBoxed("answer: \\boxed 42$ done"), "42");
}

TEST(ExtractBoxed, NoneOrUnclosed) {
  EXPECT_FALSE(ExtractBoxed("no box here 5").has_value());
  EXPECT_FALSE(ExtractBoxed("\\boxed{12").has_value());
  EXPECT_FALSE(ExtractBoxed("\\boxedx").has_value());
}

TEST(ExtractLastNumber, Forms) {
  EXPECT_EQ(ExtractLastNumber("There are 3 apples and 12 pears."), "12");
  EXPECT_EQ(ExtractLastNumber("The total is $1,234,567."), "1,234,567");
  EXPECT_EQ(ExtractLastNumber("it drops to -4.5 degrees"), "-4.5");
  EXPECT_EQ(ExtractLastNumber("ratio 3/4"), "3/4");
  EXPECT_EQ(ExtractLastNumber("the list 3,4,5"), "5");
  EXPECT_EQ(ExtractLastNumber("so x = \\frac{3}{4}."), "\\frac{3}{4}");
  EXPECT_EQ(ExtractLastNumber("so x = -\\dfrac{10}{4} cm"), "-\\dfrac{10}{4}");
  EXPECT_FALSE(ExtractLastNumber("no digits at all").has_value());
}

TEST(ExtractMathAnswer, BoxedBeatsLastNumberAndThinkIsIgnored) {
  EXPECT_EQ(ExtractMathAnswer("\\boxed{7} because 3 + 4", false), "7");
  EXPECT_EQ(ExtractMathAnswer("<think>maybe 5</think> it is 6", false), "6");
  EXPECT_FALSE(ExtractMathAnswer("<think>maybe 5</think> no idea", false).has_value());
  EXPECT_FALSE(ExtractMathAnswer("it is 6", /*boxed_only=*/true).has_value());
  EXPECT_EQ(ExtractMathAnswer("it is \\boxed{6}", /*boxed_only=*/true), "6");
}

TEST(ParseNumber, ExactRationals) {
  struct Case {
    const char* text;
    long long num, den;
  };
  for (const Case& c : std::initializer_list<Case>{{"42", 42, 1},
                                                   {"+42", 42, 1},
                                                   {"-7", -7, 1},
                                                   {"1,234", 1234, 1},
                                                   {"0.5", 1, 2},
                                                   {".25", 1, 4},
                                                   {"2.50", 5, 2},
                                                   {"3/6", 1, 2},
                                                   {"-3/6", -1, 2},
                                                   {"\\frac{3}{4}", 3, 4},
                                                   {"\\dfrac{-6}{4}", -3, 2},
                                                   {"-\\frac{1}{2}", -1, 2},
                                                   {"\\frac12", 1, 2},
                                                   {"$18$", 18, 1},
                                                   {"\\(18\\)", 18, 1},
                                                   {"18.", 18, 1},
                                                   {"50\\%", 50, 1},
                                                   {"5\\text{ cm}", 5, 1},
                                                   {"1{,}000", 1000, 1},
                                                   {"1e3", 1000, 1},
                                                   {"2.5e-1", 1, 4},
                                                   {"\\boxed{12}", 12, 1},
                                                   {"\xe2\x88\x92"
                                                    "3",
                                                    -3, 1}}) {
    auto n = ParseNumber(c.text);
    ASSERT_TRUE(n.has_value()) << c.text;
    EXPECT_TRUE(n->exact) << c.text;
    EXPECT_EQ(static_cast<long long>(n->num), c.num) << c.text;
    EXPECT_EQ(static_cast<long long>(n->den), c.den) << c.text;
  }
}

TEST(ParseNumber, NotNumbers) {
  for (const char* text : {"", "x", "1,23", "3,4,5", "12,34,567", "1.2.3", "3/0", "\\frac{1}{0}",
                           "2x", "5cm", "1/2/3", "--1", "\\frac{a}{b}"}) {
    EXPECT_FALSE(ParseNumber(text).has_value()) << text;
  }
}

TEST(ParseNumber, HugeIntegersStayExact) {
  auto a = ParseNumber("123456789012345678901234567890");
  ASSERT_TRUE(a.has_value());
  EXPECT_TRUE(a->is_integer());
  auto b = ParseNumber("1" + std::string(60, '0'));  // too long for exact: value only
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE(b->exact);
  EXPECT_NEAR(static_cast<double>(b->value), 1e60, 1e45);
}

TEST(AnswersEquivalent, Numeric) {
  EXPECT_TRUE(AnswersEquivalent("0.5", "\\frac{1}{2}", 1e-6));
  EXPECT_TRUE(AnswersEquivalent("1/2", "0.5", 0));
  EXPECT_TRUE(AnswersEquivalent("+1,000", "1000", 0));
  EXPECT_TRUE(AnswersEquivalent("1000.0", "1000", 0));
  EXPECT_TRUE(AnswersEquivalent("0.3333333", "\\frac{1}{3}", 1e-6));
  EXPECT_FALSE(AnswersEquivalent("0.33", "\\frac{1}{3}", 1e-6));
  EXPECT_FALSE(AnswersEquivalent("-5", "5", 1e-6));
  EXPECT_TRUE(AnswersEquivalent("72", "The answer is \\boxed{72}", 0));
  // Integers compare exactly, whatever the tolerance: 1e-6 relative would accept these two.
  EXPECT_FALSE(AnswersEquivalent("12345678901234567890", "12345678901234567891", 1e-6));
  EXPECT_FALSE(AnswersEquivalent("1000001", "1000000", 1e-6));
  EXPECT_TRUE(AnswersEquivalent("1000000.5", "1000000", 1e-6));
}

TEST(AnswersEquivalent, TextFallback) {
  EXPECT_TRUE(AnswersEquivalent("\\left( 1, 2 \\right)", "(1,2)", 1e-6));
  EXPECT_TRUE(AnswersEquivalent("\\text{Monday}", "Monday", 1e-6));
  EXPECT_TRUE(AnswersEquivalent("x^2 + 1", "x^2+1", 1e-6));
  EXPECT_TRUE(AnswersEquivalent("90^\\circ", "90", 1e-6));
  EXPECT_FALSE(AnswersEquivalent("x^2", "x^3", 1e-6));
  EXPECT_FALSE(AnswersEquivalent("", "", 1e-6));  // nothing is not an answer
  EXPECT_FALSE(AnswersEquivalent("five", "5", 1e-6));
}

}  // namespace
}  // namespace tandem::rewards
