#include "control/systemd_notify.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <stdexcept>

namespace natgw::control {

namespace {

// A status as one line: a newline would end the assignment and start a bogus one.
std::string one_line(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\n')
      out += "; ";
    else if (c != '\r')
      out += c;
  }
  while (out.size() >= 2 && out.compare(out.size() - 2, 2, "; ") == 0) out.resize(out.size() - 2);
  return out;
}

// A decimal number with nothing around it (strtoull would take " 12", "-1" and "12abc").
bool parse_u64(const char* s, uint64_t& v) {
  if (!s || !*s) return false;
  v = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9') return false;
    const uint64_t d = static_cast<uint64_t>(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  return true;
}

}  // namespace

SystemdNotifier::SystemdNotifier(const std::string& socket) : socket_(socket) {
  addr_.sun_family = AF_UNIX;
  // The two forms sd_notify(3) documents (systemd's vsock: form is for VMs, not for natgw's hosts).
  if (socket.size() < 2 || (socket[0] != '/' && socket[0] != '@'))
    throw std::invalid_argument("NOTIFY_SOCKET '" + socket +
                                "' is neither an absolute path nor an '@' abstract name");
  if (socket.size() >= sizeof(addr_.sun_path))
    throw std::invalid_argument("NOTIFY_SOCKET '" + socket + "' is longer than an AF_UNIX address");
  std::memcpy(addr_.sun_path, socket.data(), socket.size());
  // An abstract name starts with a NUL and is exactly as long as given (no terminating NUL counts).
  if (socket[0] == '@') addr_.sun_path[0] = '\0';
  addr_len_ = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket.size() + (socket[0] == '/'));
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("socket(AF_UNIX, SOCK_DGRAM): ") + std::strerror(errno));
}

SystemdNotifier::~SystemdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

SystemdNotifier::SystemdNotifier(SystemdNotifier&& o) noexcept
    : fd_(o.fd_), socket_(std::move(o.socket_)), addr_(o.addr_), addr_len_(o.addr_len_), logged_(o.logged_) {
  o.fd_ = -1;
}

SystemdNotifier& SystemdNotifier::operator=(SystemdNotifier&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    socket_ = std::move(o.socket_);
    addr_ = o.addr_;
    addr_len_ = o.addr_len_;
    logged_ = o.logged_;
    o.fd_ = -1;
  }
  return *this;
}

SystemdNotifier SystemdNotifier::from_env() {
  const char* s = std::getenv("NOTIFY_SOCKET");
  if (!s) return {};
  try {
    return SystemdNotifier(s);
  } catch (const std::exception& e) {
    std::cerr << "natgw: sd_notify: " << e.what() << ": not notifying systemd" << std::endl;
    return {};
  }
}

bool SystemdNotifier::send(std::string_view message) noexcept {
  if (fd_ < 0) return false;
  // Not connected: the address is resolved on every send, so a socket systemd re-creates
  // (daemon-reexec) is found again. MSG_DONTWAIT: the control loop must never wait on systemd.
  const ssize_t n = ::sendto(fd_, message.data(), message.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                             reinterpret_cast<const sockaddr*>(&addr_), addr_len_);
  if (n == static_cast<ssize_t>(message.size())) {
    logged_ = false;  // the next failure after a success is news again
    return true;
  }
  if (!logged_) {
    logged_ = true;
    const int err = errno;
    const std::string_view first = message.substr(0, message.find('\n'));  // no allocation here
    std::cerr << "natgw: sd_notify: sending " << first << " to " << socket_
              << " failed: " << (n < 0 ? std::strerror(err) : "short send")
              << " (natgw carries on; failures are logged again after a send that works)" << std::endl;
  }
  return false;
}

bool SystemdNotifier::ready(std::string_view status) {
  return send("READY=1\nSTATUS=" + one_line(status) + "\nMAINPID=" + std::to_string(::getpid()));
}

bool SystemdNotifier::reloading(std::string_view status) {
  return send("RELOADING=1\nSTATUS=" + one_line(status) +
              "\nMONOTONIC_USEC=" + std::to_string(monotonic_usec()));
}

bool SystemdNotifier::stopping(std::string_view status) {
  return send("STOPPING=1\nSTATUS=" + one_line(status));
}

bool SystemdNotifier::status(std::string_view status) { return send("STATUS=" + one_line(status)); }

bool SystemdNotifier::watchdog() { return send("WATCHDOG=1"); }

std::chrono::microseconds watchdog_timeout_from_env(pid_t pid) {
  const char* usec = std::getenv("WATCHDOG_USEC");
  if (!usec) return {};
  // At most a year: systemd sends no WATCHDOG_USEC for "infinity", and a year of microseconds stays
  // far from overflowing the nanosecond clock it is added to.
  constexpr uint64_t kMaxUsec = 365ull * 24 * 3600 * 1000000;
  uint64_t v = 0;
  if (!parse_u64(usec, v) || v == 0 || v > kMaxUsec) {
    std::cerr << "natgw: WATCHDOG_USEC='" << usec
              << "' is not a number of microseconds between 1 and a year: no watchdog" << std::endl;
    return {};
  }
  // Set for another process (a parent that passed its environment on): not ours to feed.
  if (const char* p = std::getenv("WATCHDOG_PID")) {
    uint64_t owner = 0;
    if (!parse_u64(p, owner)) {
      std::cerr << "natgw: WATCHDOG_PID='" << p << "' is not a pid: no watchdog" << std::endl;
      return {};
    }
    if (owner != static_cast<uint64_t>(pid)) return {};
  }
  return std::chrono::microseconds(static_cast<int64_t>(v));
}

uint64_t monotonic_usec() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

}  // namespace natgw::control
