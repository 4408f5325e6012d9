// safetensors: round trips (single file, bf16 conversion, shards), the on-disk layout, and
// corrupted files, each of which must give an error naming the file (and tensor) and never crash.
#include "model/safetensors.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/core/bf16.h"
#include "nlohmann/json.hpp"
#include "tests/testing/compare.h"

namespace tandem::model {
namespace {

using json = nlohmann::json;
using testing::BitwiseEqual;
using testing::Floats;
using ::testing::HasSubstr;
using testing::RandomVector;

std::string TempPath(const std::string& name) {
  const std::string dir = ::testing::TempDir() + "/safetensors_test";
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A file from a raw header string and buffer; `length` overrides the header length field.
std::string MakeFile(const std::string& name, const std::string& header, const std::string& buffer,
                     int64_t length = -1) {
  uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(n >> (8 * i));
  const std::string path = TempPath(name);
  WriteBytes(path, bytes + header + buffer);
  return path;
}

std::string OpenError(const std::string& path) {
  auto f = SafetensorsFile::Open(path);
  EXPECT_FALSE(f.ok()) << path;
  return f.ok() ? "" : std::string(f.status().message());
}

Tensor RandomF32(Shape shape, uint64_t seed) {
  Tensor t = Tensor::Empty(shape, DType::kF32);
  std::vector<float> v = RandomVector(t.numel(), seed, -3.0f, 3.0f);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

TEST(Safetensors, RoundTripAllDtypes) {
  Tensor f32 = RandomF32({3, 5}, 1);
  Tensor to_bf16 = RandomF32({7}, 2);
  Tensor bf16 = Tensor::FromVector<uint16_t>({0x3f80, 0xc000, 0x7f80}, {3});
  Tensor i32 = Tensor::FromVector<int32_t>({1, -2, 3, 2147483647}, {2, 2});
  Tensor i64 = Tensor::FromVector<int64_t>({int64_t{1} << 40, -5}, {2});
  Tensor empty = Tensor::Empty({0, 3}, DType::kF32);
  Tensor scalar = Tensor::FromVector<float>({42.0f}, {});
  const std::string path = TempPath("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path,
                               {{"w.f32", f32, DType::kF32},
                                {"w.bf16_from_f32", to_bf16, DType::kBF16},
                                {"w.bf16", bf16, DType::kBF16},
                                {"ids", i32, DType::kI32},
                                {"big", i64, DType::kI64},
                                {"empty", empty, DType::kF32},
                                {"scalar", scalar, DType::kF32}},
                               {{"format", "pt"}, {"note", "x"}})
                  .ok());
  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const SafetensorsFile& f = **file;
  EXPECT_EQ(f.names(), (std::vector<std::string>{"big", "empty", "ids", "scalar", "w.bf16",
                                                 "w.bf16_from_f32", "w.f32"}));
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "x"}}));

  Tensor got = *f.Get("w.f32");
  EXPECT_FALSE(got.owning());  // zero-copy view into the mapping
  EXPECT_EQ(got.shape(), f32.shape());
  EXPECT_TRUE(BitwiseEqual(Floats(got), Floats(f32)));
  Tensor b = *f.Get("w.bf16_from_f32");
  ASSERT_EQ(b.dtype(), DType::kBF16);
  std::vector<float> widened(7);
  ASSERT_TRUE(f.ReadAsF32("w.bf16_from_f32", widened.data()).ok());
  for (int i = 0; i < 7; ++i) {
    EXPECT_EQ(b.data<uint16_t>()[i], FloatToBf16(to_bf16.data<float>()[i]));
    EXPECT_EQ(widened[i], RoundToBf16(to_bf16.data<float>()[i]));
  }
  EXPECT_EQ(std::memcmp(f.Get("w.bf16")->raw_data(), bf16.raw_data(), 6), 0);
  EXPECT_EQ(std::memcmp(f.Get("ids")->raw_data(), i32.raw_data(), 16), 0);
  EXPECT_EQ(f.Get("big")->data<int64_t>()[0], int64_t{1} << 40);
  EXPECT_EQ(f.Get("empty")->shape(), (Shape{0, 3}));
  EXPECT_EQ(f.Get("scalar")->rank(), 0);
  EXPECT_EQ(f.Get("scalar")->data<float>()[0], 42.0f);
  EXPECT_THAT(std::string(f.ReadAsF32("ids", widened.data()).message()),
              HasSubstr("tensor 'ids': expected a floating-point tensor"));
  EXPECT_EQ(f.Get("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST(Safetensors, LayoutFollowsTheFormat) {
  const std::string path = TempPath("layout.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"b", Tensor::Zeros({3}, DType::kBF16), DType::kBF16},
                                      {"a", RandomF32({2}, 3), DType::kF32}})
                  .ok());
  const std::string bytes = ReadBytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 2 * 4 + 3 * 2);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header[0], '{');
  json j = json::parse(header);
  EXPECT_EQ(j["a"]["data_offsets"], json({0, 8}));  // F32 first: every tensor stays aligned
  EXPECT_EQ(j["b"]["data_offsets"], json({8, 14}));
  EXPECT_EQ(j["b"]["dtype"], "BF16");
  EXPECT_EQ(j["__metadata__"]["format"], "pt");
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST(Safetensors, UnalignedDataIsCopied) {
  // An unpadded 45-byte header leaves the F32 data misaligned.
  std::string header = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  header += std::string((8 - header.size() % 8) % 8 + 5, ' ');
  ASSERT_NE((8 + header.size()) % 4, 0u);
  const float values[2] = {1.5f, -2.25f};
  const std::string path = MakeFile("unaligned.safetensors", header,
                                    std::string(reinterpret_cast<const char*>(values), 8));
  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  Tensor t = *(*f)->Get("x");
  EXPECT_TRUE(t.owning());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 4, 0u);
  EXPECT_EQ(t.data<float>()[0], 1.5f);
  EXPECT_EQ(t.data<float>()[1], -2.25f);
}

TEST(Safetensors, ShardedRoundTrip) {
  const std::string dir = TempPath("sharded");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  std::vector<TensorToWrite> tensors;
  for (int i = 0; i < 5; ++i) {
    tensors.push_back({absl::StrCat("t", i), RandomF32({10, 4}, 10 + i), DType::kF32});
  }
  tensors.push_back({"huge", RandomF32({100}, 99), DType::kBF16});  // 200 bytes: its own shard
  ASSERT_TRUE(WriteSafetensorsCheckpoint(dir, tensors, /*max_shard_bytes=*/330).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors"));
  auto index = ReadSafetensorsIndex(dir + "/model.safetensors.index.json");
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->total_size, 5 * 160 + 200);
  EXPECT_EQ(index->weight_map["t0"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index->weight_map["t1"], "model-00001-of-00004.safetensors");
  EXPECT_EQ(index->weight_map["t2"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index->weight_map["huge"], "model-00004-of-00004.safetensors");

  auto ckpt = SafetensorsCheckpoint::Open(dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->files().size(), 4u);
  EXPECT_EQ(ckpt->names().size(), 6u);
  for (const TensorToWrite& t : tensors) {
    const SafetensorsFile* f = ckpt->FileOf(t.name);
    ASSERT_NE(f, nullptr) << t.name;
    std::vector<float> back(t.tensor.numel());
    ASSERT_TRUE(f->ReadAsF32(t.name, back.data()).ok());
    for (int64_t i = 0; i < t.tensor.numel(); ++i) {
      const float v = t.tensor.data<float>()[i];
      ASSERT_EQ(back[i], t.stored == DType::kBF16 ? RoundToBf16(v) : v) << t.name << " " << i;
    }
  }
  // Saving again as one file replaces the index.
  ASSERT_TRUE(WriteSafetensorsCheckpoint(dir, tensors, int64_t{1} << 30).ok());
  EXPECT_FALSE(std::filesystem::exists(dir + "/model.safetensors.index.json"));
  ASSERT_TRUE(SafetensorsCheckpoint::Open(dir).ok());
  EXPECT_EQ(SafetensorsCheckpoint::Open(dir)->files().size(), 1u);
}

TEST(Safetensors, BadIndexes) {
  const std::string dir = TempPath("bad_index");
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  EXPECT_EQ(SafetensorsCheckpoint::Open(dir).status().code(), absl::StatusCode::kNotFound);
  const std::string index = dir + "/model.safetensors.index.json";
  WriteBytes(index, "{\"weight_map\": ");
  EXPECT_THAT(std::string(SafetensorsCheckpoint::Open(dir).status().message()),
              HasSubstr("model.safetensors.index.json: not valid JSON"));
  WriteBytes(index, R"({"weight_map": {"a": "missing.safetensors"}})");
  EXPECT_THAT(std::string(SafetensorsCheckpoint::Open(dir).status().message()),
              HasSubstr("missing.safetensors: cannot open"));
  ASSERT_TRUE(
      WriteSafetensors(dir + "/s.safetensors", {{"b", RandomF32({1}, 1), DType::kF32}}).ok());
  WriteBytes(index, R"({"weight_map": {"a": "s.safetensors"}})");
  EXPECT_THAT(std::string(SafetensorsCheckpoint::Open(dir).status().message()),
              HasSubstr("tensor 'a': mapped to s.safetensors, which does not contain it"));
}

TEST(Safetensors, WriterRejectsBadInput) {
  const std::string path = TempPath("reject.safetensors");
  Tensor t = RandomF32({2}, 1);
  EXPECT_THAT(
      std::string(WriteSafetensors(path, {{"a", t, DType::kF32}, {"a", t, DType::kF32}}).message()),
      HasSubstr("tensor 'a': written twice"));
  EXPECT_THAT(std::string(WriteSafetensors(path, {{"a", t, DType::kI32}}).message()),
              HasSubstr("cannot store a f32 tensor as i32"));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(WriteSafetensors("/no/such/dir/x.safetensors", {{"a", t, DType::kF32}}).code(),
            absl::StatusCode::kInternal);
}

constexpr char kGoodHeader[] = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                               R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})";

std::string HeaderWith(const std::string& a_entry) {
  return R"({"a":)" + a_entry + R"(,"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})";
}

TEST(SafetensorsCorruption, EachDefectHasAClearError) {
  const std::string buffer(12, '\x01');
  ASSERT_TRUE(SafetensorsFile::Open(MakeFile("good.safetensors", kGoodHeader, buffer)).ok());
  const struct {
    const char* name;
    std::string path;
    const char* message;
  } cases[] = {
      {"missing file", TempPath("absent.safetensors"), "cannot open"},
      {"header too big", MakeFile("big.safetensors", kGoodHeader, buffer, int64_t{1} << 40),
       "header length 1099511627776 exceeds"},
      {"truncated data", MakeFile("trunc.safetensors", kGoodHeader, buffer.substr(0, 10)),
       "tensor 'b': data_offsets [8,12] lie outside the 10-byte data buffer"},
      {"trailing bytes", MakeFile("trail.safetensors", kGoodHeader, buffer + "xx"),
       "tensors cover 12 bytes of the 14-byte data buffer"},
      {"bad json", MakeFile("json.safetensors", "{\"a\": [1, 2", buffer), "not valid JSON"},
      {"not an object", MakeFile("obj.safetensors", "[1]", buffer), "does not start with '{'"},
      {"unknown dtype",
       MakeFile("q7.safetensors", HeaderWith(R"({"dtype":"Q7","shape":[2],"data_offsets":[0,8]})"),
                buffer),
       "tensor 'a': unknown dtype \"Q7\""},
      {"unsupported dtype",
       MakeFile("f16.safetensors",
                HeaderWith(R"({"dtype":"F16","shape":[4],"data_offsets":[0,8]})"), buffer),
       "tensor 'a': dtype \"F16\" is not supported"},
      {"size mismatch",
       MakeFile("size.safetensors",
                HeaderWith(R"({"dtype":"F32","shape":[3],"data_offsets":[0,8]})"), buffer),
       "tensor 'a': data_offsets span 8 bytes but shape [3] of F32 needs 12"},
      {"offsets reversed",
       MakeFile("rev.safetensors",
                HeaderWith(R"({"dtype":"F32","shape":[2],"data_offsets":[8,0]})"), buffer),
       "tensor 'a': \"data_offsets\" must be"},
      {"negative dim",
       MakeFile("neg.safetensors",
                HeaderWith(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})"), buffer),
       "tensor 'a': invalid shape [-2]"},
      {"overlap",
       MakeFile("overlap.safetensors",
                HeaderWith(R"({"dtype":"BF16","shape":[5],"data_offsets":[0,10]})"), buffer),
       "data overlaps tensor"},
      {"hole",
       MakeFile("hole.safetensors", R"({"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}})",
                buffer),
       "tensor 'b': bytes [0, 8) before it belong to no tensor"},
      {"bad metadata",
       MakeFile("meta.safetensors",
                R"({"__metadata__":{"format":3},"a":{"dtype":"F32","shape":[3],)"
                R"("data_offsets":[0,12]}})",
                buffer),
       "\"__metadata__\" value of 'format' is not a string"},
      {"entry not an object", MakeFile("entry.safetensors", HeaderWith("7"), buffer),
       "tensor 'a': header entry is not a JSON object"},
  };
  for (const auto& c : cases) {
    const std::string error = OpenError(c.path);
    EXPECT_THAT(error, HasSubstr(c.path)) << c.name;
    EXPECT_THAT(error, HasSubstr(c.message)) << c.name;
  }
  const std::string five = TempPath("five.safetensors");
  WriteBytes(five, "abcde");
  EXPECT_THAT(OpenError(five), HasSubstr("file is 5 bytes, too short"));
  EXPECT_THAT(OpenError(::testing::TempDir()), HasSubstr("not a regular file"));
}

TEST(SafetensorsCorruption, RandomDamageNeverCrashes) {
  const std::string path = TempPath("fuzz_src.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"x", RandomF32({4, 4}, 5), DType::kF32},
                                      {"y", RandomF32({3}, 6), DType::kBF16}})
                  .ok());
  const std::string good = ReadBytes(path);
  std::mt19937_64 rng(1234);
  const std::string damaged = TempPath("fuzz.safetensors");
  int failures = 0;
  for (int trial = 0; trial < 400; ++trial) {
    std::string bytes = good;
    if (trial % 4 == 0) {
      bytes.resize(rng() % bytes.size());
    } else {
      for (int k = 0; k <= trial % 3; ++k) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    }
    WriteBytes(damaged, bytes);
    auto f = SafetensorsFile::Open(damaged);
    if (!f.ok()) {
      ++failures;
      EXPECT_THAT(std::string(f.status().message()), HasSubstr(damaged));
      continue;
    }
    for (const std::string& name : (*f)->names()) {  // whatever opened must be readable
      const SafetensorsEntry* e = (*f)->Find(name);
      std::vector<float> out(e->end - e->begin);
      (void)(*f)->ReadAsF32(name, out.data());
      ASSERT_TRUE((*f)->Get(name).ok());
    }
  }
  EXPECT_GT(failures, 100);
}

}  // namespace
}  // namespace tandem::model
