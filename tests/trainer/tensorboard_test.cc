// TensorBoard event writer: CRC-32C known answers, TFRecord framing, the hand-encoded Event bytes,
// and (when the python `tensorboard` package is installed) TensorBoard's own reader on the file.
#include "trainer/tensorboard.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace tandem::trainer {
namespace {

TEST(TensorBoardTest, Crc32cKnownAnswers) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);  // the CRC-32C check value
  EXPECT_EQ(Crc32c("", 0), 0u);
  const std::string zeros(32, '\0');
  EXPECT_EQ(Crc32c(zeros.data(), 32), 0x8A9136AAu);  // RFC 3720 B.4
  const uint32_t c = Crc32c("a", 1);
  EXPECT_EQ(MaskedCrc32c("a", 1), ((c >> 15) | (c << 17)) + 0xa282ead8u);
}

TEST(TensorBoardTest, RecordFraming) {
  const std::string data = "hello";
  const std::string rec = FrameRecord(data);
  ASSERT_EQ(rec.size(), 8 + 4 + data.size() + 4);
  uint64_t len;
  std::memcpy(&len, rec.data(), 8);
  EXPECT_EQ(len, data.size());
  uint32_t len_crc, data_crc;
  std::memcpy(&len_crc, rec.data() + 8, 4);
  std::memcpy(&data_crc, rec.data() + 12 + data.size(), 4);
  EXPECT_EQ(len_crc, MaskedCrc32c(rec.data(), 8));
  EXPECT_EQ(rec.substr(12, data.size()), data);
  EXPECT_EQ(data_crc, MaskedCrc32c(data.data(), data.size()));
}

TEST(TensorBoardTest, EventEncoding) {
  const std::string e = EncodeScalarEvent(1.5, 300, {{"a", 2.0f}});
  // wall_time: tag 0x09 + 8 bytes; step: tag 0x10 + varint 300 = ac 02;
  // summary (field 5, tag 0x2a): value (tag 0x0a) { tag "a" (0a 01 61), simple_value (15 + f32) }
  std::string want;
  want += '\x09';
  const double wall = 1.5;
  want.append(reinterpret_cast<const char*>(&wall), 8);
  want += "\x10\xac\x02";
  const float two = 2.0f;
  std::string value = std::string(
                          "\x0a\x01"
                          "a",
                          3) +
                      '\x15';
  value.append(reinterpret_cast<const char*>(&two), 4);
  want += '\x2a';
  want += static_cast<char>(value.size() + 2);
  want += '\x0a';
  want += static_cast<char>(value.size());
  want += value;
  EXPECT_EQ(e, want);
}

TEST(TensorBoardTest, TensorBoardReadsTheFile) {
  const std::string dir = ::testing::TempDir() + "/tb_test";
  std::filesystem::remove_all(dir);
  std::string path;
  {
    absl::StatusOr<TensorBoardWriter> w = TensorBoardWriter::Open(dir);
    ASSERT_TRUE(w.ok()) << w.status();
    path = w->path();
    for (int step = 1; step <= 3; ++step) {
      ASSERT_TRUE(w->AddScalars(step, {{"reward/mean", 0.25f * step}, {"x", -1.0f}}).ok());
    }
  }
  if (std::system("python3 -c 'import tensorboard' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "python3 tensorboard not installed; framing checked above";
  }
  const std::string script = dir + "/read.py";
  {
    std::ofstream py(script);
    py << "import sys\n"
          "from tensorboard.backend.event_processing import event_file_loader as l\n"
          "for e in l.EventFileLoader(sys.argv[1]).Load():\n"
          "    for v in e.summary.value:\n"
          "        val = v.simple_value if v.HasField('simple_value') else "
          "v.tensor.float_val[0]\n"
          "        print(e.step, v.tag, val)\n";
  }
  const std::string out = dir + "/out.txt";
  ASSERT_EQ(std::system(("python3 " + script + " " + path + " > " + out + " 2>/dev/null").c_str()),
            0);
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(),
            "1 reward/mean 0.25\n1 x -1.0\n2 reward/mean 0.5\n2 x -1.0\n3 reward/mean 0.75\n"
            "3 x -1.0\n");
}

}  // namespace
}  // namespace tandem::trainer
