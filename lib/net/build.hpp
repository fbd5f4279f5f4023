// Slow-path packet builders: ICMP errors, echo replies, ARP. Never on the
// established-session path; they allocate from the worker's mempool, not the heap.
#pragma once

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <cstdint>

#include "net/packet.hpp"

namespace natgw::net {

// RFC 1812 §4.3.2.3: quote as much of the original as fits in a 576-byte datagram.
constexpr uint16_t kIcmpErrorMaxLen = 576;

// Build an ICMP error about `orig` (an Ethernet+IPv4 frame whose IPv4 header is
// `orig_ip`), sourced from `src_be`, addressed to the original source. The
// Ethernet header is left for the L2 stage. `mtu` is written for frag-needed.
// Returns nullptr if the pool is empty.
rte_mbuf* build_icmp_error(rte_mempool* pool, const rte_ipv4_hdr* orig_ip, uint16_t orig_len,
                           uint8_t type, uint8_t code, rte_be32_t src_be, uint16_t mtu = 0);

// Turn an echo request addressed to us into the echo reply, in place.
void make_echo_reply(Ipv4Packet& p);

// ARP request for `target_be` from (our_mac, our_ip_be), broadcast.
rte_mbuf* build_arp_request(rte_mempool* pool, const rte_ether_addr& our_mac, rte_be32_t our_ip_be,
                            rte_be32_t target_be);

// Turn a received ARP request for our address into the reply, in place.
void make_arp_reply(rte_mbuf* m, const rte_ether_addr& our_mac);

// Recompute the IPv4 header checksum of `ip`.
void ipv4_set_checksum(rte_ipv4_hdr* ip);

}  // namespace natgw::net
