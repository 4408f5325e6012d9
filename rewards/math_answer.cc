// Math answer extraction and equivalence. Numbers are parsed into exact rationals (__int128) where
// they fit, so large integers compare exactly instead of through a tolerance; anything else falls
// back to long double.
#include "rewards/math_answer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/strip.h"

namespace tandem::rewards {
namespace {

constexpr int kMaxExactDigits = 36;  // 10^36 < 2^127: a mantissa this long cannot overflow

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

__int128 Gcd(__int128 a, __int128 b) {
  if (a < 0) a = -a;
  while (b != 0) {
    __int128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

// Returns the index one past the brace matching text[open] == '{', or npos.
size_t MatchBrace(absl::string_view text, size_t open) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == '{') ++depth;
    if (text[i] == '}' && --depth == 0) return i + 1;
  }
  return absl::string_view::npos;
}

// Parses an unsigned decimal ("123", "1,234", "1.5", ".5", "2e-3"). False if anything else.
bool ParseUnsignedDecimal(absl::string_view s, ParsedNumber* out) {
  size_t e = s.find_first_of("eE");
  int64_t exp10 = 0;
  if (e != absl::string_view::npos) {
    absl::string_view ex = s.substr(e + 1);
    bool neg = absl::ConsumePrefix(&ex, "-");
    if (!neg) absl::ConsumePrefix(&ex, "+");
    if (ex.empty() || ex.size() > 4) return false;
    for (char c : ex) {
      if (!IsDigit(c)) return false;
      exp10 = exp10 * 10 + (c - '0');
    }
    if (neg) exp10 = -exp10;
    s = s.substr(0, e);
  }
  const size_t dot = s.find('.');
  absl::string_view int_part = s.substr(0, dot);
  absl::string_view frac_part = dot == absl::string_view::npos ? "" : s.substr(dot + 1);
  if (int_part.empty() && frac_part.empty()) return false;
  std::string digits;
  if (const size_t first = int_part.find(','); first != absl::string_view::npos) {
    // Thousands separators: a leading group of 1-3 digits, then groups of exactly 3.
    if (first == 0 || first > 3 || (int_part.size() - first) % 4 != 0) return false;
    for (size_t i = first; i < int_part.size(); ++i) {
      if ((int_part[i] == ',') != ((i - first) % 4 == 0)) return false;
    }
  }
  for (char c : int_part) {
    if (IsDigit(c)) {
      digits += c;
    } else if (c != ',') {
      return false;
    }
  }
  for (char c : frac_part) {
    if (!IsDigit(c)) return false;
    digits += c;
  }
  exp10 -= static_cast<int64_t>(frac_part.size());
  out->value = std::strtold(digits.c_str(), nullptr) * std::pow(10.0L, exp10);
  const size_t significant = digits.size() - std::min(digits.find_first_not_of('0'), digits.size());
  out->exact =
      significant + std::max<int64_t>(0, exp10) <= kMaxExactDigits && exp10 >= -kMaxExactDigits;
  if (out->exact) {
    __int128 mant = 0, scale = 1;
    for (char c : digits) mant = mant * 10 + (c - '0');
    for (int64_t i = 0; i < std::abs(exp10); ++i) scale *= 10;
    out->num = exp10 >= 0 ? mant * scale : mant;
    out->den = exp10 >= 0 ? 1 : scale;
    const __int128 g = Gcd(out->num, out->den);
    out->num /= g;
    out->den /= g;
  }
  return true;
}

std::optional<ParsedNumber> Divide(const ParsedNumber& a, const ParsedNumber& b) {
  if (b.value == 0) return std::nullopt;
  ParsedNumber r;
  r.value = a.value / b.value;
  // Cross products stay exact only while they fit; 2^63 bounds keep the product under 2^126.
  const __int128 kLimit = static_cast<__int128>(1) << 62;
  auto small = [&](__int128 v) { return v < kLimit && v > -kLimit; };
  r.exact = a.exact && b.exact && small(a.num) && small(a.den) && small(b.num) && small(b.den);
  if (r.exact) {
    r.num = a.num * b.den;
    r.den = a.den * b.num;
    if (r.den < 0) r.num = -r.num, r.den = -r.den;
    const __int128 g = Gcd(r.num, r.den);
    r.num /= g;
    r.den /= g;
  }
  return r;
}

std::optional<ParsedNumber> ParseSignedDecimal(absl::string_view s) {
  bool negative = false;
  if (absl::ConsumePrefix(&s, "-")) {
    negative = true;
  } else {
    absl::ConsumePrefix(&s, "+");
  }
  ParsedNumber n;
  if (s.empty() || !ParseUnsignedDecimal(s, &n)) return std::nullopt;
  if (negative) n.num = -n.num, n.value = -n.value;
  return n;
}

// \frac{a}{b} with a, b signed decimals; also \frac12. The prefix "\frac" is already consumed.
std::optional<ParsedNumber> ParseFracArgs(absl::string_view s) {
  std::string args[2];
  for (std::string& arg : args) {
    if (s.empty()) return std::nullopt;
    if (s[0] == '{') {
      size_t end = MatchBrace(s, 0);
      if (end == absl::string_view::npos) return std::nullopt;
      arg = std::string(s.substr(1, end - 2));
      s.remove_prefix(end);
    } else {
      arg = std::string(1, s[0]);  // \frac12: single-character arguments
      s.remove_prefix(1);
    }
  }
  if (!s.empty()) return std::nullopt;
  auto a = ParseSignedDecimal(args[0]);
  auto b = ParseSignedDecimal(args[1]);
  if (!a || !b) return std::nullopt;
  return Divide(*a, *b);
}

}  // namespace

std::optional<std::string> ExtractBoxed(absl::string_view text) {
  size_t best = absl::string_view::npos;
  size_t skip = 0;
  for (absl::string_view tag : {"\\boxed", "\\fbox"}) {
    size_t pos = text.rfind(tag);
    if (pos != absl::string_view::npos && (best == absl::string_view::npos || pos > best)) {
      best = pos;
      skip = tag.size();
    }
  }
  if (best == absl::string_view::npos) return std::nullopt;
  size_t i = best + skip;
  if (i < text.size() && text[i] == '{') {
    size_t end = MatchBrace(text, i);
    if (end == absl::string_view::npos) return std::nullopt;
    return std::string(absl::StripAsciiWhitespace(text.substr(i + 1, end - i - 2)));
  }
  if (i >= text.size() || text[i] != ' ') return std::nullopt;  // "\boxedx" is another macro
  absl::string_view rest = absl::StripLeadingAsciiWhitespace(text.substr(i));
  size_t end = rest.find_first_of(" \t\n$");
  return std::string(rest.substr(0, end));
}

std::optional<std::string> ExtractLastNumber(absl::string_view text) {
  size_t last = text.find_last_of("0123456789");
  if (last == absl::string_view::npos) return std::nullopt;
  auto in_number = [](char c) { return IsDigit(c) || c == ',' || c == '.' || c == '/'; };
  size_t begin = last;
  while (begin > 0 && in_number(text[begin - 1])) --begin;
  size_t end = last + 1;
  while (begin < end && !IsDigit(text[begin]) && text[begin] != '.') ++begin;
  if (begin > 0 && (text[begin - 1] == '-' || text[begin - 1] == '+')) --begin;
  std::string token(text.substr(begin, end - begin));
  if (!ParseNumber(token)) {
    // "3,4,5" is a list, not a thousands-separated number: keep its last element.
    token = token.substr(token.find_last_of(",/") + 1);
  }
  // A \frac{..}{..} whose closing brace ends right after this number is the answer instead.
  size_t frac = text.rfind("frac");
  if (frac != absl::string_view::npos && frac > 0 && frac < begin) {
    size_t open = text.find('{', frac);
    size_t mid = open == absl::string_view::npos ? open : MatchBrace(text, open);
    size_t close = mid == absl::string_view::npos ? mid : MatchBrace(text, mid);
    if (close != absl::string_view::npos && close == end + 1) {
      size_t start = text.rfind('\\', frac);
      if (start != absl::string_view::npos && start > 0 && text[start - 1] == '-') --start;
      return std::string(text.substr(start, close - start));
    }
  }
  return token;
}

std::optional<std::string> ExtractMathAnswer(absl::string_view response, bool boxed_only) {
  size_t think_end = response.rfind("</think>");
  if (think_end != absl::string_view::npos) response.remove_prefix(think_end + 8);
  if (auto boxed = ExtractBoxed(response)) return boxed;
  if (boxed_only) return std::nullopt;
  return ExtractLastNumber(response);
}

std::string NormalizeAnswerText(absl::string_view text) {
  std::string s = absl::StrReplaceAll(text, {{"\\left", ""},
                                             {"\\right", ""},
                                             {"\\!", ""},
                                             {"\\,", ""},
                                             {"\\;", ""},
                                             {"\\dfrac", "\\frac"},
                                             {"\\tfrac", "\\frac"},
                                             {"^{\\circ}", ""},
                                             {"^\\circ", ""},
                                             {"\\(", ""},
                                             {"\\)", ""},
                                             {"$", ""},
                                             {"{,}", ","},
                                             {"\xe2\x88\x92", "-"}});  // U+2212 MINUS SIGN
  // Unwrap \text{...} and \mathrm{...}: keep their content.
  for (const std::string macro : {"\\text{", "\\mathrm{", "\\textbf{", "\\mbox{"}) {
    size_t pos;
    while ((pos = s.find(macro)) != std::string::npos) {
      size_t open = pos + macro.size() - 1;
      size_t end = MatchBrace(s, open);
      if (end == std::string::npos) break;
      s = s.substr(0, pos) + s.substr(open + 1, end - open - 2) + s.substr(end);
    }
  }
  s.erase(std::remove_if(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); }),
          s.end());
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

std::optional<ParsedNumber> ParseNumber(absl::string_view text) {
  text = absl::StripAsciiWhitespace(text);
  // A unit in a trailing \text{} ("5\text{ cm}") does not change the number.
  for (absl::string_view macro : {"\\text{", "\\mbox{"}) {
    size_t pos = text.rfind(macro);
    if (pos != absl::string_view::npos && pos > 0 &&
        MatchBrace(text, pos + macro.size() - 1) == text.size()) {
      text = absl::StripAsciiWhitespace(text.substr(0, pos));
    }
  }
  std::string s = NormalizeAnswerText(text);
  if (auto boxed = ExtractBoxed(s)) s = NormalizeAnswerText(*boxed);
  // A percent sign does not change the number: "5\%" answers "5".
  for (absl::string_view suffix : {"\\%", "%"}) {
    if (absl::EndsWith(s, suffix)) s.resize(s.size() - suffix.size());
  }
  absl::string_view v(s);
  bool negative = false;
  if (absl::ConsumePrefix(&v, "-")) {
    negative = true;
  } else {
    absl::ConsumePrefix(&v, "+");
  }
  std::optional<ParsedNumber> n;
  if (absl::ConsumePrefix(&v, "\\frac")) {
    n = ParseFracArgs(v);
  } else if (size_t slash = v.find('/'); slash != absl::string_view::npos) {
    auto a = ParseSignedDecimal(v.substr(0, slash));
    auto b = ParseSignedDecimal(v.substr(slash + 1));
    if (a && b) n = Divide(*a, *b);
  } else if (!v.empty() && (IsDigit(v[0]) || v[0] == '.')) {
    n = ParseSignedDecimal(v);
  }
  if (n && negative) n->num = -n->num, n->value = -n->value;
  return n;
}

bool AnswersEquivalent(absl::string_view answer, absl::string_view reference, double tolerance) {
  std::string ref(reference);
  if (auto boxed = ExtractBoxed(reference)) ref = *boxed;
  auto a = ParseNumber(answer);
  auto b = ParseNumber(ref);
  if (a && b) {
    if (a->exact && b->exact && a->num == b->num && a->den == b->den) return true;
    if (a->is_integer() && b->is_integer()) return false;
    const long double diff = std::fabs(a->value - b->value);
    return diff <= static_cast<long double>(tolerance) * std::max(1.0L, std::fabs(b->value));
  }
  if (a || b) return false;
  const std::string na = NormalizeAnswerText(answer), nb = NormalizeAnswerText(ref);
  return !na.empty() && na == nb;
}

}  // namespace tandem::rewards
