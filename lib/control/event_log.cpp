#include "control/event_log.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <rte_cycles.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <iostream>
#include <stdexcept>

namespace natgw::control {

namespace {

std::string endpoint(rte_be32_t ip, rte_be16_t port) {
  return config::format_ipv4(rte_be_to_cpu_32(ip)) + ":" + std::to_string(rte_be_to_cpu_16(port));
}

std::string utc(int64_t ms) {
  const std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms - int64_t{secs} * 1000));
  return buf;
}

const char* proto_name(uint8_t p) {
  switch (p) {
    case IPPROTO_TCP: return "tcp";
    case IPPROTO_UDP: return "udp";
    case IPPROTO_ICMP: return "icmp";
    default: return "other";
  }
}

}  // namespace

EventLog::~EventLog() {
  if (file_) std::fclose(file_);
  if (sock_ >= 0) ::close(sock_);
}

void EventLog::configure(const config::NatEvents& cfg) {
  // The file is opened anew at every configure (every reload), so that logrotate's postrotate can
  // `systemctl reload natgw` and the log goes on in the new file.
  {
    FILE* f = nullptr;
    if (!cfg.file.empty()) {
      f = std::fopen(cfg.file.c_str(), "ae");  // e: close-on-exec
      if (!f)
        throw std::runtime_error(cfg.loc.file + ":" + std::to_string(cfg.loc.line) + ": nat_events.file " +
                                 cfg.file + ": " + std::strerror(errno));
    }
    if (file_) std::fclose(file_);
    file_ = f;
  }
  if (cfg.syslog_addr) {
    if (sock_ < 0) sock_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock_ < 0) throw std::runtime_error(std::string("nat_events.syslog: socket: ") + std::strerror(errno));
    to_ = sockaddr_in{};
    to_.sin_family = AF_INET;
    to_.sin_addr.s_addr = htonl(cfg.syslog_addr);
    to_.sin_port = htons(cfg.syslog_port);
    char h[256] = {};
    if (::gethostname(h, sizeof h - 1) == 0 && h[0]) host_ = h;
  } else if (sock_ >= 0) {
    ::close(sock_);
    sock_ = -1;
  }
  said_error_ = false;
}

std::string EventLog::format(const nat::NatEvent& e, int64_t start_ms, int64_t end_ms) {
  const bool create = e.kind == nat::NatEventKind::kCreate;
  std::string s = utc(create ? start_ms : end_ms);
  s += create ? " session-create proto=" : " session-delete proto=";
  s += proto_name(e.proto);
  s += " inside=" + endpoint(e.in_ip, e.in_port);
  s += " outside=" + endpoint(e.out_ip, e.out_port);
  s += " remote=" + endpoint(e.remote_ip, e.remote_port);
  if (!create) s += " start=" + utc(start_ms);
  return s;
}

void EventLog::write(const std::string& text, int64_t when_ms) {
  if (file_ && (std::fputs(text.c_str(), file_) == EOF || std::fputc('\n', file_) == EOF)) ++write_errors_;
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
  return "# HELP natgw_nat_events_total NAT events written (nat_events), by kind\n"
         "# TYPE natgw_nat_events_total counter\n"
         "natgw_nat_events_total{kind=\"session-create\"} " + std::to_string(logged_[0]) + "\n" +
         "natgw_nat_events_total{kind=\"session-delete\"} " + std::to_string(logged_[1]) + "\n" +
         "# HELP natgw_nat_events_errors_total NAT events a target did not take (file write or syslog send failed)\n"
         "# TYPE natgw_nat_events_errors_total counter\n"
         "natgw_nat_events_errors_total " + std::to_string(write_errors_) + "\n";
}

size_t EventLog::drain(const std::vector<rte_ring*>& rings, uint64_t origin_tsc, size_t max) {
  if (origin_tsc != origin_tsc_) {  // the wall-clock time of the workers' clock origin, once
    const int64_t now_wall = std::chrono::duration_cast<std::chrono::milliseconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
    const uint64_t tsc = rte_get_tsc_cycles();
    origin_wall_ms_ = now_wall - static_cast<int64_t>((tsc - origin_tsc) / (rte_get_tsc_hz() / 1000));
    origin_tsc_ = origin_tsc;
  }
  size_t taken = 0;
  nat::NatEvent batch[64];
  for (rte_ring* r : rings) {
    while (taken < max) {
      const unsigned n = rte_ring_sc_dequeue_burst_elem(r, batch, sizeof(nat::NatEvent), 64, nullptr);
      if (n == 0) break;
      taken += n;
      if (!enabled()) continue;
      for (unsigned i = 0; i < n; ++i) {
        const nat::NatEvent& e = batch[i];
        const int64_t start = origin_wall_ms_ + e.start_ms, end = origin_wall_ms_ + e.end_ms;
        write(format(e, start, end), e.kind == nat::NatEventKind::kCreate ? start : end);
        ++logged_[e.kind == nat::NatEventKind::kCreate ? 0 : 1];
      }
    }
  }
  if (file_ && taken) std::fflush(file_);
  return taken;
}

}  // namespace natgw::control
