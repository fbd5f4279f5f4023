// IP fragments through NAT: the first fragment (with the ports) is translated and
// later fragments follow its session by IP id, in any order, on any worker; a
// fragment from a NAT source is never forwarded untranslated.
#include <gtest/gtest.h>

#include <algorithm>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

// A UDP datagram of 1200 bytes of payload, cut into fragments of 512 bytes (3 of them).
PacketSpec big_udp(const char* src = "192.168.10.2", uint16_t id = 0x4242) {
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53, src);
  s.ip_id = id;
  s.payload.resize(1200);
  for (size_t i = 0; i < s.payload.size(); ++i) s.payload[i] = static_cast<uint8_t>(i * 7);
  return s;
}

// The fragments that must leave: the whole datagram translated (checksums from
// scratch), then cut the same way.
std::vector<std::vector<uint8_t>> want_out(const std::vector<uint8_t>& whole, const Rewrite& w) {
  return fragment(expected(whole, w), 512);
}

Rewrite to_internet(uint16_t sport) {
  return {.src = ip("10.0.3.10"), .sport = sport, .src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)};
}

std::vector<std::vector<uint8_t>> sorted(std::vector<std::vector<uint8_t>> v) {
  std::sort(v.begin(), v.end(),
            [](const auto& a, const auto& b) { return parse_frame(a).offset_bytes() < parse_frame(b).offset_bytes(); });
  return v;
}

class Fragments : public ::testing::Test {
 protected:
  explicit Fragments(uint16_t workers = 1) : p(kLabConfig, workers) { lab_neighbours(p); }
  Pipeline p;
};

TEST_F(Fragments, InOrderFromInsideAreTranslated) {
  const auto whole = build_frame(big_udp());
  const auto frags = fragment(whole, 512);
  ASSERT_EQ(frags.size(), 3u);
  p.rx(kInside, frags);
  const auto out = ipv4_only(p.out(kInternet));
  EXPECT_EQ(sorted(out), want_out(whole, to_internet(40000)));
  // Reassembled, the datagram is the translated original, UDP checksum and all.
  EXPECT_EQ(reassemble(out), expected(whole, to_internet(40000)));
  EXPECT_EQ(total(p, &dp::WorkerCounters::fragments_translated), 2u);
}

TEST_F(Fragments, LaterFragmentsFirstAreHeldThenReleased) {
  const auto whole = build_frame(big_udp());
  const auto frags = fragment(whole, 512);
  p.rx(kInside, {frags[2], frags[1]});
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty()) << "never forwarded before their first fragment";
  EXPECT_EQ(total(p, &dp::WorkerCounters::fragments_buffered), 2u);
  p.rx(kInside, frags[0]);
  const auto out = ipv4_only(p.out(kInternet));
  EXPECT_EQ(sorted(out), want_out(whole, to_internet(40000)));
  EXPECT_EQ(reassemble(out), expected(whole, to_internet(40000)));
  EXPECT_EQ(all_drops(p), 0u);
}

TEST_F(Fragments, RepliesInAnyOrderAreTranslatedBack) {
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  const Parsed o = parse_frame(ipv4_only(p.out(kInternet)).at(0));
  auto rs = reply_to(o, kInternet);
  rs.ip_id = 0x777;
  rs.payload.assign(1300, 0x3c);
  const auto whole = build_frame(rs);
  const Rewrite back{.dst = ip("192.168.10.2"), .dport = 40000, .src_mac = our_mac(kInside),
                     .dst_mac = mac(kTgwMac)};
  auto frags = fragment(whole, 512);
  p.rx(kInternet, frags);  // in order
  auto in = ipv4_only(p.out(kInside));
  EXPECT_EQ(sorted(in), fragment(expected(whole, back), 512));
  EXPECT_EQ(reassemble(in), expected(whole, back));
  // Another datagram of the flow, last fragment first.
  rs.ip_id = 0x778;
  const auto whole2 = build_frame(rs);
  frags = fragment(whole2, 512);
  p.rx(kInternet, {frags[2], frags[1]});
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  p.rx(kInternet, frags[0]);
  in = ipv4_only(p.out(kInside));
  EXPECT_EQ(reassemble(in), expected(whole2, back));
}

TEST_F(Fragments, ExpiredLaterFragmentsOfAReplyAreDropped) {
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  const Parsed o = parse_frame(ipv4_only(p.out(kInternet)).at(0));
  auto rs = reply_to(o, kInternet);
  rs.payload.assign(1300, 0x3c);
  auto frags = fragment(build_frame(rs), 512);
  for (size_t i = 1; i < frags.size(); ++i) {  // TTL 1 on the later fragments only
    frags[i][14 + 8] = static_cast<uint8_t>(i - 1);
    fix_ip_csum(frags[i]);
  }
  p.rx(kInternet, frags);
  const auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u) << "only the first fragment (TTL 64) goes on";
  EXPECT_EQ(parse_frame(in[0]).offset_bytes(), 0);
  EXPECT_EQ(drops(p, dp::kDropTtl), 2u);
}

// The fragment table's expiry compares a 32-bit millisecond clock: an entry must
// not match again once the clock has moved 2^31 ms (24.8 days) past it, and an
// empty slot must never match (found by fuzz_pipeline).
TEST_F(Fragments, EntriesDoNotComeBackWhenTheClockWraps) {
  const auto frags = fragment(build_frame(big_udp()), 512);
  p.rx(kInside, {frags[0], frags[1]});
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 2u);
  p.advance(3000);
  p.expire_all();  // the session expires too (UDP 300 s is not reached: only the entry matters)
  p.advance(0x80000000u);
  p.rx(kInside, frags[2]);
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty()) << "a stale entry translated a fragment";
  // A later fragment whose addresses, id and protocol are all zero, as an empty slot holds.
  PacketSpec z;
  z.src_mac = mac(kTgwMac);
  z.dst_mac = our_mac(kInside);
  z.proto = 0;
  z.ip_id = 0;
  z.frag = 0x2000 | 100;
  p.rx(kInside, build_frame(z));
  for (const auto& f : ipv4_only(p.out(kInternet)))
    EXPECT_NE(ipstr(parse_frame(f).src), "10.0.3.10") << "translated with a session it never had";
}

// A fragment entry outlives its session's grace period: when the session is gone
// and its slot holds another flow, later fragments are dropped, never rewritten
// with the other flow's addresses.
TEST_F(Fragments, LaterFragmentsDoNotFollowAReusedSessionSlot) {
  const auto whole = build_frame(big_udp());
  const auto frags = fragment(whole, 512);
  p.rx(kInside, frags[0]);
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  nat::SessionTable& st = *p.ctx.sessions[0];
  const int64_t first = st.lookup(nat::make_key(ip("192.168.10.2"), ip("203.0.113.10"), rte_cpu_to_be_16(40000),
                                                rte_cpu_to_be_16(53), IPPROTO_UDP, nat::kInside));
  ASSERT_GE(first, 0);
  st.remove(static_cast<uint32_t>(first));
  p.advance(1);  // grace period over: the slot is free again
  EXPECT_EQ(st.closing(), 0u);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.20", 41000, 53, "192.168.10.3")));
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  const int64_t second = st.lookup(nat::make_key(ip("192.168.10.3"), ip("203.0.113.20"), rte_cpu_to_be_16(41000),
                                                 rte_cpu_to_be_16(53), IPPROTO_UDP, nat::kInside));
  ASSERT_EQ(second, first) << "the test needs the slot reused (free list is last-in first-out)";
  p.rx(kInside, {frags[1], frags[2]});
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty()) << "fragments followed another flow's session";
  EXPECT_EQ(drops(p, dp::kDropFragment), 2u);
}

TEST_F(Fragments, OrphanFragmentsAreDroppedNeverLeakedUntranslated) {
  const auto frags = fragment(build_frame(big_udp()), 512);
  p.rx(kInside, {frags[1], frags[2]});
  p.advance(1000);
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropFragment), 0u) << "still waiting for the first fragment";
  p.advance(1500);  // past the 2 s fragment timeout
  EXPECT_EQ(drops(p, dp::kDropFragment), 2u);
  // A first fragment now creates the session, but the dropped ones are gone.
  p.rx(kInside, frags[0]);
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ipstr(parse_frame(out[0]).src), "10.0.3.10");
  for (uint16_t i : {kInside, kEndpoint, kInternet})
    for (const auto& f : ipv4_only(p.out(i))) EXPECT_NE(ipstr(parse_frame(f).src), "192.168.10.2");
}

TEST(FragmentsNoNat, FragmentsOfASourceWithoutSnatAreForwardedAsTheyAre) {
  // From the internet gateway's subnet to a client: no SNAT rule matches the source.
  Pipeline p(std::string(kLabConfig) + "[[route]]\nprefix = \"192.168.0.0/16\"\nvia = \"10.0.1.1\"\n" +
             "interface = \"inside\"\n");
  lab_neighbours(p);
  auto s = client(IPPROTO_UDP, "192.168.10.2", 53, 40000, "10.0.3.1");
  s.src_mac = mac(kInternetGwMac);
  s.dst_mac = our_mac(kInternet);
  s.payload.resize(1200, 9);
  const auto whole = build_frame(s);
  const auto frags = fragment(whole, 512);
  p.rx(kInternet, {frags[2], frags[0], frags[1]});
  const auto out = ipv4_only(p.out(kInside));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(reassemble(out), expected(whole, {.src_mac = our_mac(kInside), .dst_mac = mac(kTgwMac)}));
}

// A SNAT source whose datagram is routed back out the interface it came in on (to
// another on-prem network): no translation; its later fragments, which carry no
// ports, must go the same way, in any order, not wait for a session that never comes.
TEST(FragmentsNoNat, FragmentsOfAnUntranslatedFlowFromANatSourceFollowTheirFirst) {
  Pipeline p(std::string(kLabConfig) + "[[route]]\nprefix = \"192.168.0.0/16\"\nvia = \"10.0.1.1\"\n" +
             "interface = \"inside\"\n");
  lab_neighbours(p);
  for (bool first_last : {false, true}) {
    auto s = big_udp("192.168.10.2", first_last ? 0x5151 : 0x5150);
    s.dst = ip("192.168.20.5");
    const auto whole = build_frame(s);
    const auto frags = fragment(whole, 512);
    if (first_last)
      p.rx(kInside, {frags[2], frags[1], frags[0]});
    else
      p.rx(kInside, frags);
    const auto out = ipv4_only(p.out(kInside));
    ASSERT_EQ(out.size(), 3u) << (first_last ? "first fragment last" : "in order");
    EXPECT_EQ(reassemble(out), expected(whole, {.src_mac = our_mac(kInside), .dst_mac = mac(kTgwMac)}));
    EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  }
  EXPECT_EQ(all_drops(p), 0u);
}

// Forward-only mode with a default-deny ACL that allows TCP to port 443: the ACL
// judges a datagram by its first fragment (the only one with ports); the later ones
// follow that verdict, in any order, never judged on their own.
TEST(FragmentsAcl, LaterFragmentsFollowTheirFirstFragmentsVerdict) {
  Pipeline p(kForwardConfig +
             "[acl_default]\naction = \"deny\"\n"
             "[[acl]]\naction = \"allow\"\nsrc = \"192.168.0.0/16\"\nprotocol = \"tcp\"\ndst_ports = \"443\"\n");
  lab_neighbours(p);
  const auto segment = [](uint16_t dport, uint16_t id) {
    auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, dport);
    s.ip_id = id;
    s.payload.assign(1200, 0x5a);
    return build_frame(s);
  };
  const auto allowed = segment(443, 0x6001);
  auto frags = fragment(allowed, 512);
  p.rx(kInside, {frags[1], frags[0], frags[2]});
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 3u) << "later fragments of an allowed flow were dropped";
  EXPECT_EQ(reassemble(out), expected(allowed, {.src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)}));
  // Denied by its first fragment: the later ones do not slip through (they carry no
  // port the rules could deny), they wait and expire.
  frags = fragment(segment(80, 0x6002), 512);
  p.rx(kInside, {frags[1], frags[0], frags[2]});
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
  p.advance(3000);
  EXPECT_EQ(drops(p, dp::kDropFragment), 2u);
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
}

// A flood of orphan later fragments (never followed by their first) fills the hold
// buffer; the oldest then make room, so a real datagram whose first fragment comes
// last still gets through.
TEST_F(Fragments, AFloodOfOrphanFragmentsDoesNotLockTheHoldBufferUp) {
  for (uint16_t id = 1; id <= 100; ++id) {
    const auto orphan = fragment(build_frame(big_udp("192.168.10.2", id)), 512);
    p.rx(kInside, orphan[1]);
  }
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_GE(drops(p, dp::kDropFragment), 36u) << "100 orphans, 64 slots";
  const auto whole = build_frame(big_udp("192.168.10.2", 0x7777));
  const auto frags = fragment(whole, 512);
  p.rx(kInside, {frags[2], frags[1]});
  p.rx(kInside, frags[0]);
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 3u) << "the datagram's held fragments were refused or evicted";
  EXPECT_EQ(reassemble(out), expected(whole, to_internet(40000)));
}

class FragmentsTwoWorkers : public Fragments {
 protected:
  FragmentsTwoWorkers() : Fragments(2) {}
  // An inside host whose new flows are owned by worker `w`.
  const char* host_owned_by(uint16_t w) {
    static char buf[32];
    for (int i = 2; i < 250; ++i) {
      snprintf(buf, sizeof buf, "192.168.10.%d", i);
      if (p.ctx.flow_owner(ip(buf)) == w) return buf;
    }
    ADD_FAILURE() << "no host for worker " << w;
    return "192.168.10.2";
  }
};

// Fragments of one datagram spread over both workers, in both orders, for hosts
// owned by either worker: every fragment leaves translated.
TEST_F(FragmentsTwoWorkers, FragmentsOnAnyWorkerFollowTheirFirst) {
  uint16_t id = 0x100;
  for (uint16_t owner : {0, 1}) {
    const std::string host = host_owned_by(owner);
    for (uint16_t first_on : {0, 1}) {
      for (const bool first_first : {true, false}) {
        const auto whole = build_frame(big_udp(host.c_str(), id++));
        const auto frags = fragment(whole, 512);
        const uint16_t later_on = static_cast<uint16_t>(1 - first_on);
        if (first_first) p.rx(kInside, frags[0], first_on);
        p.rx(kInside, {frags[1], frags[2]}, later_on);
        if (!first_first) p.rx(kInside, frags[0], first_on);
        const auto out = ipv4_only(p.out(kInternet));
        ASSERT_EQ(out.size(), 3u) << host << " first on " << first_on << (first_first ? " first" : " last");
        const auto r = reassemble(out);
        ASSERT_FALSE(r.empty());
        const Parsed pr = parse_frame(r);
        EXPECT_EQ(ipstr(pr.src), "10.0.3.10");
        EXPECT_EQ(r, expected(whole, to_internet(pr.sport)));
      }
    }
  }
  EXPECT_EQ(all_drops(p), 0u);
}

}  // namespace
}  // namespace natgw::test
