// NAT event records (nat_events in the config): what a worker tells the control thread about a
// translated session when it is created and when it ends, for abuse tracing ("who had outside
// address:port X toward Y at time T"). Workers put them on their own single-producer ring; the
// control thread formats and writes them (lib/control/event_log.hpp), never the data path.
#pragma once

#include <rte_byteorder.h>

#include <cstdint>

namespace natgw::nat {

// kQuotaSessions / kQuotaPorts: an inside host's new flow was refused at nat.max_sessions_per_host /
// max_ports_per_host (RFC 8158's "quota exceeded", maximum entries per user). At most one a second per
// host (HostSessions::quota_due), so a host hammering its limit cannot flood the log.
// kPortsExhausted: a new flow found no port on its outside address (out_ip) for its protocol (RFC 8158's
// "NAT ports exhausted"); at most one a second per address and protocol class per worker.
enum class NatEventKind : uint8_t { kCreate = 1, kDelete = 2, kQuotaSessions = 3, kQuotaPorts = 4, kPortsExhausted = 5 };

struct NatEvent {
  uint32_t start_ms;  // the session's creation, on the workers' millisecond clock (Context::clock_origin_tsc);
                      // kQuota*: when the flow was refused
  uint32_t end_ms;    // kDelete: its last packet (what expiry measured from); kCreate: = start_ms;
                      // kQuota*: the limit (quota_limit())
  NatEventKind kind;
  uint8_t proto;
  uint16_t worker;
  rte_be32_t in_ip, out_ip, remote_ip;
  rte_be16_t in_port, out_port, remote_port;  // ICMP: the identifiers, remote_port 0
  uint16_t pad = 0;
  // kQuota*, kPortsExhausted: the refused flow is in_ip:in_port -> remote_ip:remote_port; out_port is 0,
  // out_ip 0 (kQuota*) or the exhausted address. start_ms: when; end_ms: the limit (kQuota*) or 0.
  bool is_session() const { return kind == NatEventKind::kCreate || kind == NatEventKind::kDelete; }
  bool is_quota() const { return kind == NatEventKind::kQuotaSessions || kind == NatEventKind::kQuotaPorts; }
  uint32_t quota_limit() const { return end_ms; }
};
static_assert(sizeof(NatEvent) == 32, "ring elements: a multiple of 4 bytes, two per cache line");

// The once-a-second bound of the quota and ports-exhausted events. `last` holds the time of the
// last event due + 1 (0: none yet); whether one is due now, marking it when it is. The distance is
// taken on the 32-bit millisecond clock, right across its wrap.
inline bool event_due(uint32_t& last, uint32_t now_ms) {
  if (last != 0 && now_ms - (last - 1) < 1000) return false;
  last = now_ms + 1;  // 0 ("none yet") at the clock's last millisecond: one event early, once in 49 days
  return true;
}

}  // namespace natgw::nat
