// Reload: new RuntimeTables (routes, SNAT rules, ACL) published while sessions
// live. Established sessions keep their egress and translation; new flows follow
// the new tables.
#include <gtest/gtest.h>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

// The internet's default route moved to the endpoint link.
const std::string kMovedDefault =
    with(kLabConfig, "via = \"10.0.3.1\"\ninterface = \"internet\"", "via = \"10.0.2.1\"\ninterface = \"endpoint\"");

class Reload : public ::testing::Test {
 protected:
  Reload() : p(kLabConfig) { lab_neighbours(p); }
  Parsed open(uint8_t proto, uint16_t sport, uint16_t iface = kInternet) {
    p.rx(kInside, build_frame(client(proto, "203.0.113.10", sport, 443)));
    auto out = ipv4_only(p.out(iface));
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? Parsed{} : parse_frame(out[0]);
  }
  bool reply_passes(const Parsed& o, uint16_t iface = kInternet) {
    p.rx(iface, build_frame(reply_to(o, iface)));
    auto back = ipv4_only(p.out(kInside));
    return back.size() == 1 && parse_frame(back[0]).dst == ip("192.168.10.2");
  }
  Pipeline p;
};

TEST_F(Reload, ANewRouteTableKeepsEstablishedSessionsOnTheirEgress) {
  const Parsed tcp = open(IPPROTO_TCP, 40000);
  const Parsed udp = open(IPPROTO_UDP, 40001);
  reload(p, kMovedDefault, 2);
  // Established: same egress, same outside address and port, both directions.
  for (const Parsed* o : {&tcp, &udp}) {
    auto s = client(o->proto, "203.0.113.10", o->proto == IPPROTO_TCP ? 40000 : 40001, 443);
    s.tcp_flags = RTE_TCP_ACK_FLAG;
    p.rx(kInside, build_frame(s));
    EXPECT_TRUE(ipv4_only(p.out(kEndpoint)).empty());
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u);
    EXPECT_EQ(parse_frame(out[0]).src, o->src);
    EXPECT_EQ(parse_frame(out[0]).sport, o->sport);
    EXPECT_TRUE(reply_passes(*o));
  }
  // A new flow follows the new default route, with the endpoint's address.
  const Parsed fresh = open(IPPROTO_TCP, 40002, kEndpoint);
  EXPECT_EQ(ipstr(fresh.src), "10.0.2.10");
  EXPECT_TRUE(reply_passes(fresh, kEndpoint));
  EXPECT_EQ(all_drops(p), 0u);
}

TEST_F(Reload, RemovingTheSnatRuleKeepsLiveSessionsTranslating) {
  const Parsed o = open(IPPROTO_UDP, 40000);
  reload(p, with(kLabConfig, "[[snat]]\nfrom = [\"192.168.0.0/16\"]", ""), 2);
  EXPECT_TRUE(reply_passes(o));
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 443)));
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ipstr(parse_frame(out[0]).src), "10.0.3.10");
  // A new flow from the same host is no longer translated.
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40009, 443)));
  out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ipstr(parse_frame(out[0]).src), "192.168.10.2");
}

TEST_F(Reload, ANewAclJudgesNewFlowsOnly) {
  const Parsed o = open(IPPROTO_TCP, 40000);
  reload(p, std::string(kLabConfig) + "[[acl]]\naction = \"deny\"\ndst = \"203.0.113.10/32\"\n", 2);
  EXPECT_TRUE(reply_passes(o));
  auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
  s.tcp_flags = RTE_TCP_ACK_FLAG;
  p.rx(kInside, build_frame(s));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u) << "the established flow goes on";
  p.rx(kInside, build_frame(client(IPPROTO_TCP, "203.0.113.10", 40001, 443)));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
}

// Filtering and hairpinning switch live: mappings made before the reload open (or
// close) at once, their sessions untouched.
TEST_F(Reload, FilteringAndHairpinningSwitchLive) {
  const Parsed o = open(IPPROTO_UDP, 40000);
  auto stranger = reply_to(o, kInternet);
  stranger.src = ip("198.18.7.7");
  p.rx(kInternet, build_frame(stranger));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  reload(p, std::string(kLabConfig) + "[nat]\nfiltering = \"endpoint-independent\"\nhairpinning = true\n", 2);
  p.rx(kInternet, build_frame(stranger));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u) << "the mapping made before the reload is open";
  auto hp = client(IPPROTO_UDP, "10.0.3.10", 40001, o.sport, "192.168.10.3");
  p.rx(kInside, build_frame(hp));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u) << "hairpinned";
  reload(p, kLabConfig, 3);
  stranger.sport = 999;
  p.rx(kInternet, build_frame(stranger));
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "10.0.3.10", 40002, o.sport, "192.168.10.4")));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_TRUE(reply_passes(o));
  EXPECT_EQ(drops(p, dp::kDropNoSession), 3u);
}

// natgw_acl_hits_total is labelled by rule index, action and match: a rule that is
// the same at the same index keeps counting through a reload, never back to 0.
TEST_F(Reload, AclHitsOfUnchangedRulesSurviveAReload) {
  const std::string acl = "[[acl]]\naction = \"deny\"\ndst = \"198.51.100.0/24\"\n"
                          "[[acl]]\naction = \"allow\"\nprotocol = \"tcp\"\n";
  reload(p, std::string(kLabConfig) + acl, 2);
  for (uint16_t sport = 40000; sport < 40003; ++sport) open(IPPROTO_TCP, sport);  // rule 1
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "198.51.100.7", 40000, 53)));    // rule 0
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));    // default
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  const auto hits = [&](size_t i) { return p.ctx.tables.load()->acl->hits(i); };
  ASSERT_EQ(hits(0), 1u);
  ASSERT_EQ(hits(1), 3u);
  ASSERT_EQ(hits(2), 1u);
  reload(p, std::string(kLabConfig) + acl, 3);
  EXPECT_EQ(hits(0), 1u);
  EXPECT_EQ(hits(1), 3u);
  EXPECT_EQ(hits(2), 1u);
  open(IPPROTO_TCP, 40003);
  EXPECT_EQ(hits(1), 4u);
  // Rule 1 changed (same index, another match): a new series, from 0; rule 0 and the
  // default are unchanged. A default that changed action starts over too.
  reload(p, std::string(kLabConfig) + with(acl, "protocol = \"tcp\"", "protocol = \"udp\""), 4);
  EXPECT_EQ(hits(0), 1u);
  EXPECT_EQ(hits(1), 0u);
  EXPECT_EQ(hits(2), 1u);
  reload(p, std::string(kLabConfig) + acl + "[acl_default]\naction = \"deny\"\n", 5);
  EXPECT_EQ(hits(0), 1u);
  EXPECT_EQ(hits(2), 0u);
}

TEST_F(Reload, NewTimeoutsApplyToLiveSessions) {
  const Parsed o = open(IPPROTO_UDP, 40000);
  reload(p, std::string(kLabConfig) + "[timeouts]\nudp = 10\n", 2);
  p.advance(11'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_FALSE(reply_passes(o));
}

// What cannot change live is refused with the place in the file that asks for it,
// and the running tables stay.
TEST_F(Reload, ChangedPortRangeIsRefusedWithFileAndLine) {
  const Parsed o = open(IPPROTO_UDP, 40000);
  auto r = config::load_string(with(kLabConfig, "from = [\"192.168.0.0/16\"]",
                                    "from = [\"192.168.0.0/16\"]\nports = \"2000-3000\""),
                               "reload.toml");
  ASSERT_TRUE(r.ok());
  try {
    dp::build_tables(p.ctx, *r.config, 2);
    FAIL() << "a changed port range must need a restart";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("reload.toml:"), std::string::npos) << m;
    EXPECT_NE(m.find("1024-65535"), std::string::npos) << m;
    EXPECT_NE(m.find("needs a restart"), std::string::npos) << m;
  }
  EXPECT_EQ(p.ctx.tables.load()->generation, 1u);
  EXPECT_TRUE(reply_passes(o));
}

}  // namespace
}  // namespace natgw::test
