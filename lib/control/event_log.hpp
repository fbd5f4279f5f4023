// NAT event logging (the config's [nat_events]): the control thread drains the workers' event
// rings (nat::NatEvent, see lib/nat/nat_event.hpp) and writes one record per translated session
// created or ended (and one per host refused at its quota, per address out of ports, at most once a
// second each), to a file (one line each), a syslog collector (RFC 5424 messages over UDP,
// RFC 5426, one per datagram) and/or an IPFIX collector (RFC 7011 over UDP, RFC 8158's NAT44 session
// records; lib/control/ipfix.hpp). What an abuse report needs: inside endpoint, outside endpoint,
// remote endpoint, protocol, start and end. Control thread only; the data path never waits on it:
// a full ring drops events and counts them (natgw_nat_events_lost_total).
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <cstdio>
#include <iterator>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "control/ipfix.hpp"
#include "nat/nat_event.hpp"

struct rte_ring;

namespace natgw::control {

class EventLog {
 public:
  EventLog() = default;
  ~EventLog();  // sends what is pending (best effort)
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;

  // Open what `cfg` names (the file anew, also when its name is the same: a reload after log
  // rotation), closing what it no longer names. Throws std::runtime_error with the reason (a file
  // that cannot be opened for appending, a socket that cannot be created), leaving the current
  // targets as they were. What is pending goes to the current targets first.
  void configure(const config::NatEvents& cfg);
  bool enabled() const { return file_ != nullptr || sock_ >= 0 || ipfix_sock_ >= 0; }

  // Write what the rings hold, at most `budget` events a call, taken from the rings in turn (a busy
  // worker cannot starve another's events, and one call cannot hold the control thread for long:
  // call again while pending()). `now_wall_ms` is the wall clock (ms since the epoch) when the
  // workers' millisecond clock read `now_ms` (Context::clock_ms): event times are placed from an
  // anchor renewed when the wall clock steps or drifts a second from it, so they follow NTP and
  // the 32-bit clock's wrap (49.7 days).
  // Without a target the rings are emptied all the same (events queued before a reload turned
  // logging off are written first: the Daemon drains before it reconfigures).
  static constexpr size_t kBudget = 8192;
  size_t drain(const std::vector<rte_ring*>& rings, int64_t now_wall_ms, uint32_t now_ms, size_t budget = kBudget);
  static bool pending(const std::vector<rte_ring*>& rings);
  // One event written now, not through a ring (the ends of sessions still open when natgw stops).
  void log(const nat::NatEvent& e, int64_t now_wall_ms, uint32_t now_ms);

  // The event as text, times in UTC with milliseconds (`start_ms`/`end_ms` are wall-clock
  // milliseconds since the epoch): "2026-12-02T18:05:00.123Z session-create proto=udp
  // inside=A:p outside=B:q remote=C:r"; a session-delete line carries the time of its last packet
  // and its start=.
  static std::string format(const nat::NatEvent& e, int64_t start_ms, int64_t end_ms);

  // kQuotaSessions and kQuotaPorts share one count (quota-exceeded).
  uint64_t logged(nat::NatEventKind k) const { return logged_[kind_index(k)]; }
  uint64_t write_errors() const { return write_errors_; }
  // natgw_nat_events_total{kind} and natgw_nat_events_errors_total (Prometheus text).
  std::string prometheus() const;
  // natgwctl stats' line, when logging is on ("" when off); `lost`: the workers' full-ring drops.
  std::string summary(uint64_t lost) const;

 private:
  void write(const std::string& text, int64_t when_ms);
  void flush();
  void send_ipfix();  // the message being built, if any
  void anchor(int64_t now_wall_ms, uint32_t now_ms);
  int64_t anchor_wall_ms_ = 0;  // the wall clock when the workers' clock read anchor_ms_
  uint32_t anchor_ms_ = 0;
  bool anchored_ = false;
  FILE* file_ = nullptr;
  int sock_ = -1;
  sockaddr_in to_{};
  int ipfix_sock_ = -1;
  sockaddr_in ipfix_to_{};
  ipfix::MessageBuilder ipfix_;
  uint32_t ipfix_domain_ = 0;
  // The wall clock (ms since the epoch) given to the latest drain() or log(): the export time in the
  // header of the IPFIX message sent next (when full, at a drain's end, a reconfigure or destruction).
  int64_t now_wall_ms_ = 0;
  std::string host_ = "-";  // syslog HOSTNAME
  static int kind_index(nat::NatEventKind k) {
    switch (k) {
      case nat::NatEventKind::kCreate: return 0;
      case nat::NatEventKind::kDelete: return 1;
      case nat::NatEventKind::kQuotaSessions:
      case nat::NatEventKind::kQuotaPorts: return 2;
      case nat::NatEventKind::kPortsExhausted: return 3;
    }
    return 3;
  }
  // The kinds' names in lines, metrics and natgwctl stats, by kind_index.
  static constexpr const char* kKindNames[] = {"session-create", "session-delete", "quota-exceeded", "ports-exhausted"};
  uint64_t logged_[std::size(kKindNames)] = {};
  uint64_t write_errors_ = 0;
  bool said_error_ = false;       // a syslog send failed (said once until a reload)
  bool said_file_error_ = false;  // a file write failed (likewise)
  bool said_ipfix_error_ = false;  // an IPFIX send failed (likewise)
  size_t unflushed_ = 0;          // lines written since the last flush (counted lost if it fails)
};

}  // namespace natgw::control
