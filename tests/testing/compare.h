// The one numerics comparator every kernel test uses, plus bitwise-equality and finite-difference
// helpers. Failures print the worst coordinates (as multi-indices when a shape is given).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/core/tensor.h"

namespace tandem::testing {

struct CompareOptions {
  double atol = 1e-5;  // absolute slack, in output units
  double rtol = 0.0;   // relative slack on |reference|
  // Optional: the same computation done naively in the output precision (f32). When given, each
  // element may also deviate by 2x that reference's own error (the FlashAttention rule).
  std::span<const float> same_precision = {};
  double max_nmse = 1e-8;  // global check: sum (a - r)^2 / sum r^2
  Shape shape = {};        // for printing coordinates; flat indices when empty
};

// Compares a float result with a double-precision reference. NaN and inf positions must match.
::testing::AssertionResult AllClose(std::span<const float> actual,
                                    std::span<const double> reference,
                                    const CompareOptions& options = {});

// Bitwise equality of two float arrays; prints the first differing coordinate and the count.
::testing::AssertionResult BitwiseEqual(std::span<const float> a, std::span<const float> b,
                                        const Shape& shape = {});

// Central finite difference of f at x along coordinate i: (f(x + e_i h) - f(x - e_i h)) / 2h.
double FiniteDifference(const std::function<double(const std::vector<double>&)>& f,
                        std::vector<double> x, size_t i, double h = 1e-6);

// The first link of the gradient chain of trust, for every coordinate of x: expects grad[i] within
// rel · (1 + |fd|) of FiniteDifference(f, x, i); a failure names `what` and i.
void ExpectGradientMatchesFiniteDifferences(
    std::span<const double> grad, const std::function<double(const std::vector<double>&)>& f,
    const std::vector<double>& x, double rel, const std::string& what);

// Σ_i y[i] · dy[i]: the scalar loss whose gradient with respect to y is dy.
double Dot(std::span<const double> y, std::span<const double> dy);

// Deterministic pseudo-random fill (uniform in [lo, hi)) for test inputs.
std::vector<float> RandomVector(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f);
std::vector<double> ToDouble(std::span<const float> v);

// Span views of tensors.
inline std::span<const float> Floats(const Tensor& t) {
  return {t.data<float>(), static_cast<size_t>(t.numel())};
}

std::string CoordinateString(size_t flat, const Shape& shape);

}  // namespace tandem::testing
