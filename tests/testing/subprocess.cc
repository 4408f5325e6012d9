// RunCommand and TempDir (see subprocess.h). A separately captured stderr goes through a
// temporary file, so a child writing a lot to both streams cannot block on a full pipe.
#include "tests/testing/subprocess.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <system_error>

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;

std::string ReadPipe(FILE* pipe) {
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  return out;
}

}  // namespace

CommandResult RunCommand(const std::string& command, Stderr stderr_mode) {
  static std::atomic<int> calls{0};
  const fs::path err_file =
      fs::temp_directory_path() /
      ("tandem_stderr_" + std::to_string(getpid()) + "_" + std::to_string(calls++));
  std::string cmd = command;
  switch (stderr_mode) {
    case Stderr::kDiscard:
      cmd += " 2>/dev/null";
      break;
    case Stderr::kMerge:
      cmd += " 2>&1";
      break;
    case Stderr::kSeparate:
      cmd += " 2>" + err_file.string();
      break;
  }
  CommandResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  r.out = ReadPipe(pipe);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (stderr_mode == Stderr::kSeparate) {
    std::ifstream in(err_file);
    r.err.assign(std::istreambuf_iterator<char>(in), {});
    std::error_code ec;
    fs::remove(err_file, ec);
  }
  return r;
}

TempDir::TempDir(const std::string& tag) {
  std::random_device rd;
  path_ = fs::temp_directory_path() /
          ("tandem_" + tag + "_" + std::to_string(rd()) + "_" + std::to_string(rd()));
  fs::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace tandem::testing
