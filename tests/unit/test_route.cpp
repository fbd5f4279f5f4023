// RouteTable: longest-prefix match over explicit, connected and default routes,
// bulk lookup, and a table built from AWS's real ip-ranges.json.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>

#include "common/eal_env.hpp"
#include "route/route_table.hpp"

namespace natgw::route {
namespace {

using config::Prefix;

uint32_t host(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return ntohl(a.s_addr);
}
rte_be32_t be(const char* s) { return htonl(host(s)); }
Prefix pfx(const char* a, uint8_t len) { return Prefix{host(a), len}; }

void add_route(config::Config& c, std::vector<Prefix> p, const char* via, size_t iface) {
  config::Route r;
  r.prefixes = std::move(p);
  r.via = via ? host(via) : 0;
  r.interface = c.interfaces[iface].name;
  r.interface_index = iface;
  c.routes.push_back(std::move(r));
}

// inside 10.0.1.10/24 (0), endpoint 10.0.2.10/24 (1), internet 10.0.3.10/24 (2)
config::Config lab(bool with_default = true) {
  config::Config c;
  const char* names[] = {"inside", "endpoint", "internet"};
  const char* addrs[] = {"10.0.1.10", "10.0.2.10", "10.0.3.10"};
  for (int i = 0; i < 3; ++i) {
    config::Interface itf;
    itf.name = names[i];
    itf.addr = host(addrs[i]);
    itf.prefix_len = 24;
    c.interfaces.push_back(itf);
  }
  if (with_default) add_route(c, {pfx("0.0.0.0", 0)}, "10.0.3.1", 2);
  return c;
}

struct Hop {
  bool found;
  NextHop nh;
};
Hop look(const RouteTable& t, const char* dst) {
  Hop h{};
  h.found = t.lookup(be(dst), h.nh);
  return h;
}
NextHop via(uint16_t iface, const char* gw) { return NextHop{iface, gw ? be(gw) : 0}; }

class RouteTest : public ::testing::Test {
 protected:
  void SetUp() override { test::eal_pool(); }
};

TEST_F(RouteTest, LongestPrefixWinsAmongOverlappingPrefixes) {
  auto c = lab();
  add_route(c, {pfx("172.16.0.0", 12)}, "10.0.2.1", 1);
  add_route(c, {pfx("172.16.5.0", 24)}, "10.0.2.2", 1);
  add_route(c, {pfx("172.16.5.128", 25)}, "10.0.2.3", 1);
  add_route(c, {pfx("172.16.5.200", 30)}, "10.0.2.4", 1);
  add_route(c, {pfx("172.16.5.201", 32)}, "10.0.2.5", 1);
  add_route(c, {pfx("172.16.0.0", 16)}, "10.0.1.1", 0);
  auto t = RouteTable::build(c);
  struct {
    const char* dst;
    NextHop want;
  } cases[] = {
      {"172.17.0.1", via(1, "10.0.2.1")},    {"172.31.255.255", via(1, "10.0.2.1")},
      {"172.16.4.1", via(0, "10.0.1.1")},    {"172.16.5.1", via(1, "10.0.2.2")},
      {"172.16.5.127", via(1, "10.0.2.2")},  {"172.16.5.128", via(1, "10.0.2.3")},
      {"172.16.5.199", via(1, "10.0.2.3")},  {"172.16.5.200", via(1, "10.0.2.4")},
      {"172.16.5.201", via(1, "10.0.2.5")},  {"172.16.5.202", via(1, "10.0.2.4")},
      {"172.16.5.203", via(1, "10.0.2.4")},  {"172.16.5.204", via(1, "10.0.2.3")},
      {"172.16.5.255", via(1, "10.0.2.3")},  {"172.32.0.0", via(2, "10.0.3.1")},
      {"8.8.8.8", via(2, "10.0.3.1")},
  };
  for (const auto& k : cases) {
    const Hop h = look(*t, k.dst);
    ASSERT_TRUE(h.found) << k.dst;
    EXPECT_EQ(h.nh, k.want) << k.dst << " -> iface " << h.nh.iface << " gw " << h.nh.gateway;
  }
}

TEST_F(RouteTest, DefaultRouteCatchesEverythingElse) {
  auto t = RouteTable::build(lab());
  for (const char* d : {"0.0.0.0", "1.2.3.4", "203.0.113.10", "255.255.255.255", "10.0.4.1"}) {
    const Hop h = look(*t, d);
    ASSERT_TRUE(h.found) << d;
    EXPECT_EQ(h.nh, via(2, "10.0.3.1")) << d;
  }
}

TEST_F(RouteTest, NoDefaultRouteMeansNoRoute) {
  auto c = lab(false);
  add_route(c, {pfx("198.51.100.0", 24)}, "10.0.2.1", 1);
  auto t = RouteTable::build(c);
  EXPECT_FALSE(look(*t, "8.8.8.8").found);
  EXPECT_FALSE(look(*t, "198.51.101.0").found);
  EXPECT_TRUE(look(*t, "198.51.100.255").found);
}

TEST_F(RouteTest, ConnectedSubnetsAreOnLink) {
  auto t = RouteTable::build(lab());
  EXPECT_EQ(look(*t, "10.0.1.77").nh, via(0, nullptr));
  EXPECT_EQ(look(*t, "10.0.2.1").nh, via(1, nullptr));
  EXPECT_EQ(look(*t, "10.0.3.255").nh, via(2, nullptr));
  EXPECT_EQ(look(*t, "10.0.3.1").nh, via(2, nullptr)) << "the gateway itself is on-link";
  EXPECT_EQ(t->size(), 4u);
  unsigned connected = 0;
  for (const auto& e : t->entries()) connected += e.connected;
  EXPECT_EQ(connected, 3u);
}

TEST_F(RouteTest, ExplicitRouteOverridesConnectedOne) {
  auto c = lab();
  add_route(c, {pfx("10.0.1.0", 24)}, "10.0.3.1", 2);
  add_route(c, {pfx("10.0.2.128", 25)}, "10.0.3.1", 2);  // more specific than connected
  auto t = RouteTable::build(c);
  EXPECT_EQ(look(*t, "10.0.1.77").nh, via(2, "10.0.3.1"));
  EXPECT_EQ(look(*t, "10.0.2.200").nh, via(2, "10.0.3.1"));
  EXPECT_EQ(look(*t, "10.0.2.100").nh, via(1, nullptr));
  unsigned n = 0;
  for (const auto& e : t->entries())
    if (e.prefix == pfx("10.0.1.0", 24)) {
      ++n;
      EXPECT_FALSE(e.connected);
    }
  EXPECT_EQ(n, 1u);
}

TEST_F(RouteTest, HostRouteAndSlash31) {
  auto c = lab();
  add_route(c, {pfx("192.0.2.1", 32)}, "10.0.2.1", 1);
  add_route(c, {pfx("192.0.2.2", 31)}, "10.0.1.1", 0);
  auto t = RouteTable::build(c);
  EXPECT_EQ(look(*t, "192.0.2.1").nh, via(1, "10.0.2.1"));
  EXPECT_EQ(look(*t, "192.0.2.0").nh, via(2, "10.0.3.1"));
  EXPECT_EQ(look(*t, "192.0.2.2").nh, via(0, "10.0.1.1"));
  EXPECT_EQ(look(*t, "192.0.2.3").nh, via(0, "10.0.1.1"));
  EXPECT_EQ(look(*t, "192.0.2.4").nh, via(2, "10.0.3.1"));
}

void expect_bulk_agrees(const RouteTable& t, std::mt19937& rng, std::vector<uint32_t> dsts) {
  for (int i = 0; i < 500; ++i) dsts.push_back(rng());
  std::vector<int32_t> idx(dsts.size());
  t.lookup_bulk(dsts.data(), idx.data(), static_cast<unsigned>(dsts.size()));
  for (size_t i = 0; i < dsts.size(); ++i) {
    NextHop nh;
    const bool found = t.lookup(htonl(dsts[i]), nh);
    ASSERT_EQ(idx[i] >= 0, found) << i;
    if (found) {
      EXPECT_EQ(t.nexthop(static_cast<uint32_t>(idx[i])), nh) << i;
    }
  }
}

TEST_F(RouteTest, LookupBulkAgreesWithLookup) {
  std::mt19937 rng(7);
  for (bool with_default : {true, false}) {
    auto c = lab(with_default);
    add_route(c, {pfx("172.16.0.0", 12)}, "10.0.2.1", 1);
    add_route(c, {pfx("172.16.5.128", 25)}, "10.0.2.3", 1);
    add_route(c, {pfx("128.0.0.0", 1)}, "10.0.1.1", 0);
    add_route(c, {pfx("64.0.0.0", 3)}, "10.0.2.2", 1);
    auto t = RouteTable::build(c);
    std::vector<uint32_t> dsts = {host("172.16.5.129"), host("172.16.5.1"), host("10.0.1.1"),
                                  host("10.0.3.1"), host("1.1.1.1"), host("200.0.0.1")};
    // More than one 64-entry chunk, and a count that is not a multiple of 64.
    expect_bulk_agrees(*t, rng, dsts);
  }
}

// ---------------------------------------------------------------- real AWS data

std::vector<Prefix> aws_prefixes(const std::string& text) {
  std::vector<Prefix> out;
  std::set<std::pair<uint32_t, uint8_t>> seen;
  const std::string key = "\"ip_prefix\"";
  for (size_t pos = text.find(key); pos != std::string::npos; pos = text.find(key, pos + 1)) {
    const size_t q1 = text.find('"', text.find(':', pos + key.size()));
    const size_t q2 = text.find('"', q1 + 1);
    const std::string cidr = text.substr(q1 + 1, q2 - q1 - 1);
    const auto p = config::parse_prefix(cidr);
    if (!p) {
      ADD_FAILURE() << "bad prefix in ip-ranges.json: " << cidr;
      continue;
    }
    if (seen.emplace(p->addr, p->len).second) out.push_back(*p);
  }
  return out;
}

// Reference LPM: the longest listed prefix containing addr, or -1.
int ref_lpm(const std::set<std::pair<uint32_t, uint8_t>>& set, uint32_t addr) {
  for (int len = 32; len >= 1; --len) {
    const uint32_t m = ~0u << (32 - len);
    if (set.count({addr & m, static_cast<uint8_t>(len)})) return len;
  }
  return -1;
}

TEST_F(RouteTest, RealAwsIpRanges) {
  const char* src = std::getenv("NATGW_SRC");
  const std::string path = std::string(src ? src : ".") + "/../shared/data/aws-ip-ranges.json";
  std::ifstream f(path);
  if (!f) GTEST_SKIP() << "no " << path << " (set NATGW_SRC to the source tree)";
  std::stringstream ss;
  ss << f.rdbuf();
  const auto prefixes = aws_prefixes(ss.str());
  ASSERT_GT(prefixes.size(), 1000u);

  auto c = lab();
  add_route(c, prefixes, "10.0.2.1", 1);
  std::unique_ptr<RouteTable> t;
  ASSERT_NO_THROW(t = RouteTable::build(c));
  EXPECT_GE(t->size(), prefixes.size());

  std::set<std::pair<uint32_t, uint8_t>> set;
  for (const auto& p : prefixes) set.emplace(p.addr, p.len);
  // Every listed prefix: its first and last address leave by the endpoint (unless a
  // connected subnet is more specific, which AWS ranges never are for 10.0.x.0/24).
  for (const auto& p : prefixes) {
    const uint32_t last = p.addr | (p.len ? ~(~0u << (32 - p.len)) : ~0u);
    for (uint32_t a : {p.addr, last}) {
      NextHop nh;
      ASSERT_TRUE(t->lookup(htonl(a), nh));
      ASSERT_EQ(nh, via(1, "10.0.2.1")) << config::format_prefix(p);
    }
  }
  // Random addresses agree with the reference LPM.
  std::mt19937 rng(11);
  unsigned in_list = 0;
  std::vector<uint32_t> dsts;
  for (int i = 0; i < 200000; ++i) {
    uint32_t a = rng();
    if (i % 2) {  // half of them inside a listed prefix, at a random offset
      const auto& p = prefixes[rng() % prefixes.size()];
      a = p.addr | (p.len ? (a & ~(~0u << (32 - p.len))) : a);
    }
    if ((a >> 8) == host("10.0.1.0") >> 8 || (a >> 8) == host("10.0.2.0") >> 8 ||
        (a >> 8) == host("10.0.3.0") >> 8)
      continue;  // connected subnets
    const bool listed = ref_lpm(set, a) >= 0;
    in_list += listed;
    NextHop nh;
    ASSERT_TRUE(t->lookup(htonl(a), nh));
    ASSERT_EQ(nh, listed ? via(1, "10.0.2.1") : via(2, "10.0.3.1")) << a;
    if (dsts.size() < 5000) dsts.push_back(a);
  }
  EXPECT_GT(in_list, 90000u);
  expect_bulk_agrees(*t, rng, dsts);
}

}  // namespace
}  // namespace natgw::route
