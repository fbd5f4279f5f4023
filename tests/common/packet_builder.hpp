// Build and inspect Ethernet/IPv4/TCP/UDP/ICMP frames in mbufs for tests, with
// checksums computed from scratch (independently of the code under test).
#pragma once

#include <arpa/inet.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace natgw::test {

inline uint32_t ip(const char* s) {  // network byte order
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return a.s_addr;
}
inline std::string ipstr(uint32_t be) {
  char b[INET_ADDRSTRLEN];
  in_addr a{be};
  inet_ntop(AF_INET, &a, b, sizeof(b));
  return b;
}

inline uint16_t ref_csum(const void* data, size_t len, uint32_t sum = 0) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// Pseudo-header sum (host order accumulation) for TCP/UDP.
inline uint32_t pseudo_sum(const rte_ipv4_hdr* iph, uint16_t l4len) {
  const auto* s = reinterpret_cast<const uint8_t*>(&iph->src_addr);
  uint32_t sum = 0;
  for (int i = 0; i < 8; i += 2) sum += static_cast<uint32_t>(s[i] << 8 | s[i + 1]);
  sum += iph->next_proto_id;
  sum += l4len;
  return sum;
}

struct Frame {
  std::vector<uint8_t> bytes;
};

struct PacketSpec {
  rte_ether_addr src_mac{{0x02, 0, 0, 0, 0, 0x01}};
  rte_ether_addr dst_mac{{0x02, 0, 0, 0, 0, 0x10}};
  uint32_t src = 0, dst = 0;  // network order
  uint8_t proto = IPPROTO_UDP;
  uint16_t sport = 1000, dport = 2000;  // host order; ICMP: sport = identifier
  uint8_t ttl = 64;
  uint8_t tcp_flags = RTE_TCP_SYN_FLAG;
  uint8_t icmp_type = 8, icmp_code = 0;
  uint16_t ip_id = 1;
  uint16_t frag = 0;  // host order fragment_offset field (flags + offset)
  bool udp_zero_csum = false;
  std::vector<uint8_t> payload = std::vector<uint8_t>(16, 0xab);
};

// Serialize a spec to frame bytes with every checksum right.
inline std::vector<uint8_t> build_frame(const PacketSpec& s) {
  size_t l4h = s.proto == IPPROTO_TCP ? 20 : 8;
  if (s.proto != IPPROTO_TCP && s.proto != IPPROTO_UDP && s.proto != IPPROTO_ICMP) l4h = 0;
  const size_t iplen = 20 + l4h + s.payload.size();
  std::vector<uint8_t> f(14 + iplen);
  auto* eth = reinterpret_cast<rte_ether_hdr*>(f.data());
  eth->dst_addr = s.dst_mac;
  eth->src_addr = s.src_mac;
  eth->ether_type = htons(RTE_ETHER_TYPE_IPV4);
  auto* iph = reinterpret_cast<rte_ipv4_hdr*>(f.data() + 14);
  iph->version_ihl = 0x45;
  iph->total_length = htons(static_cast<uint16_t>(iplen));
  iph->packet_id = htons(s.ip_id);
  iph->fragment_offset = htons(s.frag);
  iph->time_to_live = s.ttl;
  iph->next_proto_id = s.proto;
  iph->src_addr = s.src;
  iph->dst_addr = s.dst;
  iph->hdr_checksum = ref_csum(iph, 20);
  uint8_t* l4 = f.data() + 34;
  std::memcpy(l4 + l4h, s.payload.data(), s.payload.size());
  const uint16_t l4len = static_cast<uint16_t>(l4h + s.payload.size());
  if (s.proto == IPPROTO_TCP) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(l4);
    th->src_port = htons(s.sport);
    th->dst_port = htons(s.dport);
    th->sent_seq = htonl(1000);
    th->data_off = 5 << 4;
    th->tcp_flags = s.tcp_flags;
    th->rx_win = htons(65535);
    th->cksum = ref_csum(l4, l4len, pseudo_sum(iph, l4len));
  } else if (s.proto == IPPROTO_UDP) {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(l4);
    uh->src_port = htons(s.sport);
    uh->dst_port = htons(s.dport);
    uh->dgram_len = htons(l4len);
    if (!s.udp_zero_csum) {
      uh->dgram_cksum = ref_csum(l4, l4len, pseudo_sum(iph, l4len));
      if (uh->dgram_cksum == 0) uh->dgram_cksum = 0xffff;
    }
  } else if (s.proto == IPPROTO_ICMP) {
    l4[0] = s.icmp_type;
    l4[1] = s.icmp_code;
    const uint16_t id = htons(s.sport), seq = htons(1);
    std::memcpy(l4 + 4, &id, 2);
    std::memcpy(l4 + 6, &seq, 2);
    const uint16_t c = ref_csum(l4, l4len);
    std::memcpy(l4 + 2, &c, 2);
  }
  return f;
}

inline rte_mbuf* to_mbuf(rte_mempool* pool, const std::vector<uint8_t>& bytes) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool);
  if (!m) return nullptr;
  char* d = rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size()));
  std::memcpy(d, bytes.data(), bytes.size());
  return m;
}

inline std::vector<uint8_t> bytes_of(const rte_mbuf* m) {
  const auto* d = rte_pktmbuf_mtod(m, const uint8_t*);
  return std::vector<uint8_t>(d, d + m->data_len);
}

// A parsed view of an output frame, with checksum verdicts computed from scratch.
struct Parsed {
  bool ok = false;
  rte_ether_addr src_mac{}, dst_mac{};
  uint16_t ether_type = 0;
  uint32_t src = 0, dst = 0;  // network order
  uint8_t proto = 0, ttl = 0;
  uint16_t sport = 0, dport = 0;  // host order (ICMP query: sport = identifier)
  uint8_t icmp_type = 0, icmp_code = 0;
  bool ip_csum_ok = false, l4_csum_ok = false;
  uint16_t udp_csum = 0;
  std::vector<uint8_t> l4;  // L4 header + payload
};

inline Parsed parse_frame(const std::vector<uint8_t>& f) {
  Parsed p;
  if (f.size() < 14) return p;
  const auto* eth = reinterpret_cast<const rte_ether_hdr*>(f.data());
  p.src_mac = eth->src_addr;
  p.dst_mac = eth->dst_addr;
  p.ether_type = ntohs(eth->ether_type);
  if (p.ether_type != RTE_ETHER_TYPE_IPV4 || f.size() < 34) return p;
  const auto* iph = reinterpret_cast<const rte_ipv4_hdr*>(f.data() + 14);
  const size_t ihl = (iph->version_ihl & 0xf) * 4u;
  const size_t total = ntohs(iph->total_length);
  if (f.size() < 14 + total) return p;
  p.src = iph->src_addr;
  p.dst = iph->dst_addr;
  p.proto = iph->next_proto_id;
  p.ttl = iph->time_to_live;
  p.ip_csum_ok = ref_csum(iph, ihl) == 0;
  const uint8_t* l4 = f.data() + 14 + ihl;
  const uint16_t l4len = static_cast<uint16_t>(total - ihl);
  p.l4.assign(l4, l4 + l4len);
  const bool first = (ntohs(iph->fragment_offset) & 0x1fff) == 0;
  const bool whole = first && !(ntohs(iph->fragment_offset) & 0x2000);
  if (p.proto == IPPROTO_TCP && first) {
    const auto* th = reinterpret_cast<const rte_tcp_hdr*>(l4);
    p.sport = ntohs(th->src_port);
    p.dport = ntohs(th->dst_port);
    p.l4_csum_ok = !whole || ref_csum(l4, l4len, pseudo_sum(iph, l4len)) == 0;
  } else if (p.proto == IPPROTO_UDP && first) {
    const auto* uh = reinterpret_cast<const rte_udp_hdr*>(l4);
    p.sport = ntohs(uh->src_port);
    p.dport = ntohs(uh->dst_port);
    p.udp_csum = uh->dgram_cksum;
    p.l4_csum_ok = !whole || uh->dgram_cksum == 0 || ref_csum(l4, l4len, pseudo_sum(iph, l4len)) == 0;
  } else if (p.proto == IPPROTO_ICMP && first) {
    p.icmp_type = l4[0];
    p.icmp_code = l4[1];
    uint16_t id;
    std::memcpy(&id, l4 + 4, 2);
    p.sport = ntohs(id);
    p.l4_csum_ok = !whole || ref_csum(l4, l4len) == 0;
  } else {
    p.l4_csum_ok = true;
  }
  p.ok = true;
  return p;
}

}  // namespace natgw::test
