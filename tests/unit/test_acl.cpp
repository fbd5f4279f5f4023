// AclTable: ordered first match, default action, protocol and port ranges, hit counters.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include "acl/acl_table.hpp"

namespace natgw::acl {
namespace {

uint32_t host(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}
config::Prefix pfx(const char* a, uint8_t len) { return config::Prefix{host(a), len}; }

struct RuleSpec {
  bool allow;
  std::optional<config::Prefix> src, dst;
  uint8_t proto = 0;
  config::PortRange sport{}, dport{};
};
config::Config cfg_of(std::vector<RuleSpec> rules, bool default_allow = true) {
  config::Config c;
  for (auto& r : rules) {
    config::AclRule a;
    a.allow = r.allow;
    a.src = r.src;
    a.dst = r.dst;
    a.proto = r.proto;
    a.sport = r.sport;
    a.dport = r.dport;
    c.acl.push_back(a);
  }
  c.acl_default_allow = default_allow;
  return c;
}

constexpr uint8_t kTcp = 6, kUdp = 17, kIcmp = 1;

TEST(Acl, EmptyTableAllowsEverything) {
  AclTable t(cfg_of({}));
  EXPECT_TRUE(t.empty());
  EXPECT_TRUE(t.allow(host("1.2.3.4"), host("5.6.7.8"), kTcp, 1, 2));
  EXPECT_EQ(t.hits(0), 1u) << "the default action is counted at index size()";
}

TEST(Acl, DefaultDenyWithoutRules) {
  AclTable t(cfg_of({}, false));
  EXPECT_FALSE(t.empty()) << "a default deny must be evaluated";
  EXPECT_FALSE(t.allow(host("1.2.3.4"), host("5.6.7.8"), kUdp, 1, 2));
  EXPECT_FALSE(t.default_allow());
}

TEST(Acl, FirstMatchWins) {
  AclTable t(cfg_of({
      {true, pfx("192.168.10.0", 24), std::nullopt},
      {false, pfx("192.168.0.0", 16), std::nullopt},
      {true, std::nullopt, pfx("203.0.113.0", 24)},
  }));
  EXPECT_TRUE(t.allow(host("192.168.10.5"), host("8.8.8.8"), kTcp, 1000, 80));
  EXPECT_FALSE(t.allow(host("192.168.11.5"), host("8.8.8.8"), kTcp, 1000, 80));
  EXPECT_FALSE(t.allow(host("192.168.11.5"), host("203.0.113.1"), kTcp, 1000, 80))
      << "rule 2 comes before rule 3";
  EXPECT_TRUE(t.allow(host("10.1.1.1"), host("203.0.113.1"), kTcp, 1000, 80));
  EXPECT_EQ(t.hits(0), 1u);
  EXPECT_EQ(t.hits(1), 2u);
  EXPECT_EQ(t.hits(2), 1u);
  EXPECT_EQ(t.hits(3), 0u);

  // Same rules, reversed order: the deny now shadows the allow.
  AclTable r(cfg_of({
      {false, pfx("192.168.0.0", 16), std::nullopt},
      {true, pfx("192.168.10.0", 24), std::nullopt},
  }));
  EXPECT_FALSE(r.allow(host("192.168.10.5"), host("8.8.8.8"), kTcp, 1000, 80));
  EXPECT_EQ(r.hits(1), 0u);
}

TEST(Acl, DefaultActionAppliesWhenNothingMatches) {
  AclTable deny(cfg_of({{true, pfx("192.168.0.0", 16), std::nullopt}}, false));
  EXPECT_TRUE(deny.allow(host("192.168.1.1"), host("1.1.1.1"), kUdp, 1, 53));
  EXPECT_FALSE(deny.allow(host("172.16.1.1"), host("1.1.1.1"), kUdp, 1, 53));
  EXPECT_EQ(deny.hits(1), 1u);
  AclTable allow(cfg_of({{false, pfx("192.168.0.0", 16), std::nullopt}}, true));
  EXPECT_TRUE(allow.allow(host("172.16.1.1"), host("1.1.1.1"), kUdp, 1, 53));
  EXPECT_EQ(allow.hits(1), 1u);
}

TEST(Acl, ProtocolMatters) {
  AclTable t(cfg_of({{false, std::nullopt, pfx("169.254.169.254", 32), kTcp}}));
  EXPECT_FALSE(t.allow(host("192.168.1.1"), host("169.254.169.254"), kTcp, 1, 80));
  EXPECT_TRUE(t.allow(host("192.168.1.1"), host("169.254.169.254"), kUdp, 1, 80));
  EXPECT_TRUE(t.allow(host("192.168.1.1"), host("169.254.169.254"), kIcmp, 0, 0));
  EXPECT_TRUE(t.allow(host("192.168.1.1"), host("169.254.169.255"), kTcp, 1, 80));
  AclTable any(cfg_of({{false, std::nullopt, pfx("169.254.169.254", 32), 0}}));
  for (uint8_t p : {kTcp, kUdp, kIcmp, uint8_t{47}})
    EXPECT_FALSE(any.allow(host("192.168.1.1"), host("169.254.169.254"), p, 0, 0)) << int(p);
}

TEST(Acl, PortRangesAreInclusive) {
  AclTable t(cfg_of({
      {false, std::nullopt, std::nullopt, kTcp, {}, {22, 22}},
      {false, std::nullopt, std::nullopt, kUdp, {}, {6000, 6010}},
      {false, std::nullopt, std::nullopt, kTcp, {1, 1023}, {}},
  }));
  EXPECT_FALSE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kTcp, 40000, 22));
  EXPECT_TRUE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kTcp, 40000, 21));
  EXPECT_TRUE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kTcp, 40000, 23));
  EXPECT_TRUE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kUdp, 40000, 22)) << "rule 1 is TCP only";
  EXPECT_TRUE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kUdp, 40000, 5999));
  EXPECT_FALSE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kUdp, 40000, 6000));
  EXPECT_FALSE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kUdp, 40000, 6010));
  EXPECT_TRUE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kUdp, 40000, 6011));
  EXPECT_FALSE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kTcp, 1023, 443)) << "source port range";
  EXPECT_TRUE(t.allow(host("1.1.1.1"), host("2.2.2.2"), kTcp, 1024, 443));
  EXPECT_EQ(t.hits(0), 1u);
  EXPECT_EQ(t.hits(1), 2u);
  EXPECT_EQ(t.hits(2), 1u);
  EXPECT_EQ(t.hits(3), 6u);
}

TEST(Acl, SourceAndDestinationPrefixesTogether) {
  AclTable t(cfg_of({{true, pfx("192.168.10.0", 24), pfx("198.51.100.0", 24)}}, false));
  EXPECT_TRUE(t.allow(host("192.168.10.9"), host("198.51.100.200"), kTcp, 1, 443));
  EXPECT_FALSE(t.allow(host("192.168.11.9"), host("198.51.100.200"), kTcp, 1, 443));
  EXPECT_FALSE(t.allow(host("192.168.10.9"), host("198.51.101.200"), kTcp, 1, 443));
}

TEST(Acl, ZeroLengthPrefixMatchesAll) {
  AclTable t(cfg_of({{false, pfx("0.0.0.0", 0), pfx("0.0.0.0", 0), kUdp}}));
  EXPECT_FALSE(t.allow(0xffffffffu, 0, kUdp, 0, 0));
  EXPECT_FALSE(t.allow(host("1.2.3.4"), host("4.3.2.1"), kUdp, 65535, 65535));
  EXPECT_TRUE(t.allow(host("1.2.3.4"), host("4.3.2.1"), kTcp, 65535, 65535));
}

TEST(Acl, KeepsSourceRulesForDisplay) {
  auto c = cfg_of({{true, pfx("10.0.0.0", 8), std::nullopt}, {false, std::nullopt, std::nullopt}}, false);
  AclTable t(c);
  EXPECT_EQ(t.size(), 2u);
  ASSERT_EQ(t.source_rules().size(), 2u);
  EXPECT_EQ(t.source_rules()[0].src, pfx("10.0.0.0", 8));
  EXPECT_EQ(t.rules()[0].src_mask, 0xff000000u);
}

}  // namespace
}  // namespace natgw::acl
