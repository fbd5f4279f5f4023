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
ParseError parse_ipv4_mbuf(rte_mbuf* m, Ipv4Packet& out);

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

}  // namespace natgw::net
