#include "control/server.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace natgw::control {

namespace {
// What one client gets to send its request, and again to take the reply (counted
// from when it is ready: a reload may take a while). Clients are served side by side,
// so this only bounds how long a slow or silent one keeps its slot.
constexpr int kClientBudgetMs = 2000;
constexpr size_t kMaxRequest = 8192;

std::string errno_text() { return std::strerror(errno); }

using Clock = std::chrono::steady_clock;
Clock::time_point budget() { return Clock::now() + std::chrono::milliseconds(kClientBudgetMs); }

// Wait until fd is ready for `events` or the deadline passes.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r == 0 || errno != EINTR) return false;
  }
}

void write_all(int fd, const std::string& s, Clock::time_point deadline) {
  size_t off = 0;
  while (off < s.size()) {
    if (!wait_ready(fd, POLLOUT, deadline)) return;  // too slow: give up on this client
    const ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) return;  // client went away
    off += static_cast<size_t>(n);
  }
}

sockaddr_un unix_addr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) throw std::runtime_error("socket path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}
}  // namespace

ControlServer::~ControlServer() {
  for (const Client& c : clients_) ::close(c.fd);
  if (unix_fd_ >= 0) {
    ::close(unix_fd_);
    ::unlink(unix_path_.c_str());
  }
  if (http_fd_ >= 0) ::close(http_fd_);
}

void ControlServer::listen_unix(const std::string& path) {
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::error_code ec;
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);  // bind() below names the failure
  // A socket file left by a crashed instance is removed only if nobody answers on it,
  // and never anything else: a path mistyped onto a config file must not delete it.
  const sockaddr_un a = unix_addr(path);
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
    throw std::runtime_error(path + " exists and is not a socket: not replacing it (control.socket names "
                                    "the socket natgw creates)");
  int probe = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (probe >= 0) {
    if (::connect(probe, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0) {
      ::close(probe);
      throw std::runtime_error("another natgw is already listening on " + path);
    }
    ::close(probe);
  }
  ::unlink(path.c_str());
  unix_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (unix_fd_ < 0) throw std::runtime_error("socket(AF_UNIX): " + errno_text());
  if (::bind(unix_fd_, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(unix_fd_, 16) != 0)
    throw std::runtime_error("cannot listen on " + path + ": " + errno_text());
  ::chmod(path.c_str(), 0660);
  unix_path_ = path;
}

void ControlServer::listen_http(const std::string& host_port) {
  const auto colon = host_port.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("metrics listen must be host:port");
  const std::string host = host_port.substr(0, colon);
  const std::string port = host_port.substr(colon + 1);
  // An IPv4 address or a host name (resolved once, here, to its first IPv4 address).
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  if (const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res); rc != 0 || !res)
    throw std::runtime_error("metrics listen address '" + host_port + "': " + gai_strerror(rc));
  sockaddr_in a{};
  std::memcpy(&a, res->ai_addr, sizeof(a));
  ::freeaddrinfo(res);
  http_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (http_fd_ < 0) throw std::runtime_error("socket(AF_INET): " + errno_text());
  const int one = 1;
  setsockopt(http_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(http_fd_, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(http_fd_, 16) != 0)
    throw std::runtime_error("cannot listen on " + host_port + " for metrics: " + errno_text());
  http_addr_ = host_port;
}

void ControlServer::poll_once(int timeout_ms, const CommandHandler& cmd, const MetricsHandler& metrics,
                              const HealthHandler& health) {
  std::vector<pollfd> fds;
  fds.reserve(2 + clients_.size());
  const bool room = clients_.size() < kMaxClients;  // else new ones wait in the backlog
  if (unix_fd_ >= 0 && room) fds.push_back(pollfd{unix_fd_, POLLIN, 0});
  if (http_fd_ >= 0 && room) fds.push_back(pollfd{http_fd_, POLLIN, 0});
  const size_t first_client = fds.size();
  auto now = Clock::now();
  for (const Client& c : clients_) {
    fds.push_back(pollfd{c.fd, static_cast<short>(c.replying ? POLLOUT : POLLIN), 0});
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(c.deadline - now).count();
    timeout_ms = std::min<int>(timeout_ms, static_cast<int>(std::max<int64_t>(left + 1, 0)));
  }
  if (fds.empty()) {
    ::poll(nullptr, 0, timeout_ms);
    return;
  }
  if (::poll(fds.data(), fds.size(), timeout_ms) < 0) return;  // EINTR: the caller's loop comes back
  // Existing clients first (their indexes match fds), then the new ones.
  std::vector<Client> kept;
  kept.reserve(clients_.size() + 2);
  for (size_t i = 0; i < clients_.size(); ++i) {
    if (step(clients_[i], fds[first_client + i].revents, cmd, metrics, health))
      kept.push_back(std::move(clients_[i]));
    else
      ::close(clients_[i].fd);
  }
  clients_ = std::move(kept);
  for (size_t i = 0; i < first_client; ++i)
    if (fds[i].revents & POLLIN) accept_from(fds[i].fd, fds[i].fd == http_fd_);
}

void ControlServer::accept_from(int listen_fd, bool http) {
  while (clients_.size() < kMaxClients) {
    const int c = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0) return;  // EAGAIN: no more waiting (or one that vanished)
    clients_.push_back(Client{c, http, false, budget(), {}, {}, 0});
  }
}

bool ControlServer::step(Client& c, short revents, const CommandHandler& cmd, const MetricsHandler& metrics,
                         const HealthHandler& health) {
  if (!c.replying) {
    const char* end = c.http ? "\r\n\r\n" : "\n";
    bool closed = false;
    if (revents & (POLLIN | POLLHUP | POLLERR)) {
      char tmp[1024];
      while (c.in.size() < kMaxRequest && c.in.find(end) == std::string::npos) {
        const ssize_t n = ::recv(c.fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          closed = n == 0 || errno != EAGAIN;
          break;
        }
        c.in.append(tmp, static_cast<size_t>(n));
      }
    }
    const bool complete = c.in.find(end) != std::string::npos;
    // Cut off by a close, the size limit or the budget: answered, never run half.
    if (!complete && !closed && c.in.size() < kMaxRequest && Clock::now() < c.deadline) return true;
    reply(c, complete, cmd, metrics, health);
    revents = POLLOUT;  // try at once: most replies fit the socket buffer
  }
  if (Clock::now() >= c.deadline || (revents & (POLLERR | POLLHUP))) return false;  // too slow, or gone
  if (!(revents & POLLOUT)) return true;
  while (c.sent < c.out.size()) {
    const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    if (n <= 0) return false;
    c.sent += static_cast<size_t>(n);
  }
  return false;  // all sent: done
}

void ControlServer::reply(Client& c, bool complete, const CommandHandler& cmd, const MetricsHandler& metrics,
                          const HealthHandler& health) {
  c.replying = true;
  if (c.http) {
    c.out = http_response(c.in, metrics, health);
  } else {
    Reply r;
    if (complete) {
      try {
        r = cmd(c.in.substr(0, c.in.find('\n')));
      } catch (const std::exception& e) {
        r = Reply{false, e.what()};
      }
    } else {
      r = Reply{false, "incomplete request (a command is one line of at most 8 KiB ending in a newline, sent within 2 s)"};
    }
    c.out = (r.ok ? std::string("OK\n") : "ERR " + r.body + "\n") + (r.ok ? r.body : "");
  }
  c.in.clear();
  c.deadline = budget();  // from when the reply is ready: a reload may have taken a while
}

std::string http_response(const std::string& req, const ControlServer::MetricsHandler& metrics,
                          const ControlServer::HealthHandler& health) {
  // HEAD: GET's status and headers without the body (load balancers' and uptime checkers' probes).
  const bool head = req.rfind("HEAD ", 0) == 0;
  const bool get = head || req.rfind("GET ", 0) == 0;
  const size_t from = head ? 5 : 4;
  const auto sp = req.find(' ', from);
  std::string path = get && sp != std::string::npos ? req.substr(from, sp - from) : "";
  if (const auto q = path.find('?'); q != std::string::npos) path.resize(q);  // scrapers may add ?params
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body, extra;
  if (!get) {
    status = "405 Method Not Allowed";
    body = "only GET and HEAD\n";
    extra = "Allow: GET, HEAD\r\n";
  } else if (path == "/metrics") {
    body = metrics();
  } else if (path == "/healthz") {
    // What the HA agent and load balancers judge this instance by: 503 names what is wrong.
    const Reply h = health ? health() : Reply{};
    if (h.ok) {
      body = "ok\n";
    } else {
      status = "503 Service Unavailable";
      body = h.body.empty() || h.body.back() != '\n' ? h.body + "\n" : h.body;
    }
  } else if (path == "/") {
    body = "natgw: metrics at /metrics, health at /healthz\n";
  } else {
    status = "404 Not Found";
    body = "not found; try /metrics\n";
  }
  return "HTTP/1.0 " + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + extra + "Connection: close\r\n\r\n" +
         (head ? "" : body);
}

Reply send_command(const std::string& path, const std::string& line, int timeout_ms) {
  const sockaddr_un a = unix_addr(path);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket: " + errno_text());
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw std::runtime_error("no natgw is running at " + path + " (" + why + ")");
  }
  write_all(fd, line + "\n", Clock::now() + std::chrono::milliseconds(timeout_ms));
  std::string all;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    all.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  Reply r;
  const auto nl = all.find('\n');
  const std::string status = all.substr(0, nl);
  if (status == "OK") {
    r.body = nl == std::string::npos ? "" : all.substr(nl + 1);
  } else if (status.rfind("ERR ", 0) == 0) {
    r.ok = false;
    r.body = status.substr(4) + (nl == std::string::npos ? "" : "\n" + all.substr(nl + 1));
  } else {  // nothing, or not the protocol: no verdict to report
    throw std::runtime_error("natgw at " + path + " gave no answer (timed out or closed)");
  }
  return r;
}

}  // namespace natgw::control
