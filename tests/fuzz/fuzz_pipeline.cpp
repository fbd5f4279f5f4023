// libFuzzer target: the whole worker pipeline (two workers, NAT with hairpinning and
// endpoint-independent filtering, ACL, a small MTU and MSS clamping) fed arbitrary
// frames on every interface.
//
// Input: records of [flags][len hi][len lo][len bytes of frame]. flags bits 0-1:
// interface (mod 3); bit 2: worker; bit 3: recompute the IPv4 header checksum;
// bit 4: set the destination MAC to the interface's own; bits 5-7: advance the
// clock by 4^n ms and run housekeeping first. The last two let mutations reach
// past the parser without solving checksums or MACs.
//
// After each input every transmitted frame is checked (an IPv4 frame natgw sends
// has a valid header checksum and a length that matches its frame) and freed, and
// the mbufs still held (ARP queues, held fragments) must stay bounded: a leak
// would show as a growing count.
#include <rte_mempool.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "common/pipeline.hpp"

namespace {

using namespace natgw::test;

const char* kFuzzConfig = R"(
[[interface]]
name = "inside"
device = "net_null0"
address = "10.0.1.10/24"
[[interface]]
name = "endpoint"
device = "net_null1"
address = "10.0.2.10/24"
mss_clamp = 1360
[[interface]]
name = "internet"
device = "net_null2"
address = "10.0.3.10/24"
mtu = 576
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.3.1"
interface = "internet"
[[route]]
prefix = "198.51.100.0/24"
via = "10.0.2.1"
interface = "endpoint"
[[route]]
prefix = "192.168.0.0/16"
via = "10.0.1.1"
interface = "inside"
[[snat]]
from = ["192.168.0.0/16"]
ports = "1024-2047"
[[acl]]
action = "deny"
dst = "169.254.169.254/32"
[timeouts]
udp = 5
tcp_established = 20
tcp_transitory = 3
icmp = 2
fragment = 1
[nat]
max_sessions = 256
hairpinning = true
filtering = "endpoint-independent"
)";

Pipeline& pipeline() {
  static std::unique_ptr<Pipeline> p = [] {
    auto q = std::make_unique<Pipeline>(kFuzzConfig, 2);
    q->neighbour(2, "10.0.3.1", 0x31);
    q->neighbour(1, "10.0.2.1", 0x21);
    q->neighbour(0, "10.0.1.1", 0x01);
    return q;
  }();
  return *p;
}

void check_output(const std::vector<uint8_t>& f) {
  if (f.size() < 14) std::abort();
  if (f[12] != 0x08 || f[13] != 0x00) return;  // ARP
  if (f.size() < 34) std::abort();
  const uint8_t* ip = f.data() + 14;
  const size_t ihl = (ip[0] & 0xf) * 4u;
  const size_t total = static_cast<size_t>(ip[2] << 8 | ip[3]);
  if ((ip[0] >> 4) != 4 || ihl < 20 || total < ihl || 14 + total != f.size() || ref_csum(ip, ihl) != 0) {
    fprintf(stderr, "bad IPv4 output: frame %zu bytes, version %d, ihl %zu, total %zu, header checksum %s\n",
            f.size(), ip[0] >> 4, ihl, total, ref_csum(ip, ihl) ? "bad" : "ok");
    for (size_t i = 0; i < std::min<size_t>(f.size(), 80); ++i) fprintf(stderr, "%02x%s", f[i], i % 16 == 15 ? "\n" : " ");
    fprintf(stderr, "\n");
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Pipeline& p = pipeline();
  size_t at = 0;
  while (at + 3 <= size) {
    const uint8_t flags = data[at];
    const size_t len = std::min<size_t>(static_cast<size_t>(data[at + 1] << 8 | data[at + 2]) % 2049,
                                        size - at - 3);
    std::vector<uint8_t> frame(data + at + 3, data + at + 3 + len);
    at += 3 + len;
    const uint16_t iface = static_cast<uint16_t>((flags & 3) % 3);
    const uint16_t worker = (flags >> 2) & 1;
    if ((flags & 8) && frame.size() >= 34 && (frame[14] >> 4) == 4) {
      const size_t ihl = (frame[14] & 0xf) * 4u;
      if (ihl >= 20 && frame.size() >= 14 + ihl) {
        frame[24] = frame[25] = 0;
        const uint16_t c = ref_csum(frame.data() + 14, ihl);
        std::memcpy(frame.data() + 24, &c, 2);
      }
    }
    if ((flags & 16) && frame.size() >= 6) {
      const rte_ether_addr m = mac(static_cast<uint8_t>(0x10 + iface));
      std::memcpy(frame.data(), &m, 6);
    }
    if (flags >> 5) p.advance(1u << (2 * (flags >> 5)));
    p.rx(iface, frame, worker);
  }
  for (uint16_t i = 0; i < 3; ++i)
    for (const auto& f : p.out(i)) check_output(f);
  // ARP queues hold 8 packets for each of 64 next hops, fragments 64, per worker.
  if (rte_mempool_in_use_count(p.pool) > 2 * (64 * 8 + 64) + 64) std::abort();
  return 0;
}
