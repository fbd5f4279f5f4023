// Whole-pipeline NAT tests: frames in through Worker::process, frames out of the
// TX capture, every checksum verified from scratch.
#include <gtest/gtest.h>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

class NatPipeline : public ::testing::Test {
 protected:
  NatPipeline() : p(kLabConfig) {
    p.neighbour(kInternet, "10.0.3.1", 0x31);
    p.neighbour(kEndpoint, "10.0.2.1", 0x21);
  }
  static PacketSpec from_client(uint8_t proto, const char* dst, uint16_t sport, uint16_t dport) {
    return client(proto, dst, sport, dport);
  }
  Pipeline p;
};

TEST_F(NatPipeline, UdpIsTranslatedOutAndBack) {
  auto s = from_client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  p.rx(kInside, build_frame(s));
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  Parsed o = parse_frame(out[0]);
  EXPECT_EQ(ipstr(o.src), "10.0.3.10");
  EXPECT_EQ(ipstr(o.dst), "203.0.113.10");
  EXPECT_EQ(o.ttl, 63);
  EXPECT_TRUE(o.ip_csum_ok);
  EXPECT_TRUE(o.l4_csum_ok);
  EXPECT_TRUE(rte_is_same_ether_addr(&o.dst_mac, &(const rte_ether_addr&)mac(0x31)));
  EXPECT_EQ(o.sport, 40000);  // port preserved when free

  PacketSpec r;
  r.src_mac = mac(0x31);
  r.dst_mac = mac(0x12);
  r.src = ip("203.0.113.10");
  r.dst = ip("10.0.3.10");
  r.proto = IPPROTO_UDP;
  r.sport = 53;
  r.dport = o.sport;
  p.rx(kInternet, build_frame(r));
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u);
  Parsed b = parse_frame(back[0]);
  EXPECT_EQ(ipstr(b.dst), "192.168.10.2");
  EXPECT_EQ(b.dport, 40000);
  EXPECT_TRUE(b.ip_csum_ok);
  EXPECT_TRUE(b.l4_csum_ok);
  EXPECT_TRUE(rte_is_same_ether_addr(&b.dst_mac, &(const rte_ether_addr&)mac(0x01)));
}

TEST_F(NatPipeline, PrefixListDestinationLeavesByEndpoint) {
  p.rx(kInside, build_frame(from_client(IPPROTO_TCP, "198.51.100.10", 40001, 443)));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  auto out = ipv4_only(p.out(kEndpoint));
  ASSERT_EQ(out.size(), 1u);
  Parsed o = parse_frame(out[0]);
  EXPECT_EQ(ipstr(o.src), "10.0.2.10");
  EXPECT_TRUE(o.l4_csum_ok);
}

TEST_F(NatPipeline, UnsolicitedInboundIsDropped) {
  PacketSpec r;
  r.dst_mac = mac(0x12);
  r.src = ip("203.0.113.10");
  r.dst = ip("10.0.3.10");
  r.sport = 53;
  r.dport = 40000;
  p.rx(kInternet, build_frame(r));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(p.worker().counters().drops[dp::kDropNoSession].get(), 1u);
}

}  // namespace
}  // namespace natgw::test
