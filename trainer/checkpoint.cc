// Checkpoint save (temp dir → fsync → rename → fsync root → prune) and load.
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/safetensors.h"

namespace tandem::trainer {
namespace {

namespace fs = std::filesystem;

constexpr char kStepPrefix[] = "step-";
constexpr char kTmpPrefix[] = ".tmp-step-";
constexpr char kLoopStateFile[] = "loop_state.json";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kRunConfigFile[] = "run_config.yaml";
constexpr char kLoopStateFormat[] = "tandem.loop_state.v1";

absl::Status ErrnoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(path, ": ", what, ": ", std::strerror(errno)));
}

absl::Status FsyncPath(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return ErrnoError("open for fsync", path);
  const int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return ErrnoError("fsync", path);
  return absl::OkStatus();
}

// fsyncs every file under `dir`, then every directory bottom-up, `dir` last.
absl::Status FsyncTree(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> dirs;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory()) {
      dirs.push_back(it->path().string());
    } else {
      TANDEM_RETURN_IF_ERROR(FsyncPath(it->path().string(), false));
    }
  }
  if (ec) return absl::InternalError(absl::StrCat(dir, ": cannot list: ", ec.message()));
  std::sort(dirs.rbegin(), dirs.rend());  // children sort after their parents
  for (const std::string& d : dirs) TANDEM_RETURN_IF_ERROR(FsyncPath(d, true));
  return FsyncPath(dir, true);
}

absl::Status WriteFile(const std::string& path, const std::string& content) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return ErrnoError("open for writing", path);
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      return ErrnoError("write", path);
    }
    done += static_cast<size_t>(n);
  }
  if (::close(fd) != 0) return ErrnoError("close", path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// step-<N> → N; nullopt for any other name.
std::optional<int64_t> ParseStepName(const std::string& name) {
  if (!absl::StartsWith(name, kStepPrefix)) return std::nullopt;
  const std::string digits = name.substr(std::strlen(kStepPrefix));
  int64_t step = 0;
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos ||
      !absl::SimpleAtoi(digits, &step)) {
    return std::nullopt;
  }
  return step;
}

// Complete checkpoints under root, ascending by step.
std::vector<int64_t> ListSteps(const std::string& root) {
  std::vector<int64_t> steps;
  std::error_code ec;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::end(it); it.increment(ec)) {
    const auto step = ParseStepName(it->path().filename().string());
    if (step && fs::exists(it->path() / kLoopStateFile)) steps.push_back(*step);
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

nlohmann::json LoopStateToJson(const LoopState& s) {
  // 64-bit unsigned values as strings: JSON readers may round integers above 2^53.
  return {{"format", kLoopStateFormat},
          {"step", s.step},
          {"seed", std::to_string(s.seed)},
          {"rng_offset", std::to_string(s.rng_offset)},
          {"data_cursor", s.data_cursor.ToJson()},
          {"extra", s.extra}};
}

absl::StatusOr<LoopState> LoopStateFromJson(const nlohmann::json& j, const std::string& path) {
  auto bad = [&](const char* field) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": field '", field, "' missing or bad"));
  };
  if (!j.is_object() || j.value("format", "") != kLoopStateFormat) return bad("format");
  LoopState s;
  if (!j.contains("step") || !j["step"].is_number_integer()) return bad("step");
  s.step = j["step"].get<int64_t>();
  for (auto [field, out] : {std::pair{"seed", &s.seed}, std::pair{"rng_offset", &s.rng_offset}}) {
    if (!j.contains(field) || !j[field].is_string() ||
        !absl::SimpleAtoi(j[field].get<std::string>(), out)) {
      return bad(field);
    }
  }
  if (!j.contains("data_cursor")) return bad("data_cursor");
  auto cursor = DataCursor::FromJson(j["data_cursor"]);
  if (!cursor.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", cursor.status().message()));
  }
  s.data_cursor = *cursor;
  s.extra = j.value("extra", nlohmann::json::object());
  return s;
}

absl::Status SaveOptimizer(const std::string& path, const OptimizerState& state) {
  std::vector<model::TensorToWrite> tensors;
  state.m.ForEachParameter([&](const std::string& name, const Tensor& t) {
    tensors.push_back({"exp_avg." + name, t, DType::kF32});
  });
  state.v.ForEachParameter([&](const std::string& name, const Tensor& t) {
    tensors.push_back({"exp_avg_sq." + name, t, DType::kF32});
  });
  return model::WriteSafetensors(
      path, tensors,
      {{"format", "pt"}, {"optimizer", "adamw"}, {"step", std::to_string(state.step)}});
}

absl::StatusOr<OptimizerState> LoadOptimizer(const std::string& path,
                                             const model::ModelConfig& config) {
  TANDEM_ASSIGN_OR_RETURN(auto file, model::SafetensorsFile::Open(path));
  OptimizerState state{0, model::AllocateWeights(config), model::AllocateWeights(config)};
  const auto it = file->metadata().find("step");
  if (it == file->metadata().end() || !absl::SimpleAtoi(it->second, &state.step)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": __metadata__.step missing or bad"));
  }
  absl::Status status;
  auto read = [&](const std::string& prefix, model::ModelWeights& w) {
    w.ForEachParameter([&](const std::string& name, Tensor& t) {
      if (!status.ok()) return;
      const model::SafetensorsEntry* e = file->Find(prefix + name);
      if (e == nullptr || e->shape != t.shape()) {
        status = absl::InvalidArgumentError(absl::StrCat(
            path, ": tensor ", prefix, name, e == nullptr ? " missing" : " has the wrong shape ",
            e == nullptr ? "" : ShapeString(e->shape), " (expected ", ShapeString(t.shape()), ")"));
        return;
      }
      status = file->ReadAsF32(prefix + name, t.data<float>());
    });
  };
  read("exp_avg.", state.m);
  read("exp_avg_sq.", state.v);
  TANDEM_RETURN_IF_ERROR(status);
  return state;
}

// Removes stale temporary directories and all but the newest keep_last checkpoints.
void Prune(const std::string& root, int64_t keep_last) {
  std::error_code ec;
  for (auto it = fs::directory_iterator(root, ec); !ec && it != fs::end(it); it.increment(ec)) {
    if (absl::StartsWith(it->path().filename().string(), kTmpPrefix)) {
      fs::remove_all(it->path(), ec);
    }
  }
  std::vector<int64_t> steps = ListSteps(root);
  for (size_t i = 0; i + keep_last < steps.size(); ++i) {
    fs::remove_all(CheckpointDir(root, steps[i]), ec);
  }
}

}  // namespace

std::string CheckpointDir(const std::string& root, int64_t step) {
  return absl::StrCat(root, "/", kStepPrefix, step);
}

absl::StatusOr<std::string> SaveTrainingCheckpoint(const std::string& root, int64_t step,
                                                   const CheckpointContents& c,
                                                   const CheckpointOptions& options) {
  TANDEM_CHECK_ARG(c.config && c.weights && c.optimizer,
                   "contents: config, weights and "
                   "optimizer are required");
  TANDEM_CHECK_ARG(step >= 0, "step: expected >= 0, got ", step);
  TANDEM_CHECK_ARG(options.keep_last >= 1, "keep_last: expected >= 1, got ", options.keep_last);
  const std::string final_dir = CheckpointDir(root, step);
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    return absl::FailedPreconditionError(absl::StrCat(final_dir, ": already exists"));
  }
  fs::create_directories(root, ec);
  if (ec) return absl::InternalError(absl::StrCat(root, ": cannot create: ", ec.message()));
  const std::string tmp = absl::StrCat(root, "/", kTmpPrefix, step, "-", ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  if (ec) return absl::InternalError(absl::StrCat(tmp, ": cannot create: ", ec.message()));
  auto stage = [&](const char* name) {
    if (options.after_stage) options.after_stage(name);
  };
  TANDEM_RETURN_IF_ERROR(model::SaveCheckpoint(*c.config, *c.weights, tmp + "/model", DType::kF32));
  TANDEM_RETURN_IF_ERROR(FsyncTree(tmp + "/model"));
  stage("model");
  TANDEM_RETURN_IF_ERROR(SaveOptimizer(tmp + "/" + kOptimizerFile, *c.optimizer));
  stage("optimizer");
  // loop_state.json marks a complete checkpoint (ListSteps), so it is written after the others.
  TANDEM_RETURN_IF_ERROR(WriteFile(tmp + "/" + kRunConfigFile, c.run_config_yaml));
  stage("run_config");
  TANDEM_RETURN_IF_ERROR(WriteFile(tmp + "/" + kLoopStateFile, LoopStateToJson(c.loop).dump(2)));
  stage("loop_state");
  TANDEM_RETURN_IF_ERROR(FsyncTree(tmp));
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    return ErrnoError("rename to " + final_dir, tmp);
  }
  TANDEM_RETURN_IF_ERROR(FsyncPath(root, true));
  stage("committed");
  Prune(root, options.keep_last);
  return final_dir;
}

absl::StatusOr<std::optional<int64_t>> LatestCheckpointStep(const std::string& root) {
  std::error_code ec;
  if (!fs::exists(root, ec)) return std::optional<int64_t>();
  if (!fs::is_directory(root, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(root, ": not a directory"));
  }
  std::vector<int64_t> steps = ListSteps(root);
  if (steps.empty()) return std::optional<int64_t>();
  return std::optional<int64_t>(steps.back());
}

absl::StatusOr<std::optional<std::string>> ResolveResume(const std::string& root,
                                                         const std::string& resume) {
  if (resume == "none") return std::optional<std::string>();
  if (resume == "auto") {
    TANDEM_ASSIGN_OR_RETURN(auto step, LatestCheckpointStep(root));
    if (!step) return std::optional<std::string>();
    return std::optional<std::string>(CheckpointDir(root, *step));
  }
  std::error_code ec;
  if (!fs::exists(fs::path(resume) / kLoopStateFile, ec)) {
    return absl::NotFoundError(
        absl::StrCat("checkpoint.resume: ", resume, " is not a complete checkpoint directory"));
  }
  return std::optional<std::string>(resume);
}

absl::StatusOr<LoadedCheckpoint> LoadTrainingCheckpoint(const std::string& dir) {
  LoadedCheckpoint out;
  TANDEM_ASSIGN_OR_RETURN(out.config, model::LoadModelConfig(dir + "/model"));
  TANDEM_ASSIGN_OR_RETURN(out.weights, model::LoadWeights(out.config, dir + "/model"));
  TANDEM_ASSIGN_OR_RETURN(out.optimizer, LoadOptimizer(dir + "/" + kOptimizerFile, out.config));
  const std::string loop_path = dir + "/" + kLoopStateFile;
  TANDEM_ASSIGN_OR_RETURN(std::string loop_text, ReadFile(loop_path));
  nlohmann::json j = nlohmann::json::parse(loop_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::InvalidArgumentError(loop_path + ": not valid JSON");
  TANDEM_ASSIGN_OR_RETURN(out.loop, LoopStateFromJson(j, loop_path));
  TANDEM_ASSIGN_OR_RETURN(out.run_config_yaml, ReadFile(dir + "/" + kRunConfigFile));
  return out;
}

}  // namespace tandem::trainer
