// Worker processes for IsolatedPlugin: start (posix_spawn + handshake), score with a deadline,
// kill and reap. posix_spawn (vfork + exec in glibc) rather than fork: a trainer process is large
// and multithreaded, and the child must neither copy its page tables nor inherit its locks.
#include "rewards/isolated_plugin.h"

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "rewards/worker_protocol.h"

namespace tandem::rewards {

class IsolatedPlugin::Worker {
 public:
  Worker(std::string worker_path, std::string plugin_path, std::string config,
         const IsolatedPluginOptions& options)
      : worker_path_(std::move(worker_path)),
        plugin_path_(std::move(plugin_path)),
        config_(std::move(config)),
        options_(options) {}
  ~Worker() { Stop(); }

  // Starts the process unless it is running; returns the plugin's name.
  absl::StatusOr<std::string> Start() {
    if (fd_ >= 0) return name_;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      return absl::InternalError(absl::StrCat("socketpair: ", std::strerror(errno)));
    }
    // The worker's end becomes descriptor 3 (4 if it already is 3, since dup2 onto itself would
    // keep FD_CLOEXEC); everything else is close-on-exec.
    const int child_fd = sv[1] == 3 ? 4 : 3;
    const std::string fd_arg = std::to_string(child_fd);
    const std::string parent_arg = std::to_string(getpid());
    char* argv[] = {worker_path_.data(), const_cast<char*>(fd_arg.c_str()), plugin_path_.data(),
                    const_cast<char*>(parent_arg.c_str()), nullptr};
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, sv[1], child_fd);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
      close(sv[0]);
      close(sv[1]);
      return absl::UnavailableError(
          absl::StrCat("reward worker ", worker_path_, " for ", plugin_path_,
                       " did not start: posix_spawn: ", std::strerror(rc)));
    }
    close(sv[1]);
    pid_ = pid;
    fd_ = sv[0];
    absl::Status s = worker::WriteFrame(fd_, config_);
    if (s.ok()) {
      auto frame = worker::ReadFrame(fd_, absl::Now() + options_.startup_timeout);
      s = frame.status();
      if (frame.ok()) {
        auto hello = worker::DecodeHello(*frame);
        if (hello.ok() && hello->ok()) return name_ = **hello;
        if (hello.ok()) {  // the plugin's own load error: missing symbol, ABI, create() failed
          Kill();
          return hello->status();
        }
        s = hello.status();
      }
    }
    const std::string died = Kill();
    return absl::UnavailableError(absl::StrCat("reward worker ", worker_path_, " for ",
                                               plugin_path_, " did not start: ", s.message(), " (",
                                               died, ")"));
  }

  // Scores one sample. *lost is set when the worker had to be killed or was found dead.
  RewardOutcome Score(const RewardInput& input, bool* lost) {
    *lost = false;
    for (int attempt = 0;; ++attempt) {
      if (auto started = Start(); !started.ok()) return started.status();
      if (worker::WriteFrame(fd_, worker::EncodeInput(input)).ok()) break;
      // The worker died while idle (OOM killer, say): not this sample's fault, so retry once.
      *lost = true;
      const std::string died = Kill();
      if (attempt == 1) {
        return absl::UnavailableError(absl::StrCat(Who(), ": worker unusable (", died, ")"));
      }
    }
    auto frame = worker::ReadFrame(fd_, absl::Now() + options_.timeout);
    if (frame.ok()) {
      auto outcome = worker::DecodeOutcome(*frame);
      if (outcome.ok()) return *std::move(outcome);
      frame = outcome.status();
    }
    *lost = true;
    if (absl::IsDeadlineExceeded(frame.status())) {
      Kill();
      return absl::DeadlineExceededError(
          absl::StrCat(Who(), ": timed out after ", absl::FormatDuration(options_.timeout),
                       "; worker killed, the next sample starts a new one"));
    }
    const std::string died = Kill();
    return absl::InternalError(
        absl::StrCat(Who(), ": worker ", died, " while scoring; the next sample starts a new one"));
  }

 private:
  std::string Who() const {
    return absl::StrCat("reward plugin '", name_.empty() ? plugin_path_ : name_, "'");
  }

  // Closes the socket, SIGKILLs the process and reaps it; returns how it ended.
  std::string Kill() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (pid_ <= 0) return "not running";
    kill(pid_, SIGKILL);  // no-op if it already died; it cannot be reused before waitpid
    int status = 0;
    pid_t r;
    do {
      r = waitpid(pid_, &status, 0);
    } while (r < 0 && errno == EINTR);
    pid_ = -1;
    if (r < 0) return "ended (status unavailable)";
    if (WIFSIGNALED(status)) {
      return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                          ")");
    }
    if (WIFEXITED(status)) return absl::StrCat("exited with status ", WEXITSTATUS(status));
    return "ended";
  }

  // Orderly shutdown: closing the socket makes the worker destroy its instance and exit; a
  // worker that has not exited after a second is killed.
  void Stop() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (pid_ <= 0) return;
    const absl::Time give_up = absl::Now() + absl::Seconds(1);
    while (absl::Now() < give_up) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      absl::SleepFor(absl::Milliseconds(2));
    }
    Kill();
  }

  std::string worker_path_, plugin_path_, config_;
  IsolatedPluginOptions options_;
  std::string name_;
  pid_t pid_ = -1;
  int fd_ = -1;
};

absl::StatusOr<std::string> FindRewardWorker() {
  std::vector<std::string> tried;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    tried.push_back(dir.substr(0, dir.rfind('/') + 1) + "tandem_reward_worker");
  }
#ifdef TANDEM_REWARD_WORKER_BUILD_PATH
  tried.push_back(TANDEM_REWARD_WORKER_BUILD_PATH);
#endif
  for (const std::string& path : tried) {
    if (access(path.c_str(), X_OK) == 0) return path;
  }
  std::string list;
  for (const std::string& p : tried) absl::StrAppend(&list, " ", p);
  return absl::NotFoundError(absl::StrCat("tandem_reward_worker not found (tried:", list,
                                          "); set IsolatedPluginOptions.worker_path"));
}

IsolatedPlugin::IsolatedPlugin(std::string name, std::vector<std::unique_ptr<Worker>> workers)
    : name_(std::move(name)), workers_(std::move(workers)) {
  for (auto& w : workers_) idle_.push_back(w.get());
}

IsolatedPlugin::~IsolatedPlugin() = default;

absl::StatusOr<std::unique_ptr<IsolatedPlugin>> IsolatedPlugin::Create(
    const std::string& plugin_path, const std::string& config_json,
    const IsolatedPluginOptions& options) {
  if (options.num_workers < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "IsolatedPluginOptions.num_workers: expected >= 1, got ", options.num_workers));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("IsolatedPluginOptions.timeout: expected > 0");
  }
  std::string worker_path = options.worker_path;
  if (worker_path.empty()) {
    auto found = FindRewardWorker();
    if (!found.ok()) return found.status();
    worker_path = *found;
  }
  const std::string config = config_json.empty() ? "{}" : config_json;
  std::vector<std::unique_ptr<Worker>> workers;
  workers.reserve(options.num_workers);
  for (int i = 0; i < options.num_workers; ++i) {
    workers.push_back(std::make_unique<Worker>(worker_path, plugin_path, config, options));
  }
  auto name = workers[0]->Start();
  if (!name.ok()) return name.status();
  return std::unique_ptr<IsolatedPlugin>(new IsolatedPlugin(*name, std::move(workers)));
}

RewardOutcome IsolatedPlugin::Score(const RewardInput& input) {
  Worker* worker;
  {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](std::vector<Worker*>* idle) { return !idle->empty(); }, &idle_));
    worker = idle_.back();
    idle_.pop_back();
  }
  bool lost = false;
  RewardOutcome outcome = worker->Score(input, &lost);
  if (lost) restarts_.fetch_add(1);
  absl::MutexLock lock(&mu_);
  idle_.push_back(worker);
  return outcome;
}

std::vector<RewardOutcome> IsolatedPlugin::ScoreBatch(absl::Span<const RewardInput> inputs) {
  std::vector<RewardOutcome> outcomes(inputs.size(), absl::UnknownError("not scored"));
  const size_t threads = std::min(inputs.size(), workers_.size());
  std::atomic<size_t> next{0};
  auto drain = [&] {
    for (size_t i; (i = next.fetch_add(1)) < inputs.size();) outcomes[i] = Score(inputs[i]);
  };
  std::vector<std::thread> pool;
  for (size_t t = 1; t < threads; ++t) pool.emplace_back(drain);
  drain();
  for (std::thread& t : pool) t.join();
  return outcomes;
}

}  // namespace tandem::rewards
