#include "net/checksum.hpp"

#include <cstring>

namespace natgw::net {

uint32_t csum_partial(const void* data, size_t len, uint32_t sum) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t acc = sum;
  // Eight bytes at a time as two 32-bit halves (RFC 1071: a one's-complement sum of
  // wider words folds to the same 16-bit sum): an IPv4 header is 3 steps, not 10.
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    acc += (w & 0xffffffffu) + (w >> 32);
    p += 8;
    len -= 8;
  }
  if (len >= 4) {
    uint32_t w;
    std::memcpy(&w, p, 4);
    acc += w;
    p += 4;
    len -= 4;
  }
  while (len >= 2) {
    uint16_t w;
    std::memcpy(&w, p, 2);
    acc += w;
    p += 2;
    len -= 2;
  }
  if (len) {
    uint16_t w = 0;
    std::memcpy(&w, p, 1);  // odd trailing byte is the high-order byte in network order
    acc += w;
  }
  while (acc >> 32) acc = (acc & 0xffffffff) + (acc >> 32);
  return csum_fold(static_cast<uint32_t>(acc)) ;
}

}  // namespace natgw::net
