// parse_ipv4 / parse_ipv4_mbuf: every valid shape and every ParseError reason.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <vector>

#include "common/eal_env.hpp"
#include "net/packet.hpp"

namespace natgw::net {
namespace {

uint16_t ref_csum(const uint8_t* p, size_t len) {
  uint32_t sum = 0;
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return htons(static_cast<uint16_t>(~sum));
}

// An IPv4 packet (no Ethernet) with `opt_words` option words, protocol `proto`
// and an L4 part of `l4` bytes. Header checksum is correct unless `fix` is false.
struct Ip {
  std::vector<uint8_t> b;
  uint8_t ihl() const { return b[0] & 0xf; }
  uint8_t* l4() { return b.data() + ihl() * 4; }
  void set_total(uint16_t t) {
    const uint16_t be = htons(t);
    std::memcpy(&b[2], &be, 2);
  }
  void set_frag(uint16_t host) {
    const uint16_t be = htons(host);
    std::memcpy(&b[6], &be, 2);
  }
  void fix() {
    b[10] = b[11] = 0;
    const uint16_t c = ref_csum(b.data(), ihl() * 4u);
    std::memcpy(&b[10], &c, 2);
  }
};

Ip make_ip(uint8_t proto, size_t l4_len, unsigned opt_words = 0) {
  Ip p;
  const size_t hl = 20 + 4 * opt_words;
  p.b.assign(hl + l4_len, 0);
  p.b[0] = static_cast<uint8_t>(0x40 | (5 + opt_words));
  p.set_total(static_cast<uint16_t>(hl + l4_len));
  p.b[8] = 64;
  p.b[9] = proto;
  const uint32_t src = htonl(0xc0a80a02), dst = htonl(0xcb00710a);
  std::memcpy(&p.b[12], &src, 4);
  std::memcpy(&p.b[16], &dst, 4);
  for (unsigned i = 0; i < 4 * opt_words; ++i) p.b[20 + i] = 1;  // NOP options
  uint8_t* l4 = p.b.data() + hl;
  if (proto == IPPROTO_TCP && l4_len >= 20) {
    l4[0] = 0x9c, l4[1] = 0x40;  // 40000
    l4[2] = 0x00, l4[3] = 0x50;  // 80
    l4[12] = 5 << 4;
  } else if (proto == IPPROTO_UDP && l4_len >= 8) {
    l4[0] = 0x9c, l4[1] = 0x40;
    l4[2] = 0x00, l4[3] = 0x35;
    l4[4] = static_cast<uint8_t>(l4_len >> 8);
    l4[5] = static_cast<uint8_t>(l4_len);
  } else if (proto == IPPROTO_ICMP && l4_len >= 8) {
    l4[0] = 8;
    l4[4] = 0x12, l4[5] = 0x34;
  }
  p.fix();
  return p;
}

ParseError parse(Ip& p, Ipv4Packet& out) {
  return parse_ipv4(p.b.data(), static_cast<uint32_t>(p.b.size()), out);
}

TEST(Parse, ValidTcp) {
  Ip p = make_ip(IPPROTO_TCP, 20 + 10);
  Ipv4Packet out;
  ASSERT_EQ(parse(p, out), ParseError::none);
  EXPECT_EQ(out.ip, reinterpret_cast<rte_ipv4_hdr*>(p.b.data()));
  EXPECT_EQ(out.l4, p.b.data() + 20);
  EXPECT_EQ(out.ip_hdr_len, 20);
  EXPECT_EQ(out.total_len, 50);
  EXPECT_EQ(out.l4_len, 30);
  EXPECT_EQ(out.proto, IPPROTO_TCP);
  EXPECT_EQ(out.flags, PKT_FIRST_FRAGMENT | PKT_HAS_PORTS);
  EXPECT_EQ(rte_be_to_cpu_16(reinterpret_cast<rte_tcp_hdr*>(out.l4)->src_port), 40000);
}

TEST(Parse, ValidUdpAndIcmpAndOther) {
  Ip u = make_ip(IPPROTO_UDP, 8 + 3);
  Ipv4Packet out;
  ASSERT_EQ(parse(u, out), ParseError::none);
  EXPECT_EQ(out.l4_len, 11);
  EXPECT_EQ(out.flags, PKT_FIRST_FRAGMENT | PKT_HAS_PORTS);

  Ip i = make_ip(IPPROTO_ICMP, 8);
  ASSERT_EQ(parse(i, out), ParseError::none);
  EXPECT_EQ(out.proto, IPPROTO_ICMP);
  EXPECT_EQ(out.flags, PKT_FIRST_FRAGMENT | PKT_HAS_PORTS);

  Ip g = make_ip(47, 4);  // GRE: no ports, still valid
  ASSERT_EQ(parse(g, out), ParseError::none);
  EXPECT_EQ(out.flags, PKT_FIRST_FRAGMENT);
}

TEST(Parse, TruncatedBelowTwentyBytes) {
  Ip p = make_ip(IPPROTO_UDP, 8);
  Ipv4Packet out;
  for (uint32_t n = 0; n < 20; ++n)
    EXPECT_EQ(parse_ipv4(p.b.data(), n, out), ParseError::truncated) << n;
}

TEST(Parse, BadVersion) {
  for (uint8_t v : {0, 5, 6, 15}) {
    Ip p = make_ip(IPPROTO_UDP, 8);
    p.b[0] = static_cast<uint8_t>(v << 4 | 5);
    p.fix();
    Ipv4Packet out;
    EXPECT_EQ(parse(p, out), ParseError::bad_version) << int(v);
  }
}

TEST(Parse, IhlBelowFive) {
  for (uint8_t ihl = 0; ihl < 5; ++ihl) {
    Ip p = make_ip(IPPROTO_UDP, 8);
    p.b[0] = static_cast<uint8_t>(0x40 | ihl);
    Ipv4Packet out;
    EXPECT_EQ(parse(p, out), ParseError::bad_ihl) << int(ihl);
  }
}

TEST(Parse, IhlBeyondFrame) {
  Ip p = make_ip(IPPROTO_UDP, 8);  // 28 bytes
  p.b[0] = 0x4f;                   // claims a 60-byte header
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::truncated);
}

TEST(Parse, BadHeaderChecksum) {
  Ip p = make_ip(IPPROTO_UDP, 8);
  p.b[10] ^= 0x01;
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::bad_checksum);
  // A changed field without a checksum update is caught too.
  Ip q = make_ip(IPPROTO_UDP, 8);
  q.b[8] = 63;
  EXPECT_EQ(parse(q, out), ParseError::bad_checksum);
}

TEST(Parse, TotalLengthBelowHeader) {
  Ip p = make_ip(IPPROTO_UDP, 8, 2);  // 28-byte header
  p.set_total(24);
  p.fix();
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::bad_length);
  p.set_total(0);
  p.fix();
  EXPECT_EQ(parse(p, out), ParseError::bad_length);
}

TEST(Parse, TotalLengthBeyondFrame) {
  Ip p = make_ip(IPPROTO_UDP, 8);
  p.set_total(29);
  p.fix();
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::bad_length);
}

TEST(Parse, TotalLengthShorterThanFrameUsesHeaderLength) {
  Ip p = make_ip(IPPROTO_UDP, 20);
  p.b[20 + 5] = 12;  // UDP length 12
  p.set_total(32);   // 4 bytes of trailer in the buffer
  p.fix();
  Ipv4Packet out;
  ASSERT_EQ(parse(p, out), ParseError::none);
  EXPECT_EQ(out.total_len, 32);
  EXPECT_EQ(out.l4_len, 12);
}

TEST(Parse, TcpDataOffsetBelowFive) {
  for (uint8_t doff = 0; doff < 5; ++doff) {
    Ip p = make_ip(IPPROTO_TCP, 20);
    p.l4()[12] = static_cast<uint8_t>(doff << 4);
    Ipv4Packet out;
    EXPECT_EQ(parse(p, out), ParseError::bad_l4) << int(doff);
  }
}

TEST(Parse, TcpDataOffsetBeyondSegmentAndShortTcpHeader) {
  Ip p = make_ip(IPPROTO_TCP, 24);
  p.l4()[12] = 7 << 4;  // 28-byte header in a 24-byte segment
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::bad_l4);
  p.l4()[12] = 6 << 4;  // exactly fits
  ASSERT_EQ(parse(p, out), ParseError::none);

  Ip s = make_ip(IPPROTO_TCP, 19);  // not even the fixed header
  EXPECT_EQ(parse(s, out), ParseError::bad_l4);
}

TEST(Parse, UdpLengthBeyondDatagramOrBelowHeader) {
  Ip p = make_ip(IPPROTO_UDP, 16);
  p.l4()[5] = 17;
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::bad_l4);
  p.l4()[5] = 7;
  EXPECT_EQ(parse(p, out), ParseError::bad_l4);
  p.l4()[5] = 16;
  EXPECT_EQ(parse(p, out), ParseError::none);
  Ip s = make_ip(IPPROTO_UDP, 7);
  EXPECT_EQ(parse(s, out), ParseError::bad_l4);
}

TEST(Parse, IcmpShorterThanHeader) {
  Ip p = make_ip(IPPROTO_ICMP, 7);
  Ipv4Packet out;
  EXPECT_EQ(parse(p, out), ParseError::bad_l4);
}

TEST(Parse, FirstFragmentWithMoreFragments) {
  Ip p = make_ip(IPPROTO_UDP, 24);
  p.l4()[5] = 200;  // the whole datagram is longer than this fragment: fine
  p.set_frag(RTE_IPV4_HDR_MF_FLAG);
  p.fix();
  Ipv4Packet out;
  ASSERT_EQ(parse(p, out), ParseError::none);
  EXPECT_EQ(out.flags, PKT_FRAGMENT | PKT_FIRST_FRAGMENT | PKT_HAS_PORTS);

  Ip t = make_ip(IPPROTO_TCP, 24);
  t.l4()[12] = 10 << 4;  // options continue in the next fragment
  t.set_frag(RTE_IPV4_HDR_MF_FLAG);
  t.fix();
  ASSERT_EQ(parse(t, out), ParseError::none);
  EXPECT_TRUE(out.flags & PKT_HAS_PORTS);
}

TEST(Parse, LaterFragmentsHaveNoPortsEvenWithGarbageL4) {
  for (uint16_t frag : {uint16_t(RTE_IPV4_HDR_MF_FLAG | 3), uint16_t(185), uint16_t(0x1fff)}) {
    for (uint8_t proto : {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP}) {
      Ip p = make_ip(proto, 3);  // far too short for any L4 header
      p.set_frag(frag);
      p.fix();
      Ipv4Packet out;
      ASSERT_EQ(parse(p, out), ParseError::none) << frag << " " << int(proto);
      EXPECT_EQ(out.flags, PKT_FRAGMENT);
      EXPECT_EQ(out.l4_len, 3);
    }
  }
}

TEST(Parse, DontFragmentFlag) {
  Ip p = make_ip(IPPROTO_UDP, 8);
  p.set_frag(RTE_IPV4_HDR_DF_FLAG);
  p.fix();
  Ipv4Packet out;
  ASSERT_EQ(parse(p, out), ParseError::none);
  EXPECT_EQ(out.flags, PKT_DF | PKT_FIRST_FRAGMENT | PKT_HAS_PORTS);
}

TEST(Parse, OptionsIhlSixToFifteen) {
  for (unsigned words = 1; words <= 10; ++words) {
    Ip p = make_ip(IPPROTO_UDP, 12, words);
    Ipv4Packet out;
    ASSERT_EQ(parse(p, out), ParseError::none) << words;
    EXPECT_EQ(out.ip_hdr_len, 20 + 4 * words);
    EXPECT_EQ(out.l4, p.b.data() + 20 + 4 * words);
    EXPECT_EQ(out.l4_len, 12);
    EXPECT_EQ(rte_be_to_cpu_16(reinterpret_cast<rte_udp_hdr*>(out.l4)->src_port), 40000);
    // Options are covered by the header checksum.
    p.b[20] = 7;
    EXPECT_EQ(parse(p, out), ParseError::bad_checksum) << words;
  }
}

// ---------------------------------------------------------------- mbuf form

rte_mbuf* mbuf_of(const std::vector<uint8_t>& ip_bytes, size_t pad_to = 0) {
  rte_mbuf* m = rte_pktmbuf_alloc(test::eal_pool());
  const size_t len = std::max(14 + ip_bytes.size(), pad_to);
  auto* d = reinterpret_cast<uint8_t*>(rte_pktmbuf_append(m, static_cast<uint16_t>(len)));
  std::memset(d, 0xee, len);  // padding bytes are not zero on purpose
  d[12] = 0x08;
  d[13] = 0x00;
  std::memcpy(d + 14, ip_bytes.data(), ip_bytes.size());
  return m;
}

TEST(ParseMbuf, EthernetPaddingIsTrimmed) {
  Ip p = make_ip(IPPROTO_UDP, 8);  // 28 bytes: a 42-byte frame padded to 60
  rte_mbuf* m = mbuf_of(p.b, 60);
  ASSERT_EQ(m->data_len, 60);
  Ipv4Packet out;
  ASSERT_EQ(parse_ipv4_mbuf(m, out), ParseError::none);
  EXPECT_EQ(m->data_len, 42);
  EXPECT_EQ(m->pkt_len, 42u);
  EXPECT_EQ(out.total_len, 28);
  rte_pktmbuf_free(m);
}

TEST(ParseMbuf, ExactFrameIsUntouched) {
  Ip p = make_ip(IPPROTO_TCP, 40);
  rte_mbuf* m = mbuf_of(p.b);
  Ipv4Packet out;
  ASSERT_EQ(parse_ipv4_mbuf(m, out), ParseError::none);
  EXPECT_EQ(m->data_len, 14 + 60);
  EXPECT_EQ(reinterpret_cast<uint8_t*>(out.ip), rte_pktmbuf_mtod(m, uint8_t*) + 14);
  rte_pktmbuf_free(m);
}

TEST(ParseMbuf, ShorterThanEthernetIsTruncated) {
  rte_mbuf* m = rte_pktmbuf_alloc(test::eal_pool());
  rte_pktmbuf_append(m, 13);
  Ipv4Packet out;
  EXPECT_EQ(parse_ipv4_mbuf(m, out), ParseError::truncated);
  rte_pktmbuf_free(m);
}

TEST(ParseMbuf, ErrorsPropagateAndFrameIsNotTrimmed) {
  Ip p = make_ip(IPPROTO_UDP, 8);
  p.b[10] ^= 0xff;
  rte_mbuf* m = mbuf_of(p.b, 60);
  Ipv4Packet out;
  EXPECT_EQ(parse_ipv4_mbuf(m, out), ParseError::bad_checksum);
  EXPECT_EQ(m->data_len, 60);
  rte_pktmbuf_free(m);
}

TEST(ParseMbuf, MultiSegmentIsRejected) {
  Ip p = make_ip(IPPROTO_UDP, 8);
  rte_mbuf* m = mbuf_of(p.b);
  rte_mbuf* tail = rte_pktmbuf_alloc(test::eal_pool());
  rte_pktmbuf_append(tail, 10);
  ASSERT_EQ(rte_pktmbuf_chain(m, tail), 0);
  Ipv4Packet out;
  EXPECT_EQ(parse_ipv4_mbuf(m, out), ParseError::truncated);
  rte_pktmbuf_free(m);
}

// The inline fast path of parse_ipv4_mbuf must agree with the full parser on
// every input: random header mutations of valid TCP/UDP packets (lengths, IHL,
// flags, checksum, data offsets, padding, RX checksum verdicts), compared field by field.
TEST(ParseMbuf, FastPathAgreesWithTheFullParser) {
  std::mt19937 rng(5);
  unsigned fast_ok = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    const uint8_t proto = rng() % 2 ? IPPROTO_UDP : IPPROTO_TCP;
    Ip p = make_ip(proto, 20 + rng() % 40);
    const unsigned mutations = rng() % 3;
    for (unsigned k = 0; k < mutations; ++k) {
      const size_t at = rng() % std::min<size_t>(p.b.size(), 40);
      p.b[at] = static_cast<uint8_t>(rng() % 4 ? p.b[at] ^ (1u << (rng() % 8)) : rng());
      // Mostly keep the checksum right so deeper checks run (when the mutated IHL still fits).
      if (rng() % 2 && p.ihl() * 4u <= p.b.size() && p.ihl() >= 5) p.fix();
    }
    const uint16_t pad = rng() % 3 ? 0 : static_cast<uint16_t>(rng() % 20);
    rte_mbuf* a = mbuf_of(p.b, static_cast<uint16_t>(14 + p.b.size() + pad));
    rte_mbuf* b = mbuf_of(p.b, static_cast<uint16_t>(14 + p.b.size() + pad));
    const uint64_t verdicts[] = {RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN, RTE_MBUF_F_RX_IP_CKSUM_GOOD,
                                 RTE_MBUF_F_RX_IP_CKSUM_BAD, RTE_MBUF_F_RX_IP_CKSUM_NONE};
    a->ol_flags = b->ol_flags = verdicts[rng() % 4];
    Ipv4Packet fa, fb;
    const ParseError ea = parse_ipv4_mbuf(a, fa);
    const ParseError eb = parse_ipv4_mbuf_full(b, fb);
    ASSERT_EQ(ea, eb) << iter;
    ASSERT_EQ(a->data_len, b->data_len) << iter;
    ASSERT_EQ(a->pkt_len, b->pkt_len) << iter;
    if (ea == ParseError::none) {
      ++fast_ok;
      ASSERT_EQ(reinterpret_cast<uint8_t*>(fa.ip) - rte_pktmbuf_mtod(a, uint8_t*),
                reinterpret_cast<uint8_t*>(fb.ip) - rte_pktmbuf_mtod(b, uint8_t*));
      ASSERT_EQ(fa.l4 - reinterpret_cast<uint8_t*>(fa.ip), fb.l4 - reinterpret_cast<uint8_t*>(fb.ip));
      ASSERT_EQ(fa.ip_hdr_len, fb.ip_hdr_len);
      ASSERT_EQ(fa.total_len, fb.total_len);
      ASSERT_EQ(fa.l4_len, fb.l4_len);
      ASSERT_EQ(fa.proto, fb.proto);
      ASSERT_EQ(fa.flags, fb.flags) << iter;
    }
    rte_pktmbuf_free(a);
    rte_pktmbuf_free(b);
  }
  EXPECT_GT(fast_ok, 5000u) << "too few valid packets: the comparison says little";
}

TEST(Parse, ErrorNamesAreDistinct) {
  const ParseError all[] = {ParseError::none,         ParseError::truncated,  ParseError::bad_version,
                            ParseError::bad_ihl,      ParseError::bad_checksum, ParseError::bad_length,
                            ParseError::bad_l4};
  for (size_t i = 0; i < std::size(all); ++i)
    for (size_t j = i + 1; j < std::size(all); ++j)
      EXPECT_STRNE(parse_error_name(all[i]), parse_error_name(all[j]));
}

}  // namespace
}  // namespace natgw::net
