// The control side's sockets, served from the control thread (never a worker):
//  - a local Unix stream socket for natgwctl: one command line in, "OK"/"ERR reason"
//    and a text body out, then close;
//  - an HTTP listener for Prometheus (GET /metrics), HTTP/1.0, one response per connection.
// Single-threaded with poll(): a slow client can stall the control loop for at most
// the per-client budget (2 s to send its request, 2 s to take the reply), never a worker.
#pragma once

#include <functional>
#include <string>

namespace natgw::control {

struct Reply {
  bool ok = true;
  std::string body;
};

class ControlServer {
 public:
  using CommandHandler = std::function<Reply(const std::string& line)>;
  using MetricsHandler = std::function<std::string()>;

  ControlServer() = default;
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Throws std::runtime_error with the path/address and errno text.
  void listen_unix(const std::string& path);
  void listen_http(const std::string& host_port);
  // Wait up to `timeout_ms` for clients and serve them.
  void poll_once(int timeout_ms, const CommandHandler& cmd, const MetricsHandler& metrics);
  const std::string& http_address() const { return http_addr_; }

 private:
  void serve_unix(int fd, const CommandHandler& cmd);
  void serve_http(int fd, const MetricsHandler& metrics);
  int unix_fd_ = -1;
  int http_fd_ = -1;
  std::string unix_path_;
  std::string http_addr_;
};

// The whole HTTP/1.0 response to one request's bytes (whatever a client sent, possibly
// cut short): GET /metrics (a query string ignored), / and /healthz; 404 or 405 else.
// Pure, so the parser of these untrusted bytes is fuzzed (tests/fuzz/fuzz_http.cpp).
std::string http_response(const std::string& request, const ControlServer::MetricsHandler& metrics);

// Client side (natgwctl, tests): send one command, return the reply.
// Throws std::runtime_error when no instance answers at `path`.
Reply send_command(const std::string& path, const std::string& line, int timeout_ms = 5000);

}  // namespace natgw::control
