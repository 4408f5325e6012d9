// WeightsHash / HashBytes: the documented definition (checked against a byte-by-byte re-statement
// of it), sensitivity to every bit, tensor order and length, and independence from how the
// weights were produced (a copy, a save/load round trip) as long as the bits are the same.
#include "model/weights_hash.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "model/config.h"
#include "model/weights.h"

namespace tandem::model {
namespace {

// The header's definition, written out per byte: words assembled little-endian by hand.
uint64_t ReferenceHash(const std::vector<unsigned char>& bytes, uint64_t h) {
  auto fmix = [](uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
  };
  const uint64_t prime = 0x100000001b3ULL;
  for (size_t i = 0; i < bytes.size(); i += 8) {
    uint64_t w = 0;
    for (size_t j = 0; j < 8 && i + j < bytes.size(); ++j) {
      w |= static_cast<uint64_t>(bytes[i + j]) << (8 * j);
    }
    h = (h ^ fmix(w)) * prime;
  }
  return (h ^ fmix(bytes.size())) * prime;
}

std::vector<unsigned char> RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<unsigned char> out(n);
  for (unsigned char& b : out) b = static_cast<unsigned char>(rng());
  return out;
}

TEST(HashBytesTest, MatchesTheDocumentedDefinitionForEveryTailLength) {
  for (size_t n = 0; n <= 33; ++n) {
    const std::vector<unsigned char> bytes = RandomBytes(n, n + 1);
    EXPECT_EQ(HashBytes(bytes.data(), n), ReferenceHash(bytes, kHashSeed)) << "n = " << n;
    EXPECT_EQ(HashBytes(bytes.data(), n, 42), ReferenceHash(bytes, 42)) << "n = " << n;
  }
}

TEST(HashBytesTest, GoldenValue) {
  // Pins the definition: a change here breaks weight sync between old and new builds.
  const char text[] = "tandem";
  EXPECT_EQ(HashBytes(text, 6), ReferenceHash({'t', 'a', 'n', 'd', 'e', 'm'}, kHashSeed));
  EXPECT_EQ(HashBytes(text, 6), 0x760f9ae18043f44eULL);  // computed independently in Python
}

TEST(HashBytesTest, EveryBitFlipAndTrailingZeroChangesTheHash) {
  std::vector<unsigned char> bytes = RandomBytes(100, 7);
  const uint64_t h = HashBytes(bytes.data(), bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      bytes[i] ^= static_cast<unsigned char>(1u << bit);
      EXPECT_NE(HashBytes(bytes.data(), bytes.size()), h) << "byte " << i << " bit " << bit;
      bytes[i] ^= static_cast<unsigned char>(1u << bit);
    }
  }
  bytes.push_back(0);
  EXPECT_NE(HashBytes(bytes.data(), bytes.size()), h);
}

class WeightsHashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ModelConfig> config = LoadModelConfig("configs/models/tiny-hybrid.json");
    ASSERT_TRUE(config.ok()) << config.status();
    config_ = *config;
    weights_ = AllocateWeights(config_);
    InitWeights(config_, 5, weights_);
  }
  ModelConfig config_;
  ModelWeights weights_;
};

TEST_F(WeightsHashTest, IsTheChainOfTensorHashesInParameterOrder) {
  uint64_t h = kHashSeed;
  weights_.ForEachParameter([&](const std::string&, const Tensor& t) {
    std::vector<unsigned char> bytes(t.nbytes());
    std::memcpy(bytes.data(), t.raw_data(), t.nbytes());
    h = ReferenceHash(bytes, h);
  });
  EXPECT_EQ(WeightsHash(weights_), h);
}

TEST_F(WeightsHashTest, SameBitsSameHashAnyChangeDifferentHash) {
  ModelWeights same = AllocateWeights(config_);
  InitWeights(config_, 5, same);
  EXPECT_EQ(WeightsHash(same), WeightsHash(weights_));
  ModelWeights other = AllocateWeights(config_);
  InitWeights(config_, 6, other);
  EXPECT_NE(WeightsHash(other), WeightsHash(weights_));
  // One ulp in one expert element (a view into a stacked tensor) is seen.
  float& x = same.layers.back().experts.gate.data<float>()[17];
  x = std::nextafter(x, 1.0f);
  EXPECT_NE(WeightsHash(same), WeightsHash(weights_));
}

TEST_F(WeightsHashTest, SurvivesASaveLoadRoundTripInF32) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("tandem_weights_hash_" + std::to_string(getpid()));
  ASSERT_TRUE(SaveCheckpoint(config_, weights_, dir.string(), DType::kF32).ok());
  absl::StatusOr<ModelWeights> loaded = LoadWeights(config_, dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(WeightsHash(*loaded), WeightsHash(weights_));
}

}  // namespace
}  // namespace tandem::model
