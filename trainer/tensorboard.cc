// TensorBoard event writer: protobuf wire format by hand (varints, fixed32/64, length-delimited)
// and TFRecord framing with masked CRC-32C.
#include "trainer/tensorboard.h"

#include <unistd.h>

#include <array>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace tandem::trainer {
namespace {

std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> table{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    table[i] = c;
  }
  return table;
}

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

template <typename T>
void PutLittleEndian(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // x86-64 and aarch64 hosts are little-endian
  out.append(bytes, sizeof(T));
}

void PutBytesField(std::string& out, uint32_t field, const std::string& bytes) {
  PutVarint(out, (field << 3) | 2);  // wire type 2: length-delimited
  PutVarint(out, bytes.size());
  out += bytes;
}

double WallTime() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t Crc32c(const void* data, size_t n) {
  static const std::array<uint32_t, 256> table = MakeCrcTable();
  const auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t MaskedCrc32c(const void* data, size_t n) {
  const uint32_t c = Crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

std::string EncodeScalarEvent(double wall_time, int64_t step,
                              const std::vector<std::pair<std::string, float>>& scalars) {
  std::string summary;
  for (const auto& [tag, value] : scalars) {
    std::string v;
    PutBytesField(v, 1, tag);
    PutVarint(v, (2 << 3) | 5);  // simple_value, wire type 5: fixed32
    PutLittleEndian(v, value);
    PutBytesField(summary, 1, v);
  }
  std::string event;
  PutVarint(event, (1 << 3) | 1);  // wall_time, wire type 1: fixed64
  PutLittleEndian(event, wall_time);
  PutVarint(event, 2 << 3);  // step, varint
  PutVarint(event, static_cast<uint64_t>(step));
  PutBytesField(event, 5, summary);
  return event;
}

std::string FrameRecord(const std::string& data) {
  std::string out;
  const uint64_t length = data.size();
  PutLittleEndian(out, length);
  PutLittleEndian(out, MaskedCrc32c(out.data(), sizeof(length)));
  out += data;
  PutLittleEndian(out, MaskedCrc32c(data.data(), data.size()));
  return out;
}

absl::StatusOr<TensorBoardWriter> TensorBoardWriter::Open(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot create: ", ec.message()));
  char host[256] = "localhost";
  gethostname(host, sizeof(host) - 1);
  const double now = WallTime();
  const std::string path =
      (std::filesystem::path(dir) /
       absl::StrCat("events.out.tfevents.", static_cast<int64_t>(now), ".", host, ".", getpid()))
          .string();
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return absl::InternalError(absl::StrCat(path, ": cannot open for writing"));
  TensorBoardWriter writer(path, f);
  std::string first;
  PutVarint(first, (1 << 3) | 1);
  PutLittleEndian(first, now);
  PutBytesField(first, 3, "brain.Event:2");
  absl::Status s = writer.Write(FrameRecord(first));
  if (!s.ok()) return s;
  return writer;
}

TensorBoardWriter::TensorBoardWriter(TensorBoardWriter&& other) noexcept
    : path_(std::move(other.path_)), file_(std::exchange(other.file_, nullptr)) {}

TensorBoardWriter& TensorBoardWriter::operator=(TensorBoardWriter&& other) noexcept {
  if (this != &other) {
    if (file_ != nullptr) std::fclose(file_);
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, nullptr);
  }
  return *this;
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

absl::Status TensorBoardWriter::Write(const std::string& record) {
  if (std::fwrite(record.data(), 1, record.size(), file_) != record.size() ||
      std::fflush(file_) != 0) {
    return absl::DataLossError(absl::StrCat(path_, ": write failed"));
  }
  return absl::OkStatus();
}

absl::Status TensorBoardWriter::AddScalars(
    int64_t step, const std::vector<std::pair<std::string, float>>& scalars) {
  return Write(FrameRecord(EncodeScalarEvent(WallTime(), step, scalars)));
}

}  // namespace tandem::trainer
