// Final-answer extraction and numeric equivalence for math rewards: the answer is the last
// \boxed{...} in a response, else its last number; two answers match when they are the same number
// (integers exactly; decimals, fractions and \frac within a relative tolerance) or, failing that,
// the same text after LaTeX cosmetics are normalised away.
#pragma once

#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace tandem::rewards {

// A parsed numeric answer. `exact` holds when the value is the rational num/den (den > 0, reduced);
// otherwise only `value` is meaningful (too many digits, or an exponent).
struct ParsedNumber {
  bool exact = false;
  __int128 num = 0;
  __int128 den = 1;
  long double value = 0;
  bool is_integer() const { return exact && den == 1; }
};

// The braced content of the last \boxed{...} or \fbox{...} (nesting respected); also the bare
// form `\boxed 5`. nullopt when there is none or its braces never close.
std::optional<std::string> ExtractBoxed(absl::string_view text);

// The last number in `text` as written: sign, digits with optional thousands commas, decimal part,
// `a/b`, or a \frac{a}{b} that ends the text's last number. nullopt when there is no digit.
std::optional<std::string> ExtractLastNumber(absl::string_view text);

// What a math reward compares: only the text after the last </think> is searched (reasoning is
// not the answer); there, the last \boxed{} wins, else the last number unless boxed_only.
std::optional<std::string> ExtractMathAnswer(absl::string_view response, bool boxed_only);

// Parses an answer written as a number: [+|-] integer (thousands commas allowed in groups of
// three), decimal, scientific (1e-3), a/b, \frac{a}{b} (\dfrac, \tfrac, \frac12), a trailing % or
// unit in \text{}, and surrounding $ or \( \). nullopt when the text is not a number.
std::optional<ParsedNumber> ParseNumber(absl::string_view text);

// Strips what does not change a LaTeX answer's meaning: whitespace, $, \left \right, \! \, \;,
// \text{x} -> x, \dfrac -> \frac, degree marks, one trailing period.
std::string NormalizeAnswerText(absl::string_view text);

// True when `answer` and `reference` denote the same thing. Two integers must be equal; other
// numbers may differ by tolerance * max(1, |reference|). Non-numbers compare normalised text.
// `reference` may itself contain a \boxed{}; its content is used.
bool AnswersEquivalent(absl::string_view answer, absl::string_view reference, double tolerance);

}  // namespace tandem::rewards
