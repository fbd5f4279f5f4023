// Session lookup keys: the 5-tuple exactly as it appears on the wire in each direction.
//
//   inside  (dir 0): src = inside host, dst = remote,     sport = inside port,  dport = remote port
//   outside (dir 1): src = remote,      dst = NAT address, sport = remote port, dport = outside port
// ICMP queries put the identifier where NAT maps it: sport on the inside key,
// dport on the outside key (the other port is 0). 16 bytes: hashed as two 8-byte
// words, compared in two loads.
#pragma once

#include <rte_byteorder.h>

#include <netinet/in.h>

#include <cstdint>

namespace natgw::nat {

enum Dir : uint8_t { kInside = 0, kOutside = 1 };

// 8-byte aligned: hashed and compared as two 64-bit words.
struct alignas(8) FlowKey {
  rte_be32_t src;
  rte_be32_t dst;
  rte_be16_t sport;
  rte_be16_t dport;
  uint8_t proto;
  uint8_t dir;
  uint16_t pad;
  bool operator==(const FlowKey&) const = default;
};
static_assert(sizeof(FlowKey) == 16, "FlowKey must stay 16 bytes");

inline FlowKey make_key(rte_be32_t src, rte_be32_t dst, rte_be16_t sport, rte_be16_t dport,
                        uint8_t proto, Dir dir) {
  return FlowKey{src, dst, sport, dport, proto, dir, 0};
}

// Endpoint-independent mapping key: one inside endpoint toward one outside pool.
struct alignas(8) MapKey {
  rte_be32_t in_ip;
  rte_be16_t in_port;
  uint8_t proto;
  uint8_t pool;  // which outside address set (per egress interface / SNAT rule)
  bool operator==(const MapKey&) const = default;
};
static_assert(sizeof(MapKey) == 8);

// Protocol class for port allocation: TCP, UDP and ICMP identifiers are separate spaces.
enum ProtoClass : uint8_t { kTcp = 0, kUdp = 1, kIcmp = 2, kProtoClasses = 3 };
inline int proto_class(uint8_t proto) {
  return proto == 6 ? kTcp : proto == 17 ? kUdp : proto == 1 ? kIcmp : -1;
}
// "tcp", "udp", "icmp" (metric labels, natgwctl, event records); "?" for -1.
inline const char* proto_class_name(int pc) {
  static constexpr const char* kNames[kProtoClasses] = {"tcp", "udp", "icmp"};
  return pc >= 0 && pc < kProtoClasses ? kNames[pc] : "?";
}

}  // namespace natgw::nat
