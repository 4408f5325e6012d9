// safetensors reading: mmap the file, validate the header completely before exposing any tensor,
// and hand out zero-copy views. A corrupted or hostile file gives an error naming the file and
// tensor, never a crash. Writing lives in safetensors_write.cc.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "kernels/core/bf16.h"
#include "kernels/core/status_macros.h"
#include "nlohmann/json.hpp"

namespace tandem::model {
namespace {

using json = nlohmann::json;

// The reference implementation refuses headers above 100 MB, so nothing legitimate is larger.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

absl::Status FileError(const std::string& path, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": ", msg));
}

absl::Status TensorError(const std::string& path, const std::string& name, const std::string& msg) {
  return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", name, "': ", msg));
}

// Maps a safetensors dtype tag to ours; a tag we know but do not read is `unsupported`.
bool ParseDType(const std::string& tag, DType* dtype, bool* unsupported) {
  static const std::map<std::string, DType> kSupported = {
      {"F32", DType::kF32}, {"BF16", DType::kBF16}, {"I32", DType::kI32}, {"I64", DType::kI64}};
  static const std::set<std::string> kKnown = {"BOOL",    "U8",      "I8",  "U16",     "I16",
                                               "F16",     "U32",     "F64", "U64",     "F8_E4M3",
                                               "F8_E5M2", "F8_E8M0", "F4",  "F6_E2M3", "F6_E3M2"};
  auto it = kSupported.find(tag);
  if (it != kSupported.end()) {
    *dtype = it->second;
    return true;
  }
  *unsupported = kKnown.count(tag) > 0;
  return false;
}

absl::StatusOr<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name,
                                            const json& v, int64_t buffer_size) {
  if (!v.is_object()) return TensorError(path, name, "header entry is not a JSON object");
  SafetensorsEntry e;
  auto dtype = v.find("dtype");
  if (dtype == v.end() || !dtype->is_string()) {
    return TensorError(path, name, "missing or non-string \"dtype\"");
  }
  bool unsupported = false;
  if (!ParseDType(dtype->get<std::string>(), &e.dtype, &unsupported)) {
    return TensorError(path, name,
                       absl::StrCat(unsupported ? "dtype " : "unknown dtype ", dtype->dump(),
                                    unsupported ? " is not supported" : "",
                                    " (Tandem reads F32, BF16, I32, I64)"));
  }
  auto shape = v.find("shape");
  if (shape == v.end() || !shape->is_array()) return TensorError(path, name, "missing \"shape\"");
  int64_t numel = 1;
  for (const json& d : *shape) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0 ||
        __builtin_mul_overflow(numel, d.get<int64_t>(), &numel)) {
      return TensorError(path, name, absl::StrCat("invalid shape ", shape->dump()));
    }
    e.shape.push_back(d.get<int64_t>());
  }
  auto offsets = v.find("data_offsets");
  if (offsets == v.end() || !offsets->is_array() || offsets->size() != 2 ||
      !(*offsets)[0].is_number_integer() || !(*offsets)[1].is_number_integer() ||
      (*offsets)[0].get<int64_t>() < 0 || (*offsets)[1].get<int64_t>() < (*offsets)[0]) {
    return TensorError(path, name, "\"data_offsets\" must be [begin, end] with 0 <= begin <= end");
  }
  e.begin = (*offsets)[0].get<int64_t>();
  e.end = (*offsets)[1].get<int64_t>();
  if (e.end > buffer_size) {
    return TensorError(path, name,
                       absl::StrCat("data_offsets ", offsets->dump(), " lie outside the ",
                                    buffer_size, "-byte data buffer"));
  }
  int64_t bytes = 0;
  if (__builtin_mul_overflow(numel, static_cast<int64_t>(DTypeSize(e.dtype)), &bytes) ||
      bytes != e.end - e.begin) {
    return TensorError(
        path, name,
        absl::StrCat("data_offsets span ", e.end - e.begin, " bytes but shape ", shape->dump(),
                     " of ", dtype->get<std::string>(), " needs ", bytes));
  }
  return e;
}

}  // namespace

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FileError(path, "not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    return FileError(
        path, absl::StrCat("file is ", size, " bytes, too short for the 8-byte header length"));
  }
  // Private and writable: views handed out may be written without touching the file.
  void* map = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map == MAP_FAILED) {
    return absl::InternalError(absl::StrCat(path, ": mmap failed: ", std::strerror(errno)));
  }
  f->map_ = map;
  f->map_size_ = size;
  const uint8_t* base = static_cast<const uint8_t*>(map);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];  // little-endian u64
  if (n > size - 8) {
    return FileError(path, absl::StrCat("header length ", n, " exceeds the ", size - 8,
                                        " bytes that follow it (truncated or corrupted file)"));
  }
  if (n > kMaxHeaderBytes) {
    return FileError(path, absl::StrCat("header length ", n, " exceeds the 100 MB limit"));
  }
  f->buffer_ = base + 8 + n;
  std::string header(reinterpret_cast<const char*>(base + 8), n);
  TANDEM_RETURN_IF_ERROR(f->ParseHeader(header, static_cast<int64_t>(size - 8 - n)));
  return f;
}

absl::Status SafetensorsFile::ParseHeader(const std::string& header, int64_t buffer_size) {
  if (header.empty() || header[0] != '{') return FileError(path_, "header does not start with '{'");
  json j;
  try {
    j = json::parse(header);
  } catch (const json::exception& e) {
    return FileError(path_, absl::StrCat("header is not valid JSON: ", e.what()));
  }
  if (!j.is_object()) return FileError(path_, "header is not a JSON object");
  for (const auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return FileError(path_, "\"__metadata__\" is not an object");
      for (const auto& [key, value] : v.items()) {
        if (!value.is_string()) {
          return FileError(path_,
                           absl::StrCat("\"__metadata__\" value of '", key, "' is not a string"));
        }
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    TANDEM_ASSIGN_OR_RETURN(entries_[name], ParseEntry(path_, name, v, buffer_size));
  }
  // The tensors must tile the buffer: sorted by offset, each starts where the previous ended.
  std::vector<std::tuple<int64_t, int64_t, std::string>> spans;
  for (const auto& [name, e] : entries_) spans.emplace_back(e.begin, e.end, name);
  std::sort(spans.begin(), spans.end());
  int64_t pos = 0;
  std::string previous;
  for (const auto& [begin, end, name] : spans) {
    if (begin < pos) {
      return TensorError(path_, name, absl::StrCat("data overlaps tensor '", previous, "'"));
    }
    if (begin > pos) {
      return TensorError(
          path_, name,
          absl::StrCat("bytes [", pos, ", ", begin, ") before it belong to no tensor"));
    }
    pos = end;
    previous = name;
  }
  if (pos != buffer_size) {
    return FileError(path_, absl::StrCat("tensors cover ", pos, " bytes of the ", buffer_size,
                                         "-byte data buffer"));
  }
  return absl::OkStatus();
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  for (const auto& [name, e] : entries_) out.push_back(name);
  return out;
}

const SafetensorsEntry* SafetensorsFile::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

absl::StatusOr<Tensor> SafetensorsFile::Get(const std::string& name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  const uint8_t* p = entry_data(*e);
  if (reinterpret_cast<uintptr_t>(p) % DTypeSize(e->dtype) != 0) {
    Tensor copy = Tensor::Empty(e->shape, e->dtype);
    std::memcpy(copy.raw_data(), p, e->end - e->begin);
    return copy;
  }
  return Tensor::View(const_cast<uint8_t*>(p), e->shape, e->dtype);
}

absl::Status SafetensorsFile::ReadAsF32(const std::string& name, float* out) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr) return absl::NotFoundError(absl::StrCat(path_, ": no tensor '", name, "'"));
  const uint8_t* p = entry_data(*e);
  if (e->dtype == DType::kF32) {
    std::memcpy(out, p, e->end - e->begin);
  } else if (e->dtype == DType::kBF16) {
    const int64_t n = (e->end - e->begin) / 2;
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, p + 2 * i, 2);
      out[i] = Bf16ToFloat(h);
    }
  } else {
    return TensorError(
        path_, name,
        absl::StrCat("expected a floating-point tensor (F32 or BF16), got ", DTypeName(e->dtype)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsIndex> ReadSafetensorsIndex(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": cannot open the checkpoint index"));
  }
  json j;
  try {
    std::ifstream in(path);
    j = json::parse(in);
  } catch (const json::exception& e) {
    return FileError(path, absl::StrCat("not valid JSON: ", e.what()));
  }
  SafetensorsIndex index;
  auto map = j.is_object() ? j.find("weight_map") : j.end();
  if (!j.is_object() || map == j.end() || !map->is_object()) {
    return FileError(path, "expected an object with a \"weight_map\" object");
  }
  for (const auto& [name, file] : map->items()) {
    if (!file.is_string() || file.get<std::string>().empty()) {
      return TensorError(path, name, "weight_map entry is not a file name");
    }
    index.weight_map[name] = file.get<std::string>();
  }
  auto meta = j.find("metadata");
  if (meta != j.end() && meta->is_object()) {
    auto total = meta->find("total_size");
    if (total != meta->end() && total->is_number_integer()) {
      index.total_size = total->get<int64_t>();
    }
  }
  return index;
}

absl::StatusOr<SafetensorsCheckpoint> SafetensorsCheckpoint::Open(const std::string& dir) {
  SafetensorsCheckpoint ckpt;
  const std::string index_path = dir + "/" + kSafetensorsIndexFile;
  std::error_code ec;
  if (!std::filesystem::exists(index_path, ec)) {
    TANDEM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(dir + "/" + kSafetensorsFile));
    for (const std::string& name : file->names()) ckpt.where_[name] = file.get();
    ckpt.files_.push_back(std::move(file));
    return ckpt;
  }
  TANDEM_ASSIGN_OR_RETURN(SafetensorsIndex index, ReadSafetensorsIndex(index_path));
  std::map<std::string, const SafetensorsFile*> opened;
  for (const auto& [name, file_name] : index.weight_map) {
    if (!opened.count(file_name)) {
      TANDEM_ASSIGN_OR_RETURN(auto file, SafetensorsFile::Open(absl::StrCat(dir, "/", file_name)));
      opened[file_name] = file.get();
      ckpt.files_.push_back(std::move(file));
    }
    const SafetensorsFile* file = opened[file_name];
    if (file->Find(name) == nullptr) {
      return TensorError(index_path, name,
                         absl::StrCat("mapped to ", file_name, ", which does not contain it"));
    }
    ckpt.where_[name] = file;
  }
  return ckpt;
}

const SafetensorsFile* SafetensorsCheckpoint::FileOf(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [name, file] : where_) out.push_back(name);
  return out;
}

}  // namespace tandem::model
