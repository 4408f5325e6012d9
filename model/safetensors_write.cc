// safetensors writing: single files and sharded checkpoints. Every file is written to a temporary
// name, fsynced and renamed, so a reader never sees a half-written checkpoint file.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <numeric>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/core/bf16.h"
#include "kernels/core/status_macros.h"
#include "model/safetensors.h"
#include "nlohmann/json.hpp"

namespace tandem::model {
namespace {

using json = nlohmann::json;

const char* DTypeTag(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  return "?";
}

absl::Status IoError(const std::string& path, const char* what) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

// A write-only file with a user-space buffer; Commit fsyncs and renames it over its final name.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {}
  ~AtomicFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }

  absl::Status Open() {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    return fd_ < 0 ? IoError(tmp_, "cannot create") : absl::OkStatus();
  }

  absl::Status Write(const void* data, size_t n) {
    if (buffer_.size() + n > kBufferBytes) TANDEM_RETURN_IF_ERROR(Flush());
    if (n >= kBufferBytes) return WriteAll(data, n);
    const uint8_t* p = static_cast<const uint8_t*>(data);
    buffer_.insert(buffer_.end(), p, p + n);
    return absl::OkStatus();
  }

  absl::Status Commit() {
    TANDEM_RETURN_IF_ERROR(Flush());
    if (::fsync(fd_) != 0) return IoError(tmp_, "fsync failed");
    if (::close(fd_) != 0) {
      fd_ = -1;
      ::unlink(tmp_.c_str());
      return IoError(tmp_, "close failed");
    }
    fd_ = -1;
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      ::unlink(tmp_.c_str());
      return IoError(path_, "rename failed");
    }
    return absl::OkStatus();
  }

 private:
  static constexpr size_t kBufferBytes = size_t{4} << 20;

  absl::Status Flush() {
    TANDEM_RETURN_IF_ERROR(WriteAll(buffer_.data(), buffer_.size()));
    buffer_.clear();
    return absl::OkStatus();
  }

  absl::Status WriteAll(const void* data, size_t n) {
    const char* p = static_cast<const char*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return IoError(tmp_, "write failed");
      p += w;
      n -= static_cast<size_t>(w);
    }
    return absl::OkStatus();
  }

  std::string path_, tmp_;
  int fd_ = -1;
  std::vector<uint8_t> buffer_;
};

absl::Status WriteTensorData(AtomicFile& file, const TensorToWrite& t) {
  if (t.stored == t.tensor.dtype()) return file.Write(t.tensor.raw_data(), t.tensor.nbytes());
  // f32 → bf16, rounded to nearest even, in chunks.
  constexpr int64_t kChunk = int64_t{1} << 16;
  std::vector<uint16_t> bf16(kChunk);
  const float* src = t.tensor.data<float>();
  for (int64_t i = 0; i < t.tensor.numel(); i += kChunk) {
    const int64_t n = std::min(kChunk, t.tensor.numel() - i);
    for (int64_t k = 0; k < n; ++k) bf16[k] = FloatToBf16(src[i + k]);
    TANDEM_RETURN_IF_ERROR(file.Write(bf16.data(), n * sizeof(uint16_t)));
  }
  return absl::OkStatus();
}

absl::Status CheckWritable(const std::string& path, const std::vector<TensorToWrite>& tensors) {
  std::set<std::string> seen;
  for (const TensorToWrite& t : tensors) {
    auto error = [&](const std::string& msg) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", t.name, "': ", msg));
    };
    if (t.name.empty() || t.name == "__metadata__") return error("invalid tensor name");
    if (!seen.insert(t.name).second) return error("written twice");
    if (t.tensor.device() != Device::kCPU) return error("not a CPU tensor");
    if (!t.tensor.defined() && t.tensor.numel() != 0) return error("tensor has no data");
    const bool to_bf16 = t.stored == DType::kBF16 && t.tensor.dtype() == DType::kF32;
    if (t.stored != t.tensor.dtype() && !to_bf16) {
      return error(absl::StrCat("cannot store a ", DTypeName(t.tensor.dtype()), " tensor as ",
                                DTypeName(t.stored)));
    }
  }
  return absl::OkStatus();
}

void RemoveIfExists(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove(path, ec);
}

}  // namespace

absl::Status WriteFileAtomically(const std::string& path, const std::string& contents) {
  AtomicFile file(path);
  TANDEM_RETURN_IF_ERROR(file.Open());
  TANDEM_RETURN_IF_ERROR(file.Write(contents.data(), contents.size()));
  return file.Commit();
}

int64_t StoredBytes(const TensorToWrite& t) {
  return t.tensor.numel() * static_cast<int64_t>(DTypeSize(t.stored));
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  TANDEM_RETURN_IF_ERROR(CheckWritable(path, tensors));
  // Largest dtype first, so with an 8-aligned buffer start every tensor is aligned to its dtype.
  std::vector<size_t> order(tensors.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const size_t sa = DTypeSize(tensors[a].stored), sb = DTypeSize(tensors[b].stored);
    return sa != sb ? sa > sb : tensors[a].name < tensors[b].name;
  });
  json header = json::object();
  int64_t offset = 0;
  for (size_t i : order) {
    const TensorToWrite& t = tensors[i];
    header[t.name] = {{"dtype", DTypeTag(t.stored)},
                      {"shape", t.tensor.shape()},
                      {"data_offsets", {offset, offset + StoredBytes(t)}}};
    offset += StoredBytes(t);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the format allows trailing spaces
  uint8_t length[8];
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(uint64_t{text.size()} >> (8 * i));

  AtomicFile file(path);
  TANDEM_RETURN_IF_ERROR(file.Open());
  TANDEM_RETURN_IF_ERROR(file.Write(length, sizeof(length)));
  TANDEM_RETURN_IF_ERROR(file.Write(text.data(), text.size()));
  for (size_t i : order) TANDEM_RETURN_IF_ERROR(WriteTensorData(file, tensors[i]));
  return file.Commit();
}

absl::Status WriteSafetensorsIndex(const std::string& path, const SafetensorsIndex& index) {
  json j = {{"metadata", {{"total_size", index.total_size}}}, {"weight_map", index.weight_map}};
  return WriteFileAtomically(path, j.dump(2) + "\n");
}

absl::Status WriteSafetensorsCheckpoint(const std::string& dir,
                                        const std::vector<TensorToWrite>& tensors,
                                        int64_t max_shard_bytes) {
  const std::string single = dir + "/" + kSafetensorsFile;
  const std::string index_path = dir + "/" + kSafetensorsIndexFile;
  int64_t total = 0;
  for (const TensorToWrite& t : tensors) total += StoredBytes(t);
  if (total <= max_shard_bytes) {
    TANDEM_RETURN_IF_ERROR(WriteSafetensors(single, tensors));
    RemoveIfExists(index_path);
    return absl::OkStatus();
  }
  std::vector<std::vector<TensorToWrite>> shards(1);
  int64_t shard_bytes = 0;
  for (const TensorToWrite& t : tensors) {
    if (!shards.back().empty() && shard_bytes + StoredBytes(t) > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += StoredBytes(t);
  }
  SafetensorsIndex index;
  index.total_size = total;
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    TANDEM_RETURN_IF_ERROR(WriteSafetensors(dir + "/" + name, shards[s]));
    for (const TensorToWrite& t : shards[s]) index.weight_map[t.name] = name;
  }
  TANDEM_RETURN_IF_ERROR(WriteSafetensorsIndex(index_path, index));
  RemoveIfExists(single);
  return absl::OkStatus();
}

}  // namespace tandem::model
