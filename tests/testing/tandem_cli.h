// For the end-to-end tests of the `tandem` binary (TANDEM_BIN, its path, is compiled into each
// such test): running it, and a suite fixture holding one tiny random checkpoint written by
// `tandem init-model`, which the tests score or sample from and compare with in-process results.
#pragma once

#ifndef TANDEM_BIN
#error "tests/testing/tandem_cli.h needs TANDEM_BIN, the path of the tandem binary"
#endif

#include <string>

#include "gtest/gtest.h"
#include "tests/testing/subprocess.h"

namespace tandem::testing {

// `tandem <args>`.
inline CommandResult RunTandem(const std::string& args, Stderr stderr_mode = Stderr::kDiscard) {
  return RunCommand(std::string(TANDEM_BIN) + " " + args, stderr_mode);
}

// configs/models/tiny-hybrid.json with random weights (seed 3, f32) in Model(), written once per
// suite into a temporary directory Root() that the suite's tests may also use.
class TinyCheckpointSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new TempDir("cli_test");
    const CommandResult init =
        RunTandem("init-model --config configs/models/tiny-hybrid.json --out " + Model() +
                      " --seed 3 --dtype f32",
                  Stderr::kMerge);
    ASSERT_EQ(init.exit_code, 0) << init.out;
  }
  static void TearDownTestSuite() {
    delete root_;
    root_ = nullptr;
  }
  static const TempDir& Root() { return *root_; }
  static std::string Model() { return root_->Sub("model"); }

 private:
  static inline TempDir* root_ = nullptr;
};

}  // namespace tandem::testing
