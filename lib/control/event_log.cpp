#include "control/event_log.hpp"

#include "control/views.hpp"
#include "nat/flow_key.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_cycles.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <stdexcept>

namespace natgw::control {

namespace {

std::string utc(int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms - int64_t{secs} * 1000));
  return buf;
}

// A UDP socket for a collector, kept across reloads while one is configured. Throws with the reason.
int udp_socket(int current, bool wanted, const char* what) {
  if (!wanted || current >= 0) return current;
  const int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0) throw std::runtime_error(std::string(what) + ": socket: " + std::strerror(errno));
  return s;
}

// Room for a burst of IPFIX messages (an expiry sweep ending thousands of sessions at once sends
// hundreds) while the NIC or a slow path drains them: the default (net.core.wmem_default, ~200 KiB)
// would refuse the rest with EAGAIN. Best effort: past net.core.wmem_max with CAP_NET_ADMIN (which
// natgw has to drive its ports), else up to it; a failure leaves the default.
constexpr int kIpfixSendBuffer = 1 << 20;

void enlarge_send_buffer(int s) {
  if (::setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &kIpfixSendBuffer, sizeof kIpfixSendBuffer) != 0)
    (void)::setsockopt(s, SOL_SOCKET, SO_SNDBUF, &kIpfixSendBuffer, sizeof kIpfixSendBuffer);
}

sockaddr_in ipv4_endpoint(uint32_t addr, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(addr);
  a.sin_port = htons(port);
  return a;
}

}  // namespace

EventLog::~EventLog() {
  try {
    flush();  // what is pending (best effort: nothing is retried, and nothing may leave a destructor)
  } catch (...) {
  }
  if (file_) std::fclose(file_);
  if (sock_ >= 0) ::close(sock_);
  if (ipfix_sock_ >= 0) ::close(ipfix_sock_);
}

void EventLog::configure(const config::NatEvents& cfg) {
  // Everything is opened before anything changes: a failure leaves the running targets as they were.
  // The file is opened anew at every configure (every reload, also under the same name).
  FILE* f = nullptr;
  if (!cfg.file.empty()) {
    // 0640: who had which address when is personal data; the umask may only narrow it.
    const int fd = ::open(cfg.file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0 || !(f = ::fdopen(fd, "a"))) {
      const int err = errno;
      if (fd >= 0) ::close(fd);
      throw std::runtime_error(cfg.loc.file + ":" + std::to_string(cfg.loc.line) + ": nat_events.file " + cfg.file +
                               ": " + std::strerror(err));
    }
  }
  int sock = -1, ipfix_sock = -1;
  try {
    sock = udp_socket(sock_, cfg.syslog_addr != 0, "nat_events.syslog");
    ipfix_sock = udp_socket(ipfix_sock_, cfg.ipfix_addr != 0, "nat_events.ipfix");
    if (ipfix_sock >= 0 && ipfix_sock != ipfix_sock_) enlarge_send_buffer(ipfix_sock);
  } catch (...) {
    if (f) std::fclose(f);
    if (sock >= 0 && sock != sock_) ::close(sock);
    throw;
  }
  flush();  // what was queued for the old targets goes to them
  if (file_) std::fclose(file_);
  file_ = f;
  const auto keep = [](int& s, bool wanted) {
    if (!wanted && s >= 0) ::close(s), s = -1;
  };
  keep(sock, cfg.syslog_addr != 0);
  keep(ipfix_sock, cfg.ipfix_addr != 0);
  sock_ = sock;
  if (sock_ >= 0) {
    to_ = ipv4_endpoint(cfg.syslog_addr, cfg.syslog_port);
    char h[256] = {};
    if (::gethostname(h, sizeof h - 1) == 0 && h[0]) host_ = h;
  }
  // A new collector (or domain) is a new IPFIX transport session: its sequence starts at 0, its
  // first message carries the template.
  const sockaddr_in ipfix_to = ipv4_endpoint(cfg.ipfix_addr, cfg.ipfix_port);
  if (ipfix_sock >= 0 && (ipfix_sock_ < 0 || std::memcmp(&ipfix_to, &ipfix_to_, sizeof ipfix_to) != 0 ||
                          ipfix_domain_ != cfg.ipfix_domain))
    ipfix_.restart(cfg.ipfix_domain);
  ipfix_sock_ = ipfix_sock;
  ipfix_to_ = ipfix_to;
  ipfix_domain_ = cfg.ipfix_domain;
  said_error_ = said_file_error_ = said_ipfix_error_ = false;
}

std::string EventLog::format(const nat::NatEvent& e, int64_t start_ms, int64_t end_ms) {
  // "<time> <kind> <what>proto=P inside=I [outside=O] remote=R"
  const bool deleted = e.kind == nat::NatEventKind::kDelete;
  std::string s = utc(deleted ? end_ms : start_ms) + " " + kKindNames[kind_index(e.kind)] + " ";
  if (e.is_quota())  // start_ms: when the flow was refused; the limit is the event's, not a time
    s += std::string("limit=") +
         (e.kind == nat::NatEventKind::kQuotaSessions ? "max_sessions_per_host:" : "max_ports_per_host:") +
         std::to_string(e.quota_limit()) + " ";
  else if (e.kind == nat::NatEventKind::kPortsExhausted)
    s += "outside=" + config::format_ipv4(ntohl(e.out_ip)) + " ";
  s += "proto=";
  s += nat::proto_class_name(nat::proto_class(e.proto));
  s += " inside=" + format_endpoint(e.in_ip, e.in_port);
  if (e.is_session()) s += " outside=" + format_endpoint(e.out_ip, e.out_port);
  s += " remote=" + format_endpoint(e.remote_ip, e.remote_port);
  if (deleted) s += " start=" + utc(start_ms);
  return s;
}

void EventLog::send_ipfix() {
  if (ipfix_.empty()) return;
  const unsigned records = ipfix_.records();
  const std::string m = ipfix_.take(now_wall_ms_);
  if (ipfix_sock_ < 0) return;
  if (::sendto(ipfix_sock_, m.data(), m.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
               reinterpret_cast<const sockaddr*>(&ipfix_to_), sizeof ipfix_to_) != static_cast<ssize_t>(m.size())) {
    const int err = errno;
    write_errors_ += records;
    ipfix_.resend_template();  // the collector may not have it yet: the next message carries it
    if (!said_ipfix_error_) {
      said_ipfix_error_ = true;
      std::cerr << "natgw: nat_events: sending to the IPFIX collector failed: " << std::strerror(err)
                << " (counted in natgw_nat_events_errors_total; not logged again until a reload)" << std::endl;
    }
  }
}

void EventLog::flush() {
  send_ipfix();
  if (!file_ || !unflushed_) return;
  if (std::fflush(file_) != 0 || std::ferror(file_)) {
    write_errors_ += unflushed_;  // stdio drops its buffer on a failed write: those lines are lost
    std::clearerr(file_);
    if (!said_file_error_) {
      said_file_error_ = true;
      std::cerr << "natgw: nat_events: writing the event file failed: " << std::strerror(errno)
                << " (counted in natgw_nat_events_errors_total; not said again until a reload)" << std::endl;
    }
  }
  unflushed_ = 0;
}

void EventLog::write(const std::string& text, int64_t when_ms) {
  if (file_) {
    std::fputs((text + "\n").c_str(), file_);  // one call: a line is written whole or not at all
    ++unflushed_;
  }
  if (sock_ >= 0) {
    // RFC 5424: <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG; facility
    // local0, severity info (16 * 8 + 6 = 134). The timestamp is the event's, also at the line's start.
    const std::string msg = "<134>1 " + utc(when_ms) + " " + host_ + " natgw " + std::to_string(::getpid()) +
                            " NAT44 - " + text.substr(text.find(' ') + 1);
    if (::sendto(sock_, msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&to_),
                 sizeof to_) != static_cast<ssize_t>(msg.size())) {
      ++write_errors_;
      if (!said_error_) {
        said_error_ = true;
        std::cerr << "natgw: nat_events: sending to the syslog collector failed: " << std::strerror(errno)
                  << " (counted in natgw_nat_events_errors_total; not logged again until a reload)" << std::endl;
      }
    }
  }
}

std::string EventLog::prometheus() const {
  std::string o = "# HELP natgw_nat_events_total NAT events written (nat_events), by kind\n"
                  "# TYPE natgw_nat_events_total counter\n";
  for (size_t k = 0; k < std::size(kKindNames); ++k)
    o += "natgw_nat_events_total{kind=\"" + std::string(kKindNames[k]) + "\"} " + std::to_string(logged_[k]) + "\n";
  return o +
         "# HELP natgw_nat_events_errors_total NAT events a target did not take (file write, syslog or IPFIX send "
         "failed)\n"
         "# TYPE natgw_nat_events_errors_total counter\n"
         "natgw_nat_events_errors_total " + std::to_string(write_errors_) + "\n";
}

std::string EventLog::summary(uint64_t lost) const {
  if (!enabled()) return {};
  std::string o = "nat events:";
  for (size_t k = 0; k < std::size(kKindNames); ++k)
    o += std::string(k ? ", " : " ") + kKindNames[k] + " " + std::to_string(logged_[k]);
  return o + "; lost " + std::to_string(lost) + ", write errors " + std::to_string(write_errors_) + "\n";
}

void EventLog::anchor(int64_t now_wall_ms, uint32_t now_ms) {
  // One anchor (wall clock <-> the workers' clock) for as long as it holds: a session's create and
  // delete records then agree on its start to the millisecond. A new one when the wall clock has
  // stepped (NTP) or the TSC rate's error has added up to a second, and before the 32-bit clock's
  // signed distance from it runs out (24.8 days).
  const uint32_t since = now_ms - anchor_ms_;
  const int64_t predicted = anchor_wall_ms_ + since;
  if (!anchored_ || since > (1u << 30) || predicted - now_wall_ms > 1000 || now_wall_ms - predicted > 1000) {
    anchor_wall_ms_ = now_wall_ms;
    anchor_ms_ = now_ms;
    anchored_ = true;
  }
}

void EventLog::log(const nat::NatEvent& e, int64_t now_wall_ms, uint32_t now_ms) {
  anchor(now_wall_ms, now_ms);
  now_wall_ms_ = now_wall_ms;
  // Signed distance from the anchor on the 32-bit clock: right across its wrap.
  const int64_t start = anchor_wall_ms_ + static_cast<int32_t>(e.start_ms - anchor_ms_);
  const int64_t end = anchor_wall_ms_ + static_cast<int32_t>(e.end_ms - anchor_ms_);
  if (!e.is_session()) {
    if (file_ || sock_ >= 0) write(format(e, start, 0), start);
    if (ipfix_sock_ >= 0) {
      if (!ipfix_.empty() && !ipfix_.room_for(e)) send_ipfix();
      ipfix_.add_other(e, start, now_wall_ms);
      if (ipfix_.full()) send_ipfix();
    }
    ++logged_[kind_index(e.kind)];
    return;
  }
  const bool create = e.kind == nat::NatEventKind::kCreate;
  if (file_ || sock_ >= 0) write(format(e, start, end), create ? start : end);
  if (ipfix_sock_ >= 0) {
    // observationTimeMilliseconds: a create happened at the session's first packet; a delete when the
    // worker ended the session, which the event carries no time of: when it is logged (a control-loop
    // turn later, more under a backlog). flowEndMilliseconds is the last packet, on a create its first
    // (its start) rather than 0: IANA defines it as the flow's last packet, RFC 8158 leaves it out of
    // its NAT44 templates, and collectors that place or time a flow by it (nfdump, Elastic, ntopng:
    // end - start) would read 0 as 1970 and a negative duration.
    ipfix_.add(e,
               {.event_ms = create ? start : now_wall_ms, .start_ms = start, .end_ms = create ? start : end},
               now_wall_ms);
    if (ipfix_.full()) send_ipfix();
  }
  ++logged_[kind_index(e.kind)];
}

bool EventLog::pending(const std::vector<rte_ring*>& rings) {
  for (rte_ring* r : rings)
    if (rte_ring_count(r)) return true;
  return false;
}

size_t EventLog::drain(const std::vector<rte_ring*>& rings, int64_t now_wall_ms, uint32_t now_ms, size_t budget) {
  now_wall_ms_ = now_wall_ms;  // the export time of what flush() sends, also when no event came
  size_t taken = 0;
  nat::NatEvent batch[64];
  for (bool more = true; more && taken < budget;) {  // rounds over the rings, up to 64 from each
    more = false;
    for (rte_ring* r : rings) {
      const unsigned want = static_cast<unsigned>(std::min<size_t>(64, budget - taken));
      const unsigned n = want ? rte_ring_sc_dequeue_burst_elem(r, batch, sizeof(nat::NatEvent), want, nullptr) : 0;
      taken += n;
      more = more || n == 64;
      if (enabled())
        for (unsigned i = 0; i < n; ++i) log(batch[i], now_wall_ms, now_ms);
    }
  }
  flush();
  return taken;
}

}  // namespace natgw::control
