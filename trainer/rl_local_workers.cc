// The embedded default's rollout workers: `tandem rollout serve` processes on loopback, each on a
// free port it picks itself and reports as its first stdout line; and remote workers by address.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/core/status_macros.h"
#include "model/weights_hash.h"
#include "nlohmann/json.hpp"
#include "trainer/rl_grpc_worker.h"

extern char** environ;

namespace tandem::trainer {
namespace {

std::string SelfExecutable() {
  std::error_code ec;
  const auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string("tandem") : p.string();
}

struct Spawned {
  pid_t pid = -1;
  int stdout_fd = -1;
};

// Starts `argv` with stdout to a pipe and stderr to `log_path`.
absl::StatusOr<Spawned> Spawn(const std::vector<std::string>& argv, const std::string& log_path) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::InternalError("rollout workers: pipe failed");
  const int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return absl::InternalError(absl::StrCat(log_path, ": cannot open"));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, log, STDERR_FILENO);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  close(log);
  if (rc != 0) {
    close(out[0]);
    return absl::InternalError(
        absl::StrCat("rollout workers: cannot start ", argv[0], ": ", std::strerror(rc)));
  }
  return Spawned{pid, out[0]};
}

// The first stdout line of a spawned server: {"port": P, ...}.
absl::StatusOr<int> ReadPort(int fd, const std::string& log_path, double timeout_s) {
  std::string line;
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(int64_t(timeout_s * 1000));
  while (line.find('\n') == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      return absl::DeadlineExceededError(absl::StrCat("rollout worker did not report its port in ",
                                                      timeout_s, " s (log: ", log_path, ")"));
    }
    char buf[256];
    const ssize_t got = read(fd, buf, sizeof(buf));
    if (got <= 0) {
      return absl::UnavailableError(
          absl::StrCat("rollout worker exited before listening (log: ", log_path, ")"));
    }
    line.append(buf, got);
  }
  const nlohmann::json j = nlohmann::json::parse(line.substr(0, line.find('\n')), nullptr, false);
  if (!j.is_object() || !j.contains("port") || !j["port"].is_number_integer()) {
    return absl::InternalError(absl::StrCat("rollout worker printed '", line, "', not a port"));
  }
  return j["port"].get<int>();
}

GrpcWorker::Options WorkerOptions(const RlRunConfig& config) {
  GrpcWorker::Options o;
  o.request_timeout = absl::Seconds(config.rollout.request_timeout_s);
  o.update_timeout = absl::Seconds(std::max(60.0, config.rollout.request_timeout_s));
  o.concurrency = static_cast<int>(std::max<int64_t>(4, config.data.prompts_per_step));
  return o;
}

// The worker serves exactly the trainer's weight bits as `version`.
absl::Status CheckServes(GrpcWorker& w, int64_t version, uint64_t hash) {
  TANDEM_ASSIGN_OR_RETURN(v1::RolloutStatus status, w.GetStatus(absl::Seconds(10)));
  if (status.weight_version() != version || status.weights_hash() != hash) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rollout worker ", w.name(), " serves version ", status.weight_version(), " hash ",
        status.weights_hash(), "; the trainer holds version ", version, " hash ", hash));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> SpawnLocalWorkers(
    const RlRunConfig& config, const model::ModelConfig& model_config,
    const model::ModelWeights& weights, int64_t version) {
  const std::filesystem::path out(config.trainer.output_dir);
  const std::string model_dir = (out / "rollout-init").string();
  std::error_code ec;
  std::filesystem::remove_all(model_dir, ec);
  std::filesystem::create_directories(out / "rollout-workers", ec);
  TANDEM_RETURN_IF_ERROR(model::SaveCheckpoint(model_config, weights, model_dir, DType::kF32));
  const RlRunConfig::Rollout& r = config.rollout;
  const std::string binary = r.server_binary.empty() ? SelfExecutable() : r.server_binary;
  // Start every process first, then connect: they load and bind concurrently.
  std::vector<Spawned> spawned;
  std::vector<std::string> logs;
  for (int64_t i = 0; i < r.workers; ++i) {
    logs.push_back((out / "rollout-workers" / absl::StrCat("worker-", i, ".log")).string());
    const std::vector<std::string> argv = {binary,
                                           "rollout",
                                           "serve",
                                           "--model",
                                           model_dir,
                                           "--host",
                                           "127.0.0.1",
                                           "--port",
                                           "0",
                                           "--threads",
                                           absl::StrCat(r.threads_per_worker),
                                           "--memory-bytes",
                                           absl::StrCat(r.memory_mb << 20),
                                           "--max-sequences",
                                           absl::StrCat(r.max_sequences),
                                           "--max-step-tokens",
                                           absl::StrCat(r.max_step_tokens),
                                           "--weight-version",
                                           absl::StrCat(version)};
    absl::StatusOr<Spawned> s = Spawn(argv, logs.back());
    if (!s.ok()) {
      for (const Spawned& p : spawned) {
        kill(p.pid, SIGKILL);
        waitpid(p.pid, nullptr, 0);
      }
      return s.status();
    }
    spawned.push_back(*s);
  }
  std::vector<std::unique_ptr<RolloutWorker>> workers;
  absl::Status status;
  const uint64_t hash = model::WeightsHash(weights);
  for (size_t i = 0; i < spawned.size(); ++i) {
    GrpcWorker::Options o = WorkerOptions(config);
    o.pid = spawned[i].pid;  // from here the worker owns (and stops) the process
    absl::StatusOr<int> port = ReadPort(spawned[i].stdout_fd, logs[i], 60);
    close(spawned[i].stdout_fd);
    absl::StatusOr<std::unique_ptr<GrpcWorker>> w =
        port.ok() ? GrpcWorker::Connect(absl::StrCat("127.0.0.1:", *port), o, absl::Seconds(30))
                  : absl::StatusOr<std::unique_ptr<GrpcWorker>>(port.status());
    if (!w.ok()) {
      if (status.ok()) status = w.status();
      kill(spawned[i].pid, SIGKILL);
      waitpid(spawned[i].pid, nullptr, 0);
      continue;
    }
    if (status.ok()) status = CheckServes(**w, version, hash);
    workers.push_back(*std::move(w));
  }
  TANDEM_RETURN_IF_ERROR(status);  // destroying `workers` stops the started ones
  return workers;
}

absl::StatusOr<std::vector<std::unique_ptr<RolloutWorker>>> ConnectRemoteWorkers(
    const RlRunConfig& config, const model::ModelWeights& weights, int64_t version) {
  std::vector<std::unique_ptr<RolloutWorker>> workers;
  for (const std::string& address : config.rollout.addresses) {
    TANDEM_ASSIGN_OR_RETURN(std::unique_ptr<GrpcWorker> w,
                            GrpcWorker::Connect(address, WorkerOptions(config), absl::Seconds(30)));
    if (CheckServes(*w, version, model::WeightsHash(weights)).ok()) {
      workers.push_back(std::move(w));
      continue;
    }
    absl::StatusOr<uint64_t> hash =
        w->UpdateWeights(version, weights, rollout::WeightUpdateMode::kDrain);
    if (!hash.ok()) {
      return absl::FailedPreconditionError(
          absl::StrCat("rollout.addresses: cannot bring ", address, " to weight version ", version,
                       ": ", hash.status().message(),
                       " (a worker must serve a version below the trainer's; "
                       "restart it with --weight-version below ",
                       version, ")"));
    }
    workers.push_back(std::move(w));
  }
  return workers;
}

}  // namespace tandem::trainer
