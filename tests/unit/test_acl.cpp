// AclTable: ordered first match, default action, protocol and port ranges, hit counters.
// Every behaviour test runs through both classifiers (linear scan and rte_acl), and a
// differential test checks rte_acl against an independent first-match reference on
// random rule sets.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <algorithm>
#include <random>

#include "acl/acl_table.hpp"
#include "common/eal_env.hpp"

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

// rte_acl contexts live in DPDK memory: the EAL comes up before the first one.
class AclBoth : public ::testing::TestWithParam<Classifier> {
 protected:
  void SetUp() override {
    if (GetParam() == Classifier::kRteAcl) test::eal_pool();
  }
  static Classifier how() { return GetParam(); }
};
INSTANTIATE_TEST_SUITE_P(Classifiers, AclBoth, ::testing::Values(Classifier::kLinear, Classifier::kRteAcl),
                         [](const auto& i) { return i.param == Classifier::kLinear ? "linear" : "rte_acl"; });

TEST_P(AclBoth, EmptyTableAllowsEverything) {
  AclTable t(cfg_of({}), how());
  EXPECT_TRUE(t.empty());
  EXPECT_TRUE(t.allow(host("1.2.3.4"), host("5.6.7.8"), kTcp, 1, 2));
  EXPECT_EQ(t.hits(0), 1u) << "the default action is counted at index size()";
}

TEST_P(AclBoth, DefaultDenyWithoutRules) {
  AclTable t(cfg_of({}, false), how());
  EXPECT_FALSE(t.empty()) << "a default deny must be evaluated";
  EXPECT_FALSE(t.allow(host("1.2.3.4"), host("5.6.7.8"), kUdp, 1, 2));
  EXPECT_FALSE(t.default_allow());
}

TEST_P(AclBoth, FirstMatchWins) {
  AclTable t(cfg_of({
      {true, pfx("192.168.10.0", 24), std::nullopt},
      {false, pfx("192.168.0.0", 16), std::nullopt},
      {true, std::nullopt, pfx("203.0.113.0", 24)},
  }), how());
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
  }), how());
  EXPECT_FALSE(r.allow(host("192.168.10.5"), host("8.8.8.8"), kTcp, 1000, 80));
  EXPECT_EQ(r.hits(1), 0u);
}

TEST_P(AclBoth, DefaultActionAppliesWhenNothingMatches) {
  AclTable deny(cfg_of({{true, pfx("192.168.0.0", 16), std::nullopt}}, false), how());
  EXPECT_TRUE(deny.allow(host("192.168.1.1"), host("1.1.1.1"), kUdp, 1, 53));
  EXPECT_FALSE(deny.allow(host("172.16.1.1"), host("1.1.1.1"), kUdp, 1, 53));
  EXPECT_EQ(deny.hits(1), 1u);
  AclTable allow(cfg_of({{false, pfx("192.168.0.0", 16), std::nullopt}}, true), how());
  EXPECT_TRUE(allow.allow(host("172.16.1.1"), host("1.1.1.1"), kUdp, 1, 53));
  EXPECT_EQ(allow.hits(1), 1u);
}

TEST_P(AclBoth, ProtocolMatters) {
  AclTable t(cfg_of({{false, std::nullopt, pfx("169.254.169.254", 32), kTcp}}), how());
  EXPECT_FALSE(t.allow(host("192.168.1.1"), host("169.254.169.254"), kTcp, 1, 80));
  EXPECT_TRUE(t.allow(host("192.168.1.1"), host("169.254.169.254"), kUdp, 1, 80));
  EXPECT_TRUE(t.allow(host("192.168.1.1"), host("169.254.169.254"), kIcmp, 0, 0));
  EXPECT_TRUE(t.allow(host("192.168.1.1"), host("169.254.169.255"), kTcp, 1, 80));
  AclTable any(cfg_of({{false, std::nullopt, pfx("169.254.169.254", 32), 0}}), how());
  for (uint8_t p : {kTcp, kUdp, kIcmp, uint8_t{47}})
    EXPECT_FALSE(any.allow(host("192.168.1.1"), host("169.254.169.254"), p, 0, 0)) << int(p);
}

TEST_P(AclBoth, PortRangesAreInclusive) {
  AclTable t(cfg_of({
      {false, std::nullopt, std::nullopt, kTcp, {}, {22, 22}},
      {false, std::nullopt, std::nullopt, kUdp, {}, {6000, 6010}},
      {false, std::nullopt, std::nullopt, kTcp, {1, 1023}, {}},
  }), how());
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

TEST_P(AclBoth, SourceAndDestinationPrefixesTogether) {
  AclTable t(cfg_of({{true, pfx("192.168.10.0", 24), pfx("198.51.100.0", 24)}}, false), how());
  EXPECT_TRUE(t.allow(host("192.168.10.9"), host("198.51.100.200"), kTcp, 1, 443));
  EXPECT_FALSE(t.allow(host("192.168.11.9"), host("198.51.100.200"), kTcp, 1, 443));
  EXPECT_FALSE(t.allow(host("192.168.10.9"), host("198.51.101.200"), kTcp, 1, 443));
}

TEST_P(AclBoth, ZeroLengthPrefixMatchesAll) {
  AclTable t(cfg_of({{false, pfx("0.0.0.0", 0), pfx("0.0.0.0", 0), kUdp}}), how());
  EXPECT_FALSE(t.allow(0xffffffffu, 0, kUdp, 0, 0));
  EXPECT_FALSE(t.allow(host("1.2.3.4"), host("4.3.2.1"), kUdp, 65535, 65535));
  EXPECT_TRUE(t.allow(host("1.2.3.4"), host("4.3.2.1"), kTcp, 65535, 65535));
}

TEST_P(AclBoth, KeepsSourceRulesForDisplay) {
  auto c = cfg_of({{true, pfx("10.0.0.0", 8), std::nullopt}, {false, std::nullopt, std::nullopt}}, false);
  AclTable t(c, how());
  EXPECT_EQ(t.size(), 2u);
  ASSERT_EQ(t.source_rules().size(), 2u);
  EXPECT_EQ(t.source_rules()[0].src, pfx("10.0.0.0", 8));
  EXPECT_EQ(t.rules()[0].src_mask, 0xff000000u);
}

TEST(Acl, ClassifierFollowsTheRuleCount) {
  test::eal_pool();
  std::vector<RuleSpec> rules;
  for (size_t i = 0; i < AclTable::kLinearMaxRules; ++i)
    rules.push_back({false, std::nullopt, pfx("10.0.0.0", 8), kUdp, {}, {static_cast<uint16_t>(100 + i), static_cast<uint16_t>(100 + i)}});
  AclTable small(cfg_of(rules));
  EXPECT_FALSE(small.uses_rte_acl());
  rules.push_back({false, std::nullopt, pfx("10.0.0.0", 8), kTcp});
  AclTable big(cfg_of(rules));
  EXPECT_TRUE(big.uses_rte_acl());
  EXPECT_FALSE(big.allow(host("1.1.1.1"), host("10.9.9.9"), kTcp, 1, 2));
  EXPECT_EQ(big.hits(AclTable::kLinearMaxRules), 1u);
  EXPECT_FALSE(big.allow(host("1.1.1.1"), host("10.9.9.9"), kUdp, 1, 100));
  EXPECT_TRUE(big.allow(host("1.1.1.1"), host("10.9.9.9"), kUdp, 1, 99));
  EXPECT_EQ(big.hits(0), 1u);
  EXPECT_EQ(big.hits(big.size()), 1u);
  // A reload builds the next table while the old one still serves: both contexts coexist.
  AclTable next(cfg_of(rules));
  EXPECT_TRUE(next.uses_rte_acl());
  EXPECT_FALSE(next.allow(host("1.1.1.1"), host("10.9.9.9"), kTcp, 1, 2));
  EXPECT_FALSE(big.allow(host("1.1.1.1"), host("10.9.9.9"), kTcp, 1, 2));
}

// Independent first-match reference, straight from the configured rules.
size_t reference_match(const std::vector<config::AclRule>& rules, uint32_t src, uint32_t dst, uint8_t proto,
                       uint16_t sport, uint16_t dport) {
  const auto in = [](const std::optional<config::Prefix>& p, uint32_t a) {
    if (!p || p->len == 0) return true;
    return (a >> (32 - p->len)) == (p->addr >> (32 - p->len));
  };
  for (size_t i = 0; i < rules.size(); ++i) {
    const auto& r = rules[i];
    if (in(r.src, src) && in(r.dst, dst) && (r.proto == 0 || r.proto == proto) && sport >= r.sport.lo &&
        sport <= r.sport.hi && dport >= r.dport.lo && dport <= r.dport.hi)
      return i;
  }
  return rules.size();
}

// Random rules that overlap a lot (addresses from a few /16s, ports from a narrow band),
// with /0 and /32 prefixes, protocol any, single ports, full and partial ranges.
config::Config random_rules(std::mt19937& rng, size_t n) {
  const auto below = [&](uint32_t k) { return static_cast<uint32_t>(rng() % k); };
  const uint32_t bases[4] = {0x0a000000, 0x0a010000, 0xc0a80000, 0xcb007100};
  const auto addr = [&] { return bases[below(4)] | below(65536); };
  // Mostly specific (a wildcard in every field would shadow everything after it).
  const auto prefix = [&]() -> std::optional<config::Prefix> {
    switch (below(16)) {
      case 0: return std::nullopt;
      case 1: return config::Prefix{0, 0};
      case 2: case 3: case 4: return config::Prefix{addr(), 32};
      default: {
        const auto len = static_cast<uint8_t>(12 + below(21));
        return config::Prefix{addr() & config::prefix_mask(len), len};
      }
    }
  };
  const auto ports = [&]() -> config::PortRange {
    switch (below(5)) {
      case 0: return {};
      case 1: {
        const auto p = static_cast<uint16_t>(below(2) ? below(2048) : 65535 - below(4));
        return {p, p};
      }
      case 2: return {0, static_cast<uint16_t>(below(2048))};
      case 3: return {static_cast<uint16_t>(below(2048)), 65535};
      default: {
        const auto lo = static_cast<uint16_t>(below(2048));
        return {lo, static_cast<uint16_t>(lo + below(512))};
      }
    }
  };
  config::Config c;
  c.acl_default_allow = below(2);
  const uint8_t protos[4] = {0, kTcp, kUdp, kIcmp};
  for (size_t i = 0; i < n; ++i) {
    config::AclRule r;
    r.allow = below(2);
    r.src = prefix();
    r.dst = prefix();
    r.proto = protos[below(4)];
    r.sport = ports();
    r.dport = ports();
    c.acl.push_back(r);
  }
  return c;
}

struct Probe {
  uint32_t src, dst;
  uint8_t proto;
  uint16_t sport, dport;
};

// Packets near a random rule's bounds (edges of prefixes and port ranges) or anywhere.
Probe random_probe(std::mt19937& rng, const std::vector<config::AclRule>& rules) {
  const auto below = [&](uint32_t k) { return static_cast<uint32_t>(rng() % k); };
  Probe p{static_cast<uint32_t>(rng()), static_cast<uint32_t>(rng()), static_cast<uint8_t>(below(256)),
          static_cast<uint16_t>(rng()), static_cast<uint16_t>(rng())};
  if (below(8) == 0) return p;
  const auto& r = rules[below(static_cast<uint32_t>(rules.size()))];
  const auto near = [&](const std::optional<config::Prefix>& x, uint32_t any) {
    if (!x) return any;
    const uint32_t m = config::prefix_mask(x->len);
    switch (below(4)) {
      case 0: return x->addr & m;                  // first address
      case 1: return (x->addr & m) | ~m;           // last address
      case 2: return ((x->addr & m) | ~m) + 1;     // just past it
      default: return (x->addr & m) | (any & ~m);  // inside
    }
  };
  const auto edge = [&](const config::PortRange& x, uint16_t any) {
    switch (below(5)) {
      case 0: return x.lo;
      case 1: return x.hi;
      case 2: return static_cast<uint16_t>(x.lo - 1);
      case 3: return static_cast<uint16_t>(x.hi + 1);
      default: return any;
    }
  };
  p.src = near(r.src, p.src);
  p.dst = near(r.dst, p.dst);
  const uint8_t protos[4] = {kTcp, kUdp, kIcmp, 47};
  p.proto = r.proto && below(4) ? r.proto : protos[below(4)];
  p.sport = edge(r.sport, p.sport);
  p.dport = edge(r.dport, p.dport);
  return p;
}

TEST(Acl, RteAclAgreesWithFirstMatchOnRandomRules) {
  test::eal_pool();
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::mt19937 rng(seed);
    const config::Config c = random_rules(rng, 1000);
    AclTable fast(c, Classifier::kRteAcl), scan(c, Classifier::kLinear);
    ASSERT_TRUE(fast.uses_rte_acl());
    ASSERT_FALSE(scan.uses_rte_acl());
    std::vector<uint64_t> expected(c.acl.size() + 1, 0);
    size_t mismatches = 0, matched = 0;
    for (int i = 0; i < 100000; ++i) {
      const Probe p = random_probe(rng, c.acl);
      const size_t want = reference_match(c.acl, p.src, p.dst, p.proto, p.sport, p.dport);
      const bool want_allow = want < c.acl.size() ? c.acl[want].allow : c.acl_default_allow;
      const uint64_t before = fast.hits(want);
      const bool got = fast.allow(p.src, p.dst, p.proto, p.sport, p.dport);
      EXPECT_EQ(scan.allow(p.src, p.dst, p.proto, p.sport, p.dport), want_allow);
      // The rule that counted the hit must be the reference's rule, not just one with the same action.
      if (got != want_allow || fast.hits(want) != before + 1) {
        if (++mismatches <= 5)
          ADD_FAILURE() << "seed " << seed << " probe " << i << ": src " << std::hex << p.src << " dst " << p.dst
                        << std::dec << " proto " << int(p.proto) << " ports " << p.sport << "->" << p.dport
                        << ": expected rule " << want;
      }
      ++expected[want];
      matched += want < c.acl.size();
    }
    EXPECT_EQ(mismatches, 0u) << "seed " << seed;
    for (size_t i = 0; i <= c.acl.size(); ++i) {
      EXPECT_EQ(fast.hits(i), expected[i]) << "rule " << i;
      EXPECT_EQ(scan.hits(i), expected[i]) << "rule " << i;
    }
    // The probes must exercise rules, the default and many distinct rules, or the comparison is weak.
    EXPECT_GT(matched, 50000u);
    EXPECT_GT(expected.back(), 1000u) << "seed " << seed;
    const auto rules_hit = std::count_if(expected.begin(), expected.end() - 1, [](uint64_t h) { return h > 0; });
    EXPECT_GT(rules_hit, 300) << "matched " << matched << ", default " << expected.back();
  }
}

}  // namespace
}  // namespace natgw::acl
