// Malformed and foreign frames: each is dropped under its own reason (and IPv4
// parse failures under their parse error), nothing is transmitted, and the worker
// keeps forwarding valid traffic afterwards.
#include <gtest/gtest.h>

#include <functional>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

using net::ParseError;

std::vector<uint8_t> valid_udp() { return build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)); }
std::vector<uint8_t> valid_udp_cut(size_t n) {
  auto f = valid_udp();
  f.resize(n);
  return f;
}
rte_ipv4_hdr* iph(std::vector<uint8_t>& f) { return reinterpret_cast<rte_ipv4_hdr*>(f.data() + 14); }

struct Case {
  const char* name;
  std::function<std::vector<uint8_t>()> frame;
  dp::Drop drop;
  ParseError parse;  // none: not counted as a parse error
};

const Case kCases[] = {
    {"empty frame", [] { return std::vector<uint8_t>{}; }, dp::kDropMalformed, ParseError::none},
    {"truncated ethernet", [] { return valid_udp_cut(13); },
     dp::kDropMalformed, ParseError::none},
    {"ethernet only", [] { return valid_udp_cut(14); },
     dp::kDropMalformed, ParseError::truncated},
    {"truncated ipv4 header", [] { return valid_udp_cut(14 + 19); },
     dp::kDropMalformed, ParseError::truncated},
    {"version 6 in an ipv4 frame",
     [] {
       auto f = valid_udp();
       iph(f)->version_ihl = 0x65;
       fix_ip_csum(f);
       return f;
     },
     dp::kDropMalformed, ParseError::bad_version},
    {"ihl 4",
     [] {
       auto f = valid_udp();
       iph(f)->version_ihl = 0x44;
       return f;
     },
     dp::kDropMalformed, ParseError::bad_ihl},
    {"ihl 0",
     [] {
       auto f = valid_udp();
       iph(f)->version_ihl = 0x40;
       return f;
     },
     dp::kDropMalformed, ParseError::bad_ihl},
    {"ihl beyond the frame",
     [] {
       auto f = valid_udp();  // 44 bytes of IPv4, the header claims 60
       iph(f)->version_ihl = 0x4f;
       return f;
     },
     dp::kDropMalformed, ParseError::truncated},
    {"bad header checksum",
     [] {
       auto f = valid_udp();
       iph(f)->hdr_checksum ^= 0x0100;
       return f;
     },
     dp::kDropMalformed, ParseError::bad_checksum},
    {"total length beyond the frame",
     [] {
       auto f = valid_udp();
       iph(f)->total_length = htons(static_cast<uint16_t>(f.size() - 14 + 1));
       fix_ip_csum(f);
       return f;
     },
     dp::kDropMalformed, ParseError::bad_length},
    {"total length below the header",
     [] {
       auto f = valid_udp();
       iph(f)->total_length = htons(19);
       fix_ip_csum(f);
       return f;
     },
     dp::kDropMalformed, ParseError::bad_length},
    {"tcp header cut short",
     [] {
       auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
       s.payload.clear();
       auto f = build_frame(s);
       f.resize(14 + 20 + 12);
       iph(f)->total_length = htons(32);
       fix_ip_csum(f);
       return f;
     },
     dp::kDropMalformed, ParseError::bad_l4},
    {"tcp data offset beyond the packet",
     [] {
       auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
       s.payload.clear();
       auto f = build_frame(s);
       f[14 + 20 + 12] = 0xf0;  // 60-byte header in a 20-byte segment
       return f;
     },
     dp::kDropMalformed, ParseError::bad_l4},
    {"udp length beyond the datagram",
     [] {
       auto f = valid_udp();
       f[14 + 20 + 4] = 0x10;  // 4096+
       return f;
     },
     dp::kDropMalformed, ParseError::bad_l4},
    {"icmp header cut short",
     [] {
       auto s = client(IPPROTO_ICMP, "203.0.113.10", 7, 0);
       s.payload.clear();
       auto f = build_frame(s);
       f.resize(14 + 20 + 4);
       iph(f)->total_length = htons(24);
       fix_ip_csum(f);
       return f;
     },
     dp::kDropMalformed, ParseError::bad_l4},
    {"ipv6 ethertype",
     [] {
       auto f = valid_udp();
       f[12] = 0x86;
       f[13] = 0xdd;
       return f;
     },
     dp::kDropNonIpv4, ParseError::none},
    {"vlan tag",
     [] {
       auto f = valid_udp();
       f[12] = 0x81;
       f[13] = 0x00;
       return f;
     },
     dp::kDropNonIpv4, ParseError::none},
    {"another host's mac",
     [] {
       auto f = valid_udp();
       f[5] = 0x77;
       return f;
     },
     dp::kDropNotForUs, ParseError::none},
    {"another host's mac (first bytes)",
     [] {
       auto f = valid_udp();
       f[1] ^= 0x40;
       return f;
     },
     dp::kDropNotForUs, ParseError::none},
    {"truncated arp",
     [] {
       auto f = build_arp(RTE_ARP_OP_REQUEST, mac(5), ip("10.0.1.5"), rte_ether_addr{}, ip("10.0.1.10"),
                          our_mac(kInside));
       f.resize(30);
       return f;
     },
     dp::kDropMalformed, ParseError::none},
    {"arp for another protocol",
     [] {
       auto f = build_arp(RTE_ARP_OP_REQUEST, mac(5), ip("10.0.1.5"), rte_ether_addr{}, ip("10.0.1.10"),
                          our_mac(kInside));
       f[14 + 2] = 0x86;  // protocol type IPv6
       f[14 + 3] = 0xdd;
       return f;
     },
     dp::kDropMalformed, ParseError::none},
};

class Malformed : public ::testing::TestWithParam<Case> {};

TEST_P(Malformed, IsDroppedUnderItsReasonAndNothingLeaves) {
  for (const std::string& cfg : {kForwardConfig, std::string(kLabConfig)}) {
    Pipeline p(cfg);
    lab_neighbours(p);
    const Case& c = GetParam();
    const auto f = c.frame();
    p.rx(kInside, f);
    for (uint16_t i : {kInside, kEndpoint, kInternet}) EXPECT_TRUE(p.out(i).empty()) << c.name;
    EXPECT_EQ(drops(p, c.drop), 1u) << c.name;
    EXPECT_EQ(all_drops(p), 1u) << c.name;
    uint64_t parse_errors = 0;
    for (const auto& n : p.worker().counters().malformed) parse_errors += n.get();
    if (c.parse == ParseError::none) {
      EXPECT_EQ(parse_errors, 0u) << c.name;
    } else {
      EXPECT_EQ(p.worker().counters().malformed[static_cast<unsigned>(c.parse)].get(), 1u)
          << c.name << ": not counted as " << net::parse_error_name(c.parse);
    }
    // The worker goes on: a valid packet right after still leaves.
    p.rx(kInside, valid_udp());
    EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u) << c.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Frames, Malformed, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           std::string n = i.param.name;
                           for (char& ch : n)
                             if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(MalformedMix, ABurstOfGoodAndBadFramesKeepsTheGoodOnes) {
  Pipeline p(kLabConfig);
  lab_neighbours(p);
  std::vector<std::vector<uint8_t>> burst;
  size_t good = 0;
  for (size_t i = 0; i < std::size(kCases); ++i) {
    burst.push_back(kCases[i].frame());
    auto s = client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(41000 + i), 53);
    burst.push_back(build_frame(s));
    ++good;
  }
  p.rx(kInside, burst);
  auto out = ipv4_only(p.out(kInternet));
  EXPECT_EQ(out.size(), good);
  for (const auto& f : out) EXPECT_TRUE(checksums_exact(f));
  EXPECT_EQ(all_drops(p), std::size(kCases));
}

TEST(MalformedPadding, EthernetPaddingIsTrimmed) {
  Pipeline p(kForwardConfig);
  lab_neighbours(p);
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  s.payload.clear();  // 28 bytes of IPv4: a 42-byte frame, padded to 60 on the wire
  auto f = build_frame(s);
  const auto unpadded = f;
  f.resize(60, 0);
  p.rx(kInside, f);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], expected(unpadded, {.src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)}));
}

TEST(MalformedOffload, TheNicsBadChecksumVerdictIsABadChecksum) {
  Pipeline p(kForwardConfig);
  lab_neighbours(p);
  rte_mbuf* m = to_mbuf(p.pool, valid_udp());  // a correct checksum, but the NIC said bad
  m->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_BAD;
  p.worker().process(kInside, &m, 1);
  p.worker().flush();
  EXPECT_TRUE(p.out(kInternet).empty());
  EXPECT_EQ(p.worker().counters().malformed[static_cast<unsigned>(ParseError::bad_checksum)].get(), 1u);
  // And a NIC "good" verdict is trusted for a header the software check would reject.
  auto f = valid_udp();
  iph(f)->hdr_checksum ^= 0x0100;
  rte_mbuf* g = to_mbuf(p.pool, f);
  g->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_GOOD;
  p.worker().process(kInside, &g, 1);
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
}

}  // namespace
}  // namespace natgw::test
