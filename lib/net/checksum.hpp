// Internet checksum helpers (RFC 1071, incremental update per RFC 1624).
//
// All values are taken exactly as they sit in the packet (network byte order):
// one's-complement sums are byte-order independent as long as every word is
// read the same way, so no byte swapping is needed on the hot path.
#pragma once

#include <cstddef>
#include <cstdint>

namespace natgw::net {

// Fold a 32-bit one's-complement accumulator to 16 bits. The upper half of
// sum + rotate(sum, 16) is hi + lo with the carry out of the lower half added back
// (end-around carry) in one add: 3 instructions instead of two add-and-mask rounds.
constexpr uint16_t csum_fold(uint32_t sum) {
  return static_cast<uint16_t>((sum + (sum << 16 | sum >> 16)) >> 16);
}

// Delta for replacing a 16-bit word `from` with `to`: ~from + to.
constexpr uint32_t csum_delta16(uint16_t from, uint16_t to) {
  return static_cast<uint16_t>(~from) + static_cast<uint32_t>(to);
}

// Delta for replacing a 32-bit field (two words).
constexpr uint32_t csum_delta32(uint32_t from, uint32_t to) {
  const uint32_t nf = ~from;
  return (nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);
}

// A delta folded to 16 bits: what a session stores so a packet costs one add.
constexpr uint16_t csum_delta_fold(uint32_t delta) { return csum_fold(delta); }

// The delta that undoes `d` (one's-complement negation).
constexpr uint16_t csum_delta_negate(uint16_t d) { return static_cast<uint16_t>(~d); }

// Apply a delta to a stored checksum: HC' = ~(~HC + delta)  (RFC 1624 eqn. 3).
constexpr uint16_t csum_apply(uint16_t csum, uint32_t delta) {
  return static_cast<uint16_t>(~csum_fold(static_cast<uint16_t>(~csum) + delta));
}

// UDP: a zero checksum means "none" and stays zero; a computed zero is sent as 0xFFFF.
constexpr uint16_t udp_csum_apply(uint16_t csum, uint32_t delta) {
  if (csum == 0) return 0;
  const uint16_t r = csum_apply(csum, delta);
  return r == 0 ? 0xffff : r;
}

// Plain one's-complement sum over a buffer (network order words), not inverted.
uint32_t csum_partial(const void* data, size_t len, uint32_t sum = 0);

// True when a 20-byte IPv4 header (no options) sums to 0xFFFF: two 64-bit words and
// a 32-bit one with end-around carries, inline (the common header, verified per packet).
inline bool ipv4_hdr20_csum_ok(const void* hdr) {
  const auto* p = static_cast<const uint8_t*>(hdr);
  uint64_t a, b;
  uint32_t c;
  __builtin_memcpy(&a, p, 8);
  __builtin_memcpy(&b, p + 8, 8);
  __builtin_memcpy(&c, p + 16, 4);
  // One's-complement sums in 64 and then 32 bits: each carry out is added back
  // (add + adc); the result is the same modulo 0xffff as a sum of 16-bit words.
  uint64_t s = a + b;
  s += s < b;
  s += c;
  s += s < c;
  const uint32_t hi = static_cast<uint32_t>(s >> 32);
  uint32_t t = static_cast<uint32_t>(s) + hi;
  t += t < hi;
  return csum_fold(t) == 0xffff;
}

// Finished checksum over a buffer (what goes in the header field).
inline uint16_t csum_buffer(const void* data, size_t len) {
  return static_cast<uint16_t>(~csum_fold(csum_partial(data, len)));
}

}  // namespace natgw::net
