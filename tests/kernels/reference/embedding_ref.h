// fp64 reference embedding lookup and gradient (scatter-add over tokens in ascending order).
#pragma once

#include <cstdint>
#include <vector>

namespace tandem::reference {

// table [V, D], ids [T] -> out [T, D].
inline std::vector<double> EmbeddingFwd(const std::vector<double>& table,
                                        const std::vector<int32_t>& ids, int64_t d) {
  std::vector<double> out;
  for (int32_t id : ids)
    out.insert(out.end(), table.begin() + id * d, table.begin() + (id + 1) * d);
  return out;
}

// dtable [V, D] += Σ_t onehot(ids[t]) ⊗ dout[t, :].
inline void EmbeddingBwd(const std::vector<int32_t>& ids, const std::vector<double>& dout,
                         int64_t d, std::vector<double>& dtable) {
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int64_t c = 0; c < d; ++c) dtable[ids[t] * d + c] += dout[t * d + c];
  }
}

}  // namespace tandem::reference
