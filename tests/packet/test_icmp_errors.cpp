// ICMP errors and NAT (RFC 5508): errors from outside about translated packets go
// to the inside host with the quoted packet restored; errors from inside about
// reply traffic leave with our outside address; errors natgw generates about
// reply traffic quote the packet as its sender knows it.
#include <gtest/gtest.h>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

class IcmpErrors : public ::testing::Test {
 protected:
  explicit IcmpErrors(const std::string& cfg = kLabConfig) : p(cfg) { lab_neighbours(p); }
  // Send a client frame; return what left by the internet interface.
  std::vector<uint8_t> send(const PacketSpec& s) {
    p.rx(kInside, build_frame(s));
    auto out = ipv4_only(p.out(kInternet));
    EXPECT_EQ(out.size(), 1u);
    return out.empty() ? std::vector<uint8_t>{} : out[0];
  }
  // An error about `translated` (as it left natgw), from `from`, arriving on the internet side.
  std::vector<uint8_t> error_about(const std::vector<uint8_t>& translated, const char* from, uint8_t type,
                                   uint8_t code, uint16_t mtu = 0, size_t quote_len = 548) {
    auto q = ip_of(translated);
    q[8]--;  // the packet as it reached the router: one hop further
    auto* h = reinterpret_cast<rte_ipv4_hdr*>(q.data());
    h->hdr_checksum = 0;
    h->hdr_checksum = ref_csum(h, 20);
    return build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip(from), ip("10.0.3.10"), type,
                                  code, q, mtu, quote_len);
  }
  // The error delivered to the inside host; checks the outer header.
  Parsed delivered(const std::vector<uint8_t>& err, const char* from) {
    p.rx(kInternet, err);
    auto in = ipv4_only(p.out(kInside));
    EXPECT_EQ(in.size(), 1u);
    if (in.empty()) return Parsed{};
    const Parsed e = parse_frame(in[0]);
    EXPECT_EQ(ipstr(e.src), from);
    EXPECT_EQ(ipstr(e.dst), "192.168.10.2");
    EXPECT_EQ(e.ttl, 63);
    EXPECT_TRUE(same_mac(e.dst_mac, mac(kTgwMac)));
    EXPECT_TRUE(checksums_exact(in[0]));
    return e;
  }
  // The original packet as the client sent it, one hop older: what the restored quote must be.
  static std::vector<uint8_t> quote_of_original(const PacketSpec& s, size_t len = 548) {
    auto q = ip_of(build_frame(s));
    q[8] -= 2;  // natgw's hop and the router's
    auto* h = reinterpret_cast<rte_ipv4_hdr*>(q.data());
    h->hdr_checksum = 0;
    h->hdr_checksum = ref_csum(h, 20);
    if (q.size() > len) q.resize(len);
    return q;
  }
  static std::vector<uint8_t> quote_bytes(const Parsed& e) {
    return std::vector<uint8_t>(e.l4.begin() + 8, e.l4.end());
  }
  Pipeline p;
};

TEST_F(IcmpErrors, PortUnreachableFromOutsideIsTranslatedForUdp) {
  const auto s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  const auto o = send(s);
  const Parsed e = delivered(error_about(o, "203.0.113.10", 3, 3), "203.0.113.10");
  EXPECT_EQ(e.icmp_type, 3);
  EXPECT_EQ(e.icmp_code, 3);
  const Parsed q = parse_quote(e);
  EXPECT_EQ(ipstr(q.src), "192.168.10.2");
  EXPECT_EQ(q.sport, 40000);
  EXPECT_EQ(ipstr(q.dst), "203.0.113.10");
  EXPECT_TRUE(q.l4_csum_checked);  // whole datagram quoted: its UDP checksum was fixed too
  EXPECT_EQ(quote_bytes(e), quote_of_original(s)) << "the quote is the client's own packet";
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_translated), 1u);
}

TEST_F(IcmpErrors, TimeExceededFromARouterIsTranslatedForTcp) {
  for (size_t quote_len : {548, 28}) {  // whole quote, or RFC 792's header + 8 bytes
    auto s = client(IPPROTO_TCP, "203.0.113.10", static_cast<uint16_t>(40000 + quote_len), 443);
    const auto o = send(s);
    const Parsed e = delivered(error_about(o, "198.18.0.1", 11, 0, 0, quote_len), "198.18.0.1");
    EXPECT_EQ(e.icmp_type, 11);
    const Parsed q = parse_quote(e);
    EXPECT_EQ(ipstr(q.src), "192.168.10.2");
    EXPECT_EQ(q.sport, s.sport);
    EXPECT_EQ(q.dport, 443);
    EXPECT_EQ(quote_bytes(e), quote_of_original(s, quote_len)) << quote_len;
  }
}

TEST_F(IcmpErrors, FragNeededKeepsTheNextHopMtu) {
  const auto s = client(IPPROTO_TCP, "203.0.113.10", 40000, 443);
  const auto o = send(s);
  const Parsed e = delivered(error_about(o, "198.18.0.1", 3, 4, 1280), "198.18.0.1");
  EXPECT_EQ(e.icmp_code, 4);
  EXPECT_EQ(e.l4[6] << 8 | e.l4[7], 1280);
  EXPECT_EQ(quote_bytes(e), quote_of_original(s));
}

TEST_F(IcmpErrors, ErrorsAboutEchoRequestsRestoreTheIdentifier) {
  const auto s = client(IPPROTO_ICMP, "203.0.113.10", 77, 0);
  const auto o = send(s);
  ASSERT_NE(parse_frame(o).sport, 77);  // outside identifiers come from 1024+
  const Parsed e = delivered(error_about(o, "198.18.0.1", 11, 0), "198.18.0.1");
  const Parsed q = parse_quote(e);
  EXPECT_EQ(q.icmp_type, 8);
  EXPECT_EQ(q.sport, 77);
  EXPECT_EQ(quote_bytes(e), quote_of_original(s));
}

TEST_F(IcmpErrors, ErrorsWithoutASessionAreDropped) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  auto err = error_about(o, "203.0.113.10", 3, 3);
  // Quote a port no session uses.
  auto q = ip_of(o);
  q[20] = 0x12;
  err = build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("203.0.113.10"), ip("10.0.3.10"),
                               3, 3, q);
  p.rx(kInternet, err);
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u);
}

// An error from an inside host quoting a packet no session knows: NAT has nothing to
// translate it with, and forwarding it would show the inside address outside (and
// carry whatever the host put in the quote past the ACL).
TEST_F(IcmpErrors, ErrorsFromInsideWithoutASessionDoNotLeak) {
  PacketSpec stray = client(IPPROTO_UDP, "192.168.10.2", 53, 40000);
  stray.src = ip("203.0.113.10");  // a "reply" natgw never forwarded
  const auto err = build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip("192.168.10.2"), ip("203.0.113.10"),
                                          3, 3, ip_of(build_frame(stray)));
  p.rx(kInside, err);
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty()) << "an untranslated inside address left";
  EXPECT_EQ(drops(p, dp::kDropUnsupported), 1u);
  // An error from the inside router (not a NAT source) about nothing is routed as before.
  const auto router = build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip("10.0.1.1"), ip("203.0.113.10"),
                                             3, 3, ip_of(build_frame(stray)));
  p.rx(kInside, router);
  EXPECT_EQ(ipv4_only(p.out(kInternet)).size(), 1u);
}

// Errors whose quote cannot be about one of our sessions: a quoted later fragment
// (its first bytes are payload, not ports) or a quote of a packet some other host
// sent (errors go to the quoted packet's sender).
TEST_F(IcmpErrors, ErrorsQuotingNoPacketOfOursAreDropped) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  auto frag = ip_of(o);
  frag[6] = 0x00;
  frag[7] = 0x10;  // offset 128 bytes; the "ports" are payload that happens to match
  auto* h = reinterpret_cast<rte_ipv4_hdr*>(frag.data());
  h->hdr_checksum = 0;
  h->hdr_checksum = ref_csum(h, 20);
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("203.0.113.10"),
                                         ip("10.0.3.10"), 3, 3, frag));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 1u) << "well-formed, just about nothing of ours";
  // The quote names 10.0.3.10 but the error was sent to our other address.
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("203.0.113.10"),
                                         ip("10.0.2.10"), 3, 3, ip_of(o)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropNoSession), 2u);
  EXPECT_EQ(drops(p, dp::kDropMalformed), 0u);
  // The well-formed error still passes.
  p.rx(kInternet, build_icmp_error_frame(mac(kInternetGwMac), our_mac(kInternet), ip("203.0.113.10"),
                                         ip("10.0.3.10"), 3, 3, ip_of(o)));
  EXPECT_EQ(ipv4_only(p.out(kInside)).size(), 1u);
}

class IcmpErrorsShortUdp : public IcmpErrors {
 protected:
  IcmpErrorsShortUdp() : IcmpErrors(std::string(kLabConfig) + "[timeouts]\nudp = 30\n") {}
};

TEST_F(IcmpErrorsShortUdp, AnErrorNeverRefreshesItsSession) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  p.advance(20'000);
  delivered(error_about(o, "203.0.113.10", 3, 3), "203.0.113.10");
  p.advance(11'000);
  p.expire_all();
  EXPECT_EQ(active_sessions(p), 0u) << "idle 31 s since the last real packet";
}

// An inside host (or an on-prem router) reports an error about reply traffic: it
// leaves with our outside address, and the quote shows the outside endpoint.
TEST_F(IcmpErrors, ErrorsFromInsideAboutRepliesAreTranslated) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  const Parsed po = parse_frame(o);
  const auto reply = build_frame(reply_to(po, kInternet));
  p.rx(kInternet, reply);
  auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u);
  const struct {
    const char* from;
    uint8_t type, code;
    uint16_t mtu;
  } cases[] = {{"192.168.10.2", 3, 3, 0}, {"10.0.1.1", 3, 4, 1400}};
  for (const auto& c : cases) {
    const auto err = build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip(c.from), ip("203.0.113.10"),
                                            c.type, c.code, ip_of(in[0]), c.mtu);
    p.rx(kInside, err);
    auto out = ipv4_only(p.out(kInternet));
    ASSERT_EQ(out.size(), 1u) << c.from;
    const Parsed e = parse_frame(out[0]);
    EXPECT_EQ(ipstr(e.src), "10.0.3.10") << "no inside address leaks: " << c.from;
    EXPECT_EQ(ipstr(e.dst), "203.0.113.10");
    EXPECT_EQ(e.icmp_type, c.type);
    EXPECT_EQ(e.icmp_code, c.code);
    EXPECT_EQ(e.l4[6] << 8 | e.l4[7], c.mtu);
    EXPECT_TRUE(same_mac(e.dst_mac, mac(kInternetGwMac)));
    EXPECT_TRUE(checksums_exact(out[0]));
    // The quote is the reply as its sender sent it, one hop older (natgw's hop).
    auto want = ip_of(reply);
    want[8]--;
    auto* h = reinterpret_cast<rte_ipv4_hdr*>(want.data());
    h->hdr_checksum = 0;
    h->hdr_checksum = ref_csum(h, 20);
    EXPECT_EQ(quote_bytes(e), want) << c.from;
  }
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_translated), 2u);
}

// An error from inside is translated only when it is what it claims: addressed to the
// sender of the reply it quotes, about that reply's header, and not a redirect. Else
// a host with any session could send any ICMP payload anywhere from our address.
TEST_F(IcmpErrors, ErrorsFromInsideNotAboutTheQuotedReplyAreNotTranslated) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  p.rx(kInternet, build_frame(reply_to(parse_frame(o), kInternet)));
  auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u);
  auto later_fragment = ip_of(in[0]);  // the reply's bytes as if it were a later fragment
  auto* h = reinterpret_cast<rte_ipv4_hdr*>(later_fragment.data());
  h->fragment_offset = rte_cpu_to_be_16(185);
  h->hdr_checksum = 0;
  h->hdr_checksum = ref_csum(h, 20);
  const struct {
    const char* what;
    const char* to;
    uint8_t type, code;
    std::vector<uint8_t> quote;
  } cases[] = {
      {"to another address than the quoted sender", "198.51.100.99", 3, 3, ip_of(in[0])},
      {"a redirect", "203.0.113.10", 5, 1, ip_of(in[0])},
      {"quoting a later fragment", "203.0.113.10", 3, 3, later_fragment},
  };
  uint64_t dropped = 0;
  for (const auto& c : cases) {
    p.rx(kInside, build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip("192.168.10.2"), ip(c.to), c.type,
                                         c.code, c.quote));
    EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty()) << c.what;
    EXPECT_TRUE(ipv4_only(p.out(kInside)).empty()) << c.what;
    EXPECT_EQ(drops(p, dp::kDropUnsupported), ++dropped) << c.what << ": the untranslatable error is dropped";
  }
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_translated), 0u);
}

// An ICMP error in fragments is dropped and counted (its checksum covers the whole
// datagram, and natgw does not reassemble), from either side.
TEST_F(IcmpErrors, FragmentedErrorsAreDropped) {
  const PacketSpec s = client(IPPROTO_UDP, "203.0.113.10", 40000, 53);
  const auto o = send(s);
  auto first_fragment = [](std::vector<uint8_t> f) {
    auto* h = reinterpret_cast<rte_ipv4_hdr*>(f.data() + sizeof(rte_ether_hdr));
    h->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG);
    h->hdr_checksum = 0;
    h->hdr_checksum = ref_csum(h, 20);
    return f;
  };
  p.rx(kInternet, first_fragment(error_about(o, "198.51.100.1", 3, 3)));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropUnsupported), 1u);
  p.rx(kInternet, build_frame(reply_to(parse_frame(o), kInternet)));
  auto in = ipv4_only(p.out(kInside));
  ASSERT_EQ(in.size(), 1u);
  p.rx(kInside, first_fragment(build_icmp_error_frame(mac(kTgwMac), our_mac(kInside), ip("192.168.10.2"),
                                                      ip("203.0.113.10"), 3, 3, ip_of(in[0]))));
  EXPECT_TRUE(ipv4_only(p.out(kInternet)).empty());
  EXPECT_EQ(drops(p, dp::kDropUnsupported), 2u);
  EXPECT_EQ(total(p, &dp::WorkerCounters::icmp_errors_translated), 0u);
}

// A redirect from outside is not passed to the inside host it would mislead.
TEST_F(IcmpErrors, RedirectsFromOutsideAreDropped) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  p.rx(kInternet, error_about(o, "10.0.3.1", 5, 1));
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  EXPECT_EQ(drops(p, dp::kDropUnsupported), 1u);
}

// Errors natgw itself generates about reply traffic go to the remote sender and
// quote the reply as that sender knows it (our outside address and port).
TEST_F(IcmpErrors, TimeExceededAboutAReplyQuotesItAsSent) {
  const auto o = send(client(IPPROTO_UDP, "203.0.113.10", 40000, 53));
  auto rs = reply_to(parse_frame(o), kInternet);
  rs.ttl = 1;
  const auto reply = build_frame(rs);
  p.rx(kInternet, reply);
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  auto back = ipv4_only(p.out(kInternet));
  ASSERT_EQ(back.size(), 1u);
  const Parsed e = parse_frame(back[0]);
  EXPECT_EQ(e.icmp_type, 11);
  EXPECT_EQ(ipstr(e.src), "10.0.3.10");
  EXPECT_EQ(ipstr(e.dst), "203.0.113.10");
  EXPECT_TRUE(same_mac(e.dst_mac, mac(kInternetGwMac)));
  EXPECT_TRUE(checksums_exact(back[0]));
  EXPECT_EQ(quote_bytes(e), ip_of(reply));
  EXPECT_EQ(drops(p, dp::kDropTtl), 1u);
}

class IcmpErrorsSmallInsideMtu : public IcmpErrors {
 protected:
  IcmpErrorsSmallInsideMtu()
      : IcmpErrors(with(kLabConfig, "address = \"10.0.1.10/24\"", "address = \"10.0.1.10/24\"\nmtu = 1400")) {}
};

TEST_F(IcmpErrorsSmallInsideMtu, FragNeededAboutABigReplyGoesToTheRemote) {
  const auto o = send(client(IPPROTO_TCP, "203.0.113.10", 40000, 443));
  auto rs = reply_to(parse_frame(o), kInternet);
  rs.tcp_flags = RTE_TCP_ACK_FLAG;
  rs.frag = 0x4000;  // DF
  rs.payload.assign(1460, 0x42);
  const auto reply = build_frame(rs);
  p.rx(kInternet, reply);
  EXPECT_TRUE(ipv4_only(p.out(kInside)).empty());
  auto back = ipv4_only(p.out(kInternet));
  ASSERT_EQ(back.size(), 1u);
  const Parsed e = parse_frame(back[0]);
  EXPECT_EQ(e.icmp_type, 3);
  EXPECT_EQ(e.icmp_code, 4);
  EXPECT_EQ(e.l4[6] << 8 | e.l4[7], 1400);
  EXPECT_EQ(ipstr(e.src), "10.0.3.10");
  EXPECT_EQ(ipstr(e.dst), "203.0.113.10");
  EXPECT_TRUE(checksums_exact(back[0]));
  const Parsed q = parse_quote(e);
  EXPECT_EQ(ipstr(q.dst), "10.0.3.10") << "quoted as the remote sent it";
  EXPECT_EQ(q.dport, parse_frame(o).sport);
  const auto want = ip_of(reply);
  EXPECT_EQ(quote_bytes(e), std::vector<uint8_t>(want.begin(), want.begin() + 548));
  EXPECT_EQ(drops(p, dp::kDropMtu), 1u);
}

}  // namespace
}  // namespace natgw::test
