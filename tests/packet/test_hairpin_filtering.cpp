// nat.filtering = "endpoint-independent" and nat.hairpinning through the whole
// pipeline: which unsolicited packets open a session and where they go, the
// hairpinned frame byte for byte (both translations, one TTL decrement, checksums
// from scratch), the hole punch two inside endpoints do through their outside
// addresses, and both across two workers.
#include <gtest/gtest.h>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

const std::string kEif = "[nat]\nfiltering = \"endpoint-independent\"\n";
const std::string kHairpin = "[nat]\nhairpinning = true\n";
const std::string kBoth = "[nat]\nhairpinning = true\nfiltering = \"endpoint-independent\"\n";
constexpr const char* kX = "10.0.3.10";  // natgw's internet address: the mapped address of every test flow
constexpr const char* kA = "192.168.10.2";
constexpr const char* kB = "192.168.10.3";

// A packet from remote `src`:`sport` to our outside address:`dport`, arriving on the internet side.
PacketSpec unsolicited(uint8_t proto, const char* src, uint16_t sport, uint16_t dport) {
  PacketSpec r;
  r.src_mac = mac(kInternetGwMac);
  r.dst_mac = our_mac(kInternet);
  r.src = ip(src);
  r.dst = ip(kX);
  r.proto = proto;
  r.sport = sport;
  r.dport = dport;
  if (proto == IPPROTO_TCP) r.tcp_flags = RTE_TCP_SYN_FLAG;
  return r;
}

// A frame from inside host `host`:`sport` (behind `hop`) to our outside address:`dport`.
PacketSpec to_outside_address(uint8_t proto, const char* host, uint16_t sport, uint16_t dport,
                              uint8_t hop = kTgwMac) {
  auto s = client(proto, kX, sport, dport, host);
  s.src_mac = mac(hop);
  return s;
}

class Filtering : public ::testing::Test {
 protected:
  explicit Filtering(const std::string& nat, uint16_t workers = 1) : p(std::string(kLabConfig) + nat, workers) {
    lab_neighbours(p);
  }
  // An inside endpoint's flow to a remote: returns what natgw sent out (its mapping).
  Parsed open(uint8_t proto, const char* host, uint16_t sport, const char* dst = "203.0.113.10",
              uint16_t dport = 53, uint8_t hop = kTgwMac, uint16_t w = 0) {
    auto s = client(proto, dst, sport, dport, host);
    s.src_mac = mac(hop);
    p.rx(kInside, build_frame(s), w);
    auto out = ipv4_only(p.out(kInternet));
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? Parsed{} : parse_frame(out[0]);
  }
  Pipeline p;
};

// ---------------------------------------------------------------- endpoint-independent filtering

class Eif : public Filtering {
 protected:
  Eif() : Filtering(kEif) {}
};

TEST_F(Eif, AnyRemoteReachesAMappedPortAndTheReplyKeepsTheMapping) {
  for (uint8_t proto : {IPPROTO_UDP, IPPROTO_TCP}) {
    const Parsed o = open(proto, kA, 40000, "203.0.113.10", 443);
    EXPECT_EQ(o.src, ip(kX));
    // Another host and port, never contacted: let in, to the inside endpoint, via the hop it uses.
    auto u = unsolicited(proto, "198.18.7.7", 7777, o.sport);
    u.payload.assign(31, 0x42);
    const auto in = build_frame(u);
    p.rx(kInternet, in);
    auto back = ipv4_only(p.out(kInside));
    ASSERT_EQ(back.size(), 1u) << int(proto);
    EXPECT_EQ(back[0], expected(in, {.dst = ip(kA), .dport = 40000, .src_mac = our_mac(kInside),
                                     .dst_mac = mac(kTgwMac)}));
    EXPECT_TRUE(checksums_exact(back[0]));
    // The endpoint's answer leaves from the same outside address:port (the one mapping).
    auto reply = client(proto, "198.18.7.7", 40000, 7777, kA);
    reply.tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
    p.rx(kInside, build_frame(reply));
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u);
    const Parsed r = parse_frame(out[0]);
    EXPECT_EQ(r.src, ip(kX));
    EXPECT_EQ(r.sport, o.sport);
    EXPECT_EQ(r.dst, ip("198.18.7.7"));
  }
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 2u);
  EXPECT_EQ(active_sessions(p), 4u);
  EXPECT_EQ(all_drops(p), 0u);
}

TEST_F(Eif, NothingOpensWhereNoMappingIs) {
  const Parsed o = open(IPPROTO_UDP, kA, 40000);
  p.rx(kInternet, {build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, static_cast<uint16_t>(o.sport + 1))),
                   build_frame(unsolicited(IPPROTO_TCP, "198.18.7.7", 7777, o.sport))});  // UDP's port, not TCP's
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 2u);
  EXPECT_EQ(active_sessions(p), 1u);
  // Once the mapping's sessions have expired, its port is closed again.
  p.advance(301'000);
  p.expire_all();
  ASSERT_EQ(active_sessions(p), 0u);
  p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, o.sport)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 3u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 0u);
}

// Without hairpinning, an inside host's packet to a mapped port is not an outside
// endpoint's: it opens nothing (it would reach the peer with its inside source).
// The sender is on-link on the inside interface, so only that rule can stop it.
TEST(EifNoHairpin, AnInsideHostIsNotARemoteEndpoint) {
  Pipeline p(with(kLabConfig, "from = [\"192.168.0.0/16\"]", "from = [\"192.168.0.0/16\", \"10.0.1.0/24\"]") + kEif);
  lab_neighbours(p);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, kA)));
  const Parsed ma = parse_frame(ipv4_only(p.out(kInternet)).at(0));
  auto s = to_outside_address(IPPROTO_UDP, "10.0.1.50", 40001, ma.sport, 0x50);
  p.rx(kInside, build_frame(s));
  for (uint16_t i : {kInside, kEndpoint, kInternet}) EXPECT_TRUE(ipv4_only(p.out(i)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 0u);
  EXPECT_EQ(active_sessions(p), 1u);
}

TEST_F(Eif, EachEndpointIsReachedThroughItsOwnPreviousHop) {
  const Parsed a = open(IPPROTO_UDP, kA, 40000, "203.0.113.10", 53, 0x71);
  const Parsed b = open(IPPROTO_UDP, kB, 40000, "203.0.113.10", 53, 0x72);
  ASSERT_NE(a.sport, b.sport);
  for (auto [o, host, hop] : {std::tuple{a, kA, 0x71}, std::tuple{b, kB, 0x72}}) {
    p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, o.sport)));
    auto back = ipv4_only(p.out(kInside));
    ASSERT_EQ(back.size(), 1u);
    const Parsed r = parse_frame(back[0]);
    EXPECT_EQ(r.dst, ip(host));
    EXPECT_TRUE(same_mac(r.dst_mac, mac(static_cast<uint8_t>(hop))));
  }
  // The hop an endpoint's latest new flow came from (the TGW ENI failed over).
  open(IPPROTO_UDP, kA, 40000, "203.0.113.20", 53, 0x73);
  p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.9.9", 7777, a.sport)));
  auto back = ipv4_only(p.out(kInside));
  ASSERT_EQ(back.size(), 1u);
  EXPECT_TRUE(same_mac(parse_frame(back[0]).dst_mac, mac(0x73)));
}

class EifAcl : public Filtering {
 protected:
  EifAcl() : Filtering(kEif + "[[acl]]\naction = \"deny\"\ndst = \"198.18.0.0/16\"\n[acl_default]\naction = \"allow\"\n") {}
};

TEST_F(EifAcl, TheAclJudgesAnInboundSessionAsTheOutboundFlowItIs) {
  const Parsed o = open(IPPROTO_UDP, kA, 40000);
  p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, o.sport)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropAcl), 1u);
  p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "203.0.113.99", 7777, o.sport)));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u);
}

// A port shared by several mappings (RFC 7857 overlapping, when ports run short) has
// no one endpoint: nothing opens there; the other ports still open.
TEST(EifShared, ASharedPortOpensNothing) {
  Pipeline p(with(kLabConfig, "from = [\"192.168.0.0/16\"]", "from = [\"192.168.0.0/16\"]\nports = \"1024-1031\"") +
             "[nat]\nport_overlapping = true\nfiltering = \"endpoint-independent\"\n");
  lab_neighbours(p);
  std::vector<uint16_t> ports;
  for (uint16_t i = 0; i < 8; ++i) {
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", static_cast<uint16_t>(50000 + i), 80)));
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u);
    ports.push_back(parse_frame(out[0]).sport);
  }
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.11", 50100, 80)));  // shares one of the 8
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const uint16_t shared = parse_frame(out[0]).sport;
  for (uint16_t port : ports) {
    p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, port)));
    EXPECT_EQ(ipv4_only(p.out(kInside)).size(), port == shared ? 0u : 1u) << port;
  }
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
}

// Past the hop table's room (192 previous hops a worker), an endpoint is reached by
// its route: only when one leads inside, not the way the remote is.
TEST(EifHops, BeyondTheHopTableTheRouteInsideIsUsedIfThereIsOne) {
  for (bool inside_route : {false, true}) {
    Pipeline p(std::string(kLabConfig) + (inside_route ? "[[route]]\nprefix = \"192.168.0.0/16\"\nvia = \"10.0.1.1\"\ninterface = \"inside\"\n" : "") + kEif);
    lab_neighbours(p);
    Parsed last;
    for (int i = 0; i < 200; ++i) {
      const std::string h = "192.168.20." + std::to_string(i + 1);
      auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53, h.c_str());
      s.src_mac = rte_ether_addr{{0x02, 0, 0, 0, 1, static_cast<uint8_t>(i)}};  // a hop per host (on-link clients)
      p.rx(kInside, build_frame(s));
      auto out = ipv4_only(p.out(kInternet));
      ASSERT_EQ(out.size(), 1u);
      last = parse_frame(out[0]);
    }
    p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, last.sport)));
    auto back = ipv4_only(p.out(kInside));
    if (inside_route) {
      ASSERT_EQ(back.size(), 1u);
      EXPECT_EQ(parse_frame(back[0]).dst, ip("192.168.20.200"));
      EXPECT_TRUE(same_mac(parse_frame(back[0]).dst_mac, mac(kTgwMac)));
    } else {
      EXPECT_TRUE(back.empty());
      EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty()) << "never out toward the internet";
      EXPECT_EQ(drops(p, dp::kDropNoRoute), 1u);
    }
  }
}

// ---------------------------------------------------------------- hairpinning

class Hairpin : public Filtering {
 protected:
  explicit Hairpin(const std::string& nat = kHairpin, uint16_t workers = 1) : Filtering(nat, workers) {}
  // What natgw must send inside for `in` (from `from_port`'s mapping `from_mapped`) to reach `host`:`port`.
  static std::vector<uint8_t> hairpinned(const std::vector<uint8_t>& in, uint16_t from_mapped, const char* host,
                                         uint16_t port, uint8_t hop = kTgwMac) {
    return expected(in, {.src = ip(kX), .dst = ip(host), .sport = from_mapped, .dport = port,
                         .src_mac = our_mac(kInside), .dst_mac = mac(hop)});
  }
};

// Two inside endpoints that learnt each other's outside address:port (from a
// rendezvous server) punch through: the first packet toward the other's mapping is
// dropped (address-and-port-dependent filtering), the other's packet then opens the
// path and both ways work. Each sees the other's outside address:port (RFC 4787 REQ-9 b).
TEST_F(Hairpin, HolePunchWithAddressAndPortDependentFiltering) {
  const Parsed ma = open(IPPROTO_UDP, kA, 40000, "203.0.113.10", 3478, kTgwMac);
  const Parsed mb = open(IPPROTO_UDP, kB, 40001, "203.0.113.10", 3478, 0x72);
  p.rx(kInside, build_frame(to_outside_address(IPPROTO_UDP, kB, 40001, ma.sport, 0x72)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
  auto s = to_outside_address(IPPROTO_UDP, kA, 40000, mb.sport);
  s.payload.assign(101, 0x33);
  s.ttl = 7;
  const auto a_to_b = build_frame(s);
  p.rx(kInside, a_to_b);
  auto got = ipv4_only(p.out(kInside));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], hairpinned(a_to_b, ma.sport, kB, 40001, 0x72)) << "one TTL decrement, exact checksums";
  EXPECT_TRUE(checksums_exact(got[0]));
  const auto b_to_a = build_frame(to_outside_address(IPPROTO_UDP, kB, 40001, ma.sport, 0x72));
  p.rx(kInside, b_to_a);
  got = ipv4_only(p.out(kInside));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], hairpinned(b_to_a, mb.sport, kA, 40000));
  for (uint16_t i : {kEndpoint, kInternet}) EXPECT_TRUE(ipv4_only(p.out(i)).empty()) << "nothing leaves";
  EXPECT_EQ(total(p, &dp::WorkerCounters::hairpinned), 2u);
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
}

TEST_F(Hairpin, AnInsideAddressArrivingFromOutsideIsNotHairpinned) {
  const Parsed ma = open(IPPROTO_UDP, kA, 40000);
  const Parsed mb = open(IPPROTO_UDP, kB, 40001);
  p.rx(kInside, build_frame(to_outside_address(IPPROTO_UDP, kB, 40001, ma.sport)));  // B's session toward A's mapping
  p.out(kInside);
  auto spoof = unsolicited(IPPROTO_UDP, kA, 40000, mb.sport);  // A's address, from the internet side
  p.rx(kInternet, build_frame(spoof));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(total(p, &dp::WorkerCounters::hairpinned), 0u);
}

// A hairpinned packet too big for the peer's link (DF set): the frag-needed goes to the
// sender, quoting what it sent (its inside address), not to its outside address.
TEST(HairpinMtu, FragNeededReachesTheSenderAsItSent) {
  // With a peer session (hairpin() refuses it), and without one, endpoint-independent
  // filtering opening it (open_inbound refuses it, after the translation).
  for (bool eif : {false, true}) {
    Pipeline p(with(kLabConfig, "address = \"10.0.2.10/24\"", "address = \"10.0.2.10/24\"\nmtu = 600") +
               (eif ? kBoth : kHairpin));
    lab_neighbours(p);
    // A behind the TGW on the inside link; B's traffic comes in on the endpoint link (MTU 600).
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, kA)));
    const Parsed ma = parse_frame(ipv4_only(p.out(kInternet)).at(0));
    auto b = client(IPPROTO_UDP, "203.0.113.10", 40001, 53, kB);
    b.src_mac = mac(kEndpointGwMac);
    b.dst_mac = our_mac(kEndpoint);
    p.rx(kEndpoint, build_frame(b));
    const Parsed mb = parse_frame(ipv4_only(p.out(kInternet)).at(0));
    if (!eif) {
      auto b_to_a = to_outside_address(IPPROTO_UDP, kB, 40001, ma.sport);  // B's session toward A's mapping
      b_to_a.src_mac = mac(kEndpointGwMac);
      b_to_a.dst_mac = our_mac(kEndpoint);
      p.rx(kEndpoint, build_frame(b_to_a));
      p.out(kInside);
    }
    auto big = to_outside_address(IPPROTO_UDP, kA, 40000, mb.sport);
    big.frag = 0x4000;  // DF
    big.payload.assign(1000, 0x77);
    p.rx(kInside, build_frame(big));
    EXPECT_TRUE(ipv4_only(p.out(kEndpoint)).empty());
    const auto back = ipv4_only(p.out(kInside));
    ASSERT_EQ(back.size(), 1u) << eif;
    const Parsed e = parse_frame(back[0]);
    EXPECT_EQ(e.icmp_type, 3);
    EXPECT_EQ(e.icmp_code, 4);
    EXPECT_EQ(e.dst, ip(kA)) << eif;
    EXPECT_EQ(e.src, ip("10.0.1.10"));
    EXPECT_TRUE(checksums_exact(back[0]));
    EXPECT_EQ(drops(p, dp::kDropMtu), 1u);
    // The quote is A's own header: its inside address and port, checksums intact.
    const size_t quote = 14 + 20 + 8;
    ASSERT_GT(back[0].size(), quote + 28);
    uint32_t qsrc;
    uint16_t qsport;
    std::memcpy(&qsrc, back[0].data() + quote + 12, 4);
    std::memcpy(&qsport, back[0].data() + quote + 20, 2);
    EXPECT_EQ(qsrc, ip(kA)) << eif;
    EXPECT_EQ(ntohs(qsport), 40000) << eif;
    EXPECT_EQ(ref_csum(back[0].data() + quote, 20), 0) << "the quoted header's checksum";
    EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 0u);
  }
}

class NoHairpin : public Hairpin {
 protected:
  NoHairpin() : Hairpin("") {}
};

TEST_F(NoHairpin, PacketsToAnOutsideAddressFromInsideAreDropped) {
  const Parsed ma = open(IPPROTO_UDP, kA, 40000);
  const Parsed mb = open(IPPROTO_UDP, kB, 40001);
  p.rx(kInside, build_frame(to_outside_address(IPPROTO_UDP, kB, 40001, ma.sport)));
  p.rx(kInside, build_frame(to_outside_address(IPPROTO_UDP, kA, 40000, mb.sport)));
  for (uint16_t i : {kInside, kEndpoint, kInternet}) EXPECT_TRUE(ipv4_only(p.out(i)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 2u);
  EXPECT_EQ(active_sessions(p), 2u);
}

class HairpinEif : public Hairpin {
 protected:
  explicit HairpinEif(uint16_t workers = 1) : Hairpin(kBoth, workers) {}
};

// With endpoint-independent filtering the first packet goes through; a TCP
// handshake between two inside hosts by their outside addresses.
TEST_F(HairpinEif, TheFirstPacketPassesAndTcpConnects) {
  const Parsed ma = open(IPPROTO_TCP, kA, 40000, "203.0.113.10", 443);
  const Parsed mb = open(IPPROTO_TCP, kB, 40001, "203.0.113.10", 443, 0x72);
  const auto syn = build_frame(to_outside_address(IPPROTO_TCP, kA, 40000, mb.sport));
  p.rx(kInside, syn);
  auto got = ipv4_only(p.out(kInside));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], hairpinned(syn, ma.sport, kB, 40001, 0x72));
  auto sa = to_outside_address(IPPROTO_TCP, kB, 40001, ma.sport, 0x72);
  sa.tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
  const auto synack = build_frame(sa);
  p.rx(kInside, synack);
  got = ipv4_only(p.out(kInside));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], hairpinned(synack, mb.sport, kA, 40000));
  EXPECT_EQ(total(p, &dp::WorkerCounters::hairpinned), 2u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 1u);
  EXPECT_EQ(all_drops(p), 0u);
  EXPECT_EQ(active_sessions(p), 4u);  // two toward the server, one each way of the hairpin
}

class HairpinEifTwoWorkers : public HairpinEif {
 protected:
  HairpinEifTwoWorkers() : HairpinEif(2) {}
  std::string host_owned_by(uint16_t w) {
    for (int i = 2; i < 250; ++i) {
      const std::string h = "192.168.10." + std::to_string(i);
      if (p.ctx.flow_owner(ip(h.c_str())) == w) return h;
    }
    ADD_FAILURE() << "no host for worker " << w;
    return kA;
  }
};

// The mapping that lets a packet in lives with the worker whose slice holds its
// port: an unsolicited packet and a hairpinned one are handed over to it from
// whichever worker they landed on.
TEST_F(HairpinEifTwoWorkers, InboundAndHairpinnedPacketsReachTheMappingsWorker) {
  const std::string a = host_owned_by(0), b = host_owned_by(1);
  const Parsed ma = open(IPPROTO_UDP, a.c_str(), 40000, "203.0.113.10", 53, kTgwMac, 0);
  const Parsed mb = open(IPPROTO_UDP, b.c_str(), 40001, "203.0.113.10", 53, kTgwMac, 1);
  for (uint16_t w : {0, 1}) {
    p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, "198.18.7.7", static_cast<uint16_t>(7000 + w), mb.sport)), w);
    auto got = ipv4_only(p.out(kInside));
    ASSERT_EQ(got.size(), 1u) << w;
    EXPECT_EQ(parse_frame(got[0]).dst, ip(b.c_str()));
  }
  const auto a_to_b = build_frame(to_outside_address(IPPROTO_UDP, a.c_str(), 40000, mb.sport));
  p.rx(kInside, a_to_b, 1);
  auto got = ipv4_only(p.out(kInside));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], hairpinned(a_to_b, ma.sport, b.c_str(), 40001));
  const auto b_to_a = build_frame(to_outside_address(IPPROTO_UDP, b.c_str(), 40001, ma.sport));
  p.rx(kInside, b_to_a, 0);
  got = ipv4_only(p.out(kInside));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0], hairpinned(b_to_a, mb.sport, a.c_str(), 40000));
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 3u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::hairpinned), 2u);
  EXPECT_EQ(all_drops(p), 0u);
  // Once each: the unsolicited packet on worker 0, A's hairpin (A's half on worker 0),
  // its second half to B's worker, and B's hairpin (B's half on worker 1).
  EXPECT_EQ(total(p, &dp::WorkerCounters::handed_off), 4u);
}

// A first fragment to an outside port is not let in: its fragment owner and the
// port's owner could hand it to each other for ever.
TEST_F(HairpinEifTwoWorkers, FirstFragmentsOpenNothingAndDoNotBounceBetweenWorkers) {
  const std::string b = host_owned_by(1);
  const Parsed mb = open(IPPROTO_UDP, b.c_str(), 40001, "203.0.113.10", 53, kTgwMac, 1);
  unsigned sent = 0;
  for (uint16_t port : {mb.sport, static_cast<uint16_t>(mb.sport + 1), static_cast<uint16_t>(1), static_cast<uint16_t>(65535)})
    for (uint16_t w : {0, 1})
      for (int src = 1; src < 5; ++src) {
        auto u = unsolicited(IPPROTO_UDP, ("198.18.7." + std::to_string(src)).c_str(), 7777, port);
        u.frag = 0x2000;  // MF
        p.rx(kInternet, build_frame(u), w);
        ++sent;
      }
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession) + drops(p, dp::kDropFragment), sent) << "each dropped once, none left in a ring";
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 0u);
}

// TCP: only a SYN opens a session, and it stays transitory until the handshake
// completes: a (spoofed) SYN holds it 240 s, not 7440, also when the inside answers.
TEST_F(Eif, OnlyASynOpensAndItStaysTransitoryUntilTheHandshakeCompletes) {
  const Parsed o = open(IPPROTO_TCP, kA, 40000, "203.0.113.10", 443);
  for (uint8_t flags : {RTE_TCP_ACK_FLAG, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, RTE_TCP_RST_FLAG, RTE_TCP_FIN_FLAG}) {
    auto u = unsolicited(IPPROTO_TCP, "198.18.7.7", 7777, o.sport);
    u.tcp_flags = flags;
    p.rx(kInternet, build_frame(u));
  }
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 4u);
  // Three remotes' SYNs: the first unanswered, the second answered but never
  // acknowledged (a spoofed source), the third a whole handshake.
  const char* remotes[] = {"198.18.1.1", "198.18.2.2", "198.18.3.3"};
  for (const char* r : remotes) p.rx(kInternet, build_frame(unsolicited(IPPROTO_TCP, r, 7777, o.sport)));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 3u);
  for (const char* r : {remotes[1], remotes[2]}) {
    auto synack = client(IPPROTO_TCP, r, 40000, 7777, kA);
    synack.tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
    p.rx(kInside, build_frame(synack));
  }
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 2u);
  auto ack = unsolicited(IPPROTO_TCP, remotes[2], 7777, o.sport);
  ack.tcp_flags = RTE_TCP_ACK_FLAG;
  p.rx(kInternet, build_frame(ack));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u);
  ASSERT_EQ(active_sessions(p), 4u);
  p.advance(241'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 1u) << "only the completed handshake is established (the outbound SYN got no answer)";
  // That remote reconnects after both sides closed: a new connection, not the closed
  // one's transitory timeout, once its handshake completes.
  for (bool inside : {true, false}) {
    if (inside) {
      auto fin = client(IPPROTO_TCP, remotes[2], 40000, 7777, kA);
      fin.tcp_flags = RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG;
      p.rx(kInside, build_frame(fin));
    } else {
      auto fin = unsolicited(IPPROTO_TCP, remotes[2], 7777, o.sport);
      fin.tcp_flags = RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG;
      p.rx(kInternet, build_frame(fin));
    }
  }
  p.rx(kInternet, build_frame(unsolicited(IPPROTO_TCP, remotes[2], 7777, o.sport)));
  auto synack = client(IPPROTO_TCP, remotes[2], 40000, 7777, kA);
  synack.tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
  p.rx(kInside, build_frame(synack));
  p.rx(kInternet, build_frame(ack));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 3u);
  p.out(kInternet);
  p.advance(241'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 1u);
}

// An outside host's bare SYN on an outbound connection's 5-tuple does not rewrite its
// state: a half-closed connection that then closes stays on the transitory timeout.
TEST_F(Eif, AnOutsideSynDoesNotRewriteAnOutboundConnection) {
  const Parsed o = open(IPPROTO_TCP, kA, 40000, "203.0.113.10", 443);
  auto synack = reply_to(o, kInternet);
  p.rx(kInternet, build_frame(synack));
  auto fin = client(IPPROTO_TCP, "203.0.113.10", 40000, 443, kA);
  fin.tcp_flags = RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG;
  p.rx(kInside, build_frame(fin));
  auto r = reply_to(o, kInternet);
  r.tcp_flags = RTE_TCP_SYN_FLAG;
  p.rx(kInternet, build_frame(r));
  r.tcp_flags = RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG;
  p.rx(kInternet, build_frame(r));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 3u);
  p.out(kInternet);
  p.advance(241'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 0u) << "closed both ways: transitory";
}

// A source a [[snat]] rule translates, arriving from outside, is spoofed: it opens
// nothing (the endpoint's reply would go to that inside host, translated).
TEST(EifSpoofedInsideSource, OpensNothingWithOrWithoutARouteInside) {
  for (bool inside_route : {false, true}) {
    Pipeline p(std::string(kLabConfig) +
               (inside_route ? "[[route]]\nprefix = \"192.168.0.0/16\"\nvia = \"10.0.1.1\"\ninterface = \"inside\"\n" : "") +
               kEif);
    lab_neighbours(p);
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40001, 53, kB)));
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u);
    p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, kA, 40000, parse_frame(out[0]).sport)));
    EXPECT_TRUE(ipv4_only(p.out(kInside)).empty()) << inside_route;
    EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
    EXPECT_EQ(active_sessions(p), 1u);
  }
}

// A packet from outside with one of our own addresses as its source is the second half
// of a hairpin only if that hairpin's first half exists: else an outside host could
// bounce an inside endpoint's replies onto another inside endpoint.
TEST_F(Eif, OurOwnAddressAsASourceFromOutsideIsNotTrusted) {
  const Parsed mb = open(IPPROTO_UDP, kB, 40001);
  const Parsed mc = open(IPPROTO_UDP, "192.168.10.4", 40002);
  p.rx(kInternet, build_frame(unsolicited(IPPROTO_UDP, kX, mc.sport, mb.sport)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
  EXPECT_EQ(active_sessions(p), 2u);
}

TEST_F(Eif, TtlOneIsAnsweredAndOpensNothing) {
  const Parsed o = open(IPPROTO_UDP, kA, 40000);
  auto u = unsolicited(IPPROTO_UDP, "198.18.7.7", 7777, o.sport);
  u.ttl = 1;
  p.rx(kInternet, build_frame(u));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  const auto icmp = ipv4_only(p.out(kInternet));
  ASSERT_EQ(icmp.size(), 1u);
  EXPECT_EQ(parse_frame(icmp[0]).icmp_type, 11);
  EXPECT_EQ(drops(p, dp::kDropTtl), 1u);
  EXPECT_EQ(active_sessions(p), 1u);
}

// Sessions opened from outside take at most a quarter of a worker's table: a flood
// of (spoofed) sources to a mapped port cannot crowd out inside flows.
TEST(EifBudget, InboundSessionsTakeAtMostAQuarterOfTheTable) {
  Pipeline p(std::string(kLabConfig) + "[nat]\nfiltering = \"endpoint-independent\"\nmax_sessions = 64\n");
  lab_neighbours(p);
  p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.10", 40000, 53, kA)));
  auto out = ipv4_only(p.out(kInternet));
  ASSERT_EQ(out.size(), 1u);
  const uint16_t mapped = parse_frame(out[0]).sport;
  ASSERT_EQ(p.ctx.sessions[0]->capacity(), 64u);
  std::vector<std::vector<uint8_t>> burst;
  for (uint32_t i = 0; i < 100; ++i) {
    const std::string src = "198.18.0." + std::to_string(i + 1);
    burst.push_back(build_frame(unsolicited(IPPROTO_UDP, src.c_str(), 7777, mapped)));
    if (burst.size() == 32 || i == 99) {
      p.rx(kInternet, burst);
      burst.clear();
    }
  }
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 16u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::inbound_sessions), 16u);
  EXPECT_EQ(p.ctx.sessions[0]->inbound_active(), 16u);
  EXPECT_EQ(drops(p, dp::kDropTableFull), 100u - 16u);
  // The rest of the table is the inside's: 47 more flows of its own.
  for (uint16_t i = 0; i < 47; ++i)
    p.rx(kInside, build_frame(client(IPPROTO_UDP, "203.0.113.11", static_cast<uint16_t>(41000 + i), 53, kA)));
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 47u);
  EXPECT_EQ(active_sessions(p), 64u);
  // Once inbound sessions expire, the budget is back.
  p.advance(301'000);
  p.expire_all();
  EXPECT_EQ(p.ctx.sessions[0]->inbound_active(), 0u);
}

}  // namespace
}  // namespace natgw::test
