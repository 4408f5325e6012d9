// TensorBoard event files without TensorFlow: scalar summaries written as TFRecords of Event
// protos, encoded by hand (the few fields needed). File grammar:
//   file   := record*                          (first record: Event{wall_time, file_version})
//   record := uint64 length | uint32 masked_crc32c(length bytes) | data[length]
//             | uint32 masked_crc32c(data)      (little-endian)
//   masked_crc32c(x) := ((c >> 15) | (c << 17)) + 0xa282ead8,  c = CRC-32C (Castagnoli) of x
//   Event   := 1: double wall_time, 2: int64 step, 3: string file_version ("brain.Event:2"),
//              5: Summary summary
//   Summary := repeated 1: Value;   Value := 1: string tag, 2: float simple_value
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace tandem::trainer {

// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as TFRecord uses.
uint32_t Crc32c(const void* data, size_t n);
uint32_t MaskedCrc32c(const void* data, size_t n);

// The serialized Event carrying one step's scalars.
std::string EncodeScalarEvent(double wall_time, int64_t step,
                              const std::vector<std::pair<std::string, float>>& scalars);
// One TFRecord frame around `data`.
std::string FrameRecord(const std::string& data);

// Appends events to <dir>/events.out.tfevents.<seconds>.<host>.<pid>. Not thread-safe.
class TensorBoardWriter {
 public:
  static absl::StatusOr<TensorBoardWriter> Open(const std::string& dir);
  TensorBoardWriter(TensorBoardWriter&& other) noexcept;
  TensorBoardWriter& operator=(TensorBoardWriter&& other) noexcept;
  ~TensorBoardWriter();

  // Writes the step's scalars as one event and flushes.
  absl::Status AddScalars(int64_t step, const std::vector<std::pair<std::string, float>>& scalars);
  const std::string& path() const { return path_; }

 private:
  TensorBoardWriter(std::string path, std::FILE* file) : path_(std::move(path)), file_(file) {}
  absl::Status Write(const std::string& record);

  std::string path_;
  std::FILE* file_ = nullptr;
};

}  // namespace tandem::trainer
