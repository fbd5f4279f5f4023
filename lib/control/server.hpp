// The control side's sockets, served from the control thread (never a worker):
//  - a local Unix stream socket for natgwctl: one command line in, "OK"/"ERR reason"
//    and a text body out, then close;
//  - an HTTP listener for Prometheus (GET /metrics) and health checks (GET /healthz), HTTP/1.0, one
//    response per connection.
// Single-threaded with poll() and non-blocking sockets: clients are served side by
// side, a step at a time, so none can hold up the control loop (signals, reloads,
// ENA's timers); each gets 2 s to send its request and 2 s to take the reply, and
// at most kMaxClients are open at once (more wait in the listen backlog).
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace natgw::control {

struct Reply {
  bool ok = true;
  std::string body;
};

class ControlServer {
 public:
  using CommandHandler = std::function<Reply(const std::string& line)>;
  using MetricsHandler = std::function<std::string()>;
  // ok = healthy; body: the reasons when not, one per line. Empty: always healthy.
  using HealthHandler = std::function<Reply()>;

  ControlServer() = default;
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Throws std::runtime_error with the path/address and errno text.
  void listen_unix(const std::string& path);
  void listen_http(const std::string& host_port);
  // Wait up to `timeout_ms` for client activity and serve what is ready; returns
  // within about `timeout_ms` whatever the clients do.
  void poll_once(int timeout_ms, const CommandHandler& cmd, const MetricsHandler& metrics,
                 const HealthHandler& health = {});
  const std::string& http_address() const { return http_addr_; }
  size_t open_clients() const { return clients_.size(); }

  static constexpr size_t kMaxClients = 32;

 private:
  struct Client {
    int fd;
    bool http;
    bool replying = false;  // request read (or cut off): the reply is being sent
    std::chrono::steady_clock::time_point deadline;
    std::string in, out;
    size_t sent = 0;
  };
  void accept_from(int listen_fd, bool http);
  // Returns false when the client is done (served, gone or out of time).
  bool step(Client& c, short revents, const CommandHandler& cmd, const MetricsHandler& metrics,
            const HealthHandler& health);
  void reply(Client& c, bool complete, const CommandHandler& cmd, const MetricsHandler& metrics,
             const HealthHandler& health);
  int unix_fd_ = -1;
  int http_fd_ = -1;
  std::string unix_path_;
  std::string http_addr_;
  std::vector<Client> clients_;
};

// The whole HTTP/1.0 response to one request's bytes (whatever a client sent, possibly
// cut short): GET /metrics (a query string ignored), /, and /healthz: 200 "ok" when `health` says
// healthy (or is empty), else 503 with its reasons, one per line; 404, or 405 (with Allow) for a method
// other than GET and HEAD. HEAD gets GET's status and headers (Content-Length too), no body.
// Pure, so the parser of these untrusted bytes is fuzzed (tests/fuzz/fuzz_http.cpp).
std::string http_response(const std::string& request, const ControlServer::MetricsHandler& metrics,
                          const ControlServer::HealthHandler& health = {});

// Client side (natgwctl, tests): send one command, return the reply.
// Throws std::runtime_error when no instance answers at `path`.
Reply send_command(const std::string& path, const std::string& line, int timeout_ms = 5000);

}  // namespace natgw::control
