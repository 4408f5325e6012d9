// A reward plugin run out of process, so that a plugin that crashes (SIGSEGV, abort) or hangs fails
// only the sample it was scoring. Each worker is a tandem_reward_worker process (posix_spawn, not a
// bare fork: the host is multithreaded, and only exec gives the plugin a clean process) that loads
// the plugin and answers score requests over a socket (worker_protocol.h). On a timeout the worker
// is killed with SIGKILL; on a crash it is reaped; either way the sample gets an error naming the
// cause, and the next sample starts a fresh worker.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rewards/reward.h"

namespace tandem::rewards {

struct IsolatedPluginOptions {
  absl::Duration timeout = absl::Seconds(10);          // per score call, from request to answer
  absl::Duration startup_timeout = absl::Seconds(30);  // exec + dlopen + create
  int num_workers = 1;  // worker processes; ScoreBatch scores this many samples at once
  // The tandem_reward_worker executable. Empty: the one beside this program's executable, else the
  // one this library was built with.
  std::string worker_path;
};

class IsolatedPlugin : public RewardFunction {
 public:
  // Starts one worker to load the plugin, so load errors (missing file or symbol, ABI mismatch,
  // create() failure) are returned here rather than per sample.
  static absl::StatusOr<std::unique_ptr<IsolatedPlugin>> Create(
      const std::string& plugin_path, const std::string& config_json,
      const IsolatedPluginOptions& options = {});
  ~IsolatedPlugin() override;

  std::string name() const override { return name_; }

  // Errors: DeadlineExceeded (the call ran past options.timeout; the worker was killed), Internal
  // (the worker crashed, or the plugin returned an error), or the plugin's own status.
  // Thread-safe; concurrent calls use different workers, waiting when all are busy.
  RewardOutcome Score(const RewardInput& input) override;
  std::vector<RewardOutcome> ScoreBatch(absl::Span<const RewardInput> inputs) override;

  // How many times a worker was killed or found dead and had to be replaced.
  int64_t restarts() const { return restarts_.load(); }

  class Worker;  // one child process; defined in the .cc

 private:
  IsolatedPlugin(std::string name, std::vector<std::unique_ptr<Worker>> workers);

  const std::string name_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::atomic<int64_t> restarts_{0};
  absl::Mutex mu_;
  std::vector<Worker*> idle_ ABSL_GUARDED_BY(mu_);
};

// Where IsolatedPlugin looks for tandem_reward_worker when options.worker_path is empty.
absl::StatusOr<std::string> FindRewardWorker();

}  // namespace tandem::rewards
