// One-armed NAT (interface.one_armed, the single-ENI layout): flows from a `from`
// prefix that leave by the interface they came in on are translated, and their
// replies return on it; without the option, or toward another inside address,
// same-interface traffic is routed untranslated.
#include <gtest/gtest.h>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

// One interface: clients (192.168.0.0/16, via the TGW at 10.0.1.1) and the default
// route (10.0.1.254) share it, as on an instance with a single ENI.
std::string one_arm_config(bool one_armed) {
  return std::string(R"(
[dataplane]
workers = 1
[[interface]]
name = "eni"
device = "net_null0"
address = "10.0.1.10/24"
)") + (one_armed ? "one_armed = true\n" : "") + R"(
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"
interface = "eni"
[[route]]
prefix = "192.168.0.0/16"
via = "10.0.1.1"
interface = "eni"
[[snat]]
from = ["192.168.0.0/16"]
)";
}

constexpr uint16_t kEni = 0;
constexpr uint8_t kIgwMac = 0x54;

class OneArmed : public ::testing::Test {
 protected:
  static void neighbours(Pipeline& p) {
    p.neighbour(kEni, "10.0.1.254", kIgwMac);
    p.neighbour(kEni, "10.0.1.1", kTgwMac);
  }
};

TEST_F(OneArmed, SameInterfaceFlowIsTranslatedAndRepliesReturn) {
  Pipeline p(one_arm_config(true));
  neighbours(p);
  p.rx(kEni, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  auto out = ipv4_only(p.out(kEni));
  ASSERT_EQ(out.size(), 1u);
  const Parsed o = parse_frame(out[0]);
  EXPECT_EQ(ipstr(o.src), "10.0.1.10") << "leaving untranslated would leak the inside address";
  EXPECT_EQ(ipstr(o.dst), "203.0.113.10");
  EXPECT_TRUE(rte_is_same_ether_addr(&o.dst_mac, &(const rte_ether_addr&)mac(kIgwMac)));
  EXPECT_TRUE(o.ip_csum_ok);
  EXPECT_TRUE(o.l4_csum_ok);

  PacketSpec r;
  r.src_mac = mac(kIgwMac);
  r.dst_mac = our_mac(kEni);
  r.src = ip("203.0.113.10");
  r.dst = ip("10.0.1.10");
  r.proto = IPPROTO_UDP;
  r.sport = 53;
  r.dport = o.sport;
  p.rx(kEni, build_frame(r));
  auto back = ipv4_only(p.out(kEni));
  ASSERT_EQ(back.size(), 1u);
  const Parsed b = parse_frame(back[0]);
  EXPECT_EQ(ipstr(b.src), "203.0.113.10");
  EXPECT_EQ(ipstr(b.dst), "192.168.10.2");
  EXPECT_EQ(b.dport, 40000);
  EXPECT_TRUE(rte_is_same_ether_addr(&b.dst_mac, &(const rte_ether_addr&)mac(kTgwMac)));
  EXPECT_TRUE(b.ip_csum_ok);
  EXPECT_TRUE(b.l4_csum_ok);
}

TEST_F(OneArmed, TrafficBetweenInsidePrefixesIsRoutedUntranslated) {
  Pipeline p(one_arm_config(true));
  neighbours(p);
  p.rx(kEni, build_frame(client(IPPROTO_UDP, "192.168.20.5", 40000, 53)));
  auto out = ipv4_only(p.out(kEni));
  ASSERT_EQ(out.size(), 1u);
  const Parsed o = parse_frame(out[0]);
  EXPECT_EQ(ipstr(o.src), "192.168.10.2");
  EXPECT_EQ(ipstr(o.dst), "192.168.20.5");
  EXPECT_EQ(o.ttl, 63);
}

TEST_F(OneArmed, WithoutTheOptionSameInterfaceTrafficIsNotTranslated) {
  Pipeline p(one_arm_config(false));
  neighbours(p);
  p.rx(kEni, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  auto out = ipv4_only(p.out(kEni));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ipstr(parse_frame(out[0]).src), "192.168.10.2");
}

}  // namespace
}  // namespace natgw::test
