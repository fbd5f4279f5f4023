// IPv4 forwarding through the whole pipeline: TTL and checksum, ICMP errors
// (time exceeded, unreachable) and their rate limit, echo replies for our
// addresses, route selection, ARP answers and packets held while ARP resolves.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

class Forwarding : public ::testing::Test {
 protected:
  Forwarding() : p(kForwardConfig) { lab_neighbours(p); }
  Pipeline p;
};

// Interface byte counters: a frame counts as received with its Ethernet padding and
// as sent as it left (trimmed); a packet the TX queue refuses counts as a drop only.
TEST_F(Forwarding, ByteCountersFollowTheFramesInAndOut) {
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  s.payload.clear();
  auto in = build_frame(s);
  ASSERT_EQ(in.size(), 42u);
  in.resize(60, 0);  // padded to the Ethernet minimum
  const auto& c = p.worker().counters();
  p.rx(kInside, std::vector<std::vector<uint8_t>>{in, in, in});
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 3u);
  EXPECT_EQ(c.iface[kInside].rx_packets.get(), 3u);
  EXPECT_EQ(c.iface[kInside].rx_bytes.get(), 3u * 60);
  EXPECT_EQ(c.iface[kInternet].tx_packets.get(), 3u);
  EXPECT_EQ(c.iface[kInternet].tx_bytes.get(), 3u * 42);

  p.worker().capture_tx(false);  // the real TX path, on a port that takes nothing
  p.ctx.port_paused[kInternet].store(true);
  p.rx(kInside, in);
  EXPECT_EQ(c.iface[kInside].rx_bytes.get(), 4u * 60);
  EXPECT_EQ(c.iface[kInternet].tx_packets.get(), 3u);
  EXPECT_EQ(c.iface[kInternet].tx_bytes.get(), 3u * 42);
  EXPECT_EQ(drops(p, dp::kDropTxFull), 1u);
  p.ctx.port_paused[kInternet].store(false);
  p.worker().capture_tx(true);
}

TEST_F(Forwarding, TtlIsDecrementedAndChecksumsStayExact) {
  for (uint8_t ttl : {64, 2, 255}) {
    auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
    s.ttl = ttl;
    const auto in = build_frame(s);
    p.rx(kInside, in);
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u) << "ttl " << int(ttl);
    // Only the TTL, the header checksum and the MACs change (no NAT in this config).
    EXPECT_EQ(out[0], expected(in, {.src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)}));
    EXPECT_TRUE(checksums_exact(out[0]));
    EXPECT_EQ(parse_frame(out[0]).ttl, ttl - 1);
  }
  EXPECT_EQ(total(p, &dp::WorkerCounters::forwarded), 3u);
  EXPECT_EQ(all_drops(p), 0u);
}

TEST_F(Forwarding, TtlOneGetsTimeExceeded) {
  for (uint8_t ttl : {1, 0}) {
    auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
    s.ttl = ttl;
    const auto in = build_frame(s);
    p.rx(kInside, in);
    EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
    auto back = ipv4_only(p.out(kInside));
    ASSERT_EQ(back.size(), 1u);
    const Parsed e = parse_frame(back[0]);
    EXPECT_EQ(e.icmp_type, 11);
    EXPECT_EQ(e.icmp_code, 0);
    EXPECT_EQ(ipstr(e.src), "10.0.1.10");  // the interface it arrived on
    EXPECT_EQ(ipstr(e.dst), "192.168.10.2");
    EXPECT_TRUE(same_mac(e.dst_mac, mac(kTgwMac)));
    EXPECT_TRUE(same_mac(e.src_mac, our_mac(kInside)));
    EXPECT_TRUE(checksums_exact(back[0]));
    // The quote is the packet as it arrived (it is short: all of it).
    EXPECT_EQ(std::vector<uint8_t>(e.l4.begin() + 8, e.l4.end()), ip_of(in));
  }
  EXPECT_EQ(drops(p, dp::kDropTtl), 2u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_sent), 2u);
}

TEST_F(Forwarding, NoRouteGetsNetUnreachable) {
  // The same lab without a default route.
  Pipeline q(with(kForwardConfig, "prefix = \"0.0.0.0/0\"", "prefix = \"203.0.113.0/24\""));
  lab_neighbours(q);
  const auto in = build_frame(client(IPPROTO_UDP, "8.8.8.8", 40000, 53));
  q.rx(kInside, in);
  EXPECT_TRUE(ipv4_only(q.out(kInternet)).empty());
  EXPECT_TRUE(ipv4_only(q.out(kEndpoint)).empty());
  auto back = ipv4_only(q.out(kInside));
  ASSERT_EQ(back.size(), 1u);
  const Parsed e = parse_frame(back[0]);
  EXPECT_EQ(e.icmp_type, 3);
  EXPECT_EQ(e.icmp_code, 0);
  EXPECT_EQ(ipstr(e.src), "10.0.1.10");
  EXPECT_EQ(ipstr(e.dst), "192.168.10.2");
  EXPECT_TRUE(checksums_exact(back[0]));
  EXPECT_EQ(drops(q, dp::kDropNoRoute), 1u);
  // Still routed where a route exists.
  q.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  EXPECT_EQ(ipv4_only(q.out(kInternet)).size(), 1u);
}

TEST_F(Forwarding, EchoRequestsToOurAddressesAreAnswered) {
  // Any of our addresses, asked from the inside; and the endpoint address from its own link.
  const struct {
    uint16_t iface;
    const char* from;
    const char* to;
    uint8_t nbr;
  } cases[] = {{kInside, "192.168.10.2", "10.0.1.10", kTgwMac},
               {kInside, "192.168.10.2", "10.0.3.10", kTgwMac},
               {kEndpoint, "10.0.2.1", "10.0.2.10", kEndpointGwMac}};
  for (const auto& c : cases) {
    PacketSpec s;
    s.src_mac = mac(c.nbr);
    s.dst_mac = our_mac(c.iface);
    s.src = ip(c.from);
    s.dst = ip(c.to);
    s.proto = IPPROTO_ICMP;
    s.sport = 0x1234;
    s.ttl = 17;
    p.rx(c.iface, build_frame(s));
    auto r = ipv4_only(p.out(c.iface));
    ASSERT_EQ(r.size(), 1u) << c.to;
    const Parsed e = parse_frame(r[0]);
    EXPECT_EQ(e.icmp_type, 0);
    EXPECT_EQ(e.sport, 0x1234);
    EXPECT_EQ(ipstr(e.src), c.to);
    EXPECT_EQ(ipstr(e.dst), c.from);
    EXPECT_TRUE(same_mac(e.dst_mac, mac(c.nbr)));
    EXPECT_EQ(std::vector<uint8_t>(e.l4.begin() + 8, e.l4.end()), s.payload);
    EXPECT_TRUE(checksums_exact(r[0]));
  }
  EXPECT_EQ(total(p, &dp::WorkerCounters::echo_replies), 3u);
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
}

TEST_F(Forwarding, IcmpErrorsAreRateLimited) {
  auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  s.ttl = 1;
  const auto f = build_frame(s);
  p.rx(kInside, std::vector<std::vector<uint8_t>>(30, f));
  // 200 errors/s, given out in 50 ms buckets of 10.
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 10u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_ratelimited), 20u);
  EXPECT_EQ(drops(p, dp::kDropTtl), 30u);  // every packet is dropped, answered or not
  p.advance(20);
  p.rx(kInside, std::vector<std::vector<uint8_t>>(5, f));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty()) << "the bucket refills only after 50 ms";
  p.advance(30);
  p.rx(kInside, std::vector<std::vector<uint8_t>>(25, f));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 10u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_sent), 20u);
  // One second of a TTL flood sends 200 errors, not more.
  for (int step = 0; step < 20; ++step) {
    p.advance(50);
    p.rx(kInside, std::vector<std::vector<uint8_t>>(40, f));
  }
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 200u);
}

TEST_F(Forwarding, NoIcmpErrorAboutAnIcmpError) {
  auto quote = ip_of(build_frame(client(IPPROTO_UDP, "192.168.10.2", 53, 40000, "203.0.113.10")));
  auto e = build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip("192.168.10.2"),
                                  ip("203.0.113.10"), 3, 3, quote, 0, 548, /*ttl=*/1);
  p.rx(kInside, e);
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropTtl), 1u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_sent), 0u);
}

class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    char tmpl[] = "/tmp/natgw-test-XXXXXX";
    const int fd = mkstemp(tmpl);
    EXPECT_GE(fd, 0);
    close(fd);
    path = tmpl;
    std::ofstream(path) << text;
  }
  ~TempFile() { std::remove(path.c_str()); }
  std::string path;
};

// A prefix-list route (the S3 endpoint) and the default route (internet): the
// longest prefix picks the egress interface, gateway and (with NAT) source address.
TEST(Routing, PrefixListRouteBeatsTheDefaultRoute) {
  TempFile list("# S3 in one region\n52.216.0.0/15\n198.51.100.0/24\n");
  for (const bool nat : {false, true}) {
    std::string cfg = with(kForwardConfig, "prefix = \"198.51.100.0/24\"",
                           "prefix_list = \"" + list.path + "\"");
    if (nat) cfg += "[[snat]]\nfrom = [\"192.168.0.0/16\"]\n";
    Pipeline p(cfg);
    lab_neighbours(p);
    const struct {
      const char* dst;
      uint16_t iface;
      uint8_t gw;
      const char* nat_src;
    } cases[] = {{"52.217.4.1", kEndpoint, kEndpointGwMac, "10.0.2.10"},
                 {"198.51.100.10", kEndpoint, kEndpointGwMac, "10.0.2.10"},
                 {"52.218.0.1", kInternet, kInternetGwMac, "10.0.3.10"},
                 {"8.8.8.8", kInternet, kInternetGwMac, "10.0.3.10"}};
    uint16_t sport = 40000;
    for (const auto& c : cases) {
      p.rx(kInside, build_frame(client(IPPROTO_TCP, c.dst, sport++, 443)));
      const uint16_t other = c.iface == kEndpoint ? kInternet : kEndpoint;
      EXPECT_TRUE(ipv4_only(p.out(other)).empty()) << c.dst;
      auto out = ipv4_only(p.out(c.iface));
      ASSERT_EQ(out.size(), 1u) << c.dst;
      const Parsed o = parse_frame(out[0]);
      EXPECT_TRUE(same_mac(o.dst_mac, mac(c.gw))) << c.dst;
      EXPECT_TRUE(same_mac(o.src_mac, our_mac(c.iface))) << c.dst;
      EXPECT_EQ(ipstr(o.src), nat ? c.nat_src : "192.168.10.2") << c.dst;
      EXPECT_EQ(ipstr(o.dst), c.dst);
      EXPECT_TRUE(checksums_exact(out[0]));
    }
  }
}

TEST_F(Forwarding, ArpRequestsForOurAddressesAreAnswered) {
  const rte_ether_addr bcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
  const rte_ether_addr zero{};
  const rte_ether_addr asker = mac(0x05);
  p.rx(kInside, build_arp(RTE_ARP_OP_REQUEST, asker, ip("10.0.1.5"), zero, ip("10.0.1.10"), bcast));
  auto r = p.out(kInside);
  ASSERT_EQ(r.size(), 1u);
  const ParsedArp a = parse_arp(r[0]);
  ASSERT_TRUE(a.ok);
  EXPECT_EQ(a.op, RTE_ARP_OP_REPLY);
  EXPECT_TRUE(same_mac(a.eth_dst, asker));
  EXPECT_TRUE(same_mac(a.eth_src, our_mac(kInside)));
  EXPECT_TRUE(same_mac(a.sha, our_mac(kInside)));
  EXPECT_EQ(ipstr(a.sip), "10.0.1.10");
  EXPECT_TRUE(same_mac(a.tha, asker));
  EXPECT_EQ(ipstr(a.tip), "10.0.1.5");
  EXPECT_EQ(r[0].size(), sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr));
  // The asker was learnt: traffic to it goes out without an ARP round trip.
  arp::ArpTable::Hit hit;
  ASSERT_TRUE(p.ctx.arp.lookup(ip("10.0.1.5"), hit));
  EXPECT_TRUE(same_mac(hit.mac, asker));
  EXPECT_EQ(hit.iface, kInside);

  // Not ours, or ours but on another link: no answer, nothing learnt.
  p.rx(kInside, build_arp(RTE_ARP_OP_REQUEST, mac(0x06), ip("10.0.1.6"), zero, ip("10.0.1.99"), bcast));
  p.rx(kInside, build_arp(RTE_ARP_OP_REQUEST, mac(0x07), ip("10.0.1.7"), zero, ip("10.0.3.10"), bcast));
  EXPECT_TRUE(p.out(kInside).empty());
  EXPECT_FALSE(p.ctx.arp.lookup(ip("10.0.1.6"), hit));
  EXPECT_FALSE(p.ctx.arp.lookup(ip("10.0.1.7"), hit));
  EXPECT_EQ(total(p, &dp::WorkerCounters::arp_replies_sent), 1u);
}

// Workers cache resolved next hops; a MAC change (a gratuitous ARP from a replaced
// gateway, in the same burst as traffic or between bursts) must reach the very next
// packet, for NAT sessions (which store the next hop) and plain forwarding alike.
TEST(Arp, TrafficFollowsAGatewayWhoseMacChanged) {
  for (const bool nat : {true, false}) {
    Pipeline p(nat ? std::string(kLabConfig) : kForwardConfig);
    lab_neighbours(p);
    const auto pkt = [](uint16_t sport) {
      return build_frame(client(IPPROTO_UDP, "203.0.113.10", sport, 53));
    };
    const auto gw_mac_of = [&](const std::vector<std::vector<uint8_t>>& frames) {
      std::vector<uint8_t> last;
      for (const auto& f : ipv4_only(frames)) last.push_back(parse_frame(f).dst_mac.addr_bytes[5]);
      return last;
    };
    const rte_ether_addr bcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}};
    const auto garp = [&](uint8_t last) {
      return build_arp(RTE_ARP_OP_REQUEST, mac(last), ip("10.0.3.1"), rte_ether_addr{}, ip("10.0.3.1"), bcast);
    };
    p.rx(kInside, {pkt(40000), pkt(40000)});
    EXPECT_EQ(gw_mac_of(p.out(kInternet)), (std::vector<uint8_t>{kInternetGwMac, kInternetGwMac}));
    // Between bursts: the gateway announces a new MAC.
    p.rx(kInternet, garp(0x32));
    p.rx(kInside, pkt(40000));
    EXPECT_EQ(gw_mac_of(p.out(kInternet)), (std::vector<uint8_t>{0x32})) << "nat " << nat;
    // Again, and new flows too.
    p.rx(kInternet, garp(0x33));
    p.rx(kInside, {pkt(40000), pkt(40001)});
    EXPECT_EQ(gw_mac_of(p.out(kInternet)), (std::vector<uint8_t>{0x33, 0x33})) << "nat " << nat;
    if (!nat) {
      // One burst on the internet side: transit traffic hairpinned to the gateway
      // before and after its gratuitous ARP. The burst's ARP is handled as it is
      // classified, before any of its packets is forwarded: both follow the new MAC.
      auto transit = client(IPPROTO_UDP, "203.0.113.10", 40000, 53, "198.18.0.5");
      transit.src_mac = mac(kInternetGwMac);
      transit.dst_mac = our_mac(kInternet);
      p.rx(kInternet, {build_frame(transit), garp(0x35), build_frame(transit)});
      EXPECT_EQ(gw_mac_of(p.out(kInternet)), (std::vector<uint8_t>{0x35, 0x35}));
      p.rx(kInternet, garp(0x33));
    }
    // The control side (or another worker) updates the table: seen by the next burst.
    p.neighbour(kInternet, "10.0.3.1", 0x34);
    p.rx(kInside, {pkt(40000), pkt(40002)});
    EXPECT_EQ(gw_mac_of(p.out(kInternet)), (std::vector<uint8_t>{0x34, 0x34})) << "nat " << nat;
    EXPECT_EQ(all_drops(p), 0u);
  }
}

// A neighbour that moves to another interface with the same MAC: the cached next hop
// must not keep sending it out of the old one (the route's interface no longer has it).
TEST(Arp, CachedNextHopIsDroppedWhenTheNeighbourMovesInterface) {
  Pipeline p(kForwardConfig);
  lab_neighbours(p);
  const auto pkt = build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  p.rx(kInside, pkt);
  ASSERT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  p.neighbour(kEndpoint, "10.0.3.1", kInternetGwMac);  // same MAC, now learnt on another link
  p.rx(kInside, pkt);
  const auto sent = p.out(kInternet);
  EXPECT_TRUE(ipv4_only(sent).empty());  // held while 10.0.3.1 is asked for again
  EXPECT_EQ(only(sent, RTE_ETHER_TYPE_ARP).size(), 1u);
}

// Packets handed over between workers are sent by the owner from drain_handoff, with
// no process() of its own in between: it must still see a MAC that changed.
TEST(Arp, HandedOverFlowsFollowAGatewayWhoseMacChanged) {
  Pipeline p(kLabConfig, 2);
  lab_neighbours(p);
  std::string host;
  for (int i = 2; i < 250 && host.empty(); ++i) {
    const std::string h = "192.168.10." + std::to_string(i);
    if (p.ctx.flow_owner(ip(h.c_str())) == 1) host = h;
  }
  ASSERT_FALSE(host.empty());
  const auto flow = [&](uint16_t sport) {
    return build_frame(client(IPPROTO_UDP, "203.0.113.10", sport, 53, host.c_str()));
  };
  p.rx(kInside, flow(40000), 0);  // arrives at worker 0, created and sent by worker 1
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(parse_frame(out[0]).dst_mac.addr_bytes[5], kInternetGwMac);
  EXPECT_EQ(total(p, &dp::WorkerCounters::handed_off), 1u);
  p.neighbour(kInternet, "10.0.3.1", 0x36);
  p.rx(kInside, flow(40001), 0);
  out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(parse_frame(out[0]).dst_mac.addr_bytes[5], 0x36);
  EXPECT_EQ(total(p, &dp::WorkerCounters::handed_off), 2u);
}

TEST(Arp, PacketsAreHeldWhileTheGatewayResolvesThenSent) {
  Pipeline p(kForwardConfig);  // no neighbours known
  p.advance(0);                // the first housekeeping asks for every gateway: take that out of the way
  p.out(kInternet);
  p.out(kEndpoint);
  p.out(kInside);
  std::vector<std::vector<uint8_t>> sent;
  for (uint16_t i = 0; i < 3; ++i) {
    auto s = client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(40000 + i), 53);
    sent.push_back(build_frame(s));
  }
  p.rx(kInside, sent);
  auto req = p.out(kInternet);
  ASSERT_EQ(req.size(), 1u) << "one ARP request for the gateway, no IPv4 yet";
  const ParsedArp a = parse_arp(req[0]);
  ASSERT_TRUE(a.ok);
  EXPECT_EQ(a.op, RTE_ARP_OP_REQUEST);
  EXPECT_TRUE(rte_is_broadcast_ether_addr(&a.eth_dst));
  EXPECT_TRUE(same_mac(a.sha, our_mac(kInternet)));
  EXPECT_EQ(ipstr(a.sip), "10.0.3.10");
  EXPECT_EQ(ipstr(a.tip), "10.0.3.1");

  // The gateway answers; the held packets leave, in order, to its MAC.
  p.rx(kInternet, build_arp(RTE_ARP_OP_REPLY, mac(kInternetGwMac), ip("10.0.3.1"), our_mac(kInternet),
                            ip("10.0.3.10"), our_mac(kInternet)));
  p.advance(1);
  auto out = p.out(kInternet);
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < 3; ++i)
    EXPECT_EQ(out[i], expected(sent[i], {.src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)}));
  EXPECT_EQ(drops(p, dp::kDropArpUnresolved), 0u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::arp_learned), 1u);
}

TEST(Arp, UnansweredRequestsAreRetriedThenHeldPacketsDropped) {
  Pipeline p(kForwardConfig);
  p.advance(0);
  p.out(kInternet);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53)));
  auto tip_count = [&](const std::vector<std::vector<uint8_t>>& v) {
    size_t n = 0;
    for (const auto& f : v) n += parse_arp(f).ok && parse_arp(f).tip == ip("10.0.3.1");
    return n;
  };
  EXPECT_EQ(tip_count(p.out(kInternet)), 1u);
  p.advance(500);
  EXPECT_EQ(tip_count(p.out(kInternet)), 0u) << "no retry before a second";
  p.advance(600);
  EXPECT_EQ(tip_count(p.out(kInternet)), 1u) << "retried after a second";
  EXPECT_EQ(drops(p, dp::kDropArpUnresolved), 0u);
  p.advance(2000);
  EXPECT_EQ(drops(p, dp::kDropArpUnresolved), 1u) << "given up after 3 s";
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
}

// Forward-only mode with an ACL: the ACL judges a flow's first packet.
// A function, not a global: kForwardConfig is itself a dynamically initialized global.
std::string forward_acl() {
  return kForwardConfig +
         "[acl_default]\naction = \"deny\"\n"
         "[[acl]]\naction = \"allow\"\nsrc = \"192.168.0.0/16\"\nprotocol = \"tcp\"\ndst_ports = \"443\"\n";
}

TEST(ForwardingAcl, AllowedFlowsPassAndDeniedOnesDrop) {
  Pipeline p(forward_acl());
  lab_neighbours(p);
  const auto syn = build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443));
  p.rx(kInside, syn);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0], expected(syn, {.src_mac = our_mac(kInternet), .dst_mac = mac(kInternetGwMac)}));
  p.rx(kInside, {build_frame(client(IPPROTO_TCP, "203.0.113.10", 40001, 80)),
                 build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 443))});
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 2u);
}

// Design §7: ACLs are stateful in forward-only mode too: the flow an allow rule let
// out is tracked (a pass-through session), so its replies pass though no rule
// allows them, while unsolicited packets from outside still meet the default deny.
TEST(ForwardingAcl, RepliesOfAllowedFlowsPass) {
  Pipeline p(forward_acl());
  lab_neighbours(p);
  p.rx(kInside, build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443)));
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  auto reply = reply_to(parse_frame(out[0]), kInternet);
  const auto r = build_frame(reply);
  p.rx(kInternet, r);
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u) << "the reply of an allowed flow was dropped";
  EXPECT_EQ(back[0], expected(r, {.src_mac = our_mac(kInside), .dst_mac = mac(kTgwMac)}));
  reply.dport = 40002;  // no reply: stays out
  p.rx(kInternet, build_frame(reply));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
  // Later packets of the flow, both ways, keep passing (the session's fast path).
  p.rx(kInside, build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443)));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  p.rx(kInternet, r);
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u);
  // Nothing was translated and no port was taken.
  EXPECT_EQ(p.worker().counters().in2out.get() + p.worker().counters().out2in.get(), 4u);
}

// PMTUD through a default-deny ACL: a router beyond the server sends the client
// "fragmentation needed" about the client's packet of an allowed flow; it must pass
// (design §7: what belongs to an allowed flow passes). An error about a flow the ACL
// never let through still meets the default deny.
TEST(ForwardingAcl, IcmpErrorsAboutAllowedFlowsPass) {
  Pipeline p(forward_acl());
  lab_neighbours(p);
  const auto syn = build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443));
  p.rx(kInside, syn);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const auto err = build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                          ip("192.168.10.2"), 3, 4, ip_of(out[0]), 1400);
  p.rx(kInternet, err);
  auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u) << "frag-needed about an allowed flow was dropped: a PMTUD black hole";
  const Parsed e = parse_frame(in[0]);
  EXPECT_EQ(ipstr(e.src), "198.51.100.1");
  EXPECT_EQ(e.icmp_type, 3);
  EXPECT_EQ(e.icmp_code, 4);
  EXPECT_TRUE(checksums_exact(in[0]));
  // The server's side: an error from the client about the server's reply passes too.
  auto reply = reply_to(parse_frame(out[0]), kInternet);
  p.rx(kInternet, build_frame(reply));
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u);
  p.rx(kInside, build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip("192.168.10.2"), ip("203.0.113.10"), 3,
                                       3, ip_of(back[0])));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  // About a flow that was never allowed (port 80): dropped by the ACL.
  auto other = ip_of(build_frame(client(IPPROTO_TCP, "203.0.113.10", 40001, 80)));
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("192.168.10.2"), 3, 4, other, 1400));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
  // Quoting the allowed flow but sent to another inside host: not about that host's
  // flow, so the default deny holds (else any outside party with one allowed flow
  // could reach every inside host). Nor does a redirect pass as "about" the flow.
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("192.168.10.9"), 3, 4, ip_of(out[0]), 1400));
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("192.168.10.2"), 5, 1, ip_of(out[0])));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 3u);
}

// The lab's NAT config with a route back to 172.16.0.0/12 (a network outside every
// [[snat]] from, so its flows stay untranslated), a default deny and `rules`.
std::string nat_acl(const char* rules) {
  return std::string(kLabConfig) +
         "[[route]]\nprefix = \"172.16.0.0/12\"\nvia = \"10.0.1.1\"\ninterface = \"inside\"\n"
         "[acl_default]\naction = \"deny\"\n" + rules;
}

// NAT configs track untranslated flows (sources outside every [[snat]] from) for the
// ACL too: PMTUD works for them through a default deny, as in forward-only configs.
TEST(ForwardingAcl, IcmpErrorsAboutAllowedUntranslatedFlowsPassInNatConfigs) {
  Pipeline p(nat_acl("[[acl]]\naction = \"allow\"\nprotocol = \"tcp\"\ndst_ports = \"443\"\n"));
  lab_neighbours(p);
  const auto syn = build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443, "172.16.0.5"));
  p.rx(kInside, syn);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ipstr(parse_frame(out[0]).src), "172.16.0.5") << "not a SNAT source: routed untranslated";
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("172.16.0.5"), 3, 4, ip_of(out[0]), 1400));
  auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u) << "frag-needed about an allowed routed flow was dropped";
  EXPECT_EQ(parse_frame(in[0]).icmp_code, 4);
  // To another host: the default deny.
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("172.16.0.6"), 3, 4, ip_of(out[0]), 1400));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
}

// A tracked flow's packets arriving together in its first burst: one pass-through
// session, every packet counted on it (none re-judged as a new flow).
TEST(ForwardingAcl, NewFlowTwiceInOneBurstIsTrackedOnce) {
  Pipeline p(forward_acl());
  lab_neighbours(p);
  const auto syn = build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443));
  p.rx(kInside, {syn, syn, syn});
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 3u);
  EXPECT_EQ(active_sessions(p), 1u);
  EXPECT_EQ(p.worker().counters().in2out.get(), 3u) << "later packets bypassed the session";
}

// A full burst of new tracked flows, some reached two or three times: one
// pass-through session per flow (a repeat that missed its session would be judged
// new again and collide, and be forwarded without being counted on a session).
TEST(ForwardingAcl, BurstOfNewFlowsWithRepeatsIsTrackedOncePerFlow) {
  Pipeline p(forward_acl());
  lab_neighbours(p);
  std::vector<std::vector<uint8_t>> burst;
  for (uint16_t i = 0; i < 32; ++i) {
    const uint16_t f = i < 20 ? i : static_cast<uint16_t>((i * 7) % 20);
    burst.push_back(build_frame(client(IPPROTO_TCP, "203.0.113.10", static_cast<uint16_t>(41000 + f), 443)));
  }
  p.rx(kInside, burst);
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 32u);
  EXPECT_EQ(active_sessions(p), 20u);
  EXPECT_EQ(p.worker().counters().in2out.get(), 32u) << "repeats bypassed their session";
}

// A translated flow's packets never leave with the inside address, so an error quoting
// one untranslated is no error about that flow: it meets the default deny (it used to
// match the NAT session as if it were a tracked untranslated flow).
TEST(ForwardingAcl, ErrorsQuotingATranslatedFlowUntranslatedMeetTheAcl) {
  Pipeline p(nat_acl("[[acl]]\naction = \"allow\"\nprotocol = \"udp\"\n"));
  lab_neighbours(p);
  const auto q = build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  p.rx(kInside, q);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_EQ(ipstr(parse_frame(out[0]).src), "10.0.3.10");
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("192.168.10.2"), 3, 3, ip_of(q)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
}

// Echo flows are tracked too: a router's "time exceeded" about a ping the ACL let
// out (traceroute -I) reaches the client through a default deny.
TEST(ForwardingAcl, ErrorsAboutAllowedPingsPass) {
  Pipeline p(kForwardConfig + "[acl_default]\naction = \"deny\"\n"
                              "[[acl]]\naction = \"allow\"\nsrc = \"192.168.0.0/16\"\nprotocol = \"icmp\"\n");
  lab_neighbours(p);
  p.rx(kInside, build_frame(client(IPPROTO_ICMP, "203.0.113.10", 4242, 0)));
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("198.51.100.1"),
                                         ip("192.168.10.2"), 11, 0, ip_of(out[0])));
  auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u) << "time exceeded about an allowed ping was dropped";
  EXPECT_EQ(parse_frame(in[0]).icmp_type, 11);
  EXPECT_EQ(drops(p, dp::kDropAcl), 0u);
}

// The same for untranslated traffic in a NAT config (a source outside every
// `from`): replies of an allowed flow pass, the flow keeps its addresses.
TEST(ForwardingAcl, UntranslatedFlowsInNatConfigsAreTrackedToo) {
  Pipeline p(nat_acl("[[acl]]\naction = \"allow\"\nsrc = \"172.16.0.0/12\"\nprotocol = \"udp\"\n"));
  lab_neighbours(p);
  const auto q = build_frame(client(IPPROTO_UDP, "203.0.113.10", 5353, 53, "172.16.1.2"));
  p.rx(kInside, q);
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(ipstr(parse_frame(out[0]).src), "172.16.1.2") << "not in any `from`: must stay untranslated";
  const auto r = build_frame(reply_to(parse_frame(out[0]), kInternet));
  p.rx(kInternet, r);
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u) << "the reply of an allowed untranslated flow was dropped";
  EXPECT_EQ(back[0], expected(r, {.src_mac = our_mac(kInside), .dst_mac = mac(kTgwMac)}));
}

}  // namespace
}  // namespace natgw::test

namespace natgw::test {
namespace {

// Above 32 rules the ACL classifies with rte_acl: the same first-match verdicts and
// per-rule hits through the whole pipeline.
TEST(ForwardingAcl, ManyRulesClassifyWithRteAclInThePipeline) {
  std::string cfg = forward_acl();
  for (int i = 0; i < 40; ++i)  // rules 1..40: denies for other destinations
    cfg += "[[acl]]\naction = \"deny\"\ndst = \"10.99." + std::to_string(i) + ".0/24\"\n";
  cfg += "[[acl]]\naction = \"allow\"\ndst = \"203.0.113.0/24\"\nprotocol = \"udp\"\n";  // rule 41
  Pipeline p(cfg);
  lab_neighbours(p);
  const auto& acl = *p.ctx.tables.load()->acl;
  ASSERT_TRUE(acl.uses_rte_acl());
  p.rx(kInside, build_frame(client(IPPROTO_TCP, "203.0.113.10", 40000, 443)));  // rule 0 allows
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 53)));  // rule 41 allows
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
  p.rx(kInside, build_frame(client(IPPROTO_TCP, "203.0.113.10", 40002, 80)));  // default deny
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "10.99.7.1", 40003, 53)));     // rule 8 denies
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 2u);
  EXPECT_EQ(acl.hits(0), 1u);
  EXPECT_EQ(acl.hits(8), 1u);
  EXPECT_EQ(acl.hits(41), 1u);
  EXPECT_EQ(acl.hits(acl.size()), 1u);
}

}  // namespace
}  // namespace natgw::test
