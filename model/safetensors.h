// safetensors files (https://github.com/huggingface/safetensors#format), read through mmap and
// written atomically, plus HF sharded checkpoints (model.safetensors.index.json). Format:
//   file   := u64-LE N | header (N bytes of UTF-8 JSON, starts with '{', may end in spaces) |
//   buffer header := { name: {"dtype": D, "shape": [d0, ...], "data_offsets": [begin, end]}, ...,
//               "__metadata__": {string: string} (optional) }
// Offsets are relative to the buffer start; the tensors cover the buffer exactly, without overlap.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/core/tensor.h"

namespace tandem::model {

struct SafetensorsEntry {
  DType dtype = DType::kF32;  // as stored: F32, BF16, I32 or I64
  Shape shape;
  int64_t begin = 0;  // byte offsets into the data buffer, [begin, end)
  int64_t end = 0;
};

// One safetensors file, mapped read-only (copy-on-write) into memory. Opening validates the whole
// header: its length against the file size, the JSON, each entry's dtype, shape and offsets, that
// sizes match shape × dtype, and that the tensors tile the buffer. Every error names the file (and
// the tensor). Thread-safe after Open: all methods are const.
class SafetensorsFile {
 public:
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The header entry of `name`, or null.
  const SafetensorsEntry* Find(const std::string& name) const;

  // The tensor as stored. Zero-copy: a view into the mapping that stays valid while this object
  // lives (writes through it stay private to the process). When the producer left the data
  // unaligned for its dtype (unpadded headers), returns an aligned owning copy instead.
  absl::StatusOr<Tensor> Get(const std::string& name) const;
  // Converts `name` into `out` (numel floats): F32 copied, BF16 widened exactly. Integer tensors
  // are an error naming the file and tensor.
  absl::Status ReadAsF32(const std::string& name, float* out) const;

 private:
  SafetensorsFile() = default;
  absl::Status ParseHeader(const std::string& header, int64_t buffer_size);
  const uint8_t* entry_data(const SafetensorsEntry& e) const { return buffer_ + e.begin; }

  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const uint8_t* buffer_ = nullptr;
  std::map<std::string, SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to write. `stored` is the dtype in the file: the tensor's own dtype, or BF16 from an F32
// tensor (rounded to nearest even, converted in chunks, so no bf16 copy of the model is made).
struct TensorToWrite {
  std::string name;
  Tensor tensor;  // CPU
  DType stored = DType::kF32;
};

// Bytes `t` takes in a file.
int64_t StoredBytes(const TensorToWrite& t);

// Writes one file: header with sorted names, padded with spaces to a multiple of 8 bytes; data
// ordered by dtype size (largest first) then name, so every tensor is aligned to its dtype. Goes to
// `path`.tmp, is fsynced, then renamed over `path`.
absl::Status WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                              const std::map<std::string, std::string>& metadata = {
                                  {"format", "pt"}});

// Writes `contents` to `path`.tmp, fsyncs it and renames it over `path`.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);

// model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {name: file}}.
struct SafetensorsIndex {
  int64_t total_size = 0;  // bytes of tensor data over all shards
  std::map<std::string, std::string> weight_map;
};
absl::StatusOr<SafetensorsIndex> ReadSafetensorsIndex(const std::string& path);
absl::Status WriteSafetensorsIndex(const std::string& path, const SafetensorsIndex& index);

inline constexpr char kSafetensorsFile[] = "model.safetensors";
inline constexpr char kSafetensorsIndexFile[] = "model.safetensors.index.json";

// Writes `tensors` into the existing directory `dir`: one model.safetensors when the data fits in
// max_shard_bytes, else shards model-0000i-of-0000n.safetensors (filled in the given order; a
// tensor larger than the limit gets a shard of its own) plus the index. A stale single file or
// index from an earlier save of the other layout is removed.
absl::Status WriteSafetensorsCheckpoint(const std::string& dir,
                                        const std::vector<TensorToWrite>& tensors,
                                        int64_t max_shard_bytes);

// The tensors of a checkpoint directory: the shards of model.safetensors.index.json when it
// exists, else model.safetensors. Every tensor the index names must be in its shard.
class SafetensorsCheckpoint {
 public:
  static absl::StatusOr<SafetensorsCheckpoint> Open(const std::string& dir);
  // The file holding `name`, or null.
  const SafetensorsFile* FileOf(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
};

}  // namespace tandem::model
