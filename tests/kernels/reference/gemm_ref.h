// Plain fp64 reference GEMM for the tests: C = op(A) · op(B) (+ C), written for clarity, not speed.
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::reference {

// c[m, n] (+)= A(i, p) · B(p, j) summed over p in fp64, with A(i, p) = a[i, p] (or a[p, i] when
// a_transposed; a is then [k, m]) and B(p, j) = b[p, j] (or b[j, p] when b_transposed; b is then
// [n, k]). All matrices are dense row-major. `c` holds the old c when accumulating.
inline std::vector<double> Gemm(int64_t m, int64_t n, int64_t k, const std::vector<float>& a,
                                bool a_transposed, const std::vector<float>& b, bool b_transposed,
                                const std::vector<float>& c, bool accumulate) {
  std::vector<double> out(m * n);  // [M, N]
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double aip = a_transposed ? a[p * m + i] : a[i * k + p];
        const double bpj = b_transposed ? b[j * k + p] : b[p * n + j];
        sum += aip * bpj;
      }
      out[i * n + j] = accumulate ? c[i * n + j] + sum : sum;
    }
  }
  return out;
}

}  // namespace tandem::reference
