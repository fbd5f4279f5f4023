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
  std::vector<bool> seen(65536, false);
  for (uint32_t i = 0; i < 64512; ++i) {
    uint16_t port = 0;
    ASSERT_TRUE(pa.take_any(port)) << i;
    ASSERT_TRUE(pa.owns(port)) << port;
    ASSERT_FALSE(seen[port]) << "port " << port << " handed out twice";
    seen[port] = true;
    ASSERT_EQ(pa.refs(port), 1);
  }
  EXPECT_EQ(pa.free_count(), 0u);
  uint16_t port = 0;
  EXPECT_FALSE(pa.take_any(port));
}

TEST(PortAllocator, WholeSixteenBitSpace) {
  PortAllocator pa(0, 65535);
  EXPECT_EQ(pa.size(), 65536u);
  EXPECT_EQ(pa.free_count(), 65536u);
  std::set<uint16_t> got;
  uint16_t p;
  for (uint32_t i = 0; i < 65536; ++i) {
    ASSERT_TRUE(pa.take_any(p));
    got.insert(p);
  }
  EXPECT_EQ(got.size(), 65536u);
  EXPECT_FALSE(pa.take_any(p));
  // Every port back (positions up to 65535), then all out again, half of them by name.
  for (uint32_t i = 0; i < 65536; ++i) pa.release(static_cast<uint16_t>(i));
  EXPECT_EQ(pa.free_count(), 65536u);
  for (uint32_t i = 0; i < 65536; i += 2) ASSERT_TRUE(pa.take(static_cast<uint16_t>(i))) << i;
  std::set<uint16_t> rest;
  while (pa.take_any(p)) {
    ASSERT_EQ(p % 2, 1) << "an even port was taken by name already";
    rest.insert(p);
  }
  EXPECT_EQ(rest.size(), 32768u);
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
  while (pa.take_any(p)) {
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
    ASSERT_TRUE(pa.take_any(p));
    ports.push_back(p);
  }
  EXPECT_FALSE(pa.take_any(p));
  EXPECT_FALSE(pa.take(1027));
  pa.release(1027);
  EXPECT_EQ(pa.free_count(), 1u);
  EXPECT_EQ(pa.refs(1027), 0);
  ASSERT_TRUE(pa.take_any(p));
  EXPECT_EQ(p, 1027) << "the only free port";
  EXPECT_FALSE(pa.take_any(p));
  pa.release(1030);
  EXPECT_TRUE(pa.take(1030));
}

TEST(PortAllocator, ReleasedPortsComeBackInAnyOrder) {
  PortAllocator pa(5000, 5099);
  std::mt19937 rng(3);
  std::vector<uint16_t> held;
  uint16_t p;
  for (int round = 0; round < 50; ++round) {
    while (pa.take_any(p)) held.push_back(p);
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
  while (pa.take_any(p)) got.insert(p);
  EXPECT_EQ(got, (std::set<uint16_t>{1024, 1025, 1026, 1027}));
}

TEST(PortAllocator, SinglePortRange) {
  PortAllocator pa(4000, 4000);
  EXPECT_EQ(pa.size(), 1u);
  uint16_t p = 0;
  ASSERT_TRUE(pa.take_any(p));
  EXPECT_EQ(p, 4000);
  EXPECT_FALSE(pa.take_any(p));
}

TEST(PortAllocator, TakeAnyFollowsARandomOrderThatTheSeedPicks) {
  PortAllocator a(1024, 65535, 6), b(1024, 65535, 7);  // neighbouring seeds
  uint16_t pa = 0, pb = 0, prev = 0;
  unsigned same = 0, ascending = 0;
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(a.take_any(pa));
    ASSERT_TRUE(b.take_any(pb));
    same += pa == pb;
    ascending += i > 0 && pa == prev + 1;
    prev = pa;
  }
  EXPECT_LT(same, 10u) << "two seeds, two orders";
  EXPECT_LT(ascending, 10u) << "not a sequential walk";
}

TEST(PortAllocator, NextAnyNamesThePortsTakeAnyGivesNext) {
  PortAllocator pa(2000, 2099, 3);
  int32_t want[10];
  for (uint32_t n = 0; n < 10; ++n) want[n] = pa.next_any(n);
  for (uint32_t n = 0; n < 10; ++n) {
    uint16_t p = 0;
    ASSERT_TRUE(pa.take_any(p));
    EXPECT_EQ(p, want[n]) << n;
  }
  EXPECT_EQ(pa.next_any(90), -1) << "only 90 free";
  EXPECT_GE(pa.next_any(89), 2000);
  // A take by name uses up the end too (the end moves into its hole): the take_any
  // after it gives the port next_any(1) named before it.
  const int32_t second = pa.next_any(1), last = pa.next_any(89);
  ASSERT_NE(last, second);
  ASSERT_TRUE(pa.take(static_cast<uint16_t>(last)));
  uint16_t p = 0;
  ASSERT_TRUE(pa.take_any(p));
  EXPECT_EQ(p, second);
}

TEST(PortAllocator, AReleasedPortJoinsAtARandomPlaceNotNextInLine) {
  // Half the ports free; release one and take one, 2,000 times. Were released ports
  // reused at once (a stack), every take would return the port just released.
  PortAllocator pa(10000, 10999, 11);
  std::vector<uint16_t> held;
  uint16_t p;
  for (int i = 0; i < 500; ++i) {
    ASSERT_TRUE(pa.take_any(p));
    held.push_back(p);
  }
  std::mt19937 rng(5);
  unsigned at_once = 0;
  for (int i = 0; i < 2000; ++i) {
    const size_t k = rng() % held.size();
    const uint16_t back = held[k];
    pa.release(back);
    ASSERT_TRUE(pa.take_any(p));
    at_once += p == back;
    held[k] = p;
  }
  EXPECT_LT(at_once, 40u) << "expected ~4 (1 in 501)";
  EXPECT_EQ(pa.free_count(), 500u);
}

TEST(PortAllocator, MixedTakesAndReleasesKeepTheFreeSetExact) {
  // Against a model: specific takes (port preservation), any-takes, shares and
  // releases in random order; the allocator's free set must equal the model's.
  PortAllocator pa(3000, 3255, 9);
  std::vector<uint16_t> refs(256, 0);
  std::mt19937 rng(13);
  for (int step = 0; step < 200000; ++step) {
    const uint16_t port = static_cast<uint16_t>(3000 + rng() % 256);
    switch (rng() % 4) {
      case 0:
        ASSERT_EQ(pa.take(port), refs[port - 3000] == 0);
        if (refs[port - 3000] == 0) refs[port - 3000] = 1;
        break;
      case 1: {
        uint16_t got = 0;
        const bool any_free = std::count(refs.begin(), refs.end(), 0) > 0;
        const int32_t predicted = pa.next_any(0);
        ASSERT_EQ(pa.take_any(got), any_free);
        ASSERT_EQ(predicted, any_free ? got : -1);
        if (any_free) {
          ASSERT_EQ(refs[got - 3000], 0) << "handed out a port in use";
          refs[got - 3000] = 1;
        }
        break;
      }
      case 2:
        if (refs[port - 3000] > 0 && refs[port - 3000] < 5) {
          pa.share(port);
          ++refs[port - 3000];
        }
        break;
      default:
        pa.release(port);
        if (refs[port - 3000] > 0) --refs[port - 3000];
    }
    ASSERT_EQ(pa.free_count(), static_cast<uint32_t>(std::count(refs.begin(), refs.end(), 0)));
  }
  std::set<uint16_t> free_now;
  uint16_t p;
  while (pa.take_any(p)) ASSERT_TRUE(free_now.insert(p).second) << "port " << p << " listed twice";
  for (uint16_t i = 0; i < 256; ++i) EXPECT_EQ(free_now.count(3000 + i), refs[i] == 0 ? 1u : 0u) << i;
}

}  // namespace
}  // namespace natgw::nat
