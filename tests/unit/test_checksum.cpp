// RFC 1071/1624 checksum helpers checked against a from-scratch reference over
// thousands of random headers and random field rewrites.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <array>
#include <cstring>
#include <random>
#include <vector>

#include "net/checksum.hpp"

namespace natgw::net {
namespace {

// Reference: big-endian word sum computed byte by byte, returned as the 16-bit
// value exactly as it sits in a packet (network order), like the library works.
uint32_t ref_sum(const uint8_t* p, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (len & 1) sum += static_cast<uint32_t>(p[len - 1] << 8);
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return sum;
}
uint16_t ref_finish(uint32_t sum) { return htons(static_cast<uint16_t>(~sum & 0xffff)); }

// A 20-byte IPv4 header with random fields and a correct checksum.
std::array<uint8_t, 20> random_ip_header(std::mt19937& rng) {
  std::array<uint8_t, 20> h{};
  for (auto& b : h) b = static_cast<uint8_t>(rng());
  h[0] = 0x45;
  h[10] = h[11] = 0;
  const uint16_t c = ref_finish(ref_sum(h.data(), 20));
  std::memcpy(&h[10], &c, 2);
  return h;
}
uint16_t get16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

// A UDP datagram (header + payload) between src/dst with a correct checksum
// (0 -> 0xFFFF), plus the reference verifier.
struct Udp {
  uint32_t src, dst;  // as they sit (network order)
  std::vector<uint8_t> d;
};
uint16_t udp_full_csum(const Udp& u) {
  uint8_t ph[12];
  std::memcpy(ph, &u.src, 4);
  std::memcpy(ph + 4, &u.dst, 4);
  ph[8] = 0;
  ph[9] = 17;
  ph[10] = static_cast<uint8_t>(u.d.size() >> 8);
  ph[11] = static_cast<uint8_t>(u.d.size());
  std::vector<uint8_t> tmp = u.d;
  tmp[6] = tmp[7] = 0;
  uint16_t c = ref_finish(ref_sum(tmp.data(), tmp.size(), ref_sum(ph, 12)));
  return c == 0 ? 0xffff : c;  // RFC 768: a computed zero is transmitted as all ones
}
Udp random_udp(std::mt19937& rng) {
  Udp u;
  u.src = rng();
  u.dst = rng();
  u.d.resize(8 + rng() % 64);
  for (auto& b : u.d) b = static_cast<uint8_t>(rng());
  u.d[4] = static_cast<uint8_t>(u.d.size() >> 8);
  u.d[5] = static_cast<uint8_t>(u.d.size());
  put16(&u.d[6], udp_full_csum(u));
  return u;
}

TEST(Checksum, PartialAndBufferMatchReferenceForEvenAndOddLengths) {
  std::mt19937 rng(1);
  for (int i = 0; i < 5000; ++i) {
    std::vector<uint8_t> b(rng() % 200);
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    const uint16_t lib = csum_buffer(b.data(), b.size());
    ASSERT_EQ(lib, ref_finish(ref_sum(b.data(), b.size()))) << "len " << b.size();
    // csum_partial folds to 16 bits, in the packet's byte order.
    ASSERT_EQ(csum_fold(csum_partial(b.data(), b.size())),
              b.empty() ? 0 : htons(static_cast<uint16_t>(ref_sum(b.data(), b.size()))))
        << "len " << b.size();
  }
}

TEST(Checksum, PartialChainsAcrossBuffers) {
  std::mt19937 rng(2);
  for (int i = 0; i < 1000; ++i) {
    std::vector<uint8_t> b(2 * (1 + rng() % 50));
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    const size_t cut = 2 * (rng() % (b.size() / 2));
    const uint32_t chained = csum_partial(b.data() + cut, b.size() - cut, csum_partial(b.data(), cut));
    ASSERT_EQ(csum_fold(chained), csum_fold(csum_partial(b.data(), b.size())));
  }
}

TEST(Checksum, IpAddressRewriteMatchesFullRecomputation) {
  std::mt19937 rng(3);
  for (int i = 0; i < 20000; ++i) {
    auto h = random_ip_header(rng);
    const uint16_t old_c = get16(&h[10]);
    const int field = (rng() & 1) ? 12 : 16;  // src or dst
    const uint32_t from = get32(&h[field]);
    const uint32_t to = rng();
    put32(&h[field], to);
    const uint16_t inc = csum_apply(old_c, csum_delta32(from, to));
    h[10] = h[11] = 0;
    ASSERT_EQ(inc, ref_finish(ref_sum(h.data(), 20))) << "iteration " << i;
  }
}

TEST(Checksum, TtlDecrementAndAddressRewriteCombined) {
  std::mt19937 rng(4);
  for (int i = 0; i < 20000; ++i) {
    auto h = random_ip_header(rng);
    if (h[8] == 0) continue;  // a router never forwards TTL 0
    const uint16_t old_c = get16(&h[10]);
    const uint16_t ttl_before = get16(&h[8]);
    h[8]--;
    const uint16_t ttl_after = get16(&h[8]);
    const uint32_t from = get32(&h[12]), to = rng();
    put32(&h[12], to);
    // What a session stores (a folded delta) plus the TTL delta, in one apply.
    const uint16_t folded = csum_delta_fold(csum_delta32(from, to));
    const uint16_t inc = csum_apply(old_c, folded + csum_delta16(ttl_before, ttl_after));
    h[10] = h[11] = 0;
    ASSERT_EQ(inc, ref_finish(ref_sum(h.data(), 20))) << "iteration " << i;
  }
}

TEST(Checksum, NegatedDeltaUndoesForwardDelta) {
  std::mt19937 rng(5);
  for (int i = 0; i < 20000; ++i) {
    auto h = random_ip_header(rng);
    const auto orig = h;
    const uint16_t c0 = get16(&h[10]);
    const uint32_t from = get32(&h[12]), to = rng();
    const uint16_t d = csum_delta_fold(csum_delta32(from, to));
    const uint16_t c1 = csum_apply(c0, d);
    const uint16_t c2 = csum_apply(c1, csum_delta_negate(d));
    ASSERT_EQ(c2, c0) << "iteration " << i;
    // And the header taken back really is the original with that checksum.
    put32(&h[12], to);
    put16(&h[10], c1);
    put32(&h[12], from);
    put16(&h[10], c2);
    ASSERT_EQ(0, std::memcmp(h.data(), orig.data(), 20));
  }
}

TEST(Checksum, UdpAddressAndPortRewriteMatchesFullRecomputation) {
  std::mt19937 rng(6);
  for (int i = 0; i < 20000; ++i) {
    Udp u = random_udp(rng);
    const uint16_t old_c = get16(&u.d[6]);
    const uint32_t from_ip = u.src, to_ip = rng();
    const uint16_t from_port = get16(&u.d[0]), to_port = static_cast<uint16_t>(rng());
    u.src = to_ip;
    put16(&u.d[0], to_port);
    const uint32_t delta = csum_delta32(from_ip, to_ip) + csum_delta16(from_port, to_port);
    const uint16_t inc = udp_csum_apply(old_c, csum_delta_fold(delta));
    ASSERT_EQ(inc, udp_full_csum(u)) << "iteration " << i;
    ASSERT_NE(inc, 0) << "a present UDP checksum must never become 0 (\"none\")";
  }
}

TEST(Checksum, UdpZeroChecksumStaysZero) {
  std::mt19937 rng(7);
  for (int i = 0; i < 1000; ++i) {
    const uint32_t delta = csum_delta32(rng(), rng()) + csum_delta16(static_cast<uint16_t>(rng()),
                                                                     static_cast<uint16_t>(rng()));
    ASSERT_EQ(udp_csum_apply(0, delta), 0);
  }
}

// Construct a rewrite whose correct result is a computed checksum of 0: csum_apply
// yields 0, and UDP must transmit it as 0xFFFF.
TEST(Checksum, UdpComputedZeroIsWrittenAsFfff) {
  std::mt19937 rng(8);
  int hits = 0;
  for (int i = 0; i < 200; ++i) {
    Udp u = random_udp(rng);
    const uint16_t old_c = get16(&u.d[6]);
    const uint16_t from_port = get16(&u.d[0]);
    // Sum of everything except the source port (host-order arithmetic).
    Udp z = u;
    put16(&z.d[0], 0);
    uint8_t ph[12];
    std::memcpy(ph, &z.src, 4);
    std::memcpy(ph + 4, &z.dst, 4);
    ph[8] = 0;
    ph[9] = 17;
    ph[10] = static_cast<uint8_t>(z.d.size() >> 8);
    ph[11] = static_cast<uint8_t>(z.d.size());
    std::vector<uint8_t> tmp = z.d;
    tmp[6] = tmp[7] = 0;
    const uint32_t rest = ref_sum(tmp.data(), tmp.size(), ref_sum(ph, 12));
    if (rest == 0xffff) continue;
    // New port = one's-complement of the rest: the total becomes 0xFFFF, checksum 0.
    const uint16_t to_port = htons(static_cast<uint16_t>(~rest & 0xffff));
    put16(&u.d[0], to_port);
    ASSERT_EQ(udp_full_csum(u), 0xffff);  // reference: computed 0, sent as all ones
    const uint32_t delta = csum_delta16(from_port, to_port);
    ASSERT_EQ(csum_apply(old_c, delta), 0) << "the constructed case must compute 0";
    ASSERT_EQ(udp_csum_apply(old_c, delta), 0xffff);
    // Undoing the rewrite from 0xFFFF restores the original checksum.
    ASSERT_EQ(udp_csum_apply(0xffff, csum_delta_negate(csum_delta_fold(delta))), old_c);
    ++hits;
  }
  EXPECT_GT(hits, 150);
}

TEST(Checksum, PortRewriteDeltaMatchesAcrossManyValues) {
  std::mt19937 rng(9);
  for (int i = 0; i < 20000; ++i) {
    std::array<uint8_t, 28> b{};  // an 8-byte "L4 header" + payload, checksum at 2..3
    for (auto& x : b) x = static_cast<uint8_t>(rng());
    b[2] = b[3] = 0;
    put16(&b[2], ref_finish(ref_sum(b.data(), b.size())));
    const uint16_t old_c = get16(&b[2]);
    const uint16_t from = get16(&b[4]), to = static_cast<uint16_t>(rng());
    put16(&b[4], to);
    const uint16_t inc = csum_apply(old_c, csum_delta16(from, to));
    b[2] = b[3] = 0;
    ASSERT_EQ(inc, ref_finish(ref_sum(b.data(), b.size())));
  }
}

// csum_fold against the textbook two-round fold, on edges and a million random sums.
TEST(Checksum, FoldMatchesTwoRoundFold) {
  const auto textbook = [](uint32_t v) {
    v = (v & 0xffff) + (v >> 16);
    v = (v & 0xffff) + (v >> 16);
    return static_cast<uint16_t>(v);
  };
  std::vector<uint32_t> vs = {0, 1, 0xffff, 0x10000, 0x1ffff, 0xfffe0001, 0xffff0000, 0xffff0001, 0xfffffffe, 0xffffffff};
  std::mt19937 rng(11);
  for (int i = 0; i < 1000000; ++i) vs.push_back(static_cast<uint32_t>(rng()));
  for (uint32_t v : vs) ASSERT_EQ(csum_fold(v), textbook(v)) << std::hex << v;
}

// The inline 20-byte header check agrees with the byte-wise reference on valid and corrupted headers.
TEST(Checksum, Ipv4HeaderCheckMatchesReference) {
  std::mt19937 rng(12);
  for (int i = 0; i < 200000; ++i) {
    auto h = random_ip_header(rng);
    if (i % 16 == 0) std::fill(h.begin() + 1, h.end(), 0xff);  // carries in every word
    if (i % 16 == 0) {
      h[10] = h[11] = 0;
      const uint16_t c = ref_finish(ref_sum(h.data(), 20));
      std::memcpy(&h[10], &c, 2);
    }
    ASSERT_TRUE(ipv4_hdr20_csum_ok(h.data())) << i;
    h[rng() % 20] ^= static_cast<uint8_t>(1u << (rng() % 8));  // one flipped bit is always caught
    ASSERT_EQ(ipv4_hdr20_csum_ok(h.data()), ref_sum(h.data(), 20) == 0xffff) << i;
    ASSERT_FALSE(ipv4_hdr20_csum_ok(h.data())) << i;
  }
}

TEST(Checksum, FoldHandlesLargeAccumulators) {
  EXPECT_EQ(csum_fold(0xffffffffu), 0xffff);
  EXPECT_EQ(csum_fold(0x0001ffffu), 0x0001);
  EXPECT_EQ(csum_fold(0x00010000u), 0x0001);
  EXPECT_EQ(csum_fold(0), 0);
  EXPECT_EQ(csum_delta_negate(0x1234), 0xedcb);
}

}  // namespace
}  // namespace natgw::net
