// Running a command (the real `tandem` binary, in the CLI tests) through the shell and capturing
// its output and exit code, and a temporary directory that removes itself: what the end-to-end
// tests need around a child process.
#pragma once

#include <filesystem>
#include <string>

namespace tandem::testing {

// What happens to the child's stderr.
enum class Stderr {
  kDiscard,   // to /dev/null
  kMerge,     // into `out`, interleaved with stdout (2>&1)
  kSeparate,  // into `err`
};

struct CommandResult {
  int exit_code = -1;  // −1 when the command could not run or did not exit normally
  std::string out;     // stdout (and stderr with Stderr::kMerge)
  std::string err;     // stderr with Stderr::kSeparate
};

// Runs `command` with /bin/sh and waits for it.
CommandResult RunCommand(const std::string& command, Stderr stderr_mode = Stderr::kDiscard);

// A fresh directory under the system temp dir, named tandem_<tag>_<random>; removed (with its
// contents) on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // path() / name, as a string.
  std::string Sub(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

}  // namespace tandem::testing
