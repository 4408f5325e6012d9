// `tandem rollout serve` as a separate process on a free port (integration): it reports its ports
// on stdout, answers Generate with HybridModel::Forward's log-probs of the checkpoint bitwise,
// health SERVING and /metrics; `tandem rollout push-weights` swaps in another checkpoint (the
// worker's hash then equals that checkpoint's) and `tandem rollout status` prints the new
// version; malformed requests get errors while it keeps serving; SIGTERM shuts it down cleanly.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <random>

#include "gmock/gmock.h"
#include "model/weights_hash.h"
#include "nlohmann/json.hpp"
#include "tests/rollout/server_test_util.h"

extern char** environ;

namespace tandem::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Runs `tandem args` to completion; exit code and stdout (+ stderr when merged).
std::pair<int, std::string> RunTandem(const std::string& args, bool merge_stderr = true) {
  const std::string cmd = std::string(TANDEM_BIN) + " " + args + (merge_stderr ? " 2>&1" : "");
  std::string out;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return {-1, out};
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// A `tandem rollout serve` child process whose stdout we read.
class ServeProcess {
 public:
  explicit ServeProcess(const std::vector<std::string>& args) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    std::vector<std::string> all = {TANDEM_BIN};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    EXPECT_EQ(posix_spawn(&pid_, TANDEM_BIN, &actions, nullptr, argv.data(), environ), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_ = fds[0];
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    close(out_);
  }
  // The first stdout line, within `seconds`.
  std::string ReadLine(int seconds) {
    std::string line;
    char c;
    while (line.empty() || line.back() != '\n') {
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, seconds * 1000) <= 0 || read(out_, &c, 1) != 1) break;
      line.push_back(c);
    }
    return line;
  }
  // SIGTERM, then the exit code (-1 if it did not exit within 20 s).
  int Terminate() {
    kill(pid_, SIGTERM);
    for (int i = 0; i < 2000; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      usleep(10000);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
};

TEST(RolloutServeCliTest, ServesPushesAndShutsDownOnSigterm) {
  std::random_device rd;
  const fs::path root = fs::temp_directory_path() / ("tandem_serve_test_" + std::to_string(rd()));
  fs::create_directories(root);
  const std::string v0 = (root / "v0").string(), v1 = (root / "v1").string();
  for (const auto& [dir, seed] : {std::pair{v0, 3}, std::pair{v1, 4}}) {
    auto [code, out] = RunTandem("init-model --config configs/models/tiny-hybrid.json --out " +
                                 dir + " --seed " + std::to_string(seed) + " --dtype f32");
    ASSERT_EQ(code, 0) << out;
  }
  ServeProcess serve({"rollout", "serve", "--model", v0, "--port", "0", "--metrics-port", "0",
                      "--memory-bytes", "67108864", "--max-queue", "8"});
  const std::string line = serve.ReadLine(60);
  const nlohmann::json ports = nlohmann::json::parse(line, nullptr, false);
  ASSERT_TRUE(ports.is_object()) << "'" << line << "'";
  const std::string target = absl::StrCat("127.0.0.1:", ports["port"].get<int>());
  ASSERT_GT(ports["metrics_port"].get<int>(), 0);

  auto config = model::LoadModelConfig(v0);
  ASSERT_TRUE(config.ok());
  auto w0 = model::LoadWeights(*config, v0), w1 = model::LoadWeights(*config, v1);
  ASSERT_TRUE(w0.ok() && w1.ok());
  const model::HybridModel m0(*config, *w0), m1(*config, *w1);

  auto client = proto::RolloutClient::Create(target);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ(HealthStatus(target, ""), 1);
  const v1::GenerateRequest request = MakeRequest("cli", {1, 2, 3, 4, 5}, 2, 6, 11);
  auto got = (*client)->Generate(request, absl::Seconds(30));
  ASSERT_TRUE(got.ok()) << got.status();
  for (const auto& g : got->samples) {
    rollout::SampleResult s;
    s.tokens = g.tokens;
    s.logprobs = g.logprobs;
    ExpectExact(m0, ToEngine(request), s);
  }

  // Malformed requests: errors, and the worker keeps serving.
  EXPECT_EQ(RawGenerate(target, "\xff\xff").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(
      RawGenerate(target, request.SerializeAsString(), nullptr, /*deadline=*/false).error_code(),
      grpc::StatusCode::INVALID_ARGUMENT);

  auto [push_code, push_out] =
      RunTandem("rollout push-weights --target " + target + " --model " + v1 + " --version 1",
                /*merge_stderr=*/false);
  ASSERT_EQ(push_code, 0) << push_out;
  const nlohmann::json pushed = nlohmann::json::parse(push_out);
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016lx",
                static_cast<unsigned long>(model::WeightsHash(m1.weights())));
  EXPECT_EQ(pushed["weights_hash"], hash);
  EXPECT_EQ(pushed["version"], 1);
  EXPECT_GT(pushed["seconds"].get<double>(), 0);

  auto [status_code, status_out] =
      RunTandem("rollout status --target " + target, /*merge_stderr=*/false);
  ASSERT_EQ(status_code, 0) << status_out;
  const nlohmann::json status = nlohmann::json::parse(status_out);
  EXPECT_EQ(status["weight_version"], "1");  // int64 is a JSON string in proto3 JSON

  const v1::GenerateRequest after = MakeRequest("cli2", {1, 2, 3, 4, 5}, 1, 6, 11);
  got = (*client)->Generate(after, absl::Seconds(30));
  ASSERT_TRUE(got.ok()) << got.status();
  rollout::SampleResult s;
  s.tokens = got->samples[0].tokens;
  s.logprobs = got->samples[0].logprobs;
  ExpectExact(m1, ToEngine(after), s);

  EXPECT_EQ(serve.Terminate(), 0);
  fs::remove_all(root);
}

TEST(RolloutServeCliTest, BadFlagsFailWithAMessage) {
  auto [code, out] = RunTandem("rollout serve --model /nonexistent --port 0");
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("--model"));
  std::tie(code, out) = RunTandem("rollout push-weights --target 127.0.0.1:1 --model /x --mode up");
  EXPECT_EQ(code, 1);
  EXPECT_THAT(out, HasSubstr("--mode"));
}

}  // namespace
}  // namespace tandem::testing
