// ArpTable: learn, refresh, capacity, and concurrent updaters never tearing an entry.
#include <gtest/gtest.h>

#include <arpa/inet.h>

#include <atomic>
#include <map>
#include <thread>
#include <vector>

#include "arp/arp_table.hpp"

namespace natgw::arp {
namespace {

rte_be32_t ip(uint32_t host) { return htonl(host); }
rte_ether_addr mac_of(uint8_t fill) {
  rte_ether_addr m;
  for (auto& b : m.addr_bytes) b = fill;
  return m;
}
rte_ether_addr mac_seq(uint32_t n) {
  return rte_ether_addr{{0x02, 0x00, static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                         static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)}};
}
bool same(const rte_ether_addr& a, const rte_ether_addr& b) { return rte_is_same_ether_addr(&a, &b); }

TEST(ArpTable, UpdateThenLookup) {
  ArpTable t(64);
  ArpTable::Hit h{};
  EXPECT_FALSE(t.lookup(ip(0x0a000301), h));
  ASSERT_TRUE(t.update(ip(0x0a000301), 2, mac_seq(0x31), 1234));
  ASSERT_TRUE(t.lookup(ip(0x0a000301), h));
  EXPECT_TRUE(same(h.mac, mac_seq(0x31)));
  EXPECT_EQ(h.iface, 2);
  EXPECT_EQ(h.updated_ms, 1234u);
  EXPECT_EQ(t.size(), 1u);
  EXPECT_FALSE(t.lookup(ip(0x0a000302), h));
}

TEST(ArpTable, RefreshChangesMacInterfaceAndTime) {
  ArpTable t(64);
  ASSERT_TRUE(t.update(ip(0x0a000101), 0, mac_seq(1), 10));
  ASSERT_TRUE(t.update(ip(0x0a000101), 1, mac_seq(2), 20));
  ArpTable::Hit h{};
  ASSERT_TRUE(t.lookup(ip(0x0a000101), h));
  EXPECT_TRUE(same(h.mac, mac_seq(2)));
  EXPECT_EQ(h.iface, 1);
  EXPECT_EQ(h.updated_ms, 20u);
  EXPECT_EQ(t.size(), 1u) << "a refresh is not a new entry";
}

TEST(ArpTable, ZeroAddressIsNeverANeighbour) {
  ArpTable t(16);
  EXPECT_FALSE(t.update(0, 0, mac_seq(1), 0));
  EXPECT_EQ(t.size(), 0u);
}

TEST(ArpTable, CapacityIsRoundedAndFullTableRefusesNewEntries) {
  ArpTable t(20);
  EXPECT_EQ(t.capacity(), 32u);
  uint32_t stored = 0;
  for (uint32_t i = 1; i <= 32; ++i) stored += t.update(ip(0xc0a80000 + i), 0, mac_seq(i), i);
  EXPECT_EQ(stored, 32u) << "probing wraps around: all slots are usable";
  EXPECT_EQ(t.size(), 32u);
  EXPECT_FALSE(t.update(ip(0xc0a90001), 0, mac_seq(99), 0)) << "full";
  // Every entry is still right, and existing ones can still be refreshed when full.
  for (uint32_t i = 1; i <= 32; ++i) {
    ArpTable::Hit h{};
    ASSERT_TRUE(t.lookup(ip(0xc0a80000 + i), h)) << i;
    EXPECT_TRUE(same(h.mac, mac_seq(i))) << i;
  }
  EXPECT_TRUE(t.update(ip(0xc0a80005), 3, mac_seq(555), 7));
  ArpTable::Hit h{};
  ASSERT_TRUE(t.lookup(ip(0xc0a80005), h));
  EXPECT_TRUE(same(h.mac, mac_seq(555)));
  ArpTable::Hit miss{};
  EXPECT_FALSE(t.lookup(ip(0xc0a90001), miss));
}

TEST(ArpTable, MinimumCapacity) {
  ArpTable t(1);
  EXPECT_EQ(t.capacity(), 16u);
}

TEST(ArpTable, ManyEntriesInALargeTable) {
  ArpTable t(4096);
  uint32_t stored = 0;
  for (uint32_t i = 1; i <= 2048; ++i) stored += t.update(ip(0x0a000000 + i * 7919), 0, mac_seq(i), 0);
  EXPECT_EQ(stored, 2048u);
  for (uint32_t i = 1; i <= 2048; ++i) {
    ArpTable::Hit h{};
    ASSERT_TRUE(t.lookup(ip(0x0a000000 + i * 7919), h)) << i;
    ASSERT_TRUE(same(h.mac, mac_seq(i))) << i;
  }
}

TEST(ArpTable, ForEachVisitsEveryEntry) {
  ArpTable t(64);
  std::map<uint32_t, uint8_t> want;
  for (uint32_t i = 1; i <= 10; ++i) {
    t.update(ip(0x0a000100 + i), static_cast<uint16_t>(i % 3), mac_of(static_cast<uint8_t>(i)), i);
    want[ip(0x0a000100 + i)] = static_cast<uint8_t>(i);
  }
  std::map<uint32_t, uint8_t> got;
  t.for_each([&](rte_be32_t a, const ArpTable::Hit& h) {
    got[a] = h.mac.addr_bytes[0];
    EXPECT_EQ(h.iface, h.mac.addr_bytes[0] % 3);
  });
  EXPECT_EQ(got, want);
}

// Two updaters write MACs whose six bytes are all one value, tied to the interface
// (iface = fill byte): a reader must always see a whole MAC with its own interface.
void check_whole(const ArpTable::Hit& h, std::atomic<uint64_t>& torn) {
  const uint8_t b = h.mac.addr_bytes[0];
  bool ok = h.iface == b;
  for (auto x : h.mac.addr_bytes) ok &= x == b;
  if (!ok) ++torn;
}

TEST(ArpTable, ConcurrentUpdatersNeverTearAnEntry) {
  ArpTable t(1024);
  constexpr uint32_t kShared = 8;       // both threads update these
  constexpr uint32_t kDistinct = 200;   // per thread
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> torn{0}, reads{0};
  auto writer = [&](uint8_t fill, uint32_t base) {
    uint32_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (uint32_t i = 0; i < kShared; ++i) t.update(ip(0x0a000001 + i), fill, mac_of(fill), n);
      for (uint32_t i = 0; i < kDistinct; ++i) t.update(ip(base + i), fill, mac_of(fill), n);
      ++n;
    }
  };
  auto reader = [&] {
    uint64_t r = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      for (uint32_t i = 0; i < kShared; ++i) {
        ArpTable::Hit h{};
        if (t.lookup(ip(0x0a000001 + i), h)) {
          check_whole(h, torn);
          ++r;
        }
      }
    }
    reads += r;
  };
  // Alternate fills so consecutive writes differ in every byte.
  std::thread a(writer, uint8_t{0x11}, 0x0b000000u), b(writer, uint8_t{0x22}, 0x0c000000u), r(reader);
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  stop = true;
  a.join();
  b.join();
  r.join();
  EXPECT_EQ(torn.load(), 0u);
  EXPECT_GT(reads.load(), 1000u);
  EXPECT_EQ(t.size(), kShared + 2 * kDistinct) << "each address is in the table exactly once";
  for (uint32_t i = 0; i < kDistinct; ++i) {
    ArpTable::Hit h{};
    ASSERT_TRUE(t.lookup(ip(0x0b000000 + i), h));
    EXPECT_TRUE(same(h.mac, mac_of(0x11)));
    ASSERT_TRUE(t.lookup(ip(0x0c000000 + i), h));
    EXPECT_TRUE(same(h.mac, mac_of(0x22)));
  }
  for (uint32_t i = 0; i < kShared; ++i) {
    ArpTable::Hit h{};
    ASSERT_TRUE(t.lookup(ip(0x0a000001 + i), h));
    check_whole(h, torn);
  }
  EXPECT_EQ(torn.load(), 0u);
  // No address was claimed twice by the two racing inserters.
  std::map<uint32_t, int> count;
  t.for_each([&](rte_be32_t a2, const ArpTable::Hit&) { ++count[a2]; });
  for (const auto& [a2, n] : count) EXPECT_EQ(n, 1) << a2;
}

// The same address first inserted by two threads at the same moment, many times.
TEST(ArpTable, RacingFirstInsertsOfOneAddressClaimOneSlot) {
  for (int round = 0; round < 200; ++round) {
    ArpTable t(64);
    std::atomic<int> go{0};
    auto ins = [&](uint8_t fill) {
      go.fetch_add(1);
      while (go.load() < 2) {
      }
      for (uint32_t i = 1; i <= 16; ++i) t.update(ip(0x0a000000 + i), fill, mac_of(fill), 0);
    };
    std::thread a(ins, uint8_t{1}), b(ins, uint8_t{2});
    a.join();
    b.join();
    ASSERT_EQ(t.size(), 16u) << "round " << round;
    std::map<uint32_t, int> count;
    t.for_each([&](rte_be32_t a2, const ArpTable::Hit&) { ++count[a2]; });
    ASSERT_EQ(count.size(), 16u);
  }
}

}  // namespace
}  // namespace natgw::arp
