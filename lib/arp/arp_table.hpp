// Neighbour (ARP) table shared by all workers, lock-free.
//
// Open addressing on the IPv4 address; a slot's key is claimed once with a CAS and
// never released, so readers need no grace period. The MAC, interface and state
// are packed in one 64-bit word so a reader never sees a torn entry. Sized for
// gateways and on-link hosts (thousands), not for sessions.
#pragma once

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_hash_crc.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>

namespace natgw::arp {

class ArpTable {
 public:
  explicit ArpTable(uint32_t capacity = 4096);  // rounded up to a power of two

  struct Hit {
    rte_ether_addr mac;
    uint16_t iface;
    uint32_t updated_ms;
  };
  // ip in network byte order. Returns false if unknown.
  bool lookup(rte_be32_t ip, Hit& hit) const;
  // Learn or refresh. Returns false only when the table is full (counted by the caller).
  bool update(rte_be32_t ip, uint16_t iface, const rte_ether_addr& mac, uint32_t now_ms);

  // Bumped whenever an entry's MAC or interface changes (not on a mere refresh):
  // a worker that cached next hops may keep using them while this stays the same.
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }

  size_t size() const { return used_.load(std::memory_order_relaxed); }
  uint32_t capacity() const { return mask_ + 1; }
  // Control path: visit every entry (ip network order).
  void for_each(const std::function<void(rte_be32_t, const Hit&)>& fn) const;

 private:
  struct Slot {
    std::atomic<uint32_t> ip{0};        // 0 = empty (0.0.0.0 is never a neighbour)
    std::atomic<uint64_t> mac_iface{0};  // mac (48 bits) | iface << 48 | valid bit 63
    std::atomic<uint32_t> updated_ms{0};
  };
  static uint32_t hash(uint32_t ip) { return rte_hash_crc_4byte(ip, 0x9e3779b9); }
  uint32_t mask_;
  std::unique_ptr<Slot[]> slots_;
  std::atomic<size_t> used_{0};
  std::atomic<uint64_t> gen_{0};
};

}  // namespace natgw::arp
