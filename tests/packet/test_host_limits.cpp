// nat.max_sessions_per_host and max_ports_per_host through the whole pipeline (one
// inside host cannot take the table or the ports; outside-opened sessions do not count
// against it; the values reload live), and the outside-port gauges natgwctl and
// Prometheus show.
#include <gtest/gtest.h>
#include <rte_ring_elem.h>

#include "control/stats.hpp"
#include "control/views.hpp"
#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

constexpr const char* kA = "192.168.10.2";
constexpr const char* kB = "192.168.10.3";

class HostLimit : public ::testing::Test {
 protected:
  explicit HostLimit(const std::string& nat = "[nat]\nmax_sessions_per_host = 3\n")
      : p(std::string(kLabConfig) + nat) {
    lab_neighbours(p);
  }
  // A new flow from `host`:`sport`: whether natgw sent it out translated.
  bool opens(uint8_t proto, const char* host, uint16_t sport, const char* dst = "203.0.113.10") {
    p.rx(kInside, build_frame(client(proto, dst, sport, 443, host)));
    const auto out = ipv4_only(p.out(kInternet));
    return out.size() == 1 && parse_frame(out[0]).src == ip("10.0.3.10");
  }
  uint64_t free_udp() const { return p.ctx.sessions[0]->allocator(outside_idx(), 1).free_count(); }
  uint32_t outside_idx() const { return static_cast<uint32_t>(p.ctx.sessions[0]->outside_index(ip("10.0.3.10"))); }
  uint32_t count(const char* host) const { return p.ctx.sessions[0]->hosts()->count(ip(host)); }
  Pipeline p;
};

// Three sessions (any protocols, any destinations), then the host's new flows are
// dropped as host_limit, costing no port; other hosts and the host's existing flows
// carry on.
TEST_F(HostLimit, AHostAtItsLimitOpensNoMoreFlowsOthersDo) {
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40000));
  ASSERT_TRUE(opens(IPPROTO_TCP, kA, 40001));
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40002, "203.0.113.99"));
  EXPECT_EQ(count(kA), 3u);
  const uint32_t free_before = free_udp();
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40003));
  EXPECT_FALSE(opens(IPPROTO_TCP, kA, 40004));
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 2u);
  EXPECT_EQ(free_udp(), free_before) << "a refused flow takes no port";
  EXPECT_EQ(p.ctx.sessions[0]->stats().host_limited.get(), 2u);
  EXPECT_EQ(count(kA), 3u);
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40000)) << "an existing flow still translates";
  EXPECT_TRUE(opens(IPPROTO_UDP, kB, 40000)) << "another host is not limited";
  EXPECT_EQ(count(kB), 1u);
  EXPECT_EQ(active_sessions(p), 4u);
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->hosts(), 2u);
}

// A session that ends gives its place back; a host with no sessions left is forgotten.
TEST_F(HostLimit, EndedSessionsGiveTheirPlaceBack) {
  for (uint16_t sport = 40000; sport < 40003; ++sport) ASSERT_TRUE(opens(IPPROTO_UDP, kA, sport));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40003));
  p.advance(301'000);  // past the UDP timeout
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_EQ(count(kA), 0u);
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->hosts(), 0u);
  for (uint16_t sport = 40003; sport < 40006; ++sport) EXPECT_TRUE(opens(IPPROTO_UDP, kA, sport));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40006));
}

// A flow refused for another reason (no port left) is not counted against its host.
TEST(HostLimitNoPort, RefusedFlowsGiveTheirCountBack) {
  const std::string two_ports = with(kLabConfig, "from = [\"192.168.0.0/16\"]\n",
                                     "from = [\"192.168.0.0/16\"]\nports = \"5000-5001\"\n");
  Pipeline p(two_ports + "[nat]\nmax_sessions_per_host = 3\nmax_ports_per_host = 3\nport_overlapping = false\n");
  lab_neighbours(p);
  for (uint16_t sport = 40000; sport < 40002; ++sport)
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", sport, 53, kA)));
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, kB)));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 2u);
  EXPECT_EQ(drops(p, dp::kDropNoPort), 1u);
  const nat::HostSessions* h = p.ctx.sessions[0]->hosts();
  EXPECT_EQ(h->count(ip(kA)), 2u);
  EXPECT_EQ(h->count(ip(kB)), 0u);
  EXPECT_EQ(h->ports(ip(kA)), 2u);
  EXPECT_EQ(h->ports(ip(kB)), 0u) << "no mapping was made: its port count was given back";
  EXPECT_EQ(h->hosts(), 1u);
}

// With endpoint-independent filtering, sessions outside senders open toward a host's
// mapping are not the host's: strangers cannot use up its allowance and lock it out.
class HostLimitEif : public HostLimit {
 protected:
  HostLimitEif() : HostLimit("[nat]\nmax_sessions_per_host = 3\nfiltering = \"endpoint-independent\"\n") {}
};
TEST_F(HostLimitEif, OutsideOpenedSessionsDoNotCount) {
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 443, kA)));
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const Parsed o = parse_frame(out[0]);
  for (int i = 0; i < 5; ++i) {  // five strangers reach the mapping
    auto s = reply_to(o, kInternet);
    s.src = ip(("198.18.0." + std::to_string(10 + i)).c_str());
    p.rx(kInternet, build_frame(s));
  }
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 5u);
  EXPECT_EQ(active_sessions(p), 6u);
  EXPECT_EQ(count(kA), 1u);
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40001));
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40002));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40003));
  // The strangers' sessions end, the host's own (refreshed) stay: its count is unchanged.
  p.advance(200'000);
  for (uint16_t sport = 40000; sport < 40003; ++sport) ASSERT_TRUE(opens(IPPROTO_UDP, kA, sport));
  p.advance(150'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 3u);
  EXPECT_EQ(count(kA), 3u) << "inbound sessions ending took nothing off the host's count";
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40003));
}

// The value reloads live (counts kept through a reload without a limit); turning a
// limit on in a natgw started without one is refused (no counts were kept).
TEST_F(HostLimit, TheLimitReloadsLive) {
  for (uint16_t sport = 40000; sport < 40003; ++sport) ASSERT_TRUE(opens(IPPROTO_UDP, kA, sport));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40003));
  reload(p, std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 4\n", 2);
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40003));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40004));
  reload(p, kLabConfig, 3);  // no limit: counted still
  for (uint16_t sport = 40004; sport < 40010; ++sport) EXPECT_TRUE(opens(IPPROTO_UDP, kA, sport));
  EXPECT_EQ(count(kA), 10u);
  reload(p, std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 2\n", 4);
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40010)) << "over the new limit: no new flows, live ones stay";
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40000));
  EXPECT_TRUE(opens(IPPROTO_UDP, kB, 40000));
  EXPECT_TRUE(opens(IPPROTO_UDP, kB, 40001));
  EXPECT_FALSE(opens(IPPROTO_UDP, kB, 40002));

  reload(p, kLabConfig, 5);  // removed, then back: natgw started with a limit, the counts are there
  reload(p, std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 11\n", 6);
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40010));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40011));
}

// Turning a limit on in a natgw started without one is refused (no counts were kept).
// What the worker put on its NAT event ring, quota events only.
std::vector<nat::NatEvent> quota_events(rte_ring* ring) {
  std::vector<nat::NatEvent> v;
  nat::NatEvent e;
  while (rte_ring_sc_dequeue_elem(ring, &e, sizeof e) == 0)
    if (e.is_quota()) v.push_back(e);
  return v;
}

// A refused flow is a quota event (RFC 8158: quota exceeded, maximum entries per user) naming
// the host, the flow and the limit; at most one a second per host, however many flows it tries.
TEST_F(HostLimit, ARefusedHostIsAQuotaEventOnceASecond) {
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  for (uint16_t sport = 40000; sport < 40003; ++sport) ASSERT_TRUE(opens(IPPROTO_UDP, kA, sport));
  EXPECT_TRUE(quota_events(p.ctx.events[0]).empty());
  p.advance(10);
  const uint32_t t0 = p.worker().now_ms();
  for (uint16_t sport = 41000; sport < 41050; ++sport) EXPECT_FALSE(opens(IPPROTO_TCP, kA, sport));
  for (uint16_t sport = 40000; sport < 40003; ++sport) ASSERT_TRUE(opens(IPPROTO_UDP, kB, sport));
  EXPECT_FALSE(opens(IPPROTO_UDP, kB, 40003)) << "B's fourth flow is refused too";
  auto ev = quota_events(p.ctx.events[0]);
  ASSERT_EQ(ev.size(), 2u) << "one for A (50 refused flows), one for B";
  EXPECT_EQ(ev[0].kind, nat::NatEventKind::kQuotaSessions);
  EXPECT_EQ(ev[0].in_ip, ip(kA));
  EXPECT_EQ(ev[0].in_port, rte_cpu_to_be_16(41000)) << "the first refused flow";
  EXPECT_EQ(ev[0].remote_ip, ip("203.0.113.10"));
  EXPECT_EQ(ev[0].remote_port, rte_cpu_to_be_16(443));
  EXPECT_EQ(ev[0].proto, IPPROTO_TCP);
  EXPECT_EQ(ev[0].out_ip, 0u);
  EXPECT_EQ(ev[0].start_ms, t0);
  EXPECT_EQ(ev[0].quota_limit(), 3u);
  EXPECT_EQ(ev[1].in_ip, ip(kB));
  p.advance(999);
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 42000));
  EXPECT_TRUE(quota_events(p.ctx.events[0]).empty()) << "within the second";
  p.advance(1);
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 42001));
  ev = quota_events(p.ctx.events[0]);
  ASSERT_EQ(ev.size(), 1u) << "a second later, again";
  EXPECT_EQ(ev[0].in_port, rte_cpu_to_be_16(42001));
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 53u) << "every refused flow is still counted";
}

TEST(HostLimitRestart, ALimitNeedsAStartWithOne) {
  Pipeline unlimited(kLabConfig);
  EXPECT_EQ(unlimited.ctx.sessions[0]->hosts(), nullptr) << "no per-host table without a limit";
  auto r = config::load_string(std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 2\n", "reload.toml");
  ASSERT_TRUE(r.ok());
  try {
    dp::build_tables(unlimited.ctx, *r.config, 2);
    ADD_FAILURE() << "a limit was accepted by a natgw started without one";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "reload.toml:26: nat.max_sessions_per_host needs a restart (natgw started without a per-host limit)");
  }
  r = config::load_string(std::string(kLabConfig) + "[nat]\nmax_ports_per_host = 2\n", "reload.toml");
  ASSERT_TRUE(r.ok());
  EXPECT_THROW(dp::build_tables(unlimited.ctx, *r.config, 2), std::runtime_error);
}

// A full table is table_full, not host_limit, also for a host that has room.
// One session for each of n hosts (192.168.20.2 on).
void fill_with_hosts(Pipeline& p, int n) {
  for (int i = 0; i < n; ++i) {
    const std::string h = "192.168.20." + std::to_string(2 + i);
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, h.c_str())));
  }
}

TEST(HostLimitTableFull, AFullTableIsTableFull) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nmax_sessions = 64\nmax_sessions_per_host = 5\n");
  lab_neighbours(p);
  fill_with_hosts(p, 64);
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 64u);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, "192.168.30.2")));  // a new host
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 53, "192.168.20.2")));  // one with room
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropTableFull), 2u);
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 0u);
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->count(ip("192.168.20.2")), 1u);
}

// Hosts outlive their last session until its mapping is released after the grace period: a
// full host index of such hosts is not a full table. The new host's flow reclaims them first.
TEST(HostLimitTableFull, HostsOfClosingSessionsMakeRoom) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nmax_sessions = 64\nmax_sessions_per_host = 5\n");
  lab_neighbours(p);
  fill_with_hosts(p, 64);
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 64u);
  nat::SessionTable& st = *p.ctx.sessions[0];
  for (uint32_t i = 0; i < 64; ++i) st.remove(i);  // ended, not yet released: their hosts hold every slot
  st.reclaim();                                    // their batch gets its grace-period token
  EXPECT_EQ(st.hosts()->hosts(), 64u);
  rte_rcu_qsbr_quiescent(p.ctx.qsbr, 0);  // the worker passes a quiescent point: the grace period is over
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, "192.168.30.2")));  // a new host
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u) << "not table_full";
  EXPECT_EQ(drops(p, dp::kDropTableFull), 0u);
  EXPECT_EQ(st.hosts()->hosts(), 1u);
}

// Two workers: a host's flows arriving on either are counted once, by its owner.
TEST(HostLimitTwoWorkers, CountedByTheOwner) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 3\n", 2);
  lab_neighbours(p);
  std::string h;
  for (int i = 2; i < 250 && h.empty(); ++i)
    if (const std::string c = "192.168.10." + std::to_string(i); p.ctx.flow_owner(ip(c.c_str())) == 1) h = c;
  ASSERT_FALSE(h.empty());
  const auto opens = [&](uint8_t proto, uint16_t sport, uint16_t w) {
    p.rx(kInside, build_frame(client(proto, "203.0.113.10", sport, 443, h.c_str())), w);
    return ipv4_only(p.out(kInternet)).size() == 1;
  };
  for (unsigned w = 0; w < 2; ++w) p.ctx.sessions[w]->set_event_ring(p.ctx.events[w]);
  EXPECT_TRUE(opens(IPPROTO_UDP, 40000, 0));
  EXPECT_TRUE(opens(IPPROTO_UDP, 40001, 1));
  EXPECT_TRUE(opens(IPPROTO_TCP, 40002, 0));
  EXPECT_FALSE(opens(IPPROTO_UDP, 40003, 0));
  EXPECT_FALSE(opens(IPPROTO_UDP, 40004, 1));
  EXPECT_EQ(p.ctx.sessions[1]->hosts()->count(ip(h.c_str())), 3u);
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->count(ip(h.c_str())), 0u);
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 2u);
  // The quota event comes from the owner, once (the second refusal is within the second).
  const auto q = quota_events(p.ctx.events[1]);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].worker, 1u);
  EXPECT_EQ(q[0].in_port, rte_cpu_to_be_16(40003));
  EXPECT_TRUE(quota_events(p.ctx.events[0]).empty());
}

// Hairpinned flows are the inside host's own: they count.
TEST(HostLimitHairpin, HairpinnedFlowsCount) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 1\nhairpinning = true\n");
  lab_neighbours(p);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 443, kB)));
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const uint16_t b_port = parse_frame(out[0]).sport;
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 443, kA)));  // A's one session
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "10.0.3.10", 40001, b_port, kA)));  // A to B's mapping
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 1u);
}

// nat.max_ports_per_host: a host's ports are its mappings (one outside port or ICMP
// identifier per inside endpoint). Flows that share one of its mappings (the same
// source port toward other destinations) are not limited by it; a flow that needs a
// new one is refused at the limit (host_port_limit) before it takes a port.
class HostPortLimit : public HostLimit {
 protected:
  HostPortLimit() : HostLimit("[nat]\nmax_ports_per_host = 2\nfiltering = \"endpoint-independent\"\n") {}
  uint32_t ports(const char* host) const { return p.ctx.sessions[0]->hosts()->ports(ip(host)); }
};

TEST_F(HostPortLimit, AHostAtItsPortLimitSharesItsMappingsButTakesNoNewPort) {
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40000));
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40000, "203.0.113.99")) << "the same mapping: no new port";
  EXPECT_EQ(ports(kA), 1u);
  ASSERT_TRUE(opens(IPPROTO_TCP, kA, 40001));
  EXPECT_EQ(ports(kA), 2u);
  const uint32_t free_before = free_udp();
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40002));
  auto echo = client(IPPROTO_ICMP, "203.0.113.10", 0, 0, kA);
  echo.icmp_type = 8;
  echo.sport = 777;  // an ICMP identifier is a port too
  p.rx(kInside, build_frame(echo));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropHostPortLimit), 2u);
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 0u);
  EXPECT_EQ(p.ctx.sessions[0]->stats().host_port_limited.get(), 2u);
  EXPECT_EQ(free_udp(), free_before) << "a refused flow takes no port";
  EXPECT_EQ(count(kA), 3u) << "refused flows are not counted as sessions either";
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40000, "203.0.113.50")) << "sharing a mapping it has is not limited";
  EXPECT_TRUE(opens(IPPROTO_TCP, kA, 40001, "203.0.113.50"));
  EXPECT_TRUE(opens(IPPROTO_UDP, kB, 40002)) << "another host is not limited";
  EXPECT_EQ(ports(kA), 2u);
  EXPECT_EQ(ports(kB), 1u);
}

// A mapping freed (its last session ended) gives its port back. A mapping kept alive by
// an outside sender's session (endpoint-independent filtering) is still the host's
// port: the host stays counted with no session of its own until that session ends.
TEST_F(HostPortLimit, PortsAreGivenBackWithTheirMappings) {
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 443, kA)));
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40001));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40002));
  p.advance(200'000);
  auto stranger = reply_to(parse_frame(out[0]), kInternet);
  stranger.src = ip("198.18.0.10");
  p.rx(kInternet, build_frame(stranger));  // an outside-opened session on A's first mapping
  ASSERT_EQ(ipv4_only(p.out(kInside)).size(), 1u);
  p.advance(150'000);  // A's own sessions are past the UDP timeout, the stranger's is not
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 1u);
  EXPECT_EQ(count(kA), 0u);
  EXPECT_EQ(ports(kA), 1u) << "the stranger's session keeps A's first mapping, and its port";
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->hosts(), 1u);
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40002));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40003));
  p.advance(301'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_EQ(ports(kA), 0u);
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->hosts(), 0u) << "nothing left: the host is forgotten";
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40003));
  EXPECT_TRUE(opens(IPPROTO_UDP, kA, 40004));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40005));
}

// Both limits: whichever a flow meets first refuses it. The port limit reloads live in a
// natgw started with the session limit alone (ports are counted with any limit).
TEST(HostPortLimitReload, BothLimitsAndALiveReload) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 3\n");
  lab_neighbours(p);
  const auto opens = [&](uint16_t sport, const char* dst) {
    p.rx(kInside, build_frame(client(IPPROTO_UDP, dst, sport, 443, kA)));
    return ipv4_only(p.out(kInternet)).size() == 1;
  };
  EXPECT_TRUE(opens(40000, "203.0.113.10"));
  EXPECT_TRUE(opens(40001, "203.0.113.10"));
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->ports(ip(kA)), 2u) << "counted without a port limit";
  reload(p, std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 3\nmax_ports_per_host = 2\n", 2);
  EXPECT_FALSE(opens(40002, "203.0.113.10"));
  EXPECT_EQ(drops(p, dp::kDropHostPortLimit), 1u);
  EXPECT_TRUE(opens(40000, "203.0.113.20")) << "a third session on a mapping it has";
  EXPECT_FALSE(opens(40000, "203.0.113.30")) << "the session limit";
  EXPECT_EQ(drops(p, dp::kDropHostLimit), 1u);
  reload(p, std::string(kLabConfig) + "[nat]\nmax_sessions_per_host = 10\n", 3);
  EXPECT_TRUE(opens(40002, "203.0.113.10"));
  EXPECT_EQ(p.ctx.sessions[0]->hosts()->ports(ip(kA)), 3u);
}

// Ports in use per outside address and protocol: what a mapping holds (shared flows of
// one mapping hold one port), summed over the workers' slices; freed with the mapping.
TEST(OutsidePortGauges, CountMappingsPortsPerAddressAndProtocol) {
  Pipeline p(kLabConfig, 2);
  lab_neighbours(p);
  // Hosts on both workers; one host's two flows from one port share its mapping.
  const char* hosts[] = {"192.168.10.2", "192.168.10.3", "192.168.10.4", "192.168.10.5"};
  for (const char* h : hosts) p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, h)));
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.11", 40000, 53, hosts[0])));
  p.rx(kInside, build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443, hosts[0])));
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "198.51.100.7", 40000, 53, hosts[1])));  // the endpoint link
  ASSERT_EQ(active_sessions(p), 7u);
  std::vector<const dp::Worker*> ws;
  for (auto& w : p.workers) ws.push_back(w.get());
  auto s = control::snapshot(p.ctx, ws, false);
  const auto at = [&](const char* a) -> const control::OutsidePorts* {
    for (const auto& o : s.outside)
      if (o.addr == ip(a)) return &o;
    return nullptr;
  };
  const auto* internet = at("10.0.3.10");
  const auto* endpoint = at("10.0.2.10");
  ASSERT_TRUE(internet && endpoint);
  EXPECT_EQ(internet->size[1], 65535u - 1024u + 1u) << "both workers' slices";
  EXPECT_EQ(internet->in_use[1], 4u);
  EXPECT_EQ(internet->in_use[0], 1u);
  EXPECT_EQ(internet->in_use[2], 0u);
  EXPECT_EQ(endpoint->in_use[1], 1u);
  const std::string prom = control::render_prometheus(s, p.ctx, {});
  EXPECT_NE(prom.find("natgw_outside_ports_in_use{address=\"10.0.3.10\",protocol=\"udp\"} 4\n"), std::string::npos)
      << prom;
  EXPECT_NE(prom.find("natgw_outside_ports{address=\"10.0.3.10\",protocol=\"tcp\"} 64512\n"), std::string::npos);
  EXPECT_EQ(prom.find("natgw_inside_hosts"), std::string::npos) << "no per-host counts without a limit";
  EXPECT_NE(control::format_text(s).find("outside 10.0.3.10: ports in use tcp 1/64512 udp 4/64512 icmp 0/64512\n"),
            std::string::npos)
      << control::format_text(s);
  p.advance(301'000);
  p.expire_all();
  s = control::snapshot(p.ctx, ws, false);
  EXPECT_EQ(at("10.0.3.10")->in_use[1], 0u);
  EXPECT_EQ(at("10.0.2.10")->in_use[1], 0u);
}

TEST_F(HostPortLimit, ARefusedPortIsAQuotaEvent) {
  p.ctx.sessions[0]->set_event_ring(p.ctx.events[0]);
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40000));
  ASSERT_TRUE(opens(IPPROTO_UDP, kA, 40001));
  EXPECT_FALSE(opens(IPPROTO_UDP, kA, 40002));
  const auto ev = quota_events(p.ctx.events[0]);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].kind, nat::NatEventKind::kQuotaPorts);
  EXPECT_EQ(ev[0].in_ip, ip(kA));
  EXPECT_EQ(ev[0].in_port, rte_cpu_to_be_16(40002));
  EXPECT_EQ(ev[0].quota_limit(), 2u);
}

}  // namespace
}  // namespace natgw::test
