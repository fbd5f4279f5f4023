// Build and inspect Ethernet/IPv4/TCP/UDP/ICMP frames in mbufs for tests, with
// checksums computed from scratch (independently of the code under test).
#pragma once

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <rte_arp.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <map>
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
  std::vector<uint8_t> tcp_options;  // raw TCP options, a multiple of 4 bytes
  std::vector<uint8_t> payload = std::vector<uint8_t>(16, 0xab);
};

// TCP MSS option (kind 2, length 4) for PacketSpec::tcp_options.
inline std::vector<uint8_t> tcp_mss_option(uint16_t mss) {
  return {2, 4, static_cast<uint8_t>(mss >> 8), static_cast<uint8_t>(mss & 0xff)};
}

// Serialize a spec to frame bytes with every checksum right.
inline std::vector<uint8_t> build_frame(const PacketSpec& s) {
  size_t l4h = s.proto == IPPROTO_TCP ? 20 + s.tcp_options.size() : 8;
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
    th->data_off = static_cast<uint8_t>((l4h / 4) << 4);
    if (!s.tcp_options.empty()) std::memcpy(l4 + 20, s.tcp_options.data(), s.tcp_options.size());
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
  char* d = bytes.size() > UINT16_MAX ? nullptr : rte_pktmbuf_append(m, static_cast<uint16_t>(bytes.size()));
  if (!d) {  // larger than one segment: the test must use smaller frames
    ADD_FAILURE() << "a " << bytes.size() << "-byte frame does not fit one mbuf";
    rte_pktmbuf_free(m);
    return nullptr;
  }
  if (!bytes.empty()) std::memcpy(d, bytes.data(), bytes.size());
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
  uint16_t ip_id = 0, total_len = 0, ihl = 0;  // host order
  uint16_t frag = 0;          // host order fragment_offset field (flags + offset)
  uint16_t sport = 0, dport = 0;  // host order (ICMP query: sport = identifier)
  uint8_t icmp_type = 0, icmp_code = 0;
  bool ip_csum_ok = false, l4_csum_ok = false;
  // Checksum fields as found, and as a from-scratch computation would write them
  // (UDP: a computed 0 is written 0xFFFF; a zero UDP checksum means "none").
  uint16_t ip_csum = 0, ip_csum_ref = 0;
  uint16_t l4_csum = 0, l4_csum_ref = 0;
  bool l4_csum_checked = false;  // whole L4 datagram present (unfragmented), so _ref is known
  uint16_t udp_csum = 0;
  std::vector<uint8_t> l4;  // L4 header + payload
  bool df() const { return frag & 0x4000; }
  bool mf() const { return frag & 0x2000; }
  uint16_t offset_bytes() const { return static_cast<uint16_t>((frag & 0x1fff) * 8); }
};

// Parse an IPv4 packet (no Ethernet header). `quoted`: the bytes may end before the
// IPv4 total length (an ICMP error's quote); L4 checksums are then judged only if whole.
inline Parsed parse_ip(const uint8_t* d, size_t len, bool quoted = false) {
  Parsed p;
  if (len < 20) return p;
  const auto* iph = reinterpret_cast<const rte_ipv4_hdr*>(d);
  const size_t ihl = (iph->version_ihl & 0xf) * 4u;
  const size_t total = ntohs(iph->total_length);
  if (ihl < 20 || len < ihl || total < ihl) return p;
  if (!quoted && len < total) return p;
  const size_t have = std::min(len, total);
  p.src = iph->src_addr;
  p.dst = iph->dst_addr;
  p.proto = iph->next_proto_id;
  p.ttl = iph->time_to_live;
  p.ip_id = ntohs(iph->packet_id);
  p.total_len = static_cast<uint16_t>(total);
  p.ihl = static_cast<uint16_t>(ihl);
  p.frag = ntohs(iph->fragment_offset);
  p.ip_csum_ok = ref_csum(iph, ihl) == 0;
  p.ip_csum = iph->hdr_checksum;
  {
    std::vector<uint8_t> h(d, d + ihl);
    h[10] = h[11] = 0;
    p.ip_csum_ref = ref_csum(h.data(), ihl);
  }
  const uint8_t* l4 = d + ihl;
  const uint16_t l4len = static_cast<uint16_t>(have - ihl);
  const uint16_t l4full = static_cast<uint16_t>(total - ihl);
  p.l4.assign(l4, l4 + l4len);
  const bool first = (p.frag & 0x1fff) == 0;
  const bool whole = first && !(p.frag & 0x2000) && l4len == l4full;
  // The from-scratch checksum of the whole L4 datagram, with its checksum field at `at` zeroed.
  auto recompute = [&](size_t at, bool pseudo) {
    std::vector<uint8_t> c(l4, l4 + l4len);
    c[at] = c[at + 1] = 0;
    return ref_csum(c.data(), c.size(), pseudo ? pseudo_sum(iph, l4len) : 0);
  };
  if (p.proto == IPPROTO_TCP && first && l4len >= 4) {
    const auto* th = reinterpret_cast<const rte_tcp_hdr*>(l4);
    p.sport = ntohs(th->src_port);
    p.dport = ntohs(th->dst_port);
    if (l4len >= 18) p.l4_csum = th->cksum;
    p.l4_csum_checked = whole && l4len >= 20;
    p.l4_csum_ok = !p.l4_csum_checked || ref_csum(l4, l4len, pseudo_sum(iph, l4len)) == 0;
    if (p.l4_csum_checked) p.l4_csum_ref = recompute(16, true);
  } else if (p.proto == IPPROTO_UDP && first && l4len >= 4) {
    const auto* uh = reinterpret_cast<const rte_udp_hdr*>(l4);
    p.sport = ntohs(uh->src_port);
    p.dport = ntohs(uh->dst_port);
    if (l4len >= 8) p.udp_csum = p.l4_csum = uh->dgram_cksum;
    p.l4_csum_checked = whole && l4len >= 8;
    p.l4_csum_ok = !p.l4_csum_checked || uh->dgram_cksum == 0 ||
                   ref_csum(l4, l4len, pseudo_sum(iph, l4len)) == 0;
    if (p.l4_csum_checked) {
      const uint16_t c = recompute(6, true);
      p.l4_csum_ref = uh->dgram_cksum == 0 ? 0 : (c == 0 ? 0xffff : c);
    }
  } else if (p.proto == IPPROTO_ICMP && first && l4len >= 8) {
    p.icmp_type = l4[0];
    p.icmp_code = l4[1];
    uint16_t id;
    std::memcpy(&id, l4 + 4, 2);
    p.sport = ntohs(id);
    std::memcpy(&p.l4_csum, l4 + 2, 2);
    p.l4_csum_checked = whole;
    p.l4_csum_ok = !whole || ref_csum(l4, l4len) == 0;
    if (whole) p.l4_csum_ref = recompute(2, false);
  } else {
    p.l4_csum_ok = true;
  }
  p.ok = true;
  return p;
}

inline Parsed parse_frame(const std::vector<uint8_t>& f) {
  Parsed p;
  if (f.size() < 14) return p;
  const auto* eth = reinterpret_cast<const rte_ether_hdr*>(f.data());
  const uint16_t et = ntohs(eth->ether_type);
  if (et == RTE_ETHER_TYPE_IPV4) {
    p = parse_ip(f.data() + 14, f.size() - 14);
    if (p.ok && f.size() != 14u + p.total_len) p.ok = false;  // padding must have been trimmed
  }
  p.src_mac = eth->src_addr;
  p.dst_mac = eth->dst_addr;
  p.ether_type = et;
  return p;
}

// The packet quoted in an ICMP error frame (after the 8-byte ICMP header).
inline Parsed parse_quote(const Parsed& outer) {
  if (outer.proto != IPPROTO_ICMP || outer.l4.size() < 8 + 20) return Parsed{};
  return parse_ip(outer.l4.data() + 8, outer.l4.size() - 8, true);
}

// Every checksum of a frame is valid and equal to a from-scratch computation:
// the IPv4 header, the L4 datagram (when whole) and, for an ICMP error, the
// quoted IPv4 header and the quoted L4 datagram (when the quote holds it whole).
inline ::testing::AssertionResult checksums_exact(const std::vector<uint8_t>& f) {
  const Parsed p = parse_frame(f);
  if (!p.ok) return ::testing::AssertionFailure() << "not a well-formed IPv4 frame";
  if (!p.ip_csum_ok || p.ip_csum != p.ip_csum_ref)
    return ::testing::AssertionFailure() << "IPv4 checksum " << std::hex << ntohs(p.ip_csum)
                                         << " != " << ntohs(p.ip_csum_ref);
  if (p.l4_csum_checked && (!p.l4_csum_ok || p.l4_csum != p.l4_csum_ref))
    return ::testing::AssertionFailure() << "L4 checksum " << std::hex << ntohs(p.l4_csum)
                                         << " != " << ntohs(p.l4_csum_ref);
  if (p.proto == IPPROTO_ICMP && (p.icmp_type == 3 || p.icmp_type == 11)) {
    const Parsed q = parse_quote(p);
    if (!q.ok) return ::testing::AssertionFailure() << "ICMP error without a readable quote";
    if (!q.ip_csum_ok || q.ip_csum != q.ip_csum_ref)
      return ::testing::AssertionFailure() << "quoted IPv4 checksum " << std::hex << ntohs(q.ip_csum)
                                           << " != " << ntohs(q.ip_csum_ref);
    if (q.l4_csum_checked && (!q.l4_csum_ok || q.l4_csum != q.l4_csum_ref))
      return ::testing::AssertionFailure() << "quoted L4 checksum " << std::hex << ntohs(q.l4_csum)
                                           << " != " << ntohs(q.l4_csum_ref);
  }
  return ::testing::AssertionSuccess();
}

// An ICMP error frame (type/code, next-hop MTU) from `from` to `to` quoting `quote`
// (an IPv4 packet without Ethernet header, cut to `quote_len` bytes if shorter).
inline std::vector<uint8_t> build_icmp_error_frame(const rte_ether_addr& src_mac,
                                                   const rte_ether_addr& dst_mac, uint32_t from,
                                                   uint32_t to, uint8_t type, uint8_t code,
                                                   std::vector<uint8_t> quote, uint16_t mtu = 0,
                                                   size_t quote_len = 548, uint8_t ttl = 64) {
  if (quote.size() > quote_len) quote.resize(quote_len);
  PacketSpec s;
  s.src_mac = src_mac;
  s.dst_mac = dst_mac;
  s.src = from;
  s.dst = to;
  s.proto = IPPROTO_ICMP;
  s.ttl = ttl;
  s.icmp_type = type;
  s.icmp_code = code;
  s.payload = std::move(quote);
  auto f = build_frame(s);
  // Errors carry no identifier: rest-of-header is 0 (or the next-hop MTU), checksum redone.
  uint8_t* ic = f.data() + 34;
  ic[4] = ic[5] = 0;
  ic[6] = static_cast<uint8_t>(mtu >> 8);
  ic[7] = static_cast<uint8_t>(mtu & 0xff);
  ic[2] = ic[3] = 0;
  const uint16_t c = ref_csum(ic, f.size() - 34);
  std::memcpy(ic + 2, &c, 2);
  return f;
}

// The IPv4 packet of a frame (Ethernet header removed).
inline std::vector<uint8_t> ip_of(const std::vector<uint8_t>& f) {
  return std::vector<uint8_t>(f.begin() + 14, f.end());
}

// Recompute the IPv4 header checksum of a frame after a test edited the header.
inline void fix_ip_csum(std::vector<uint8_t>& f) {
  auto* iph = reinterpret_cast<rte_ipv4_hdr*>(f.data() + 14);
  iph->hdr_checksum = 0;
  iph->hdr_checksum = ref_csum(iph, (iph->version_ihl & 0xf) * 4u);
}

// Split a frame's IPv4 packet into fragments carrying at most `chunk` payload bytes
// (a multiple of 8), each a complete frame with a correct header checksum.
inline std::vector<std::vector<uint8_t>> fragment(const std::vector<uint8_t>& f, size_t chunk) {
  const auto* iph = reinterpret_cast<const rte_ipv4_hdr*>(f.data() + 14);
  const size_t ihl = (iph->version_ihl & 0xf) * 4u;
  const size_t payload = ntohs(iph->total_length) - ihl;
  const uint16_t orig = ntohs(iph->fragment_offset);
  std::vector<std::vector<uint8_t>> out;
  for (size_t off = 0; off < payload; off += chunk) {
    const size_t len = std::min(chunk, payload - off);
    std::vector<uint8_t> g(f.begin(), f.begin() + static_cast<long>(14 + ihl));
    g.insert(g.end(), f.begin() + static_cast<long>(14 + ihl + off),
             f.begin() + static_cast<long>(14 + ihl + off + len));
    auto* gh = reinterpret_cast<rte_ipv4_hdr*>(g.data() + 14);
    gh->total_length = htons(static_cast<uint16_t>(ihl + len));
    const bool more = off + len < payload || (orig & 0x2000);
    gh->fragment_offset = htons(static_cast<uint16_t>(((orig & 0x1fff) + off / 8) | (more ? 0x2000 : 0)));
    fix_ip_csum(g);
    out.push_back(std::move(g));
  }
  return out;
}

// Reassemble fragments (any order) into one unfragmented frame, or an empty vector
// when they do not add up to a whole datagram (a hole, an overlap, no last fragment).
inline std::vector<uint8_t> reassemble(const std::vector<std::vector<uint8_t>>& frags) {
  std::map<size_t, const std::vector<uint8_t>*> by_off;
  bool last = false;
  size_t end = 0;
  for (const auto& f : frags) {
    const Parsed p = parse_frame(f);
    if (!p.ok || !by_off.emplace(p.offset_bytes(), &f).second) return {};
    if (!p.mf()) {
      last = true;
      end = p.offset_bytes() + p.total_len - p.ihl;
    }
  }
  if (!last || by_off.empty() || by_off.begin()->first != 0) return {};
  const auto& first = *by_off.begin()->second;
  const size_t ihl = parse_frame(first).ihl;
  std::vector<uint8_t> out(first.begin(), first.begin() + static_cast<long>(14 + ihl));
  size_t next = 0;
  for (const auto& [off, f] : by_off) {
    if (off != next) return {};
    out.insert(out.end(), f->begin() + static_cast<long>(14 + ihl), f->end());
    next = out.size() - 14 - ihl;
  }
  if (next != end) return {};
  auto* iph = reinterpret_cast<rte_ipv4_hdr*>(out.data() + 14);
  iph->total_length = htons(static_cast<uint16_t>(ihl + next));
  iph->fragment_offset = 0;
  fix_ip_csum(out);
  return out;
}

// ARP frames.
inline std::vector<uint8_t> build_arp(uint16_t op, const rte_ether_addr& sha, uint32_t sip,
                                      const rte_ether_addr& tha, uint32_t tip,
                                      const rte_ether_addr& eth_dst) {
  std::vector<uint8_t> f(sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr));
  auto* eth = reinterpret_cast<rte_ether_hdr*>(f.data());
  eth->dst_addr = eth_dst;
  eth->src_addr = sha;
  eth->ether_type = htons(RTE_ETHER_TYPE_ARP);
  auto* a = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  a->arp_hardware = htons(RTE_ARP_HRD_ETHER);
  a->arp_protocol = htons(RTE_ETHER_TYPE_IPV4);
  a->arp_hlen = RTE_ETHER_ADDR_LEN;
  a->arp_plen = 4;
  a->arp_opcode = htons(op);
  a->arp_data.arp_sha = sha;
  a->arp_data.arp_sip = sip;
  a->arp_data.arp_tha = tha;
  a->arp_data.arp_tip = tip;
  return f;
}

struct ParsedArp {
  bool ok = false;
  rte_ether_addr eth_dst{}, eth_src{}, sha{}, tha{};
  uint16_t op = 0;
  uint32_t sip = 0, tip = 0;  // network order
};

inline ParsedArp parse_arp(const std::vector<uint8_t>& f) {
  ParsedArp r;
  if (f.size() < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return r;
  const auto* eth = reinterpret_cast<const rte_ether_hdr*>(f.data());
  if (ntohs(eth->ether_type) != RTE_ETHER_TYPE_ARP) return r;
  const auto* a = reinterpret_cast<const rte_arp_hdr*>(eth + 1);
  r.eth_dst = eth->dst_addr;
  r.eth_src = eth->src_addr;
  r.op = ntohs(a->arp_opcode);
  r.sha = a->arp_data.arp_sha;
  r.tha = a->arp_data.arp_tha;
  r.sip = a->arp_data.arp_sip;
  r.tip = a->arp_data.arp_tip;
  r.ok = true;
  return r;
}

inline bool same_mac(const rte_ether_addr& a, const rte_ether_addr& b) {
  return rte_is_same_ether_addr(&a, &b);
}

}  // namespace natgw::test
