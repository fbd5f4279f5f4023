// Packet parsing for the data path: Ethernet, ARP, IPv4 and the L4 headers NAT needs.
//
// parse_ipv4() validates exactly what a router must (version, IHL, lengths, header
// checksum) and what NAT needs (an L4 header long enough to hold ports) so that
// later stages can read fields without bounds checks. Malformed packets get a
// reason, are counted, and dropped: they never crash the worker.
#pragma once

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <cstdint>

#include "net/checksum.hpp"

namespace natgw::net {

enum class ParseError : uint8_t {
  none = 0,
  truncated,      // frame shorter than the headers it claims
  bad_version,    // not IPv4
  bad_ihl,        // IHL < 5
  bad_checksum,   // IPv4 header checksum
  bad_length,     // total length < header, or > frame
  bad_l4,         // L4 header truncated or inconsistent (e.g. TCP data offset, UDP length)
};

const char* parse_error_name(ParseError e);

// Flags describing a parsed IPv4 packet.
enum : uint8_t {
  PKT_FRAGMENT = 1 << 0,        // MF set or offset != 0
  PKT_FIRST_FRAGMENT = 1 << 1,  // offset == 0 (also set for unfragmented packets)
  PKT_HAS_PORTS = 1 << 2,       // TCP/UDP header (or ICMP query id) present and readable
  PKT_DF = 1 << 3,
};

struct Ipv4Packet {
  rte_ipv4_hdr* ip = nullptr;
  uint8_t* l4 = nullptr;  // start of the L4 header (valid only for the first fragment)
  uint16_t ip_hdr_len = 0;
  uint16_t total_len = 0;  // from the header
  uint16_t l4_len = 0;     // bytes of L4 header + payload present in this packet
  uint8_t proto = 0;
  uint8_t flags = 0;
};

constexpr uint16_t kEtherHdrLen = sizeof(rte_ether_hdr);

// Parse the IPv4 packet that starts at `l3` with `avail` bytes of frame behind it.
ParseError parse_ipv4(uint8_t* l3, uint32_t avail, Ipv4Packet& out);
// Same, skipping the header checksum when the NIC already verified it.
ParseError parse_ipv4(uint8_t* l3, uint32_t avail, Ipv4Packet& out, bool csum_verified);

// Parse an mbuf holding Ethernet + IPv4 (single segment). Trims Ethernet padding
// beyond the IPv4 total length.
ParseError parse_ipv4_mbuf_full(rte_mbuf* m, Ipv4Packet& out);
[[gnu::always_inline]] inline ParseError parse_ipv4_mbuf(rte_mbuf* m, Ipv4Packet& out);

inline bool is_icmp_query(uint8_t type) {
  return type == RTE_IP_ICMP_ECHO_REQUEST || type == RTE_IP_ICMP_ECHO_REPLY || type == 13 ||
         type == 14;  // timestamp request/reply share the identifier layout
}
inline bool is_icmp_error(uint8_t type) {
  return type == 3 || type == 11 || type == 12 || type == 4 || type == 5;
}

// ICMP header as NAT reads it (identifier lives where a query's would).
struct IcmpHdr {
  uint8_t type;
  uint8_t code;
  rte_be16_t cksum;
  rte_be16_t id;   // query identifier; unused for errors
  rte_be16_t seq;  // or next-hop MTU (frag-needed) in the low half
};
static_assert(sizeof(IcmpHdr) == 8);

// The common packet inline (single segment, 20-byte header, not a fragment, TCP or
// UDP with consistent lengths, checksum good); anything else, and every error,
// takes the full parser, which gives the same result for these packets.
[[gnu::always_inline]] inline ParseError parse_ipv4_mbuf(rte_mbuf* m, Ipv4Packet& out) {
  constexpr uint32_t kMin = kEtherHdrLen + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr);
  if (m->nb_segs != 1 || m->data_len < kMin) [[unlikely]]
    return parse_ipv4_mbuf_full(m, out);
  uint8_t* l3 = rte_pktmbuf_mtod_offset(m, uint8_t*, kEtherHdrLen);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(l3);
  const uint16_t total = rte_be_to_cpu_16(ip->total_length);
  const uint8_t proto = ip->next_proto_id;
  const uint64_t ck = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
  if (ip->version_ihl != 0x45 || (ip->fragment_offset & ~rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) != 0 ||
      total > m->data_len - kEtherHdrLen || total < sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr) ||
      ck == RTE_MBUF_F_RX_IP_CKSUM_BAD || (proto != IPPROTO_UDP && proto != IPPROTO_TCP)) [[unlikely]]
    return parse_ipv4_mbuf_full(m, out);
  const uint16_t l4_len = static_cast<uint16_t>(total - sizeof(rte_ipv4_hdr));
  uint8_t* l4 = l3 + sizeof(rte_ipv4_hdr);
  const bool l4_ok = proto == IPPROTO_UDP
                         ? rte_be_to_cpu_16(reinterpret_cast<const rte_udp_hdr*>(l4)->dgram_len) - 8u <=
                               l4_len - 8u
                         : l4_len >= sizeof(rte_tcp_hdr) &&
                               (reinterpret_cast<const rte_tcp_hdr*>(l4)->data_off >> 4) * 4u - 20u <=
                                   l4_len - 20u;
  if (!l4_ok || (ck != RTE_MBUF_F_RX_IP_CKSUM_GOOD && !ipv4_hdr20_csum_ok(ip))) [[unlikely]]
    return parse_ipv4_mbuf_full(m, out);
  out.ip = ip;
  out.l4 = l4;
  out.ip_hdr_len = sizeof(rte_ipv4_hdr);
  out.total_len = total;
  out.l4_len = l4_len;
  out.proto = proto;
  out.flags = static_cast<uint8_t>(PKT_FIRST_FRAGMENT | PKT_HAS_PORTS |
                                   ((ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) ? PKT_DF : 0));
  const uint32_t frame = kEtherHdrLen + total;
  if (m->data_len > frame) [[unlikely]] {  // Ethernet padding of short frames
    m->data_len = static_cast<uint16_t>(frame);
    m->pkt_len = frame;
  }
  return ParseError::none;
}

}  // namespace natgw::net
