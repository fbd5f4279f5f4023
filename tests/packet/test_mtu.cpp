// Egress MTU: DF packets too big get ICMP frag-needed with the next-hop MTU,
// others are fragmented (RFC 791) and reassemble to the translated original; TCP
// MSS clamping of SYNs leaving an interface that asks for it.
#include <gtest/gtest.h>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

// The internet link has MTU 600 (test frames stay within one 2 KB mbuf); SYNs toward the endpoint get MSS 1360 at most.
std::string small_mtu(const std::string& base) {
  return with(with(base, "address = \"10.0.3.10/24\"", "address = \"10.0.3.10/24\"\nmtu = 600"),
              "address = \"10.0.2.10/24\"", "address = \"10.0.2.10/24\"\nmss_clamp = 1360");
}

PacketSpec sized(uint16_t ip_total, bool df, uint16_t sport = 40000) {
  auto s = client(IPPROTO_UDP, "203.0.113.10", sport, 53);
  s.payload.resize(ip_total - 28);
  for (size_t i = 0; i < s.payload.size(); ++i) s.payload[i] = static_cast<uint8_t>(i ^ (i >> 8));
  s.frag = df ? 0x4000 : 0;
  return s;
}

class Mtu : public ::testing::TestWithParam<bool> {  // NAT on or off
 protected:
  Mtu() : p(small_mtu(GetParam() ? kLabConfig : kForwardConfig)) { lab_neighbours(p); }
  Rewrite out_rw(uint16_t sport = 40000) const {
    Rewrite w{.src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)};
    if (GetParam()) {
      w.src = ip("10.0.3.10");
      w.sport = sport;
    }
    return w;
  }
  Pipeline p;
};

TEST_P(Mtu, DfPacketTooBigGetsFragNeededWithTheNextHopMtu) {
  const auto fits = build_frame(sized(600, true));
  p.rx(kInside, fits);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u) << "exactly the MTU fits";
  EXPECT_EQ(out[0], expected(fits, out_rw()));

  const auto big = build_frame(sized(601, true, 40001));
  p.rx(kInside, big);
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u);
  const Parsed e = parse_frame(back[0]);
  EXPECT_EQ(e.icmp_type, 3);
  EXPECT_EQ(e.icmp_code, 4);
  EXPECT_EQ(e.l4[6] << 8 | e.l4[7], 600);
  EXPECT_EQ(ipstr(e.src), "10.0.1.10");
  EXPECT_EQ(ipstr(e.dst), "192.168.10.2");
  EXPECT_TRUE(same_mac(e.dst_mac, mac(kTgwMac)));
  EXPECT_TRUE(checksums_exact(back[0]));
  // The quote is the packet as the client sent it (before any translation), cut to 548 bytes.
  const auto orig = ip_of(big);
  EXPECT_EQ(std::vector<uint8_t>(e.l4.begin() + 8, e.l4.end()),
            std::vector<uint8_t>(orig.begin(), orig.begin() + 548));
  EXPECT_EQ(drops(p, dp::kDropMtu), 1u);
}

// Frag-needed has its own rate-limit bucket: a TTL flood (a runaway traceroute) that
// uses up the other errors' does not black-hole path MTU discovery.
TEST_P(Mtu, FragNeededIsNotStarvedByOtherErrors) {
  auto expiring = sized(100, true);
  expiring.ttl = 1;
  p.rx(kInside, std::vector<std::vector<uint8_t>>(40, build_frame(expiring)));
  EXPECT_GT(total(p, &dp::WorkerCounters::icmp_errors_ratelimited), 0u) << "the TTL errors' bucket is empty";
  p.out(kInside);
  p.rx(kInside, build_frame(sized(601, true, 40001)));
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u);
  const Parsed e = parse_frame(back[0]);
  EXPECT_EQ(e.icmp_type, 3);
  EXPECT_EQ(e.icmp_code, 4);
}

TEST_P(Mtu, NonDfPacketIsFragmentedAndReassemblesToTheOriginal) {
  const auto whole = build_frame(sized(1900, false));
  p.rx(kInside, whole);
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 4u);
  // (600 - 20) rounded down to 8: 576 bytes per fragment, the rest in the last.
  const uint16_t lens[] = {576, 576, 576, 152};
  for (size_t i = 0; i < 4; ++i) {
    const Parsed f = parse_frame(out[i]);
    ASSERT_TRUE(f.ok);
    EXPECT_EQ(f.total_len, 20 + lens[i]) << i;
    EXPECT_LE(f.total_len, 600);
    EXPECT_EQ(f.offset_bytes(), 576 * i) << i;
    EXPECT_EQ(f.mf(), i < 3) << i;
    EXPECT_FALSE(f.df());
    EXPECT_EQ(f.ip_id, 1);
    EXPECT_TRUE(f.ip_csum_ok && f.ip_csum == f.ip_csum_ref) << i;
    EXPECT_TRUE(same_mac(f.dst_mac, mac(kInternetGwMac)));
  }
  EXPECT_EQ(reassemble(out), expected(whole, out_rw()));
  EXPECT_EQ(total(p, &dp::WorkerCounters::fragments_created), 4u);
}

TEST_P(Mtu, AFragmentIsFragmentedAgainKeepingItsOffsetAndMoreFragments) {
  const auto whole = build_frame(sized(1900, false));
  const auto frags = fragment(whole, 1480);  // what a 1500-byte link would carry
  ASSERT_EQ(frags.size(), 2u);
  p.rx(kInside, frags);
  const auto out = ipv4_only(p.out(kInternet));
  EXPECT_EQ(out.size(), 4u);  // 1480 -> 576 + 576 + 328; the last 400 bytes fit
  size_t last = 0;
  for (const auto& f : out) {
    const Parsed pf = parse_frame(f);
    EXPECT_LE(pf.total_len, 600);
    last += !pf.mf();
  }
  EXPECT_EQ(last, 1u) << "only the datagram's last fragment clears MF";
  EXPECT_EQ(reassemble(out), expected(whole, out_rw()));
}

INSTANTIATE_TEST_SUITE_P(NatOrNot, Mtu, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) { return i.param ? "Nat" : "Forward"; });

class MssClamp : public ::testing::Test {
 protected:
  MssClamp() : p(small_mtu(kLabConfig)) { lab_neighbours(p); }
  PacketSpec syn(std::vector<uint8_t> options, uint16_t sport, uint8_t flags = RTE_TCP_SYN_FLAG) {
    auto s = client(IPPROTO_TCP, "198.51.100.10", sport, 443);  // leaves by the endpoint
    s.tcp_options = std::move(options);
    s.tcp_flags = flags;
    s.payload.clear();
    return s;
  }
  std::vector<uint8_t> send(const PacketSpec& s) {
    p.rx(kInside, build_frame(s));
    auto out = ipv4_only(p.out(kEndpoint));
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? std::vector<uint8_t>{} : out[0];
  }
  static Rewrite to_endpoint(uint16_t sport) {
    return {.src = ip("10.0.2.10"), .sport = sport, .src_mac = our_mac(kEndpoint), .dst_mac = mac(kEndpointGwMac)};
  }
  Pipeline p;
};

TEST_F(MssClamp, SynMssAboveTheClampIsLowered) {
  auto opt = tcp_mss_option(1460);
  const auto want = build_frame(syn(tcp_mss_option(1360), 40000));
  EXPECT_EQ(send(syn(opt, 40000)), expected(want, to_endpoint(40000)));
  // At an odd offset behind a NOP (the checksum patched with the byte-swapped delta).
  auto odd = std::vector<uint8_t>{1};
  odd.insert(odd.end(), opt.begin(), opt.end());
  odd.insert(odd.end(), {1, 1, 1});
  auto odd_want = std::vector<uint8_t>{1};
  auto c = tcp_mss_option(1360);
  odd_want.insert(odd_want.end(), c.begin(), c.end());
  odd_want.insert(odd_want.end(), {1, 1, 1});
  EXPECT_EQ(send(syn(odd, 40001)), expected(build_frame(syn(odd_want, 40001)), to_endpoint(40001)));
  EXPECT_EQ(total(p, &dp::WorkerCounters::mss_clamped), 2u);
}

TEST_F(MssClamp, OtherSegmentsAndSmallMssAreLeftAlone) {
  const PacketSpec cases[] = {
      syn(tcp_mss_option(1200), 40010),                                        // below the clamp
      syn(tcp_mss_option(1460), 40011, RTE_TCP_ACK_FLAG),                      // not a SYN
      syn({1, 1, 1, 0}, 40012),                                                // no MSS option
      syn({3, 3, 7, 1, 2, 4, 0x05, 0xb4}, 40013),                              // after a window-scale
  };
  for (size_t i = 0; i < 3; ++i) {
    const auto in = build_frame(cases[i]);
    EXPECT_EQ(send(cases[i]), expected(in, to_endpoint(cases[i].sport))) << i;
  }
  // Window scale, NOP, then MSS 1460 at an even offset: found and clamped.
  const auto o = parse_frame(send(cases[3]));
  EXPECT_EQ(o.l4[20 + 6] << 8 | o.l4[20 + 7], 1360);
  EXPECT_TRUE(o.l4_csum_ok && o.l4_csum == o.l4_csum_ref);
  EXPECT_EQ(total(p, &dp::WorkerCounters::mss_clamped), 1u);
  // Toward the internet (no clamp configured) a SYN keeps its MSS.
  auto s = client(IPPROTO_TCP, "203.0.113.10", 40020, 443);
  s.tcp_options = tcp_mss_option(1460);
  s.payload.clear();
  p.rx(kInside, build_frame(s));
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(parse_frame(out[0]).l4[22] << 8 | parse_frame(out[0]).l4[23], 1460);
}

}  // namespace
}  // namespace natgw::test
