// Integration test of the remote reward path: starts rewards/python/tandem_reward_server.py on a
// free port with a verl-style compute_score written for the test (verl_style_reward.py), scores
// through the C++ RemoteRewardClient, and stops the server. The python3 that has grpcio and the
// source dir are compiled in.
#include "rewards/remote_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>

namespace tandem::rewards {
namespace {

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class RewardServer {
 public:
  explicit RewardServer(int port) {
    const std::string src = TANDEM_SOURCE_DIR;
    std::vector<std::string> args = {TANDEM_REWARD_PYTHON,
                                     src + "/rewards/python/tandem_reward_server.py",
                                     "--host",
                                     "127.0.0.1",
                                     "--port",
                                     std::to_string(port),
                                     "--workers",
                                     "2",
                                     "--timeout",
                                     "1",
                                     src + "/tests/rewards/verl_style_reward.py:compute_score"};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      execv(argv[0], argv.data());
      _exit(127);
    }
  }
  ~RewardServer() {
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }

 private:
  pid_t pid_;
};

RewardInput Item(std::string data_source, std::string response, std::string ground_truth = "72",
                 std::string extra = "") {
  RewardInput in;
  in.data_source = std::move(data_source);
  in.response = std::move(response);
  in.ground_truth = std::move(ground_truth);
  in.extra_json = std::move(extra);
  return in;
}

TEST(RemoteRewardClient, ScoresThroughThePythonServer) {
  const int port = FreePort();
  RewardServer server(port);
  RemoteRewardOptions options;
  options.wait_for_ready = true;  // the server needs a few seconds to start its workers
  options.timeout = absl::Seconds(60);
  auto client = RemoteRewardClient::Create("127.0.0.1:" + std::to_string(port), options);
  ASSERT_TRUE(client.ok()) << client.status();

  std::vector<RewardInput> batch = {
      Item("openai/gsm8k", "so #### 72"),
      Item("openai/gsm8k", "so #### 70"),
      Item("test/raise", "x"),
      Item("test/hang", "x"),
      Item("test/dict", "the answer is 72", "72", R"({"split": "test"})"),
      Item("test/crash", "x"),
  };
  auto outcomes = (*client)->ScoreRemote(batch);
  ASSERT_TRUE(outcomes.ok()) << outcomes.status();
  ASSERT_EQ(outcomes->size(), batch.size());
  const std::vector<RewardOutcome>& out = *outcomes;
  ASSERT_TRUE(out[0].ok()) << out[0].status();
  EXPECT_EQ(out[0]->score, 1.0);
  ASSERT_TRUE(out[1].ok()) << out[1].status();
  EXPECT_EQ(out[1]->score, 0.1);
  EXPECT_EQ(out[2].status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(out[2].status().message().find("ValueError"), std::string::npos) << out[2].status();
  EXPECT_EQ(out[3].status().code(), absl::StatusCode::kDeadlineExceeded) << out[3].status();
  ASSERT_TRUE(out[4].ok()) << out[4].status();
  EXPECT_EQ(out[4]->score, 1.0);
  EXPECT_EQ(out[4]->metrics.at("acc"), 1.0);
  EXPECT_EQ(out[4]->extras.at("split"), "test");
  EXPECT_EQ(out[5].status().code(), absl::StatusCode::kInternal) << out[5].status();

  // The RewardFunction interface, after the failures: the server still serves.
  EXPECT_EQ((*client)->name(), "remote:127.0.0.1:" + std::to_string(port));
  RewardOutcome one = (*client)->Score(Item("openai/gsm8k", "#### 72"));
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->score, 1.0);
}

TEST(RemoteRewardClient, UnreachableServerIsAnErrorAfterRetries) {
  RemoteRewardOptions options;
  options.timeout = absl::Milliseconds(300);
  options.max_attempts = 2;
  options.initial_backoff = absl::Milliseconds(10);
  const std::string target = "127.0.0.1:" + std::to_string(FreePort());
  auto client = RemoteRewardClient::Create(target, options);
  ASSERT_TRUE(client.ok());
  auto outcomes = (*client)->ScoreRemote(std::vector<RewardInput>{Item("a", "b")});
  ASSERT_FALSE(outcomes.ok());
  EXPECT_EQ(outcomes.status().code(), absl::StatusCode::kUnavailable) << outcomes.status();
  EXPECT_NE(outcomes.status().message().find(target), std::string::npos);
  // Through RewardFunction the call failure becomes each item's error.
  std::vector<RewardOutcome> each = (*client)->ScoreBatch(std::vector<RewardInput>(3));
  ASSERT_EQ(each.size(), 3u);
  for (const RewardOutcome& o : each) EXPECT_FALSE(o.ok());
  EXPECT_FALSE(RemoteRewardClient::Create("", options).ok());
}

}  // namespace
}  // namespace tandem::rewards
