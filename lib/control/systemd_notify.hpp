// systemd's readiness protocol (sd_notify(3)) spoken directly, without libsystemd: newline-separated
// VAR=value assignments, one datagram per message, to the AF_UNIX socket $NOTIFY_SOCKET names (a path,
// or '@' for an abstract name). Control thread only. A notification that fails never stops natgw:
// send() returns false and only the first failure of a run is logged (a gone or full socket would
// otherwise log every watchdog interval).
#pragma once

#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace natgw::control {

class SystemdNotifier {
 public:
  SystemdNotifier() = default;  // inactive: every message is dropped (send() returns false)
  // `socket`: a $NOTIFY_SOCKET value. Throws std::invalid_argument when it names no usable AF_UNIX
  // address, std::runtime_error when no socket can be made.
  explicit SystemdNotifier(const std::string& socket);
  ~SystemdNotifier();
  SystemdNotifier(SystemdNotifier&& o) noexcept;
  SystemdNotifier& operator=(SystemdNotifier&& o) noexcept;
  SystemdNotifier(const SystemdNotifier&) = delete;
  SystemdNotifier& operator=(const SystemdNotifier&) = delete;

  // From $NOTIFY_SOCKET: inactive when unset; when set but unusable, says why on stderr and stays
  // inactive (systemd then times the start out, and the log says why).
  static SystemdNotifier from_env();

  bool active() const { return fd_ >= 0; }
  const std::string& socket() const { return socket_; }

  // One datagram as it is, e.g. "READY=1\nSTATUS=running". True if the socket took it. Never blocks:
  // a full receive queue is a failure like any other, and the next watchdog interval tries again.
  bool send(std::string_view message) noexcept;

  // What natgw sends. `status` is one line for `systemctl status` (line breaks become "; ").
  bool ready(std::string_view status);      // READY=1, STATUS=, MAINPID=: up, or a reload finished
  bool reloading(std::string_view status);  // RELOADING=1, STATUS=, MONOTONIC_USEC= (systemd >= 253 wants it)
  bool stopping(std::string_view status);   // STOPPING=1, STATUS=
  bool status(std::string_view status);     // STATUS= alone
  bool watchdog();                          // WATCHDOG=1

 private:
  int fd_ = -1;
  std::string socket_;
  sockaddr_un addr_{};
  socklen_t addr_len_ = 0;
  bool logged_ = false;  // a failure was logged: later ones are not, until a send works
};

// The watchdog timeout systemd expects natgw to keep (sd_watchdog_enabled(3)): $WATCHDOG_USEC when set
// and meant for process `pid` ($WATCHDOG_PID unset or equal), else 0. A malformed value is reported on
// stderr and ignored.
std::chrono::microseconds watchdog_timeout_from_env(pid_t pid);

// CLOCK_MONOTONIC in microseconds: the clock of RELOADING=1's MONOTONIC_USEC.
uint64_t monotonic_usec();

}  // namespace natgw::control
