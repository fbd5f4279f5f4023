// SessionTable: keys, mapping behaviour (RFC 4787 / RFC 7857), exhaustion, expiry,
// grace-period reclaim and lock-free readers racing one writer.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>

#include <atomic>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "common/eal_env.hpp"
#include "nat/session_table.hpp"

namespace natgw::nat {
namespace {

uint32_t ip(const char* s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return a.s_addr;
}
uint32_t ip_n(uint32_t host) { return htonl(host); }
rte_be16_t be16(uint16_t v) { return rte_cpu_to_be_16(v); }

FlowKey in_key(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport, uint8_t proto = IPPROTO_UDP) {
  if (proto == IPPROTO_ICMP) return make_key(src, dst, be16(sport), 0, proto, kInside);
  return make_key(src, dst, be16(sport), be16(dport), proto, kInside);
}
FlowKey out_key_of(const Session& s) {
  if (s.proto == IPPROTO_ICMP) return make_key(s.remote_ip, s.out_ip, 0, s.out_port, s.proto, kOutside);
  return make_key(s.remote_ip, s.out_ip, s.remote_port, s.out_port, s.proto, kOutside);
}

class SessionTableTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kThreads = 4;
  void SetUp() override {
    test::eal_pool();
    const size_t sz = rte_rcu_qsbr_get_memsize(kThreads);
    qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc(nullptr, sz, RTE_CACHE_LINE_SIZE));
    ASSERT_NE(qsbr, nullptr);
    ASSERT_EQ(rte_rcu_qsbr_init(qsbr, kThreads), 0);
  }
  void TearDown() override {
    tables.clear();
    rte_free(qsbr);
  }
  SessionTable& make(std::vector<OutsideAddress> out, uint32_t max = 1024, uint16_t worker = 0,
                     uint16_t workers = 1) {
    SessionTable::Params p;
    p.max_sessions = max;
    p.worker = worker;
    p.workers = workers;
    p.outside = std::move(out);
    p.qsbr = qsbr;
    tables.push_back(SessionTable::create(p));
    return *tables.back();
  }
  CreateResult create(SessionTable& t, const FlowKey& k, uint32_t now, uint32_t& idx,
                      std::vector<uint8_t> pool = {0}, bool preserve = true, bool overlap = true,
                      uint8_t pool_id = 0, uint32_t first_probe = 0, uint8_t probe_addr = 0) {
    pools.push_back(std::move(pool));
    SessionTable::CreateArgs a{};
    a.first_probe = first_probe;
    a.probe_addr = probe_addr;
    a.in = &k;
    a.pool = pools.back().data();
    a.pool_len = static_cast<uint8_t>(pools.back().size());
    a.pool_id = pool_id;
    a.in_iface = 0;
    a.out_iface = 2;
    a.out_nh = ip("10.0.3.1");
    a.in_mac = &mac;
    a.port_preservation = preserve;
    a.port_overlapping = overlap;
    return t.create_session(a, now, idx);
  }
  rte_rcu_qsbr* qsbr = nullptr;
  std::vector<std::unique_ptr<SessionTable>> tables;
  std::vector<std::vector<uint8_t>> pools;
  rte_ether_addr mac{{2, 0, 0, 0, 0, 1}};
  const uint32_t out1 = ip("10.0.3.10");
};

TEST_F(SessionTableTest, CreateThenLookupBothKeys) {
  SessionTable& t = make({{out1, 1024, 65535}});
  const FlowKey k = in_key(ip("192.168.10.2"), 40000, ip("203.0.113.10"), 53);
  uint32_t idx = 0;
  ASSERT_EQ(create(t, k, 1000, idx), CreateResult::kOk);
  EXPECT_EQ(t.active(), 1u);
  const Session& s = t.session(idx);
  EXPECT_EQ(s.in_ip, k.src);
  EXPECT_EQ(s.remote_ip, k.dst);
  EXPECT_EQ(s.in_port, k.sport);
  EXPECT_EQ(s.remote_port, k.dport);
  EXPECT_EQ(s.out_ip, out1);
  EXPECT_EQ(s.proto, IPPROTO_UDP);
  EXPECT_EQ(s.state, SessionState::kActive);
  EXPECT_EQ(s.created_ms, 1000u);
  EXPECT_EQ(t.lookup(k), static_cast<int64_t>(idx));
  const FlowKey o = make_key(k.dst, out1, k.dport, s.out_port, IPPROTO_UDP, kOutside);
  EXPECT_EQ(t.lookup(o), static_cast<int64_t>(idx | SessionTable::kOutsideBit));
  // The reverse key with the wrong direction tag is a different key.
  FlowKey wrong = o;
  wrong.dir = kInside;
  EXPECT_EQ(t.lookup(wrong), -1);
  EXPECT_EQ(t.stats().created[kUdp].get(), 1u);
  EXPECT_EQ(t.stats().active[kUdp].get(), 1u);
}

TEST_F(SessionTableTest, IcmpQueryKeysUseTheIdentifier) {
  SessionTable& t = make({{out1, 1024, 65535}});
  const FlowKey k = in_key(ip("192.168.10.2"), 0x1234, ip("203.0.113.10"), 0, IPPROTO_ICMP);
  uint32_t idx;
  ASSERT_EQ(create(t, k, 1000, idx), CreateResult::kOk);
  const Session& s = t.session(idx);
  EXPECT_EQ(s.out_port, be16(0x1234)) << "identifier preserved when free";
  EXPECT_EQ(t.lookup(make_key(k.dst, out1, 0, s.out_port, IPPROTO_ICMP, kOutside)),
            static_cast<int64_t>(idx | SessionTable::kOutsideBit));
}

TEST_F(SessionTableTest, LookupBulkAgreesWithLookup) {
  SessionTable& t = make({{out1, 1024, 65535}});
  std::vector<FlowKey> keys;
  for (uint16_t i = 0; i < 36; ++i) {
    const FlowKey k = in_key(ip_n(0xc0a80a00 + i), static_cast<uint16_t>(2000 + i), ip("203.0.113.10"), 80,
                             IPPROTO_TCP);
    uint32_t idx;
    if (i % 3) {
      ASSERT_EQ(create(t, k, 1, idx), CreateResult::kOk);
      keys.push_back(out_key_of(t.session(idx)));
    }
    keys.push_back(k);
  }
  ASSERT_LE(keys.size(), 64u);
  std::vector<const FlowKey*> ptrs;
  for (auto& k : keys) ptrs.push_back(&k);
  uint64_t hits = 0;
  int64_t vals[64];
  t.lookup_bulk(ptrs.data(), static_cast<unsigned>(ptrs.size()), hits, vals);
  unsigned n_hits = 0;
  for (size_t i = 0; i < keys.size(); ++i) {
    EXPECT_EQ(vals[i], t.lookup(keys[i])) << i;
    EXPECT_EQ(((hits >> i) & 1) != 0, vals[i] >= 0) << i;
    n_hits += vals[i] >= 0;
  }
  EXPECT_EQ(n_hits, 24u * 2);
}

TEST_F(SessionTableTest, EndpointIndependentMappingAcrossDestinations) {
  SessionTable& t = make({{out1, 1024, 65535}});
  uint32_t a, b, c;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 40000, ip("203.0.113.10"), 53), 1, a), CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 40000, ip("198.51.100.7"), 123), 1, b), CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 40000, ip("203.0.113.10"), 54), 1, c), CreateResult::kOk);
  EXPECT_NE(a, b);
  EXPECT_EQ(t.session(a).out_ip, t.session(b).out_ip);
  EXPECT_EQ(t.session(a).out_port, t.session(b).out_port);
  EXPECT_EQ(t.session(a).out_port, t.session(c).out_port);
  EXPECT_EQ(t.session(a).mapping, t.session(b).mapping);
  EXPECT_EQ(t.stats().mappings.get(), 1u);
  // Without preservation too (the mapping, not the port value, is what is shared).
  uint32_t d, e;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.3"), 5555, ip("203.0.113.10"), 53), 1, d, {0}, false),
            CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(ip("192.168.10.3"), 5555, ip("203.0.113.99"), 80), 1, e, {0}, false),
            CreateResult::kOk);
  EXPECT_EQ(t.session(d).out_port, t.session(e).out_port);
  EXPECT_EQ(t.stats().mappings.get(), 2u);
  // TCP and UDP mappings of the same endpoint are separate.
  uint32_t f;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.3"), 5555, ip("203.0.113.10"), 53, IPPROTO_TCP), 1, f, {0},
                   false),
            CreateResult::kOk);
  EXPECT_EQ(t.stats().mappings.get(), 3u);
}

// One inside endpoint mapped in two pools (two SNAT rules, or two egress interfaces):
// two mappings, each reused by its own pool's flows. The mapping index hashes the
// endpoint without the pool (so a burst can prefetch the bucket before routing), so
// both live in one bucket under one signature: only the key tells them apart.
TEST_F(SessionTableTest, OneEndpointInTwoPoolsHasTwoMappings) {
  const uint32_t out2 = ip("10.0.3.11");
  SessionTable& t = make({{out1, 1024, 65535}, {out2, 1024, 65535}});
  const uint32_t host = ip("192.168.10.2");
  uint32_t a0, a1, b0, b1;
  ASSERT_EQ(create(t, in_key(host, 3333, ip("203.0.113.10"), 53), 1, a0, {0}, false, true, 0), CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(host, 3333, ip("203.0.113.11"), 53), 1, a1, {1}, false, true, 1), CreateResult::kOk);
  EXPECT_EQ(t.stats().mappings.get(), 2u);
  EXPECT_NE(t.session(a0).mapping, t.session(a1).mapping);
  EXPECT_EQ(t.session(a0).out_ip, out1);
  EXPECT_EQ(t.session(a1).out_ip, out2);
  // Each pool's next flow reuses its own mapping.
  ASSERT_EQ(create(t, in_key(host, 3333, ip("203.0.113.12"), 53), 1, b0, {0}, false, true, 0), CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(host, 3333, ip("203.0.113.13"), 53), 1, b1, {1}, false, true, 1), CreateResult::kOk);
  EXPECT_EQ(t.session(b0).mapping, t.session(a0).mapping);
  EXPECT_EQ(t.session(b1).mapping, t.session(a1).mapping);
  EXPECT_EQ(t.session(b1).out_ip, out2);
  EXPECT_EQ(t.session(b1).out_port, t.session(a1).out_port);
  EXPECT_EQ(t.stats().mappings.get(), 2u);
  // Pool 0's mapping goes with its last session; pool 1's stays.
  t.remove(a0);
  t.remove(b0);
  t.reclaim();  // nobody registered: the grace period is over at once
  t.reclaim();
  EXPECT_EQ(t.stats().mappings.get(), 1u);
  uint32_t c1;
  ASSERT_EQ(create(t, in_key(host, 3333, ip("203.0.113.14"), 53), 1, c1, {1}, false, true, 1), CreateResult::kOk);
  EXPECT_EQ(t.session(c1).mapping, t.session(a1).mapping);
  EXPECT_EQ(t.session(c1).out_port, t.session(a1).out_port);
}

TEST_F(SessionTableTest, MappingOutlivesOneOfItsSessions) {
  SessionTable& t = make({{out1, 1024, 65535}});
  uint32_t a, b;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 3333, ip("203.0.113.10"), 53), 1, a, {0}, false),
            CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 3333, ip("203.0.113.11"), 53), 1, b, {0}, false),
            CreateResult::kOk);
  const rte_be16_t port = t.session(a).out_port;
  t.remove(a);
  t.reclaim();  // nobody registered: the grace period is over at once
  uint32_t c;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 3333, ip("203.0.113.12"), 53), 1, c, {0}, false),
            CreateResult::kOk);
  EXPECT_EQ(t.session(c).out_port, port) << "the mapping lives while any session uses it";
  EXPECT_EQ(t.allocator(0, kUdp).refs(rte_be_to_cpu_16(port)), 1);
}

TEST_F(SessionTableTest, PairedPoolingKeepsOneAddressPerInsideHost) {
  SessionTable& t = make({{ip("10.0.3.20"), 1024, 65535},
                          {ip("10.0.3.21"), 1024, 65535},
                          {ip("10.0.3.22"), 1024, 65535},
                          {ip("10.0.3.23"), 1024, 65535}},
                         4096);
  std::set<uint32_t> used;
  for (uint32_t h = 0; h < 64; ++h) {
    const uint32_t host = ip_n(0xc0a80000 + 256 * h + 7);
    std::set<uint32_t> per_host;
    for (uint16_t port = 0; port < 12; ++port) {
      for (uint32_t dst : {ip("203.0.113.10"), ip("198.51.100.9")}) {
        uint32_t idx;
        const uint8_t proto = port % 2 ? IPPROTO_TCP : IPPROTO_UDP;
        ASSERT_EQ(create(t, in_key(host, static_cast<uint16_t>(30000 + port), dst, 443, proto), 1, idx,
                         {0, 1, 2, 3}),
                  CreateResult::kOk);
        per_host.insert(t.session(idx).out_ip);
      }
    }
    EXPECT_EQ(per_host.size(), 1u) << "host " << h << " was given several pool addresses";
    used.insert(*per_host.begin());
  }
  EXPECT_GE(used.size(), 3u) << "64 hosts should spread over the 4-address pool";
}

TEST_F(SessionTableTest, PortPreservation) {
  SessionTable& t = make({{out1, 1024, 65535}});
  uint32_t a, b;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 40000, ip("203.0.113.10"), 53), 1, a), CreateResult::kOk);
  EXPECT_EQ(t.session(a).out_port, be16(40000));
  ASSERT_EQ(create(t, in_key(ip("192.168.10.3"), 40000, ip("203.0.113.10"), 53), 1, b), CreateResult::kOk);
  EXPECT_NE(t.session(b).out_port, be16(40000)) << "40000 is taken: another port, no collision";
  EXPECT_NE(t.lookup(out_key_of(t.session(a))), t.lookup(out_key_of(t.session(b))));
  // Ports outside the range are never preserved.
  uint32_t c;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.4"), 53, ip("203.0.113.10"), 53), 1, c), CreateResult::kOk);
  const uint16_t pc = rte_be_to_cpu_16(t.session(c).out_port);
  EXPECT_GE(pc, 1024);
  // Off: ports are picked at random.
  int same = 0;
  for (uint16_t i = 0; i < 16; ++i) {
    uint32_t d;
    ASSERT_EQ(create(t, in_key(ip("192.168.11.1"), static_cast<uint16_t>(50000 + i), ip("203.0.113.10"), 53),
                     1, d, {0}, false),
              CreateResult::kOk);
    same += t.session(d).out_port == be16(static_cast<uint16_t>(50000 + i));
  }
  EXPECT_LT(same, 16);
}

// Each protocol class has its own allocator with its own random order: UDP ports
// seen from outside say nothing about the TCP (or ICMP) ports the same address gives next.
TEST_F(SessionTableTest, ProtocolsOnOneAddressDrawDifferentPortOrders) {
  SessionTable& t = make({{out1, 1024, 65535}});
  std::vector<uint16_t> got[3];
  const uint8_t protos[3] = {IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP};
  for (int p = 0; p < 3; ++p)
    for (uint16_t i = 0; i < 64; ++i) {
      uint32_t d;
      ASSERT_EQ(create(t, in_key(ip("192.168.12.1"), static_cast<uint16_t>(50000 + i), ip("203.0.113.10"), 53,
                              protos[p]),
                       1, d, {0}, false),
                CreateResult::kOk);
      got[p].push_back(rte_be_to_cpu_16(t.session(d).out_port));
    }
  for (int a = 0; a < 3; ++a)
    for (int b = a + 1; b < 3; ++b) {
      int same = 0;
      for (size_t i = 0; i < got[a].size(); ++i) same += got[a][i] == got[b][i];
      EXPECT_LT(same, 4) << "protocol classes " << a << " and " << b << " hand out the same sequence";
    }
}

// When an address has no free port, the first port create_session tries to share is
// the one the prefetch stage drew (CreateArgs::first_probe): 8 ports, draws at
// eighths; a draw for another address is ignored; and a port whose 5-tuple toward
// this destination is taken is passed over, never shared twice.
TEST_F(SessionTableTest, OverlapTriesThePrefetchedProbeFirst) {
  SessionTable& t = make({{out1, 1024, 1031}, {ip("10.0.3.11"), 1024, 1031}});
  uint32_t idx;
  for (uint32_t i = 0; i < 8; ++i)  // every port of address 0 in use, toward 203.0.113.10
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80a00 + i), 40000, ip("203.0.113.10"), 53), 1, idx), CreateResult::kOk);
  ASSERT_EQ(t.allocator(0, kUdp).free_count(), 0u);
  for (uint32_t k = 0; k < 8; ++k) {
    const uint32_t draw = k * 0x20000000u + 0x1000u;  // scales to offset k of 8
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80b00 + k), 40000, ip_n(0xcb007100 + 20 + k), 53), 1, idx, {0}, true,
                     true, 0, draw, 0),
              CreateResult::kOk);
    EXPECT_EQ(rte_be_to_cpu_16(t.session(idx).out_port), 1024 + k) << "draw " << k;
  }
  EXPECT_EQ(t.stats().overlapped.get(), 8u);
  // A draw that names port 1024 toward a destination 1024 already serves: passed over.
  ASSERT_EQ(create(t, in_key(ip("192.168.12.7"), 40000, ip_n(0xcb007100 + 20), 53), 1, idx, {0}, true, true, 0,
                   0x1000u, 0),
            CreateResult::kOk);
  EXPECT_NE(rte_be_to_cpu_16(t.session(idx).out_port), 1024);
  EXPECT_EQ(t.lookup(out_key_of(t.session(idx))), static_cast<int64_t>(idx | SessionTable::kOutsideBit));
  EXPECT_EQ(t.stats().first_probes.get(), 8u);
  // A draw made for address 1 does not steer address 0's choice: 16 flows with a draw
  // naming 1024 get random ports (all 1024 by chance: 1 in 8^15).
  std::set<uint16_t> got;
  for (uint32_t k = 0; k < 16; ++k) {
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80c00 + k), 40000, ip_n(0xcb007200 + k), 53), 1, idx, {0}, true, true, 0,
                     0x1000u, 1),
              CreateResult::kOk);
    got.insert(rte_be_to_cpu_16(t.session(idx).out_port));
  }
  EXPECT_GT(got.size(), 1u);
  EXPECT_EQ(t.stats().first_probes.get(), 8u);
  EXPECT_EQ(t.stats().collisions.get(), 0u);
}

TEST_F(SessionTableTest, ExhaustionIsCountedAndExistingSessionsSurvive) {
  SessionTable& t = make({{out1, 1024, 1031}});
  std::vector<uint32_t> idx(8);
  for (uint32_t i = 0; i < 8; ++i)
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80a00 + i), 40000, ip("203.0.113.10"), 53), 1, idx[i], {0}, true,
                     false),
              CreateResult::kOk);
  uint32_t x;
  EXPECT_EQ(create(t, in_key(ip("192.168.10.200"), 40000, ip("203.0.113.10"), 53), 1, x, {0}, true, false),
            CreateResult::kNoPort);
  EXPECT_EQ(create(t, in_key(ip("192.168.10.201"), 40000, ip("203.0.113.99"), 53), 1, x, {0}, true, false),
            CreateResult::kNoPort);
  EXPECT_EQ(t.stats().no_port.get(), 2u);
  EXPECT_EQ(t.active(), 8u);
  std::set<uint16_t> ports;
  for (uint32_t i = 0; i < 8; ++i) {
    const FlowKey k = in_key(ip_n(0xc0a80a00 + i), 40000, ip("203.0.113.10"), 53);
    EXPECT_EQ(t.lookup(k), static_cast<int64_t>(idx[i]));
    EXPECT_EQ(t.lookup(out_key_of(t.session(idx[i]))),
              static_cast<int64_t>(idx[i] | SessionTable::kOutsideBit));
    ports.insert(rte_be_to_cpu_16(t.session(idx[i]).out_port));
  }
  EXPECT_EQ(ports.size(), 8u);
  EXPECT_EQ(*ports.begin(), 1024);
  EXPECT_EQ(*ports.rbegin(), 1031);
  // An existing mapping still gets new sessions (to a new destination) while exhausted.
  uint32_t y;
  EXPECT_EQ(create(t, in_key(ip_n(0xc0a80a00), 40000, ip("203.0.113.77"), 53), 1, y, {0}, true, false),
            CreateResult::kOk);
}

TEST_F(SessionTableTest, SameDestinationCollidesEvenWithOverlapping) {
  SessionTable& t = make({{out1, 1024, 1031}});
  for (uint32_t i = 0; i < 8; ++i) {
    uint32_t idx;
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80a00 + i), 40000, ip("203.0.113.10"), 53), 1, idx),
              CreateResult::kOk);
  }
  uint32_t x;
  EXPECT_NE(create(t, in_key(ip("192.168.10.200"), 40000, ip("203.0.113.10"), 53), 1, x),
            CreateResult::kOk);
  EXPECT_EQ(t.stats().no_port.get(), 1u);
  EXPECT_EQ(t.active(), 8u);
}

TEST_F(SessionTableTest, OverlappingAllowsMoreSessionsThanPortsToDifferentDestinations) {
  SessionTable& t = make({{out1, 1024, 1031}});
  std::set<std::pair<uint32_t, uint16_t>> tuples;  // (remote, outside port) must stay unique
  auto add = [&](uint32_t host, const char* dst) {
    uint32_t idx;
    const CreateResult r = create(t, in_key(host, 40000, ip(dst), 53), 1, idx, {0}, false, true);
    if (r == CreateResult::kOk) {
      const Session& s = t.session(idx);
      EXPECT_TRUE(tuples.emplace(s.remote_ip, s.out_port).second) << "5-tuple reused toward " << dst;
    }
    return r;
  };
  for (uint32_t i = 0; i < 8; ++i) ASSERT_EQ(add(ip_n(0xc0a80a00 + i), "203.0.113.10"), CreateResult::kOk);
  // Four more inside endpoints toward another destination share ports already mapped.
  for (uint32_t i = 0; i < 4; ++i) ASSERT_EQ(add(ip_n(0xc0a80b00 + i), "198.51.100.1"), CreateResult::kOk);
  EXPECT_EQ(t.active(), 12u);
  EXPECT_GE(t.stats().overlapped.get(), 4u);
  // Toward the first destination every outside port is taken.
  EXPECT_NE(add(ip("192.168.12.1"), "203.0.113.10"), CreateResult::kOk);
}

TEST_F(SessionTableTest, SharedPortCollidesWhenItsMappingMeetsTheOtherDestination) {
  SessionTable& t = make({{out1, 1024, 1025}});
  uint32_t a, b, c, x;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.1"), 1000, ip("203.0.113.10"), 53), 1, a, {0}, false), CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(ip("192.168.10.2"), 1000, ip("203.0.113.10"), 53), 1, b, {0}, false), CreateResult::kOk);
  ASSERT_EQ(create(t, in_key(ip("192.168.10.3"), 1000, ip("198.51.100.1"), 53), 1, c, {0}, false), CreateResult::kOk);
  // Endpoint 3 shares a port with 1 or 2; toward their destination its 5-tuple is taken.
  EXPECT_EQ(create(t, in_key(ip("192.168.10.3"), 1000, ip("203.0.113.10"), 53), 1, x, {0}, false),
            CreateResult::kCollision);
  EXPECT_EQ(t.stats().collisions.get(), 1u);
  EXPECT_EQ(t.stats().no_port.get(), 0u) << "ports were free: not an allocation error";
  EXPECT_EQ(t.active(), 3u);
  // The failed attempt did not drop the shared mapping: endpoint 3 keeps its port.
  uint32_t d;
  ASSERT_EQ(create(t, in_key(ip("192.168.10.3"), 1000, ip("198.51.100.2"), 53), 1, d, {0}, false), CreateResult::kOk);
  EXPECT_EQ(t.session(d).out_port, t.session(c).out_port);
}

// Design §7: with overlapping, an outside address gives a full port range of sessions
// to EVERY destination ("≥ 64,512 sessions per destination per outside address").
TEST_F(SessionTableTest, OverlappingGivesAFullRangeOfSessionsPerDestination) {
  SessionTable& t = make({{out1, 1024, 1279}}, 4096);
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t idx;
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80000 + i), 40000, ip("203.0.113.10"), 53), 1, idx, {0}, false),
              CreateResult::kOk);
  }
  unsigned ok = 0;
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t idx;
    ok += create(t, in_key(ip_n(0xc0a90000 + i), 40000, ip("198.51.100.1"), 53), 1, idx, {0}, false) ==
          CreateResult::kOk;
  }
  EXPECT_EQ(ok, 256u) << "every one of the 256 outside ports is still unused toward 198.51.100.1, "
                         "but only "
                      << ok << " sessions could be created (no_port=" << t.stats().no_port.get() << ")";
}

// An address with every port in use toward one destination: a new flow to it scans
// the whole range once, then its retries (each SYN, each datagram) try only random
// probes for a second, not ~64k lookups each; other destinations and protocols, and
// the same destination a second later, scan again.
TEST_F(SessionTableTest, AnExhaustedDestinationIsScannedOncePerSecond) {
  SessionTable& t = make({{out1, 1024, 1279}}, 4096);
  const uint32_t dst = ip("203.0.113.10");
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t idx;
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a80000 + i), 40000, dst, 53), 1000, idx, {0}, false), CreateResult::kOk);
  }
  const auto scans = [&] { return t.stats().port_scans.get(); };
  const uint64_t s0 = scans();
  uint32_t idx;
  for (uint32_t i = 0; i < 100; ++i)
    ASSERT_EQ(create(t, in_key(ip_n(0xc0a90000 + i), 40000, dst, 53), 1200, idx, {0}, false), CreateResult::kNoPort);
  EXPECT_EQ(scans() - s0, 1u) << "a destination with no port left was scanned for every new flow";
  // TCP to the same address and port is another destination for the ports (its own range).
  ASSERT_EQ(create(t, in_key(ip_n(0xc0aa0001), 40000, dst, 53, IPPROTO_TCP), 1200, idx, {0}, false),
            CreateResult::kOk);
  // Another destination gets its ports (a scan of its own: random probes may find one first).
  ASSERT_EQ(create(t, in_key(ip_n(0xc0aa0002), 40000, ip("203.0.113.11"), 53), 1200, idx, {0}, false),
            CreateResult::kOk);
  // A second later the exhausted destination is scanned again (once).
  const uint64_t s1 = scans();
  for (uint32_t i = 0; i < 10; ++i)
    ASSERT_EQ(create(t, in_key(ip_n(0xc0ab0000 + i), 40000, dst, 53), 2300, idx, {0}, false), CreateResult::kNoPort);
  EXPECT_EQ(scans() - s1, 1u);
  // A port that comes free while the scans rest is given out at once (it is back in
  // the free list: no probe needed). Not the port the other destination's flow shares
  // (a random one): that one stays in use.
  int64_t v = -1;
  for (uint32_t i = 0; i < 256 && v < 0; ++i) {
    v = t.lookup(in_key(ip_n(0xc0a80000 + i), 40000, dst, 53));
    ASSERT_GE(v, 0);
    const uint16_t port = rte_be_to_cpu_16(t.session(static_cast<uint32_t>(v) & ~SessionTable::kOutsideBit).out_port);
    if (t.allocator(0, 1).refs(port) != 1) v = -1;
  }
  ASSERT_GE(v, 0);
  t.remove(static_cast<uint32_t>(v) & ~SessionTable::kOutsideBit);
  t.reclaim();  // nobody registered: the grace period is over at once
  t.reclaim();
  EXPECT_EQ(create(t, in_key(ip_n(0xc0ac0001), 40000, dst, 53), 2301, idx, {0}, false), CreateResult::kOk);
  EXPECT_EQ(scans() - s1, 1u);
}

TEST_F(SessionTableTest, ExpiryPerProtocolAndTcpState) {
  SessionTable& t = make({{out1, 1024, 65535}});
  Timeouts to;
  to.udp = 5000;
  to.tcp_established = 20000;
  to.tcp_transitory = 3000;
  to.icmp = 2000;
  const uint32_t dst = ip("203.0.113.10");
  struct Case {
    const char* name;
    FlowKey k;
    uint8_t flags;
    uint32_t timeout;
    uint32_t idx = 0;
  };
  std::vector<Case> cases = {
      {"udp", in_key(ip("192.168.1.1"), 1001, dst, 53), 0, 5000},
      {"icmp", in_key(ip("192.168.1.2"), 1002, dst, 0, IPPROTO_ICMP), 0, 2000},
      {"tcp syn only", in_key(ip("192.168.1.3"), 1003, dst, 80, IPPROTO_TCP), kSynIn, 3000},
      {"tcp established", in_key(ip("192.168.1.4"), 1004, dst, 80, IPPROTO_TCP), kSynIn | kSynOut | kSeenOut,
       20000},
      {"tcp rst", in_key(ip("192.168.1.5"), 1005, dst, 80, IPPROTO_TCP),
       kSynIn | kSynOut | kSeenOut | kRst, 3000},
      {"tcp both fins", in_key(ip("192.168.1.6"), 1006, dst, 80, IPPROTO_TCP),
       kSynIn | kSynOut | kSeenOut | kFinIn | kFinOut, 3000},
      {"tcp one fin", in_key(ip("192.168.1.7"), 1007, dst, 80, IPPROTO_TCP),
       kSynIn | kSynOut | kSeenOut | kFinIn, 20000},
  };
  const uint32_t t0 = 1000;
  for (auto& c : cases) {
    ASSERT_EQ(create(t, c.k, t0, c.idx), CreateResult::kOk) << c.name;
    t.session(c.idx).flags.store(c.flags);
    EXPECT_EQ(SessionTable::timeout_of(t.session(c.idx), to), c.timeout) << c.name;
  }
  for (uint32_t now : {3000u, 3001u, 4000u, 4001u, 6000u, 6001u, 21000u, 21001u}) {
    t.expire_step(now, to, t.capacity());
    for (auto& c : cases) {
      const bool alive = now - t0 <= c.timeout;
      EXPECT_EQ(t.lookup(c.k) >= 0, alive) << c.name << " at +" << now - t0 << " ms";
    }
  }
  EXPECT_EQ(t.active(), 0u);
  EXPECT_EQ(t.stats().expired[kTcp].get(), 5u);
  EXPECT_EQ(t.stats().expired[kUdp].get(), 1u);
  EXPECT_EQ(t.stats().expired[kIcmp].get(), 1u);
  EXPECT_EQ(t.stats().active[kTcp].get(), 0u);
}

TEST_F(SessionTableTest, ActivityPostponesExpiry) {
  SessionTable& t = make({{out1, 1024, 65535}});
  Timeouts to;
  to.udp = 5000;
  uint32_t idx;
  const FlowKey k = in_key(ip("192.168.1.1"), 1001, ip("203.0.113.10"), 53);
  ASSERT_EQ(create(t, k, 1000, idx), CreateResult::kOk);
  t.session(idx).last_seen_ms.store(4000);  // a packet at 4 s
  EXPECT_EQ(t.expire_step(8000, to, t.capacity()), 0u);
  EXPECT_GE(t.lookup(k), 0);
  EXPECT_EQ(t.expire_step(9001, to, t.capacity()), 1u);
  EXPECT_LT(t.lookup(k), 0);
}

TEST_F(SessionTableTest, ExpiryScanIsIncremental) {
  SessionTable& t = make({{out1, 1024, 65535}}, 256);
  Timeouts to;
  to.udp = 10;
  for (uint16_t i = 0; i < 100; ++i) {
    uint32_t idx;
    ASSERT_EQ(create(t, in_key(ip("192.168.1.1"), static_cast<uint16_t>(2000 + i), ip("203.0.113.10"), 53), 0,
                     idx),
              CreateResult::kOk);
  }
  uint32_t total = 0;
  for (int step = 0; step < 16; ++step) {
    const uint32_t n = t.expire_step(1000, to, 16);
    EXPECT_LE(n, 16u);
    total += n;
  }
  EXPECT_EQ(total, 100u) << "16 steps of 16 slots cover the 256-slot table once";
  EXPECT_EQ(t.active(), 0u);
}

TEST_F(SessionTableTest, RemoveHidesBothKeysAtOnce) {
  SessionTable& t = make({{out1, 1024, 65535}});
  uint32_t idx;
  const FlowKey k = in_key(ip("192.168.1.1"), 1001, ip("203.0.113.10"), 53, IPPROTO_TCP);
  ASSERT_EQ(create(t, k, 1, idx), CreateResult::kOk);
  const FlowKey o = out_key_of(t.session(idx));
  t.remove(idx);
  EXPECT_EQ(t.lookup(k), -1);
  EXPECT_EQ(t.lookup(o), -1);
  EXPECT_EQ(t.active(), 0u);
  t.remove(idx);  // twice is harmless
  EXPECT_EQ(t.stats().expired[kTcp].get(), 1u);
}

// Issue 5's memory target: <= 128 bytes per session, both directions' keys, the
// mapping and the free lists included (what the table allocates, per slot).
TEST_F(SessionTableTest, AtMost128BytesPerSession) {
  for (uint32_t n : {100'000u, 1'000'000u}) {
    SessionTable& t = make({{out1, 1024, 65535}}, n);
    const double per = static_cast<double>(t.memory_bytes()) / n;
    EXPECT_LE(per, 128.0) << n << " sessions";
    EXPECT_GE(per, 64.0 + 2 * 8) << "the session and two index slots are the least it can take";
  }
}

// Fill a large table to capacity and check every session is found by both keys:
// the index holds up at its full sized load.
TEST_F(SessionTableTest, FullTableFindsEverySessionByBothKeys) {
  constexpr uint32_t kN = 60'000;
  SessionTable& t = make({{out1, 1024, 65535}}, kN);
  std::vector<FlowKey> keys;
  for (uint32_t i = 0; i < kN; ++i) {
    keys.push_back(in_key(ip_n(0xc0a80000 + i / 50), static_cast<uint16_t>(10000 + i % 50), ip("203.0.113.10"),
                          443, IPPROTO_TCP));
    uint32_t idx;
    ASSERT_EQ(create(t, keys.back(), 1, idx), CreateResult::kOk) << i;
  }
  uint32_t x;
  EXPECT_EQ(create(t, in_key(ip("192.168.250.1"), 1, ip("203.0.113.10"), 443, IPPROTO_TCP), 1, x),
            CreateResult::kTableFull);
  for (uint32_t i = 0; i < kN; ++i) {
    const int64_t v = t.lookup(keys[i]);
    ASSERT_GE(v, 0) << i;
    const Session& s = t.session(static_cast<uint32_t>(v));
    ASSERT_EQ(t.lookup(out_key_of(s)), v | SessionTable::kOutsideBit) << i;
  }
  // The bulk lookup at full load: ~9% of the entries live past their home bucket and
  // some past the next ones (its prefetch rounds), some wrap past the last bucket.
  // Bursts mix inside keys, outside keys and absent keys; each must agree with lookup().
  for (uint32_t base = 0; base < kN; base += 16) {
    std::vector<FlowKey> burst;
    for (uint32_t i = base; i < std::min(kN, base + 16); ++i) {
      burst.push_back(keys[i]);
      burst.push_back(out_key_of(t.session(static_cast<uint32_t>(t.lookup(keys[i])))));
    }
    burst.push_back(in_key(ip_n(0xc0a90000 + base), 7, ip("203.0.113.10"), 443, IPPROTO_TCP));  // absent
    std::vector<const FlowKey*> ptrs;
    for (auto& k : burst) ptrs.push_back(&k);
    uint64_t hits = 0;
    int64_t vals[64];
    t.lookup_bulk(ptrs.data(), static_cast<unsigned>(ptrs.size()), hits, vals);
    for (size_t i = 0; i < burst.size(); ++i) {
      ASSERT_EQ(vals[i], t.lookup(burst[i])) << base << " " << i;
      ASSERT_EQ(((hits >> i) & 1) != 0, vals[i] >= 0) << base << " " << i;
    }
    ASSERT_EQ(static_cast<unsigned>(__builtin_popcountll(hits)), burst.size() - 1);
  }
}

// Grace period: with one registered reader not yet quiescent, nothing a deleted
// session held (its slot, its port) may be handed out again.
TEST_F(SessionTableTest, ReclaimWaitsForEveryReader) {
  SessionTable& t = make({{out1, 1024, 1024}}, 64);  // one port, 64 session slots
  ASSERT_EQ(rte_rcu_qsbr_thread_register(qsbr, 1), 0);
  ASSERT_EQ(rte_rcu_qsbr_thread_register(qsbr, 2), 0);
  rte_rcu_qsbr_thread_online(qsbr, 1);
  rte_rcu_qsbr_thread_online(qsbr, 2);

  const FlowKey k1 = in_key(ip("192.168.1.1"), 5000, ip("203.0.113.10"), 53);
  uint32_t idx1;
  ASSERT_EQ(create(t, k1, 1, idx1, {0}, false, false), CreateResult::kOk);
  struct Fields {
    uint32_t in_ip, remote_ip;
    uint16_t in_port, out_port, remote_port;
  };
  const Session& r1 = t.session(idx1);
  const Fields before{r1.in_ip, r1.remote_ip, r1.in_port, r1.out_port, r1.remote_port};
  t.remove(idx1);
  t.reclaim();  // gives the removal its token: the grace period starts here
  EXPECT_EQ(t.closing(), 1u);

  rte_rcu_qsbr_quiescent(qsbr, 1);  // reader 1 is done; reader 2 may still hold idx1
  for (int i = 0; i < 3; ++i) t.reclaim();
  EXPECT_EQ(t.allocator(0, kUdp).refs(1024), 1) << "port released before reader 2 was quiescent";
  uint32_t x;
  EXPECT_EQ(create(t, in_key(ip("192.168.1.2"), 5000, ip("203.0.113.10"), 53), 2, x, {0}, false, false),
            CreateResult::kNoPort);
  // Fill every other slot (a TCP range of its own): none of them may be idx1.
  std::vector<uint32_t> got;
  for (uint16_t i = 0; i < 63; ++i) {
    uint32_t idx;
    const auto r = create(t, in_key(ip("192.168.2.1"), 7000, ip_n(0xcb007100 + i), 80, IPPROTO_TCP), 2, idx, {0},
                          false, true);
    ASSERT_EQ(r, CreateResult::kOk) << i;
    ASSERT_NE(idx, idx1) << "session slot reused inside the grace period";
    got.push_back(idx);
  }
  uint32_t y;
  EXPECT_EQ(create(t, in_key(ip("192.168.2.1"), 7000, ip("203.0.113.200"), 80, IPPROTO_TCP), 2, y),
            CreateResult::kTableFull);
  // The reader still holding idx1 sees the old session intact.
  const Session& s = t.session(idx1);
  EXPECT_EQ(s.in_ip, before.in_ip);
  EXPECT_EQ(s.remote_ip, before.remote_ip);
  EXPECT_EQ(s.in_port, before.in_port);
  EXPECT_EQ(s.out_port, before.out_port);
  EXPECT_EQ(s.remote_port, before.remote_port);

  rte_rcu_qsbr_quiescent(qsbr, 2);
  t.reclaim();
  EXPECT_EQ(t.closing(), 0u);
  EXPECT_EQ(t.allocator(0, kUdp).refs(1024), 0) << "port not released after the grace period";
  uint32_t z;
  ASSERT_EQ(create(t, in_key(ip("192.168.1.2"), 5000, ip("203.0.113.10"), 53), 3, z, {0}, false, false),
            CreateResult::kOk);
  EXPECT_EQ(z, idx1) << "the only free slot is the reclaimed one";
  EXPECT_EQ(t.session(z).out_port, be16(1024));

  rte_rcu_qsbr_thread_offline(qsbr, 1);
  rte_rcu_qsbr_thread_offline(qsbr, 2);
  rte_rcu_qsbr_thread_unregister(qsbr, 1);
  rte_rcu_qsbr_thread_unregister(qsbr, 2);
}

TEST_F(SessionTableTest, OfflineReadersDoNotHoldReclaim) {
  SessionTable& t = make({{out1, 1024, 1024}}, 64);
  ASSERT_EQ(rte_rcu_qsbr_thread_register(qsbr, 1), 0);  // registered but offline
  uint32_t idx;
  ASSERT_EQ(create(t, in_key(ip("192.168.1.1"), 5000, ip("203.0.113.10"), 53), 1, idx, {0}, false, false),
            CreateResult::kOk);
  t.remove(idx);
  t.reclaim();
  EXPECT_EQ(t.allocator(0, kUdp).refs(1024), 0);
  rte_rcu_qsbr_thread_unregister(qsbr, 1);
}

TEST_F(SessionTableTest, WorkersSplitEveryOutsideRangeAndOwnerOfAgrees) {
  for (uint16_t workers : {1, 2, 3, 4}) {
    const std::vector<std::pair<uint16_t, uint16_t>> ranges = {{1024, 65535}, {1024, 1027}, {5000, 5010}};
    for (auto range : ranges) {
      tables.clear();
      std::vector<SessionTable*> ws;
      for (uint16_t w = 0; w < workers; ++w)
        ws.push_back(&make({{out1, range.first, range.second}, {ip("10.0.2.10"), 2000, 2999}}, 64, w, workers));
      for (uint32_t a = 0; a < 2; ++a) {
        const uint16_t lo = a ? 2000 : range.first, hi = a ? 2999 : range.second;
        uint32_t covered = 0;
        for (uint32_t port = lo; port <= hi; ++port) {
          unsigned owners = 0;
          for (uint16_t w = 0; w < workers; ++w) {
            if (ws[w]->allocator(a, kUdp).owns(static_cast<uint16_t>(port))) {
              ++owners;
              ASSERT_EQ(ws[0]->owner_of(a, static_cast<uint16_t>(port)), w)
                  << "port " << port << " workers " << workers;
            }
          }
          ASSERT_EQ(owners, 1u) << "port " << port << " workers " << workers;
          ++covered;
        }
        EXPECT_EQ(covered, static_cast<uint32_t>(hi - lo + 1));
      }
    }
  }
  tables.clear();
}

// One writer creating and deleting sessions while two lock-free readers look keys up:
// a reader must never see a session whose fields do not match the key it looked up.
TEST_F(SessionTableTest, ConcurrentReadersNeverSeeAForeignSession) {
  SessionTable& t = make({{out1, 1024, 1279}}, 1024);
  constexpr uint32_t kHosts = 16, kPorts = 16, kRemotes = 4;
  auto inside = [](uint32_t n) {
    const uint32_t h = n % kHosts, p = (n / kHosts) % kPorts, r = n / (kHosts * kPorts);
    return in_key(ip_n(0xc0a80100 + h), static_cast<uint16_t>(20000 + p), ip_n(0xcb007100 + r), 443,
                  IPPROTO_TCP);
  };
  constexpr uint32_t kKeys = kHosts * kPorts * kRemotes;
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0}, in_hits{0}, out_hits{0};

  auto reader = [&](unsigned id) {
    rte_rcu_qsbr_thread_register(qsbr, id);
    rte_rcu_qsbr_thread_online(qsbr, id);
    std::mt19937 rng(id);
    uint64_t bi = 0, bo = 0, ih = 0, oh = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 64; ++i) {
        const FlowKey k = inside(rng() % kKeys);
        const int64_t v = t.lookup(k);
        if (v >= 0) {
          ++ih;
          const Session& s = t.session(static_cast<uint32_t>(v));
          if ((v & SessionTable::kOutsideBit) || s.in_ip != k.src || s.remote_ip != k.dst ||
              s.in_port != k.sport || s.remote_port != k.dport || s.proto != k.proto)
            ++bi;
        }
        const FlowKey o = make_key(ip_n(0xcb007100 + rng() % kRemotes), ip("10.0.3.10"), be16(443),
                                   be16(static_cast<uint16_t>(1024 + rng() % 256)), IPPROTO_TCP, kOutside);
        const int64_t w = t.lookup(o);
        if (w >= 0) {
          ++oh;
          const Session& s = t.session(static_cast<uint32_t>(w) & ~SessionTable::kOutsideBit);
          if (!(w & SessionTable::kOutsideBit) || s.remote_ip != o.src || s.out_ip != o.dst ||
              s.remote_port != o.sport || s.out_port != o.dport || s.proto != o.proto)
            ++bo;
        }
      }
      rte_rcu_qsbr_quiescent(qsbr, id);
    }
    rte_rcu_qsbr_thread_offline(qsbr, id);
    rte_rcu_qsbr_thread_unregister(qsbr, id);
    bad += bi + bo;
    in_hits += ih;
    out_hits += oh;
  };

  std::thread r1(reader, 1), r2(reader, 2);
  uint64_t created = 0, removed = 0, expired = 0;
  {
    std::mt19937 rng(42);
    Timeouts to;
    to.udp = to.tcp_transitory = to.tcp_established = 200;
    uint32_t now = 1;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1500);
    while (std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 256; ++i) {
        const FlowKey k = inside(rng() % kKeys);
        const int64_t v = t.lookup(k);
        if (v >= 0) {
          if (rng() % 2) {
            t.remove(static_cast<uint32_t>(v));
            ++removed;
          }
        } else {
          uint32_t idx;
          const auto rr = create(t, k, now, idx, {0}, false, true);
          created += rr == CreateResult::kOk;
          pools.clear();
          // Slots come back only once both readers have passed a quiescent point; on a
          // two-CPU machine three busy threads can starve one for a while, so let them run.
          if (rr == CreateResult::kTableFull) std::this_thread::sleep_for(std::chrono::microseconds(50));
        }
        ++now;
      }
      expired += t.expire_step(now, to, 64);
      t.reclaim();
    }
  }
  stop = true;
  r1.join();
  r2.join();
  t.reclaim();
  EXPECT_EQ(bad.load(), 0u) << "readers saw sessions that do not match their key";
  EXPECT_GT(created, 10000u);
  EXPECT_GT(removed + expired, 10000u);
  EXPECT_GT(in_hits.load(), 10000u) << "the readers must actually hit live sessions";
  EXPECT_GT(out_hits.load(), 10000u);
  RecordProperty("created", std::to_string(created));
}

}  // namespace
}  // namespace natgw::nat
