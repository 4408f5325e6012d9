#include "tests/testing/compare.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <sstream>

namespace tandem::testing {

std::string CoordinateString(size_t flat, const Shape& shape) {
  if (shape.empty()) return "[" + std::to_string(flat) + "]";
  std::vector<int64_t> idx(shape.size());
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    idx[d] = static_cast<int64_t>(flat) % shape[d];
    flat /= shape[d];
  }
  std::string s = "[";
  for (size_t d = 0; d < idx.size(); ++d) s += (d ? ", " : "") + std::to_string(idx[d]);
  return s + "]";
}

::testing::AssertionResult AllClose(std::span<const float> actual,
                                    std::span<const double> reference,
                                    const CompareOptions& options) {
  if (actual.size() != reference.size()) {
    return ::testing::AssertionFailure()
           << "size mismatch: actual " << actual.size() << " vs reference " << reference.size();
  }
  bool have_sp = !options.same_precision.empty();
  if (have_sp && options.same_precision.size() != actual.size()) {
    return ::testing::AssertionFailure() << "same_precision size mismatch";
  }
  struct Bad {
    size_t i;
    double excess;
  };
  std::vector<Bad> bad;
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    double a = actual[i];
    double r = static_cast<float>(reference[i]);  // the reference rounded to the output dtype
    if (std::isnan(r) || std::isnan(a) || std::isinf(r) || std::isinf(a)) {
      bool same = (std::isnan(r) && std::isnan(a)) || (std::isinf(r) && a == r);
      if (!same) bad.push_back({i, INFINITY});
      continue;
    }
    double limit = options.atol + options.rtol * std::fabs(r);
    if (have_sp) limit += 2.0 * std::fabs(options.same_precision[i] - reference[i]);
    double err = std::fabs(a - reference[i]);
    if (err > limit) bad.push_back({i, err - limit});
    err2 += (a - reference[i]) * (a - reference[i]);
    ref2 += reference[i] * reference[i];
  }
  double nmse = ref2 > 0 ? err2 / ref2 : err2;
  if (bad.empty() && nmse <= options.max_nmse) return ::testing::AssertionSuccess();
  std::sort(bad.begin(), bad.end(), [](const Bad& x, const Bad& y) { return x.excess > y.excess; });
  std::ostringstream os;
  os.precision(9);
  os << bad.size() << " of " << actual.size() << " elements out of tolerance (atol " << options.atol
     << ", rtol " << options.rtol << "), nmse " << nmse << " (max " << options.max_nmse << ")";
  for (size_t k = 0; k < std::min<size_t>(bad.size(), 8); ++k) {
    size_t i = bad[k].i;
    os << "\n  at " << CoordinateString(i, options.shape) << ": actual " << actual[i]
       << ", reference " << reference[i];
    if (have_sp) os << ", same-precision " << options.same_precision[i];
  }
  return ::testing::AssertionFailure() << os.str();
}

::testing::AssertionResult BitwiseEqual(std::span<const float> a, std::span<const float> b,
                                        const Shape& shape) {
  if (a.size() != b.size()) {
    return ::testing::AssertionFailure() << "size mismatch: " << a.size() << " vs " << b.size();
  }
  size_t first = a.size(), count = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      if (count++ == 0) first = i;
    }
  }
  if (count == 0) return ::testing::AssertionSuccess();
  std::ostringstream os;
  os.precision(9);
  os << count << " of " << a.size() << " elements differ; first at "
     << CoordinateString(first, shape) << ": " << a[first] << " vs " << b[first];
  return ::testing::AssertionFailure() << os.str();
}

double FiniteDifference(const std::function<double(const std::vector<double>&)>& f,
                        std::vector<double> x, size_t i, double h) {
  double x0 = x[i];
  x[i] = x0 + h;
  double fp = f(x);
  x[i] = x0 - h;
  double fm = f(x);
  return (fp - fm) / (2 * h);
}

void ExpectGradientMatchesFiniteDifferences(
    std::span<const double> grad, const std::function<double(const std::vector<double>&)>& f,
    const std::vector<double>& x, double rel, const std::string& what) {
  ASSERT_EQ(grad.size(), x.size()) << what;
  for (size_t i = 0; i < x.size(); ++i) {
    const double fd = FiniteDifference(f, x, i);
    EXPECT_NEAR(grad[i], fd, rel * (1 + std::abs(fd))) << what << " " << i;
  }
}

double Dot(std::span<const double> y, std::span<const double> dy) {
  double l = 0;
  for (size_t i = 0; i < y.size(); ++i) l += y[i] * dy[i];
  return l;
}

std::vector<float> RandomVector(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<double> ToDouble(std::span<const float> v) { return {v.begin(), v.end()}; }

}  // namespace tandem::testing
