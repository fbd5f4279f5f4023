// libFuzzer target: net::parse_ipv4 on arbitrary bytes. Whatever it accepts must
// be readable exactly as the data path reads it, within the bytes given (ASan
// checks every read against a buffer of the exact input size).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "net/checksum.hpp"
#include "net/packet.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

// Touch every byte the data path may read after a successful parse.
uint32_t touch(const uint8_t* p, size_t n) {
  uint32_t s = 0;
  for (size_t i = 0; i < n; ++i) s += p[i];
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace natgw::net;
  for (const bool verified : {false, true}) {
    std::vector<uint8_t> buf(data, data + size);  // exact size: reads past it are ASan errors
    Ipv4Packet p;
    const ParseError e = parse_ipv4(buf.data(), static_cast<uint32_t>(buf.size()), p, verified);
    check(parse_error_name(e) != nullptr);
    if (e != ParseError::none) continue;
    const uint8_t* base = buf.data();
    check(reinterpret_cast<uint8_t*>(p.ip) == base);
    check(p.ip_hdr_len >= 20 && p.ip_hdr_len <= 60 && p.ip_hdr_len % 4 == 0);
    check(p.total_len >= p.ip_hdr_len && p.total_len <= size);
    check(p.l4 == base + p.ip_hdr_len);
    check(p.l4_len == p.total_len - p.ip_hdr_len);
    check(p.proto == p.ip->next_proto_id);
    if (!verified) check(csum_fold(csum_partial(p.ip, p.ip_hdr_len)) == 0xffff);
    volatile uint32_t sink = touch(base, p.total_len);
    (void)sink;
    if (p.flags & PKT_HAS_PORTS) {
      check(p.flags & PKT_FIRST_FRAGMENT);
      switch (p.proto) {
        case IPPROTO_TCP: {
          check(p.l4_len >= sizeof(rte_tcp_hdr));
          const auto* th = reinterpret_cast<const rte_tcp_hdr*>(p.l4);
          const unsigned doff = (th->data_off >> 4) * 4u;
          check(doff >= 20);
          if (!(p.flags & PKT_FRAGMENT)) check(doff <= p.l4_len);  // options are readable
          break;
        }
        case IPPROTO_UDP: {
          check(p.l4_len >= sizeof(rte_udp_hdr));
          const auto* uh = reinterpret_cast<const rte_udp_hdr*>(p.l4);
          if (!(p.flags & PKT_FRAGMENT)) check(rte_be_to_cpu_16(uh->dgram_len) <= p.l4_len);
          break;
        }
        case IPPROTO_ICMP: check(p.l4_len >= sizeof(IcmpHdr)); break;
        default: check(false);
      }
    }
    const uint16_t frag = rte_be_to_cpu_16(p.ip->fragment_offset);
    check(!!(p.flags & PKT_FIRST_FRAGMENT) == ((frag & RTE_IPV4_HDR_OFFSET_MASK) == 0));
    check(!!(p.flags & PKT_DF) == !!(frag & RTE_IPV4_HDR_DF_FLAG));
  }
  return 0;
}
