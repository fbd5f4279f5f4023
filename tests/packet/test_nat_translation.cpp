// SNAT through the whole pipeline: every rewritten frame compared byte for byte
// with the original rewritten by hand and checksummed from scratch; mapping and
// filtering behaviour; TCP state and timeouts on the injected clock; exhaustion;
// ACLs with stateful replies.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

const std::string kTimeouts = "[timeouts]\nudp = 30\ntcp_established = 100\ntcp_transitory = 10\nicmp = 5\n";

class Nat : public ::testing::Test {
 protected:
  explicit Nat(const std::string& cfg = kLabConfig) : p(cfg) { lab_neighbours(p); }
  // Send `in` from the client; expect exactly one frame out of `iface` and return it.
  std::vector<uint8_t> out1(const std::vector<uint8_t>& in, uint16_t iface = kInternet) {
    p.rx(kInside, in);
    auto out = ipv4_only(p.out(iface));
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? std::vector<uint8_t>{} : out[0];
  }
  // Send `in` from outside on `iface`; expect exactly one frame back on the inside.
  std::vector<uint8_t> back1(const std::vector<uint8_t>& in, uint16_t iface = kInternet) {
    p.rx(iface, in);
    auto out = ipv4_only(p.out(kInside));
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? std::vector<uint8_t>{} : out[0];
  }
  static Rewrite outbound(uint16_t sport, const char* src = "10.0.3.10", uint8_t gw = kInternetGwMac,
                          uint16_t iface = kInternet) {
    return {.src = ip(src), .sport = sport, .src_mac = our_mac(iface), .dst_mac = mac(gw)};
  }
  static Rewrite inbound(uint16_t dport, const char* dst = "192.168.10.2") {
    return {.dst = ip(dst), .dport = dport, .src_mac = our_mac(kInside), .dst_mac = mac(kTgwMac)};
  }
  Pipeline p;
};

TEST_F(Nat, TcpBothDirectionsByteForByte) {
  auto syn = build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443));
  const auto o = out1(syn);
  EXPECT_EQ(o, expected(syn, outbound(40000)));  // port preserved
  const Parsed po = parse_frame(o);
  auto synack = build_frame(reply_to(po, kInternet));
  EXPECT_EQ(back1(synack), expected(synack, inbound(40000)));
  auto ack = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
  ack.tcp_flags = RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG;
  ack.payload.assign(333, 0x5a);  // odd length: the checksum pads the last byte
  const auto data = build_frame(ack);
  EXPECT_EQ(out1(data), expected(data, outbound(40000)));
  EXPECT_TRUE(checksums_exact(o));
  EXPECT_EQ(total(p, &dp::WorkerCounters::in2out), 2u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::out2in), 1u);
}

TEST_F(Nat, UdpBothDirectionsByteForByte) {
  for (uint16_t len : {0, 1, 16, 1001}) {
    auto s = client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(40000 + len), 53);
    s.payload.assign(len, static_cast<uint8_t>(len));
    const auto in = build_frame(s);
    const auto o = out1(in);
    EXPECT_EQ(o, expected(in, outbound(s.sport))) << len;
    auto r = build_frame(reply_to(parse_frame(o), kInternet));
    EXPECT_EQ(back1(r), expected(r, inbound(s.sport))) << len;
  }
}

// Replies go to the previous hop the flow's traffic comes from, also after that hop
// changed its MAC mid-session (a TGW ENI or router failed over, a host's NIC replaced):
// not to the old MAC until the session expires. From the next inside packet, even when
// outside traffic is what refreshed the session in that millisecond.
TEST_F(Nat, RepliesFollowThePreviousHopWhenItsMacChanges) {
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  const auto o = out1(build_frame(s));
  const auto reply = build_frame(reply_to(parse_frame(o), kInternet));
  EXPECT_TRUE(same_mac(parse_frame(back1(reply)).dst_mac, mac(kTgwMac)));
  p.advance(1);
  back1(reply);  // the session's clock moves with an outside packet
  s.src_mac = mac(0x77);
  out1(build_frame(s));
  EXPECT_TRUE(same_mac(parse_frame(back1(reply)).dst_mac, mac(0x77)));
  // Neither a reply from outside nor the flow's traffic on another interface is the
  // session's inside hop.
  auto r = reply_to(parse_frame(o), kInternet);
  r.src_mac = mac(0x55);
  EXPECT_TRUE(same_mac(parse_frame(back1(build_frame(r))).dst_mac, mac(0x77)));
  s.src_mac = mac(0x66);
  s.dst_mac = our_mac(kEndpoint);
  p.rx(kEndpoint, build_frame(s));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  EXPECT_TRUE(same_mac(parse_frame(back1(reply)).dst_mac, mac(0x77)));
  EXPECT_EQ(active_sessions(p), 1u);
}

TEST_F(Nat, UdpZeroChecksumStaysZero) {
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  s.udp_zero_csum = true;
  const auto in = build_frame(s);
  const auto o = out1(in);
  EXPECT_EQ(o, expected(in, outbound(40000)));
  EXPECT_EQ(parse_frame(o).udp_csum, 0);
  auto rs = reply_to(parse_frame(o), kInternet);
  rs.udp_zero_csum = true;
  const auto r = build_frame(rs);
  const auto b = back1(r);
  EXPECT_EQ(b, expected(r, inbound(40000)));
  EXPECT_EQ(parse_frame(b).udp_csum, 0);
}

// A payload whose UDP checksum, for the given addresses and ports, computes to 0.
std::vector<uint8_t> payload_for_zero_csum(PacketSpec s) {
  s.payload.assign(20, 0x11);
  s.payload[0] = s.payload[1] = 0;
  const auto f = build_frame(s);
  uint16_t c;
  std::memcpy(&c, f.data() + 14 + 20 + 6, 2);
  c = ntohs(c);
  if (c != 0xffff) {  // adding the checksum's own value makes the sum all ones
    s.payload[0] = static_cast<uint8_t>(c >> 8);
    s.payload[1] = static_cast<uint8_t>(c & 0xff);
  }
  return s.payload;
}

TEST_F(Nat, UdpChecksumThatBecomesZeroIsWrittenFfff) {
  // Outbound: zero after the rewrite to 10.0.3.10:40000.
  auto translated = client(IPPROTO_UDP, "203.0.113.10", 40000, 53, "10.0.3.10");
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  s.payload = payload_for_zero_csum(translated);
  const auto in = build_frame(s);
  ASSERT_NE(parse_frame(in).udp_csum, 0xffff) << "the original's checksum must not already be zero";
  const auto o = out1(in);
  EXPECT_EQ(parse_frame(o).udp_csum, 0xffff);
  EXPECT_EQ(o, expected(in, outbound(40000)));
  EXPECT_TRUE(checksums_exact(o));

  // Inbound: zero after the rewrite to 192.168.10.2:40000.
  auto rs = reply_to(parse_frame(o), kInternet);
  PacketSpec untranslated = rs;
  untranslated.dst = ip("192.168.10.2");
  rs.payload = payload_for_zero_csum(untranslated);
  const auto r = build_frame(rs);
  ASSERT_NE(parse_frame(r).udp_csum, 0xffff);
  const auto b = back1(r);
  EXPECT_EQ(parse_frame(b).udp_csum, 0xffff);
  EXPECT_EQ(b, expected(r, inbound(40000)));
}

TEST_F(Nat, IcmpEchoIdentifierBothDirections) {
  for (uint16_t id : {7, 5000}) {
    const auto in = build_frame(client(IPPROTO_ICMP, "203.0.113.10", id, 0));
    const auto o = out1(in);
    const Parsed po = parse_frame(o);
    EXPECT_GE(po.sport, 1024) << "outside identifiers come from the port range";
    if (id >= 1024) {
      EXPECT_EQ(po.sport, id) << "identifier preserved when free";
    }
    EXPECT_EQ(o, expected(in, outbound(po.sport)));
    const auto r = build_frame(reply_to(po, kInternet));
    EXPECT_EQ(back1(r), expected(r, inbound(id)));
  }
  EXPECT_EQ(active_sessions(p), 2u);
}

TEST_F(Nat, ASecondHostOnTheSamePortGetsAnotherPort) {
  const auto a = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53))));
  const auto b =
      parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, "192.168.10.3"))));
  EXPECT_EQ(a.sport, 40000);
  EXPECT_NE(b.sport, 40000);
  EXPECT_EQ(parse_frame(back1(build_frame(reply_to(a, kInternet)))).dst, ip("192.168.10.2"));
  const Parsed rb = parse_frame(back1(build_frame(reply_to(b, kInternet))));
  EXPECT_EQ(rb.dst, ip("192.168.10.3"));
  EXPECT_EQ(rb.dport, 40000);
}

class NatNoPreservation : public Nat {
 protected:
  NatNoPreservation() : Nat(std::string(kLabConfig) + "[nat]\nport_preservation = false\n") {}
};

TEST_F(NatNoPreservation, MappingIsEndpointIndependent) {
  const auto a = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53))));
  const auto b = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.20", 40000, 5353))));
  EXPECT_EQ(a.src, b.src);
  EXPECT_EQ(a.sport, b.sport) << "same inside ip:port, same outside ip:port for every destination";
  // Another inside port is another mapping.
  const auto c = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 53))));
  EXPECT_NE(c.sport, a.sport);
  // TCP has its own mappings; a TCP flow from the same port is still consistent across destinations.
  const auto t1 = parse_frame(out1(build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443))));
  const auto t2 = parse_frame(out1(build_frame(client(IPPROTO_TCP, "203.0.113.30", 40000, 80))));
  EXPECT_EQ(t1.sport, t2.sport);
  // Each reply reaches the one inside endpoint.
  for (const Parsed& o : {a, b, t1, t2}) {
    const Parsed r = parse_frame(back1(build_frame(reply_to(o, kInternet))));
    EXPECT_EQ(r.dst, ip("192.168.10.2"));
    EXPECT_EQ(r.dport, 40000);
  }
}

TEST_F(Nat, FilteringIsAddressAndPortDependent) {
  const auto o = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53))));
  auto other_port = reply_to(o, kInternet);
  other_port.sport = 54;
  auto other_host = reply_to(o, kInternet);
  other_host.src = ip("203.0.113.99");
  auto other_proto = reply_to(o, kInternet);
  other_proto.proto = IPPROTO_TCP;
  p.rx(kInternet, {build_frame(other_port), build_frame(other_host), build_frame(other_proto)});
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 3u);
  back1(build_frame(reply_to(o, kInternet)));  // the real reply still passes
}

class NatTimeouts : public Nat {
 protected:
  NatTimeouts() : Nat(std::string(kLabConfig) + kTimeouts) {}
  Parsed open_tcp(const char* src = "192.168.10.2") {
    const auto o = parse_frame(out1(build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443, src))));
    back1(build_frame(reply_to(o, kInternet)), kInternet);
    return o;
  }
  void tcp_from_inside(uint8_t flags) {
    auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
    s.tcp_flags = flags;
    out1(build_frame(s));
  }
  void tcp_from_outside(const Parsed& o, uint8_t flags) {
    auto r = reply_to(o, kInternet);
    r.tcp_flags = flags;
    back1(build_frame(r));
  }
  void wait_s(uint32_t s) {
    p.advance(s * 1000);
    p.expire_all();
  }
  // Whether a reply to `o` still reaches the inside.
  bool alive(const Parsed& o) {
    auto r = reply_to(o, kInternet);
    r.tcp_flags = RTE_TCP_ACK_FLAG;
    p.rx(kInternet, build_frame(r));
    return ipv4_only(p.out(kInside)).size() == 1;
  }
  // The port comes back: another host asking for 40000 (port preservation) gets it.
  uint16_t port_for_another_host(uint8_t proto) {
    return parse_frame(out1(build_frame(client(proto, "203.0.113.77", 40000, 443, "192.168.10.9")))).sport;
  }
};

TEST_F(NatTimeouts, EstablishedTcpOutlivesTheTransitoryTimeout) {
  const Parsed o = open_tcp();
  wait_s(20);
  EXPECT_TRUE(alive(o));
  EXPECT_EQ(active_sessions(p), 1u);
}

TEST_F(NatTimeouts, RstMovesTheSessionToTheTransitoryTimeout) {
  const Parsed o = open_tcp();
  tcp_from_inside(RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG);
  EXPECT_EQ(active_sessions(p), 1u) << "RST does not delete the session at once";
  wait_s(9);
  EXPECT_EQ(active_sessions(p), 1u);
  wait_s(2);
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_FALSE(alive(o));
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
  EXPECT_EQ(port_for_another_host(IPPROTO_TCP), 40000) << "the port was returned";
}

// RFC 7857 2.2: a reset session waits out the transitory timeout only "if no packets
// are received". An RST both ends ignored (out of window: RFC 5961) is followed by
// traffic both ways, and the connection keeps its established timeout.
TEST_F(NatTimeouts, AnRstTheEndsIgnoredLeavesTheSessionEstablished) {
  const Parsed o = open_tcp();
  tcp_from_outside(o, RTE_TCP_RST_FLAG);  // e.g. spoofed, outside the window
  tcp_from_inside(RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG);
  tcp_from_outside(o, RTE_TCP_ACK_FLAG);
  wait_s(20);
  EXPECT_EQ(active_sessions(p), 1u);
  EXPECT_TRUE(alive(o));
  // A later reset counts afresh: traffic heard before it does not clear it.
  tcp_from_inside(RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG);
  wait_s(11);
  EXPECT_EQ(active_sessions(p), 0u);
}

// After a real reset only the other side's packets in flight follow (the reset end
// answers them with RSTs): the session still goes on the transitory timeout.
TEST_F(NatTimeouts, PacketsFromOneSideAfterAnRstDoNotRevive) {
  const Parsed o = open_tcp();
  tcp_from_outside(o, RTE_TCP_RST_FLAG);                // one the client ignores, talking on:
  tcp_from_inside(RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG);  // heard before the reset below: forgotten by it
  tcp_from_inside(RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG);
  tcp_from_outside(o, RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG);  // in flight when the RST left
  tcp_from_outside(o, RTE_TCP_ACK_FLAG);
  wait_s(11);
  EXPECT_EQ(active_sessions(p), 0u);
}

TEST_F(NatTimeouts, FinFromBothSidesMovesToTransitory) {
  const Parsed o = open_tcp();
  tcp_from_inside(RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG);
  wait_s(20);
  EXPECT_TRUE(alive(o)) << "one FIN: still established";
  tcp_from_outside(o, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG);
  wait_s(11);
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_FALSE(alive(o));
  EXPECT_EQ(port_for_another_host(IPPROTO_TCP), 40000);
}

// A client reuses a closed connection's 5-tuple (its session still waits out the
// transitory timeout): the new connection starts over, so once the server answers
// it lives on the established timeout, not the closed one's 10 s.
TEST_F(NatTimeouts, ANewConnectionOnAClosedOnesTupleStartsOver) {
  for (uint8_t close : {uint8_t(RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG), uint8_t(RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG)}) {
    const Parsed o = open_tcp();
    tcp_from_inside(close);
    if (close & RTE_TCP_FIN_FLAG) tcp_from_outside(o, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG);
    wait_s(2);
    const Parsed again = open_tcp();  // SYN from the client, SYN+ACK back, same tuple and session
    EXPECT_EQ(again.sport, o.sport);
    EXPECT_EQ(active_sessions(p), 1u);
    wait_s(20);
    EXPECT_TRUE(alive(again)) << "the reused tuple kept the closed connection's transitory timeout";
    // Clean up for the next round: close it and let it go.
    tcp_from_inside(RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG);
    wait_s(11);
    ASSERT_EQ(active_sessions(p), 0u);
  }
  // A SYN+ACK from the client (not a new connection) does not reset anything.
  const Parsed o = open_tcp();
  tcp_from_inside(RTE_TCP_RST_FLAG | RTE_TCP_ACK_FLAG);
  tcp_from_inside(RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
  wait_s(11);
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_FALSE(alive(o));
}

TEST_F(NatTimeouts, SynWithoutReplyIsTransitory) {
  out1(build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443)));
  wait_s(11);
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_EQ(port_for_another_host(IPPROTO_TCP), 40000);
}

TEST_F(NatTimeouts, UdpAndIcmpExpireOnTheirTimeouts) {
  const auto u = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53))));
  const auto i = parse_frame(out1(build_frame(client(IPPROTO_ICMP, "203.0.113.10", 40000, 0))));
  wait_s(4);
  back1(build_frame(reply_to(u, kInternet)));  // refreshes UDP only
  wait_s(2);
  EXPECT_EQ(active_sessions(p), 1u) << "ICMP idle 6 s > 5 s";
  p.rx(kInternet, build_frame(reply_to(i, kInternet)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  wait_s(27);
  EXPECT_EQ(active_sessions(p), 1u) << "UDP idle 29 s";
  wait_s(2);
  EXPECT_EQ(active_sessions(p), 0u);
  EXPECT_EQ(port_for_another_host(IPPROTO_UDP), 40000);
  EXPECT_EQ(p.ctx.sessions[0]->stats().expired[nat::proto_class(IPPROTO_UDP)].get(), 1u);
  EXPECT_EQ(p.ctx.sessions[0]->stats().expired[nat::proto_class(IPPROTO_ICMP)].get(), 1u);
}

std::string small_port_range(bool overlapping) {
  return with(kLabConfig, "from = [\"192.168.0.0/16\"]", "from = [\"192.168.0.0/16\"]\nports = \"1024-1031\"") +
         "[nat]\nport_overlapping = " + (overlapping ? "true" : "false") + "\n" + kTimeouts;
}

class NatExhaustion : public Nat {
 protected:
  explicit NatExhaustion(bool overlapping = false) : Nat(small_port_range(overlapping)) {}
  std::vector<Parsed> fill(const char* dst = "203.0.113.10") {
    std::vector<Parsed> v;
    for (uint16_t i = 0; i < 8; ++i) {
      const auto f = build_frame(client(IPPROTO_UDP, dst, static_cast<uint16_t>(50000 + i), 80));
      v.push_back(parse_frame(out1(f)));
      EXPECT_GE(v.back().sport, 1024);
      EXPECT_LE(v.back().sport, 1031);
    }
    return v;
  }
};

TEST_F(NatExhaustion, NoFreePortDropsTheNewFlowAndExistingOnesGoOn) {
  const auto flows = fill();
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 50100, 80)));
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.11", 50101, 80)));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoPort), 2u);
  EXPECT_EQ(p.ctx.sessions[0]->stats().no_port.get(), 2u);
  for (uint16_t i = 0; i < 8; ++i) {
    out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(50000 + i), 80)));
    EXPECT_EQ(parse_frame(back1(build_frame(reply_to(flows[i], kInternet)))).dport, 50000 + i);
  }
  // TCP and ICMP have ports of their own.
  out1(build_frame(client(IPPROTO_TCP, "203.0.113.10", 50100, 80)));
  // Once a session expires its port serves a new flow.
  p.advance(31'000);
  p.expire_all();
  EXPECT_EQ(ipstr(parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.10", 50100, 80)))).src),
            "10.0.3.10");
}

class NatOverlapping : public NatExhaustion {
 protected:
  NatOverlapping() : NatExhaustion(true) {}
};

TEST_F(NatOverlapping, PortsAreSharedAcrossDestinationsButNeverWithinOne) {
  fill("203.0.113.10");
  // Another destination: an outside port is shared, the 5-tuples stay unique.
  const auto shared = parse_frame(out1(build_frame(client(IPPROTO_UDP, "203.0.113.11", 50100, 80))));
  EXPECT_GE(shared.sport, 1024);
  EXPECT_LE(shared.sport, 1031);
  // The same destination ip:port: every 5-tuple toward it is taken.
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 50101, 80)));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoPort), 1u);
  // The shared port's replies go to the right inside endpoints.
  EXPECT_EQ(parse_frame(back1(build_frame(reply_to(shared, kInternet)))).dport, 50100);
}

TEST(NatTableFull, AFullTableDropsNewFlowsAndKeepsOldOnes) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nmax_sessions = 64\n");  // the smallest table
  lab_neighbours(p);
  std::vector<Parsed> flows;
  for (uint16_t i = 0; i < 64; ++i) {
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(50000 + i), 80)));
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u);
    flows.push_back(parse_frame(out[0]));
  }
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 50100, 80)));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropTableFull), 1u);
  for (const auto& o : flows) {
    p.rx(kInternet, build_frame(reply_to(o, kInternet)));
    EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u);
  }
}

// Above 32k active sessions a new flow's outside address is guessed (the last one
// an unpooled rule gave) to prefetch its port; with every port of the address in use
// the prefetch stage also draws the first port to share. 33,000 flows over 8 ports
// toward 5,000 destinations (up to 7 per destination: port overlapping must pass over
// the ports a destination already sees), then bursts that take that path: every flow
// translated once, every outside 5-tuple unique, replies find their flow, and the
// drawn-ahead probes were used.
TEST(NatAtScale, OverlappingBeyondThirtyTwoThousandSessions) {
  Pipeline p(with(kLabConfig, "from = [\"192.168.0.0/16\"]", "from = [\"192.168.0.0/16\"]\nports = \"1024-1031\"") +
             "[nat]\nport_overlapping = true\nmax_sessions = 65536\n");
  lab_neighbours(p);
  const auto dst_of = [](uint32_t f) { return htonl(0x0b000000u + f); };  // 11.0.0.0/8: default route
  uint32_t f = 0;
  const auto burst = [&](uint32_t n) {
    std::vector<std::vector<uint8_t>> b;
    for (uint32_t i = 0; i < n; ++i, ++f) {
      PacketSpec s = client(IPPROTO_UDP, "203.0.113.1", static_cast<uint16_t>(1024 + f % 60000), 53,
                            f % 2 ? "192.168.20.1" : "192.168.20.2");
      s.dst = dst_of(f % 5000);
      b.push_back(build_frame(s));
    }
    p.rx(kInside, b);
    return ipv4_only(p.out(kInternet));
  };
  while (f < 33000) ASSERT_EQ(burst(32).size(), 32u) << "at flow " << f;
  ASSERT_GE(active_sessions(p), 33000u);
  const uint64_t drawn = p.ctx.sessions[0]->stats().first_probes.get();
  std::set<std::pair<uint32_t, uint16_t>> seen;  // (remote, outside port): unique per remote
  std::vector<Parsed> outs;
  std::vector<uint32_t> flow_of;
  for (int b = 0; b < 8; ++b) {
    const uint32_t first = f;
    const auto out = burst(32);
    ASSERT_EQ(out.size(), 32u);
    for (size_t i = 0; i < out.size(); ++i) {  // all misses: resolved in arrival order
      const Parsed o = parse_frame(out[i]);
      EXPECT_EQ(o.dst, dst_of((first + static_cast<uint32_t>(i)) % 5000));
      flow_of.push_back(first + static_cast<uint32_t>(i));
      EXPECT_EQ(ipstr(o.src), "10.0.3.10");
      EXPECT_GE(o.sport, 1024);
      EXPECT_LE(o.sport, 1031);
      EXPECT_TRUE(seen.insert({o.dst, o.sport}).second);
      outs.push_back(o);
    }
  }
  EXPECT_EQ(p.ctx.sessions[0]->stats().collisions.get(), 0u);
  EXPECT_EQ(all_drops(p), 0u);
  // Some of the 256 flows shared the drawn-ahead port: their destination already sees
  // 6 of the 8 ports, so ~1 in 4 draws names a port still free toward it (~60 expected).
  EXPECT_GE(p.ctx.sessions[0]->stats().first_probes.get() - drawn, 16u);
  for (size_t i = 0; i < outs.size(); ++i) {
    p.rx(kInternet, build_frame(reply_to(outs[i], kInternet)));
    const auto back = ipv4_only(p.out(kInside));
    ASSERT_EQ(back.size(), 1u);
    const Parsed r = parse_frame(back[0]);
    EXPECT_EQ(ipstr(r.dst), flow_of[i] % 2 ? "192.168.20.1" : "192.168.20.2");
    EXPECT_EQ(r.dport, 1024 + flow_of[i] % 60000);
  }
}

// Several packets of one new flow in one burst: the first creates the session, the
// others must find it (the burst's bulk lookup ran before it existed), not try to
// create it again and collide.
TEST_F(Nat, NewFlowTwiceInOneBurstUsesOneSession) {
  auto u = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  auto t = client(IPPROTO_TCP, "203.0.113.11", 40001, 443);
  auto e = client(IPPROTO_ICMP, "203.0.113.12", 7, 0);
  const auto fu = build_frame(u), ft = build_frame(t), fe = build_frame(e);
  p.rx(kInside, {fu, ft, fu, fe, ft, fu, fe});
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 7u);
  for (size_t i : {0u, 2u, 5u}) EXPECT_EQ(out[i], expected(fu, outbound(40000))) << i;
  for (size_t i : {1u, 4u}) EXPECT_EQ(out[i], expected(ft, outbound(40001))) << i;
  EXPECT_EQ(out[3], out[6]);  // the same echo request, translated the same way
  EXPECT_EQ(active_sessions(p), 3u);
  const auto& st = p.ctx.sessions[0]->stats();
  EXPECT_EQ(st.collisions.get(), 0u);
  EXPECT_EQ(st.no_port.get(), 0u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::in2out), 7u);
}

// A full burst of new flows, some reached two or three times: each distinct flow
// gets one session, and every repeat finds it. (The worker skips the second lookup
// of a miss unless an earlier miss of the burst shares its 6-bit tag: 20 flows in 64
// tags share some, which must only cost a lookup, never a second session.)
TEST_F(Nat, BurstOfNewFlowsWithRepeatsGetsOneSessionEach) {
  std::vector<std::vector<uint8_t>> burst;
  std::vector<uint16_t> flow_of;
  for (uint16_t i = 0; i < 32; ++i) {
    const uint16_t f = i < 20 ? i : static_cast<uint16_t>((i * 7) % 20);
    burst.push_back(build_frame(client(IPPROTO_UDP, "203.0.113.30", static_cast<uint16_t>(42000 + f), 53)));
    flow_of.push_back(f);
  }
  p.rx(kInside, burst);
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 32u);
  // All misses: resolved in arrival order, so out[i] is burst[i] translated.
  std::map<uint16_t, uint16_t> port_of_flow;  // flow -> its outside port
  std::set<uint16_t> ports;
  for (size_t i = 0; i < out.size(); ++i) {
    const Parsed o = parse_frame(out[i]);
    EXPECT_EQ(ipstr(o.src), "10.0.3.10");
    const auto [it, first] = port_of_flow.emplace(flow_of[i], o.sport);
    if (first) ports.insert(o.sport);
    EXPECT_EQ(it->second, o.sport) << "flow " << flow_of[i] << " changed outside port at packet " << i;
  }
  EXPECT_EQ(ports.size(), 20u) << "distinct flows, distinct outside ports";
  for (const auto& [flow, port] : port_of_flow) EXPECT_EQ(port, 42000 + flow) << "port preserved";
  EXPECT_EQ(active_sessions(p), 20u);
  const auto& st = p.ctx.sessions[0]->stats();
  EXPECT_EQ(st.collisions.get(), 0u);
  EXPECT_EQ(st.no_port.get(), 0u);
  EXPECT_EQ(all_drops(p), 0u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::in2out), 32u);
}

// A burst mixing an established flow with new ones: the established packets are
// translated first, while what the new flows' sessions need is prefetched; every
// packet still comes out translated once, and each flow's packets keep their order.
TEST_F(Nat, EstablishedAndNewFlowsInOneBurstKeepEachFlowsOrder) {
  const auto b = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  p.rx(kInside, build_frame(b));  // B is established
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  std::vector<std::vector<uint8_t>> burst;
  std::vector<PacketSpec> specs;
  for (uint16_t i = 0; i < 12; ++i) {
    // B, then two new flows (one reached twice), interleaved; ip_id numbers each flow's packets.
    auto s = i % 3 == 0 ? b : client(IPPROTO_UDP, "203.0.113.20", static_cast<uint16_t>(41000 + i % 3), 53);
    s.ip_id = static_cast<uint16_t>(100 + i);
    specs.push_back(s);
    burst.push_back(build_frame(s));
  }
  p.rx(kInside, burst);
  const auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), burst.size());
  std::map<uint16_t, std::vector<uint16_t>> ids_by_port;  // outside port -> ip ids in output order
  for (const auto& f : out) {
    const Parsed o = parse_frame(f);
    EXPECT_EQ(ipstr(o.src), "10.0.3.10");
    ids_by_port[o.sport].push_back(o.ip_id);
  }
  ASSERT_EQ(ids_by_port.size(), 3u);
  for (const auto& [port, ids] : ids_by_port) {
    EXPECT_EQ(ids.size(), 4u) << port;
    EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end())) << "flow via port " << port << " reordered";
  }
  EXPECT_EQ(active_sessions(p), 3u);
  EXPECT_EQ(all_drops(p), 0u);
}

// Default deny; TCP 443 and ICMP allowed from the clients.
const std::string kAcl = std::string(kLabConfig) +
                         "[acl_default]\naction = \"deny\"\n"
                         "[[acl]]\naction = \"deny\"\ndst = \"203.0.113.66/32\"\n"
                         "[[acl]]\naction = \"allow\"\nsrc = \"192.168.0.0/16\"\nprotocol = \"tcp\"\n"
                         "dst_ports = \"443\"\n"
                         "[[acl]]\naction = \"allow\"\nsrc = \"192.168.0.0/16\"\nprotocol = \"icmp\"\n";

class NatAcl : public Nat {
 protected:
  NatAcl() : Nat(kAcl) {}
};

TEST_F(NatAcl, FirstMatchDecidesAndRepliesOfAllowedFlowsPass) {
  const auto o = parse_frame(out1(build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443))));
  // The reply matches no allow rule, but it belongs to an allowed flow.
  back1(build_frame(reply_to(o, kInternet)));
  const auto e = parse_frame(out1(build_frame(client(IPPROTO_ICMP, "203.0.113.10", 9, 0))));
  back1(build_frame(reply_to(e, kInternet)));
  p.rx(kInside, {build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)),
                 build_frame(client(IPPROTO_TCP, "203.0.113.10", 40001, 80)),
                 build_frame(client(IPPROTO_TCP, "203.0.113.66", 40002, 443))});  // deny rule first
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 3u);
  // Unsolicited inbound traffic never reaches the inside.
  auto in = reply_to(o, kInternet);
  in.sport = 443;
  in.dport = 40001;
  p.rx(kInternet, build_frame(in));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
  EXPECT_EQ(active_sessions(p), 2u);
}

}  // namespace
}  // namespace natgw::test
