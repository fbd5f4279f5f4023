#include "arp/arp_table.hpp"

#include <rte_common.h>

#include <cstring>

namespace natgw::arp {

namespace {
constexpr uint64_t kValid = 1ull << 63;
constexpr uint32_t kMaxProbe = 32;

uint64_t pack(const rte_ether_addr& mac, uint16_t iface) {
  uint64_t v = 0;
  std::memcpy(&v, mac.addr_bytes, RTE_ETHER_ADDR_LEN);
  return v | (static_cast<uint64_t>(iface & 0x7fff) << 48) | kValid;
}
void unpack(uint64_t v, rte_ether_addr& mac, uint16_t& iface) {
  std::memcpy(mac.addr_bytes, &v, RTE_ETHER_ADDR_LEN);
  iface = static_cast<uint16_t>((v >> 48) & 0x7fff);
}
}  // namespace

ArpTable::ArpTable(uint32_t capacity)
    : mask_(rte_align32pow2(capacity < 16 ? 16 : capacity) - 1), slots_(new Slot[mask_ + 1]) {}

bool ArpTable::lookup(rte_be32_t ip, Hit& hit) const {
  uint32_t i = hash(ip) & mask_;
  for (uint32_t n = 0; n < kMaxProbe; ++n, i = (i + 1) & mask_) {
    const uint32_t k = slots_[i].ip.load(std::memory_order_acquire);
    if (k == 0) return false;
    if (k != ip) continue;
    const uint64_t v = slots_[i].mac_iface.load(std::memory_order_acquire);
    if (!(v & kValid)) return false;
    unpack(v, hit.mac, hit.iface);
    hit.updated_ms = slots_[i].updated_ms.load(std::memory_order_relaxed);
    return true;
  }
  return false;
}

bool ArpTable::update(rte_be32_t ip, uint16_t iface, const rte_ether_addr& mac, uint32_t now_ms) {
  if (ip == 0) return false;
  uint32_t i = hash(ip) & mask_;
  for (uint32_t n = 0; n < kMaxProbe; ++n, i = (i + 1) & mask_) {
    uint32_t k = slots_[i].ip.load(std::memory_order_acquire);
    if (k == 0) {
      uint32_t expected = 0;
      if (slots_[i].ip.compare_exchange_strong(expected, ip, std::memory_order_acq_rel)) {
        used_.fetch_add(1, std::memory_order_relaxed);
        k = ip;
      } else {
        k = expected;  // another worker claimed it first
      }
    }
    if (k != ip) continue;
    slots_[i].updated_ms.store(now_ms, std::memory_order_relaxed);
    const uint64_t v = pack(mac, iface);
    if (slots_[i].mac_iface.exchange(v, std::memory_order_acq_rel) != v)
      gen_.fetch_add(1, std::memory_order_release);
    return true;
  }
  return false;
}

void ArpTable::for_each(const std::function<void(rte_be32_t, const Hit&)>& fn) const {
  for (uint32_t i = 0; i <= mask_; ++i) {
    const uint32_t k = slots_[i].ip.load(std::memory_order_acquire);
    if (!k) continue;
    const uint64_t v = slots_[i].mac_iface.load(std::memory_order_acquire);
    if (!(v & kValid)) continue;
    Hit h{};
    unpack(v, h.mac, h.iface);
    h.updated_ms = slots_[i].updated_ms.load(std::memory_order_relaxed);
    fn(k, h);
  }
}

}  // namespace natgw::arp
