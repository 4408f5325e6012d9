// MetricsHttpServer: the smallest HTTP/1.1 server that Prometheus can scrape. One thread accepts
// connections on its own port and answers each in turn: GET /metrics → 200 with the text that
// `render` returns (exposition format 0.0.4); other paths 404, other methods 405, anything that
// is not an HTTP request 400. Every connection is closed after one answer; a client that sends
// too much (> 8 KiB of headers) or nothing for 2 s is dropped. Plain sockets, no dependencies.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace tandem::rollout {

class MetricsHttpServer {
 public:
  // Binds host:port (port 0 = any free port) and starts serving. `render` is called on the
  // server's thread for every GET /metrics.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(
      const std::string& host, int port, std::function<std::string()> render);
  ~MetricsHttpServer();  // stops and joins the thread

  int port() const { return port_; }

 private:
  MetricsHttpServer(int listen_fd, int wake_fd_read, int wake_fd_write, int port,
                    std::function<std::string()> render);
  void Serve();
  void Answer(int fd);

  int listen_fd_, wake_read_, wake_write_, port_;
  std::function<std::string()> render_;
  std::thread thread_;
};

}  // namespace tandem::rollout
