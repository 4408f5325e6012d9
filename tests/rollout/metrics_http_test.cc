// The rollout server's /metrics side port: the body parses as Prometheus text format 0.0.4
// (HELP and TYPE before each sample, valid names, numeric values, final newline) and reflects the
// server (generated tokens, weight version, cache use); garbage, unknown paths and methods, an
// oversized request and a silent client each get an answer or a drop, and the endpoint keeps
// serving.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <regex>
#include <sstream>

#include "gmock/gmock.h"
#include "tests/rollout/server_test_util.h"

namespace tandem::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Sends `request` to 127.0.0.1:port and reads until the server closes.
std::string Http(int port, const std::string& request, bool close_write = false) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  (void)!send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  if (close_write) shutdown(fd, SHUT_WR);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) out.append(buf, static_cast<size_t>(n));
  close(fd);
  return out;
}

std::string Body(const std::string& response) {
  const size_t at = response.find("\r\n\r\n");
  return at == std::string::npos ? "" : response.substr(at + 4);
}

// Parses exposition format 0.0.4 strictly enough for our output: name → value. Fails the test on
// a sample without HELP and TYPE before it, a bad name or a bad value.
std::map<std::string, double> ParseMetrics(const std::string& text) {
  EXPECT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const std::regex help(R"(# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) .+)");
  const std::regex type(R"(# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge))");
  const std::regex sample(R"(([a-zA-Z_:][a-zA-Z0-9_:]*) (\S+))");
  std::map<std::string, double> out;
  std::string helped, typed, line;
  std::istringstream in(text);
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, help)) {
      helped = m[1];
    } else if (std::regex_match(line, m, type)) {
      typed = m[1];
      EXPECT_EQ(typed, helped) << line;
      if (m[2] == "counter") {
        EXPECT_THAT(typed, ::testing::EndsWith("_total"));
      }
    } else if (std::regex_match(line, m, sample)) {
      EXPECT_EQ(m[1], typed) << "sample without HELP/TYPE: " << line;
      size_t used = 0;
      const double v = std::stod(m[2], &used);
      EXPECT_EQ(used, m[2].length()) << line;
      out[m[1]] = v;
    } else {
      ADD_FAILURE() << "not exposition format: '" << line << "'";
    }
  }
  return out;
}

TEST(MetricsHttpTest, ServesPrometheusTextThatFollowsTheServer) {
  rollout::RolloutServerOptions options;
  options.metrics_port = 0;
  TestServer t = StartServer(61, options);
  ASSERT_GT(t.server->metrics_port(), 0);
  const std::string response = Http(t.server->metrics_port(), "GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_THAT(response, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  std::map<std::string, double> m = ParseMetrics(Body(response));
  for (const char* name :
       {"tandem_rollout_queued_requests", "tandem_rollout_running_sequences",
        "tandem_rollout_tokens_per_second", "tandem_rollout_kv_cache_usage_ratio",
        "tandem_rollout_weight_version", "tandem_rollout_generated_tokens_total"}) {
    EXPECT_EQ(m.count(name), 1u) << name;
  }
  EXPECT_EQ(m["tandem_rollout_generated_tokens_total"], 0);
  EXPECT_EQ(m["tandem_rollout_kv_blocks_total"], 64);
  EXPECT_EQ(m["tandem_rollout_linear_state_slots_total"], 8);

  ASSERT_TRUE(t.client->Generate(MakeRequest("m", {1, 2, 3}, 2, 5, 0), absl::Seconds(30)).ok());
  m = ParseMetrics(Body(Http(t.server->metrics_port(), "GET /metrics HTTP/1.0\r\n\r\n")));
  EXPECT_EQ(m["tandem_rollout_generated_tokens_total"], 10);
  EXPECT_EQ(m["tandem_rollout_requests_finished_total"], 1);
  EXPECT_GT(m["tandem_rollout_tokens_per_second"], 0);
}

TEST(MetricsHttpTest, GarbageGetsAnAnswerAndTheEndpointKeepsServing) {
  rollout::RolloutServerOptions options;
  options.metrics_port = 0;
  TestServer t = StartServer(62, options);
  const int port = t.server->metrics_port();
  EXPECT_THAT(Http(port, std::string("\x16\x03\x01\x02\x00garbage\r\n\r\n", 16)),
              StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(Http(port, "GET /other HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 404"));
  EXPECT_THAT(Http(port, "POST /metrics HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 405"));
  EXPECT_THAT(Http(port, "GET /metrics\r\n\r\n"), StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(Http(port, std::string(100000, 'A')), StartsWith("HTTP/1.1 400"));
  EXPECT_THAT(Http(port, "", /*close_write=*/true), StartsWith("HTTP/1.1 400"));
  const std::string head = Http(port, "HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_THAT(head, StartsWith("HTTP/1.1 200"));
  EXPECT_EQ(Body(head), "");
  ParseMetrics(Body(Http(port, "GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n")));
}

}  // namespace
}  // namespace tandem::testing
