// The checks collectives_mpi_main.cc and gpu/collectives_nccl_main.cc run under mpirun: the
// float all-reduce gives every rank the same bits, equal to the fp32 sum in rank order 0..P−1,
// across chunk boundaries and for awkward sizes; the int64 sum, broadcast and barrier; and the
// bucketed gradient all-reduce over a tiny model. `Place` says where the buffers live: it moves
// host data into the collective's memory, runs the call and brings the result back
// (HostPlace below for host memory; the NCCL test's device placement for GPU memory).
#pragma once

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "model/config.h"
#include "tests/testing/compare.h"
#include "trainer/collectives.h"

namespace tandem::trainer::testing {

using tandem::testing::BitwiseEqual;
using tandem::testing::Floats;

inline int failures = 0;

inline void Check(bool ok, int rank, const std::string& what) {
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "rank %d: FAILED %s\n", rank, what.c_str());
}

inline uint64_t Fnv1a(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// The rank's input and the expected rank-ordered sum.
inline std::vector<float> Input(int64_t n, int rank) {
  return tandem::testing::RandomVector(n, 1000 * rank + n);
}
inline std::vector<float> Expected(int64_t n, int size) {
  std::vector<float> sum = Input(n, 0);
  for (int r = 1; r < size; ++r) {
    std::vector<float> x = Input(n, r);
    for (int64_t i = 0; i < n; ++i) sum[i] += x[i];
  }
  return sum;
}

// All ranks agree on `hash` (rank 0's value is broadcast and compared).
inline bool SameOnAllRanks(Collective& c, uint64_t hash) {
  uint64_t root = hash;
  if (!c.Broadcast(&root, sizeof(root), 0).ok()) return false;
  int64_t differs = root != hash;
  if (!c.AllReduceSum(&differs, 1).ok()) return false;
  return differs == 0;
}

// Buffers in host memory: the calls as they are.
struct HostPlace {
  template <class T>
  absl::Status AllReduceSum(Collective& c, std::vector<T>& x) const {
    return c.AllReduceSum(x.data(), static_cast<int64_t>(x.size()));
  }
  absl::Status Broadcast(Collective& c, std::string& bytes, int root) const {
    return c.Broadcast(bytes.data(), static_cast<int64_t>(bytes.size()), root);
  }
  absl::Status AllReduceGradients(Collective& c, const model::ModelConfig&,
                                  model::ModelWeights& grads, int64_t bucket_elements) const {
    return trainer::AllReduceGradients(c, grads, bucket_elements);
  }
};

template <class Place>
void CheckFloatSums(Collective& c, const Place& place) {
  for (int64_t n : {0, 1, 3, 999, 1000, 2503, 100003}) {
    std::vector<float> x = Input(n, c.Rank());
    absl::Status s = place.AllReduceSum(c, x);
    Check(s.ok(), c.Rank(), "AllReduceSum: " + s.ToString());
    const std::vector<float> want = Expected(n, c.Size());
    const auto eq = BitwiseEqual(x, want);
    Check(static_cast<bool>(eq), c.Rank(),
          "rank-ordered sum, n=" + std::to_string(n) + ": " + eq.message());
    Check(SameOnAllRanks(c, Fnv1a(x.data(), x.size() * sizeof(float))), c.Rank(),
          "identical bits on all ranks, n=" + std::to_string(n));
  }
}

template <class Place>
void CheckIntsBroadcastBarrier(Collective& c, const Place& place) {
  std::vector<int64_t> counts(5000);
  for (size_t i = 0; i < counts.size(); ++i) counts[i] = (int64_t{1} << 40) + i * (c.Rank() + 1);
  Check(place.AllReduceSum(c, counts).ok(), c.Rank(), "int64 AllReduceSum");
  const int64_t p = c.Size();
  bool ok = true;
  for (size_t i = 0; i < counts.size(); ++i) {
    ok &= counts[i] == p * (int64_t{1} << 40) + static_cast<int64_t>(i) * p * (p + 1) / 2;
  }
  Check(ok, c.Rank(), "int64 sums");
  std::string text = c.Rank() == 1 ? "from rank one" : "?????????????";
  Check(place.Broadcast(c, text, 1).ok() && text == "from rank one", c.Rank(),
        "Broadcast from rank 1");
  std::string one = "x";
  Check(!c.Broadcast(one.data(), 1, c.Size()).ok(), c.Rank(), "Broadcast rejects a bad root");
  Check(c.Barrier().ok(), c.Rank(), "Barrier");
}

template <class Place>
void CheckGradients(Collective& c, const Place& place) {
  auto config = model::LoadModelConfig("configs/models/tiny-hybrid.json");
  Check(config.ok(), c.Rank(), "tiny config: " + config.status().ToString());
  if (!config.ok()) return;
  model::ModelWeights small = model::AllocateWeights(*config);
  model::ModelWeights big = model::AllocateWeights(*config);
  std::vector<std::vector<float>> want;
  uint64_t k = 0;
  auto fill = [&](model::ModelWeights& w) {
    k = 0;
    w.ForEachParameter([&](const std::string&, Tensor& t) {
      std::vector<float> x = Input(t.numel() + 7 * k++, c.Rank());
      std::memcpy(t.data<float>(), x.data(), t.nbytes());
    });
  };
  fill(small);
  fill(big);
  small.ForEachParameter([&](const std::string&, const Tensor& t) {
    std::vector<float> e = Expected(t.numel() + 7 * want.size(), c.Size());
    e.resize(t.numel());
    want.push_back(e);
  });
  Check(place.AllReduceGradients(c, *config, small, /*bucket_elements=*/3000).ok(), c.Rank(),
        "grads (small)");
  Check(place.AllReduceGradients(c, *config, big, /*bucket_elements=*/int64_t{1} << 24).ok(),
        c.Rank(), "grads");
  size_t i = 0;
  big.ForEachParameter([&](const std::string& name, const Tensor& t) {
    Check(static_cast<bool>(BitwiseEqual(Floats(t), want[i++])), c.Rank(),
          "gradient " + name + " = rank-ordered sum");
  });
  i = 0;
  small.ForEachParameter([&](const std::string& name, const Tensor& t) {
    Check(static_cast<bool>(BitwiseEqual(Floats(t), want[i++])), c.Rank(),
          "gradient " + name + " independent of the bucket size");
  });
}

}  // namespace tandem::trainer::testing
