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

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace natgw::control {

namespace {
// What one client gets to send its request, and again to take the reply (counted
// from when it is ready: a reload may take a while). The control loop serves clients
// one at a time, so this bounds how long a slow or malicious one (a byte a second,
// or nothing at all) holds off signals, reloads and ENA's timers.
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

// Read until `terminator` appears, the peer closes or the deadline passes; bounded in size.
std::string read_until(int fd, const char* terminator, Clock::time_point deadline) {
  std::string buf;
  char tmp[1024];
  while (buf.size() < kMaxRequest && buf.find(terminator) == std::string::npos) {
    if (!wait_ready(fd, POLLIN, deadline)) break;
    const ssize_t n = ::recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n <= 0) break;
    buf.append(tmp, static_cast<size_t>(n));
  }
  return buf;
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
  // A socket file left by a crashed instance is removed only if nobody answers on it.
  const sockaddr_un a = unix_addr(path);
  int probe = ::socket(AF_UNIX, SOCK_STREAM, 0);
  if (probe >= 0) {
    if (::connect(probe, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) == 0) {
      ::close(probe);
      throw std::runtime_error("another natgw is already listening on " + path);
    }
    ::close(probe);
  }
  ::unlink(path.c_str());
  unix_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
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
  http_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (http_fd_ < 0) throw std::runtime_error("socket(AF_INET): " + errno_text());
  const int one = 1;
  setsockopt(http_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(http_fd_, reinterpret_cast<const sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(http_fd_, 16) != 0)
    throw std::runtime_error("cannot listen on " + host_port + " for metrics: " + errno_text());
  http_addr_ = host_port;
}

void ControlServer::poll_once(int timeout_ms, const CommandHandler& cmd,
                              const MetricsHandler& metrics) {
  pollfd fds[2];
  nfds_t n = 0;
  if (unix_fd_ >= 0) fds[n++] = pollfd{unix_fd_, POLLIN, 0};
  if (http_fd_ >= 0) fds[n++] = pollfd{http_fd_, POLLIN, 0};
  if (n == 0) {
    ::poll(nullptr, 0, timeout_ms);
    return;
  }
  if (::poll(fds, n, timeout_ms) <= 0) return;
  for (nfds_t i = 0; i < n; ++i) {
    if (!(fds[i].revents & POLLIN)) continue;
    const int c = ::accept4(fds[i].fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    if (fds[i].fd == unix_fd_)
      serve_unix(c, cmd);
    else
      serve_http(c, metrics);
    ::close(c);
  }
}

void ControlServer::serve_unix(int fd, const CommandHandler& cmd) {
  std::string line = read_until(fd, "\n", budget());
  Reply r;
  if (auto nl = line.find('\n'); nl != std::string::npos) {
    line.resize(nl);
    try {
      r = cmd(line);
    } catch (const std::exception& e) {
      r = Reply{false, e.what()};
    }
  } else {
    // Cut off by the budget or the size limit: never run half a command.
    r = Reply{false, "incomplete request (a command is one line of at most 8 KiB ending in a newline, sent within 2 s)"};
  }
  write_all(fd, (r.ok ? std::string("OK\n") : "ERR " + r.body + "\n") + (r.ok ? r.body : ""), budget());
}

void ControlServer::serve_http(int fd, const MetricsHandler& metrics) {
  write_all(fd, http_response(read_until(fd, "\r\n\r\n", budget()), metrics), budget());
}

std::string http_response(const std::string& req, const ControlServer::MetricsHandler& metrics) {
  const bool get = req.rfind("GET ", 0) == 0;
  const auto sp = req.find(' ', 4);
  std::string path = get && sp != std::string::npos ? req.substr(4, sp - 4) : "";
  if (const auto q = path.find('?'); q != std::string::npos) path.resize(q);  // scrapers may add ?params
  std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
  if (!get) {
    status = "405 Method Not Allowed";
    body = "only GET\n";
  } else if (path == "/metrics") {
    body = metrics();
  } else if (path == "/" || path == "/healthz") {
    body = "natgw: ok; metrics at /metrics\n";
  } else {
    status = "404 Not Found";
    body = "not found; try /metrics\n";
  }
  return "HTTP/1.0 " + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n\r\n" + body;
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
  } else {
    r.ok = false;
    r.body = "natgw at " + path + " gave no answer (timed out or closed)";
  }
  return r;
}

}  // namespace natgw::control
