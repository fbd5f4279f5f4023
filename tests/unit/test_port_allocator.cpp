// PortAllocator: one outside address's port slice for one worker and protocol class.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

#include "nat/port_allocator.hpp"

namespace natgw::nat {
namespace {

TEST(PortAllocator, TakeAnyGivesEveryPortOfTheFullRangeExactlyOnce) {
  PortAllocator pa(1024, 65535);
  ASSERT_EQ(pa.size(), 64512u);
  ASSERT_EQ(pa.free_count(), 64512u);
  std::mt19937 rng(1);
  std::vector<bool> seen(65536, false);
  for (uint32_t i = 0; i < 64512; ++i) {
    uint16_t port = 0;
    ASSERT_TRUE(pa.take_any(rng(), port)) << i;
    ASSERT_TRUE(pa.owns(port)) << port;
    ASSERT_FALSE(seen[port]) << "port " << port << " handed out twice";
    seen[port] = true;
    ASSERT_EQ(pa.refs(port), 1);
  }
  EXPECT_EQ(pa.free_count(), 0u);
  uint16_t port = 0;
  EXPECT_FALSE(pa.take_any(rng(), port));
}

TEST(PortAllocator, WholeSixteenBitSpace) {
  PortAllocator pa(0, 65535);
  EXPECT_EQ(pa.size(), 65536u);
  EXPECT_EQ(pa.free_count(), 65536u);
  std::set<uint16_t> got;
  uint16_t p;
  for (uint32_t i = 0; i < 65536; ++i) {
    ASSERT_TRUE(pa.take_any(i * 2654435761u, p));
    got.insert(p);
  }
  EXPECT_EQ(got.size(), 65536u);
  EXPECT_FALSE(pa.take_any(0, p));
}

TEST(PortAllocator, TakeSpecificPort) {
  PortAllocator pa(1024, 2047);
  EXPECT_TRUE(pa.take(1500));
  EXPECT_EQ(pa.refs(1500), 1);
  EXPECT_EQ(pa.free_count(), 1023u);
  EXPECT_FALSE(pa.take(1500)) << "a port in use cannot be taken again";
  EXPECT_FALSE(pa.take(1023)) << "below the range";
  EXPECT_FALSE(pa.take(2048)) << "above the range";
  EXPECT_TRUE(pa.take(1024));
  EXPECT_TRUE(pa.take(2047));
  // take_any never returns a port taken by take().
  uint16_t p;
  std::set<uint16_t> rest;
  while (pa.take_any(12345, p)) {
    EXPECT_NE(p, 1500);
    EXPECT_NE(p, 1024);
    EXPECT_NE(p, 2047);
    rest.insert(p);
  }
  EXPECT_EQ(rest.size(), 1021u);
}

TEST(PortAllocator, ExhaustionThenReleaseAndReuse) {
  PortAllocator pa(1024, 1031);
  std::vector<uint16_t> ports;
  uint16_t p;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(pa.take_any(static_cast<uint32_t>(i * 7), p));
    ports.push_back(p);
  }
  EXPECT_FALSE(pa.take_any(0, p));
  EXPECT_FALSE(pa.take(1027));
  pa.release(1027);
  EXPECT_EQ(pa.free_count(), 1u);
  EXPECT_EQ(pa.refs(1027), 0);
  ASSERT_TRUE(pa.take_any(99, p));
  EXPECT_EQ(p, 1027) << "the only free port";
  EXPECT_FALSE(pa.take_any(0, p));
  pa.release(1030);
  EXPECT_TRUE(pa.take(1030));
}

TEST(PortAllocator, ReleasedPortsComeBackInAnyOrder) {
  PortAllocator pa(5000, 5099);
  std::mt19937 rng(3);
  std::vector<uint16_t> held;
  uint16_t p;
  for (int round = 0; round < 50; ++round) {
    while (pa.take_any(rng(), p)) held.push_back(p);
    ASSERT_EQ(held.size(), 100u);
    std::shuffle(held.begin(), held.end(), rng);
    const size_t drop = 1 + rng() % 100;
    for (size_t i = 0; i < drop; ++i) pa.release(held[i]);
    held.erase(held.begin(), held.begin() + static_cast<long>(drop));
    ASSERT_EQ(pa.free_count(), drop);
    // The free list holds exactly the released ports, no duplicates.
    std::set<uint16_t> in_use(held.begin(), held.end());
    ASSERT_EQ(in_use.size(), held.size());
  }
}

TEST(PortAllocator, ShareAndReleaseCountReferences) {
  PortAllocator pa(1024, 1025);
  ASSERT_TRUE(pa.take(1024));
  pa.share(1024);
  pa.share(1024);
  EXPECT_EQ(pa.refs(1024), 3);
  EXPECT_EQ(pa.free_count(), 1u);
  pa.release(1024);
  EXPECT_EQ(pa.refs(1024), 2);
  EXPECT_FALSE(pa.take(1024)) << "still shared";
  pa.release(1024);
  EXPECT_EQ(pa.free_count(), 1u);
  pa.release(1024);
  EXPECT_EQ(pa.refs(1024), 0);
  EXPECT_EQ(pa.free_count(), 2u);
  EXPECT_TRUE(pa.take(1024));
}

TEST(PortAllocator, DoubleReleaseIsHarmless) {
  PortAllocator pa(1024, 1027);
  ASSERT_TRUE(pa.take(1025));
  pa.release(1025);
  pa.release(1025);  // a bug upstream must not corrupt the free list
  EXPECT_EQ(pa.free_count(), 4u);
  std::set<uint16_t> got;
  uint16_t p;
  while (pa.take_any(1, p)) got.insert(p);
  EXPECT_EQ(got, (std::set<uint16_t>{1024, 1025, 1026, 1027}));
}

TEST(PortAllocator, SinglePortRange) {
  PortAllocator pa(4000, 4000);
  EXPECT_EQ(pa.size(), 1u);
  uint16_t p = 0;
  ASSERT_TRUE(pa.take_any(123456, p));
  EXPECT_EQ(p, 4000);
  EXPECT_FALSE(pa.take_any(0, p));
}

}  // namespace
}  // namespace natgw::nat
