// Per-worker counters: cache-aligned, written only by their worker, summed by readers.
#pragma once

#include <cstdint>

#include "natgw/counter.hpp"

namespace natgw::dp {

constexpr unsigned kMaxIfaces = 16;

// Drop reasons. Names are the stable label values used in metrics and tests.
enum Drop : uint8_t {
  kDropMalformed,      // failed IPv4/L4 validation
  kDropNonIpv4,        // EtherType other than IPv4/ARP (IPv6, VLAN, ...)
  kDropNotForUs,       // destination MAC not ours; unsupported packet to our address
  kDropTtl,            // TTL expired
  kDropNoRoute,        // no route to destination
  kDropAcl,            // denied by ACL
  kDropNoPort,         // no outside port for a new flow: exhaustion, or a mapping collision
  kDropTableFull,      // session table full
  kDropNoSession,      // inbound packet to a NAT address with no session
  kDropArpUnresolved,  // next hop did not answer ARP
  kDropMtu,            // too big for the egress MTU (DF set, or could not fragment)
  kDropFragment,       // fragment whose first fragment was never seen
  kDropNoMbuf,         // mempool empty when building a reply
  kDropTxFull,         // the TX queue did not take the packet
  kDropUnsupported,    // what NAT cannot translate: SCTP from a SNAT source, ICMP redirects, fragmented ICMP errors
  kDropHandoff,        // the worker that owns the flow had no room in its handoff ring
  kDropHostLimit,      // new flow of an inside host that has nat.max_sessions_per_host sessions
  kDropHostPortLimit,  // new flow needing a new port, of an inside host that has nat.max_ports_per_host
  kDropCount
};

const char* drop_name(unsigned d);

struct IfaceCounters {
  Counter rx_packets, rx_bytes, tx_packets, tx_bytes;
};

struct alignas(64) WorkerCounters {
  IfaceCounters iface[kMaxIfaces];
  Counter drops[kDropCount];
  Counter malformed[8];  // by net::ParseError
  Counter forwarded;     // transit packets forwarded without translation
  Counter in2out;        // translated inside -> outside
  Counter out2in;        // translated outside -> inside
  Counter icmp_errors_translated;
  Counter icmp_errors_sent;
  Counter icmp_errors_ratelimited;
  Counter echo_replies;
  Counter arp_requests_sent;
  Counter arp_replies_sent;
  Counter arp_learned;
  Counter arp_table_full;
  Counter fragments_translated;
  Counter fragments_buffered;
  Counter fragments_created;  // fragments we made to fit an egress MTU
  Counter mss_clamped;
  Counter handed_off;  // packets passed to the worker that owns them
  Counter hairpinned;  // inside -> our outside address -> inside (nat.hairpinning)
  Counter inbound_sessions;  // sessions an outside packet opened (endpoint-independent filtering)
  Counter busy_cycles;
  Counter idle_cycles;
  Counter polls;
};

}  // namespace natgw::dp
