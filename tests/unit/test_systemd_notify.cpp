// sd_notify without libsystemd (control/systemd_notify.hpp): the exact datagrams a real AF_UNIX socket
// receives, at a path and at an abstract '@' name, with the sender's credentials systemd's
// NotifyAccess=main checks; failures that never throw and are logged once; $WATCHDOG_USEC/$WATCHDOG_PID.
#include <gtest/gtest.h>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>

#include "control/systemd_notify.hpp"

namespace natgw::control {
namespace {

using namespace std::chrono_literals;

// Sets (or, with nullptr, removes) an environment variable for one test, restoring it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// systemd's end: a datagram socket bound to `name` (a path, or '@' + an abstract name), receiving with
// the sender's credentials as systemd does (SO_PASSCRED).
class Receiver {
 public:
  explicit Receiver(const std::string& name) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error("socket");
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::memcpy(a.sun_path, name.data(), name.size());
    if (name[0] == '@') a.sun_path[0] = '\0';
    // An abstract name is exactly its bytes; a path is NUL-terminated.
    const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + (name[0] == '/'));
    if (::bind(fd_, reinterpret_cast<const sockaddr*>(&a), len) != 0)
      throw std::runtime_error("bind " + name + ": " + std::strerror(errno));
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one));
  }
  ~Receiver() { ::close(fd_); }

  // The next datagram, or nothing within `wait`.
  std::optional<std::string> next(std::chrono::milliseconds wait = 2000ms) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) != 1) return std::nullopt;
    char buf[4096];
    alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof(buf)};
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl;
    m.msg_controllen = sizeof(ctl);
    const ssize_t n = ::recvmsg(fd_, &m, 0);
    if (n < 0) return std::nullopt;
    sender_pid = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cr{};
        std::memcpy(&cr, CMSG_DATA(c), sizeof(cr));
        sender_pid = cr.pid;
      }
    return std::string(buf, static_cast<size_t>(n));
  }

  pid_t sender_pid = 0;  // of the last datagram

 private:
  int fd_ = -1;
};

struct TempDir {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("natgw-notify-test-" + std::to_string(::getpid()));
  TempDir() { std::filesystem::create_directories(dir); }
  ~TempDir() { std::filesystem::remove_all(dir); }
};

std::string abstract_name(const char* what) {
  return "@natgw-notify-test-" + std::to_string(::getpid()) + "-" + what;
}

uint64_t value_of(const std::string& msg, const std::string& key) {
  const auto at = msg.find("\n" + key + "=");
  if (at == std::string::npos) throw std::runtime_error(key + " missing in " + msg);
  return std::stoull(msg.substr(at + key.size() + 2));
}

TEST(SystemdNotify, SendsTheExactDatagramsToAPathSocket) {
  TempDir t;
  const std::string path = (t.dir / "notify").string();
  Receiver rx(path);
  ScopedEnv env("NOTIFY_SOCKET", path.c_str());
  SystemdNotifier n = SystemdNotifier::from_env();
  ASSERT_TRUE(n.active());
  EXPECT_EQ(n.socket(), path);
  const std::string pid = std::to_string(::getpid());

  EXPECT_TRUE(n.ready("running, generation 1: 3 interfaces"));
  EXPECT_EQ(rx.next(), "READY=1\nSTATUS=running, generation 1: 3 interfaces\nMAINPID=" + pid);
  EXPECT_EQ(rx.sender_pid, ::getpid());  // what NotifyAccess=main compares with the main PID

  const uint64_t before = monotonic_usec();
  EXPECT_TRUE(n.reloading("reloading /etc/natgw/natgw.toml"));
  const uint64_t after = monotonic_usec();
  const auto reloading = rx.next();
  ASSERT_TRUE(reloading);
  const std::string head = "RELOADING=1\nSTATUS=reloading /etc/natgw/natgw.toml\nMONOTONIC_USEC=";
  ASSERT_EQ(reloading->substr(0, head.size()), head) << *reloading;
  EXPECT_EQ(reloading->find_first_not_of("0123456789", head.size()), std::string::npos) << *reloading;
  const uint64_t usec = value_of(*reloading, "MONOTONIC_USEC");
  EXPECT_GE(usec, before);
  EXPECT_LE(usec, after);

  EXPECT_TRUE(n.ready("reload rejected, generation 1 stays in force: x.toml:3: bad"));
  EXPECT_EQ(rx.next(),
            "READY=1\nSTATUS=reload rejected, generation 1 stays in force: x.toml:3: bad\nMAINPID=" + pid);
  EXPECT_TRUE(n.watchdog());
  EXPECT_EQ(rx.next(), "WATCHDOG=1");
  // A line break inside a status would start a bogus assignment: it becomes "; ".
  EXPECT_TRUE(n.status("stuck: worker 0\nworker 1\n"));
  EXPECT_EQ(rx.next(), "STATUS=stuck: worker 0; worker 1");
  EXPECT_TRUE(n.stopping("stopping"));
  EXPECT_EQ(rx.next(), "STOPPING=1\nSTATUS=stopping");
  EXPECT_EQ(rx.next(100ms), std::nullopt) << "one datagram per message";
}

TEST(SystemdNotify, SendsToAnAbstractSocket) {
  const std::string name = abstract_name("abstract");
  Receiver rx(name);
  ScopedEnv env("NOTIFY_SOCKET", name.c_str());
  SystemdNotifier n = SystemdNotifier::from_env();
  ASSERT_TRUE(n.active());
  EXPECT_TRUE(n.watchdog());
  EXPECT_EQ(rx.next(), "WATCHDOG=1");
  EXPECT_TRUE(n.stopping("stopping"));
  EXPECT_EQ(rx.next(), "STOPPING=1\nSTATUS=stopping");
  EXPECT_EQ(rx.sender_pid, ::getpid());
}

TEST(SystemdNotify, AnAbstractNameIsExactlyItsBytes) {
  // Bound as "@...-exact"; a notifier that counted a trailing NUL, or the whole sun_path, would be
  // sending to another name, which nobody holds.
  const std::string name = abstract_name("exact");
  Receiver rx(name);
  SystemdNotifier longer(name + "x");
  testing::internal::CaptureStderr();
  EXPECT_FALSE(longer.watchdog());
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(rx.next(100ms), std::nullopt);
  SystemdNotifier exact(name);
  EXPECT_TRUE(exact.watchdog());
  EXPECT_EQ(rx.next(), "WATCHDOG=1");
}

TEST(SystemdNotify, WithoutNotifySocketNothingIsSent) {
  ScopedEnv env("NOTIFY_SOCKET", nullptr);
  SystemdNotifier n = SystemdNotifier::from_env();
  EXPECT_FALSE(n.active());
  EXPECT_FALSE(n.ready("running"));
  EXPECT_FALSE(n.watchdog());
  EXPECT_FALSE(SystemdNotifier().send("READY=1"));
}

TEST(SystemdNotify, AnUnusableNotifySocketIsReportedAndIgnored) {
  const std::string too_long = "/" + std::string(200, 'x');
  for (const std::string& bad : {std::string(), std::string("relative/notify"), std::string("@"),
                                 std::string("/"), std::string("vsock:2:1234"), too_long}) {
    SCOPED_TRACE("NOTIFY_SOCKET='" + bad + "'");
    EXPECT_THROW(SystemdNotifier{bad}, std::invalid_argument);
    ScopedEnv env("NOTIFY_SOCKET", bad.c_str());
    testing::internal::CaptureStderr();
    SystemdNotifier n = SystemdNotifier::from_env();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_FALSE(n.active());
    EXPECT_NE(err.find("not notifying systemd"), std::string::npos) << err;
  }
}

TEST(SystemdNotify, AFailedSendReturnsFalseIsLoggedOnceAndTheNextListenerIsFound) {
  TempDir t;
  const std::string path = (t.dir / "nobody").string();
  SystemdNotifier n(path);
  testing::internal::CaptureStderr();
  EXPECT_FALSE(n.ready("running"));
  EXPECT_FALSE(n.watchdog());
  EXPECT_FALSE(n.watchdog());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("sending READY=1 to " + path + " failed"), std::string::npos) << err;
  size_t lines = 0;
  for (size_t at = 0; (at = err.find("sd_notify", at)) != std::string::npos; ++at) ++lines;
  EXPECT_EQ(lines, 1u) << "logged more than once:\n" << err;
  // systemd (re)creates its socket: the address is resolved at each send, so it is found.
  {
    Receiver rx(path);
    EXPECT_TRUE(n.watchdog());
    EXPECT_EQ(rx.next(), "WATCHDOG=1");
  }
  // Gone again after a send that worked: that failure is news, logged once more.
  testing::internal::CaptureStderr();
  EXPECT_FALSE(n.watchdog());
  EXPECT_FALSE(n.watchdog());
  const std::string again = testing::internal::GetCapturedStderr();
  size_t more = 0;
  for (size_t at = 0; (at = again.find("sd_notify", at)) != std::string::npos; ++at) ++more;
  EXPECT_EQ(more, 1u) << again;
}

TEST(SystemdNotify, NeverBlocksOnAFullQueue) {
  // A receiver that reads nothing: the kernel's queue fills, and then a send fails at once instead
  // of holding up natgw's control loop (a hang here is a failure: meson's timeout).
  const std::string name = abstract_name("full");
  Receiver rx(name);
  SystemdNotifier n(name);
  testing::internal::CaptureStderr();
  int sent = 0;
  bool refused = false;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 100000 && !refused; ++i) {
    if (n.watchdog())
      ++sent;
    else
      refused = true;
  }
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(refused) << sent << " datagrams and the queue never filled";
  EXPECT_GT(sent, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
  EXPECT_NE(err.find("failures are logged again after a send that works"), std::string::npos) << err;
  EXPECT_EQ(rx.next(), "WATCHDOG=1");  // what was queued is intact
}

TEST(SystemdNotify, MovedNotifierKeepsTheSocket) {
  const std::string name = abstract_name("move");
  Receiver rx(name);
  SystemdNotifier a(name);
  SystemdNotifier b(std::move(a));
  EXPECT_FALSE(a.active());  // NOLINT(bugprone-use-after-move): moved-from is inactive, by contract
  EXPECT_TRUE(b.watchdog());
  EXPECT_EQ(rx.next(), "WATCHDOG=1");
  SystemdNotifier c;
  c = std::move(b);
  EXPECT_TRUE(c.watchdog());
  EXPECT_EQ(rx.next(), "WATCHDOG=1");
}

TEST(SystemdWatchdogEnv, TimeoutWhenSetForUs) {
  const pid_t me = ::getpid();
  const std::string mine = std::to_string(me), other = std::to_string(me + 1);
  {
    ScopedEnv usec("WATCHDOG_USEC", nullptr);
    EXPECT_EQ(watchdog_timeout_from_env(me).count(), 0);
  }
  ScopedEnv usec("WATCHDOG_USEC", "400000");
  {
    ScopedEnv pid("WATCHDOG_PID", nullptr);
    EXPECT_EQ(watchdog_timeout_from_env(me), 400ms);
  }
  {
    ScopedEnv pid("WATCHDOG_PID", mine.c_str());
    EXPECT_EQ(watchdog_timeout_from_env(me), 400ms);
  }
  {
    ScopedEnv pid("WATCHDOG_PID", other.c_str());  // inherited from a parent: not ours to feed
    EXPECT_EQ(watchdog_timeout_from_env(me).count(), 0);
  }
}

TEST(SystemdWatchdogEnv, MalformedValuesMeanNoWatchdog) {
  ScopedEnv pid("WATCHDOG_PID", nullptr);
  for (const char* bad :
       {"", "0", "-5", "12x", " 12", "abc", "99999999999999999999999", "9223372036854775807"}) {
    SCOPED_TRACE(std::string("WATCHDOG_USEC='") + bad + "'");
    ScopedEnv usec("WATCHDOG_USEC", bad);
    testing::internal::CaptureStderr();
    EXPECT_EQ(watchdog_timeout_from_env(::getpid()).count(), 0);
    EXPECT_NE(testing::internal::GetCapturedStderr().find("WATCHDOG_USEC"), std::string::npos);
  }
  ScopedEnv usec("WATCHDOG_USEC", "1000000");
  ScopedEnv bad_pid("WATCHDOG_PID", "me");
  testing::internal::CaptureStderr();
  EXPECT_EQ(watchdog_timeout_from_env(::getpid()).count(), 0);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("WATCHDOG_PID"), std::string::npos);
}

}  // namespace
}  // namespace natgw::control
