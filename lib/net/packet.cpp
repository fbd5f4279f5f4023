#include "net/packet.hpp"

#include "net/checksum.hpp"

namespace natgw::net {

const char* parse_error_name(ParseError e) {
  switch (e) {
    case ParseError::none: return "none";
    case ParseError::truncated: return "truncated";
    case ParseError::bad_version: return "bad_version";
    case ParseError::bad_ihl: return "bad_ihl";
    case ParseError::bad_checksum: return "bad_checksum";
    case ParseError::bad_length: return "bad_length";
    case ParseError::bad_l4: return "bad_l4";
  }
  return "unknown";
}

ParseError parse_ipv4(uint8_t* l3, uint32_t avail, Ipv4Packet& out) {
  return parse_ipv4(l3, avail, out, false);
}

ParseError parse_ipv4(uint8_t* l3, uint32_t avail, Ipv4Packet& out, bool csum_verified) {
  if (avail < sizeof(rte_ipv4_hdr)) return ParseError::truncated;
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(l3);
  if ((ip->version_ihl >> 4) != 4) return ParseError::bad_version;
  const uint16_t hlen = static_cast<uint16_t>((ip->version_ihl & 0xf) * 4);
  if (hlen < sizeof(rte_ipv4_hdr)) return ParseError::bad_ihl;
  if (hlen > avail) return ParseError::truncated;
  const uint16_t total = rte_be_to_cpu_16(ip->total_length);
  if (total < hlen || total > avail) return ParseError::bad_length;
  if (!csum_verified && csum_fold(csum_partial(ip, hlen)) != 0xffff) return ParseError::bad_checksum;

  out.ip = ip;
  out.ip_hdr_len = hlen;
  out.total_len = total;
  out.proto = ip->next_proto_id;
  out.l4 = l3 + hlen;
  out.l4_len = static_cast<uint16_t>(total - hlen);
  const uint16_t frag = rte_be_to_cpu_16(ip->fragment_offset);
  const uint16_t offset = frag & RTE_IPV4_HDR_OFFSET_MASK;
  uint8_t flags = 0;
  if ((frag & RTE_IPV4_HDR_MF_FLAG) || offset) flags |= PKT_FRAGMENT;
  if (frag & RTE_IPV4_HDR_DF_FLAG) flags |= PKT_DF;
  if (offset == 0) {
    flags |= PKT_FIRST_FRAGMENT;
    switch (out.proto) {
      case IPPROTO_TCP: {
        if (out.l4_len < sizeof(rte_tcp_hdr)) return ParseError::bad_l4;
        const auto* th = reinterpret_cast<const rte_tcp_hdr*>(out.l4);
        const uint16_t doff = static_cast<uint16_t>((th->data_off >> 4) * 4);
        // A first fragment may end inside the options; only the fixed part must be there.
        if (doff < sizeof(rte_tcp_hdr) || (!(flags & PKT_FRAGMENT) && doff > out.l4_len))
          return ParseError::bad_l4;
        flags |= PKT_HAS_PORTS;
        break;
      }
      case IPPROTO_UDP: {
        if (out.l4_len < sizeof(rte_udp_hdr)) return ParseError::bad_l4;
        const auto* uh = reinterpret_cast<const rte_udp_hdr*>(out.l4);
        const uint16_t ulen = rte_be_to_cpu_16(uh->dgram_len);
        if (ulen < sizeof(rte_udp_hdr) || (!(flags & PKT_FRAGMENT) && ulen > out.l4_len))
          return ParseError::bad_l4;
        flags |= PKT_HAS_PORTS;
        break;
      }
      case IPPROTO_ICMP:
        if (out.l4_len < sizeof(IcmpHdr)) return ParseError::bad_l4;
        flags |= PKT_HAS_PORTS;
        break;
      default:
        break;
    }
  }
  out.flags = flags;
  return ParseError::none;
}

ParseError parse_ipv4_mbuf_full(rte_mbuf* m, Ipv4Packet& out) {
  if (m->nb_segs != 1) return ParseError::truncated;  // ports are configured for single segments
  if (m->data_len < kEtherHdrLen) return ParseError::truncated;
  uint8_t* l3 = rte_pktmbuf_mtod_offset(m, uint8_t*, kEtherHdrLen);
  // Trust the NIC's IPv4 checksum verdict when it gives one (RX offload enabled
  // where the port offers it, e.g. ENA); verify in software otherwise.
  const uint64_t ck = m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK;
  if (ck == RTE_MBUF_F_RX_IP_CKSUM_BAD) return ParseError::bad_checksum;
  const ParseError e =
      parse_ipv4(l3, m->data_len - kEtherHdrLen, out, ck == RTE_MBUF_F_RX_IP_CKSUM_GOOD);
  if (e != ParseError::none) return e;
  const uint32_t frame = kEtherHdrLen + out.total_len;
  if (m->data_len > frame) {  // Ethernet padding of short frames
    m->data_len = static_cast<uint16_t>(frame);
    m->pkt_len = frame;
  }
  return ParseError::none;
}

}  // namespace natgw::net
