// One NAT session: one cache line holding everything both directions need.
#pragma once

#include <rte_ether.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "nat/flow_key.hpp"

namespace natgw::nat {

// TCP and liveness flags, set (and, around an RST, cleared) with atomics by whichever
// worker sees the packet.
enum SessionFlag : uint8_t {
  kSynIn = 1 << 0,
  kSynOut = 1 << 1,
  kFinIn = 1 << 2,
  kFinOut = 1 << 3,
  kRst = 1 << 4,
  kSeenOut = 1 << 5,  // a packet came back from outside (needed for "established")
  kAliveIn = 1 << 6,   // since the last RST: a packet without RST came from inside...
  kAliveOut = 1 << 7,  // ...and from outside (both: the ends ignored the RST, kRst is cleared)
};

enum class SessionState : uint8_t { kFree = 0, kActive = 1, kClosing = 2 };

struct alignas(64) Session {
  // Written once by the owner before the keys are published; read-only after.
  // Ordered so both lookup keys can be read back as words (SessionTable::has_key):
  // inside key = {in_ip, remote_ip} + {in_port, remote_port}, outside key =
  // {remote_ip, out_ip} + {remote_port, out_port}, each followed by proto.
  rte_be32_t in_ip;
  rte_be32_t remote_ip;
  rte_be32_t out_ip;
  rte_be16_t in_port;      // ICMP: inside identifier
  rte_be16_t remote_port;  // ICMP: 0
  rte_be16_t out_port;     // ICMP: outside identifier
  uint8_t proto;
  uint8_t in_iface;   // where the inside host is: replies go back out here (to in_mac)
  uint8_t out_iface;  // egress chosen at creation: a route change moves new flows only
  uint8_t out_addr;   // index of out_ip in the worker's outside-address list
  rte_be32_t out_nh;  // next hop on out_iface (gateway, or remote_ip when on-link)
  // Checksum deltas for inside->outside, folded; outside->inside uses their negation.
  uint16_t l3_delta;  // IPv4 header: in_ip -> out_ip
  uint16_t l4_delta;  // TCP/UDP/ICMP: address (pseudo-header) and port/identifier
  uint32_t mapping;   // index of the endpoint-independent mapping
  uint32_t created_ms;
  // Mutable: any worker may touch these, with atomics.
  std::atomic<uint32_t> last_seen_ms;
  std::atomic<uint8_t> flags;
  // Owner only.
  SessionState state;
  uint8_t owner;
  bool inbound;  // opened by an outside packet (endpoint-independent filtering)
  uint32_t next_closing;  // link in the owner's list of sessions waiting for a grace period
  // The previous hop the inside traffic comes from: its MAC in the low 6 bytes (in
  // memory order, so one 8-byte store writes it into a frame) and in_iface above them.
  // Replies go back to it. Any worker that sees the flow's traffic on in_iface from
  // another MAC (the hop failed over, the host's NIC changed) stores it whole, so a
  // reader on another worker never sees half of one MAC.
  std::atomic<uint64_t> in_mac;

  static uint64_t hop_word(const rte_ether_addr& a, uint8_t iface) {
    uint64_t w = uint64_t{iface} << 48;
    std::memcpy(&w, &a, sizeof a);  // little-endian: the low 6 bytes
    return w;
  }
  // The source MAC of a frame that came in on `iface`, as in_mac holds a hop: one load
  // (bytes 4-11 of the Ethernet header; the last two destination bytes shift out).
  static uint64_t hop_word(const rte_ether_hdr* eth, uint8_t iface) {
    static_assert(RTE_BYTE_ORDER == RTE_LITTLE_ENDIAN);
    uint64_t w;
    std::memcpy(&w, reinterpret_cast<const uint8_t*>(eth) + 4, sizeof w);
    return w >> 16 | uint64_t{iface} << 48;
  }
  // Inside traffic's hop: learned if it came in on in_iface (one compare does both).
  void learn_prev_hop(uint64_t hop) {
    const uint64_t cur = in_mac.load(std::memory_order_relaxed);
    if (cur != hop && (cur ^ hop) >> 48 == 0) [[unlikely]] in_mac.store(hop, std::memory_order_relaxed);
  }
};
static_assert(sizeof(Session) == 64, "a session must fit one cache line");
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(offsetof(Session, remote_ip) == 4 && offsetof(Session, out_ip) == 8 &&
                  offsetof(Session, in_port) == 12 && offsetof(Session, remote_port) == 14 &&
                  offsetof(Session, out_port) == 16 && offsetof(Session, proto) == 18,
              "SessionTable::has_key reads the keys back by these offsets");

}  // namespace natgw::nat
