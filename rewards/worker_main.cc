// tandem_reward_worker: the helper process that hosts one reward plugin instance for
// IsolatedPlugin. It loads the plugin, then scores one request at a time from its socket until the
// socket closes. If the plugin crashes or hangs, only this process dies (or is killed); the host
// restarts it.
//
//   usage: tandem_reward_worker <socket fd> <plugin path> <parent pid>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "rewards/plugin_library.h"
#include "rewards/worker_protocol.h"

namespace tandem::rewards::worker {
namespace {

// Keeps the protocol socket safe from the plugin: stdout goes to stderr (a stray printf must not
// reach anything the host parses), stdin reads nothing, and the worker dies with its parent.
void IsolateStdio(pid_t parent) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);  // the parent died before prctl took effect
  dup2(STDERR_FILENO, STDOUT_FILENO);
  const int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (devnull >= 0) {
    dup2(devnull, STDIN_FILENO);
    close(devnull);
  }
}

absl::StatusOr<std::unique_ptr<InProcessPlugin>> Load(const std::string& path,
                                                      const std::string& config) {
  auto library = PluginLibrary::Open(path);
  if (!library.ok()) return library.status();
  return InProcessPlugin::Create(*std::move(library), config);
}

int Serve(int fd, const std::string& plugin_path) {
  auto config = ReadFrame(fd, absl::InfiniteFuture());
  if (!config.ok()) return 1;
  auto plugin = Load(plugin_path, *config);
  const absl::StatusOr<std::string> hello =
      plugin.ok() ? absl::StatusOr<std::string>((*plugin)->name()) : plugin.status();
  if (!WriteFrame(fd, EncodeHello(hello)).ok() || !plugin.ok()) return 1;
  while (true) {
    auto request = ReadFrame(fd, absl::InfiniteFuture());
    if (!request.ok()) return 0;  // the host closed the socket: shut down
    auto input = DecodeInput(*request);
    const RewardOutcome outcome = input.ok() ? (*plugin)->Score(*input) : input.status();
    if (!WriteFrame(fd, EncodeOutcome(outcome)).ok()) return 0;
  }
}

}  // namespace
}  // namespace tandem::rewards::worker

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr,
                 "usage: %s <socket fd> <plugin path> <parent pid>\n"
                 "Started by Tandem's IsolatedPlugin; not meant to be run by hand.\n",
                 argv[0]);
    return 2;
  }
  const int fd = std::atoi(argv[1]);
  tandem::rewards::worker::IsolateStdio(static_cast<pid_t>(std::atol(argv[3])));
  return tandem::rewards::worker::Serve(fd, argv[2]);
}
