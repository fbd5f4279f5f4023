#include "net/checksum.hpp"

#include <cstring>

namespace natgw::net {

uint32_t csum_partial(const void* data, size_t len, uint32_t sum) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t acc = sum;
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
