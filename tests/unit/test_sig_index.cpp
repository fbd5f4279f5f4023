// SigIndex: the session table's signature + value index. Checked against a
// reference map under random insert/erase churn, at and beyond its sized load,
// with overflow chains, wrap-around and forced signature collisions.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <unordered_map>
#include <vector>

#include "common/eal_env.hpp"
#include "nat/sig_index.hpp"

namespace natgw::nat {
namespace {

struct Env : ::testing::Test {
  void SetUp() override { ASSERT_NE(test::eal_pool(), nullptr); }
};

// Keys are 64-bit numbers; value v names keys_[v], so match() compares like the
// session table compares a key with the session it found.
struct Harness {
  SigIndex idx;
  std::vector<uint64_t> keys;
  Harness(uint32_t entries, double load) : idx("test_idx", entries, load, -1, 42) {}
  uint64_t h(uint64_t key) const { return idx.hash(key, key * 31 + 7); }
  int64_t find(uint64_t key) const {
    return idx.find(h(key), [&](uint32_t v) { return v < keys.size() && keys[v] == key; });
  }
};

using SigIndexTest = Env;

TEST_F(SigIndexTest, InsertFindErase) {
  Harness t(100, 0.85);
  t.keys = {1001, 1002, 1003};
  for (uint32_t v = 0; v < 3; ++v) ASSERT_TRUE(t.idx.insert(t.h(t.keys[v]), v));
  EXPECT_EQ(t.idx.size(), 3u);
  for (uint32_t v = 0; v < 3; ++v) EXPECT_EQ(t.find(t.keys[v]), v);
  EXPECT_EQ(t.find(999), -1);
  ASSERT_TRUE(t.idx.erase(t.h(1002), 1));
  EXPECT_FALSE(t.idx.erase(t.h(1002), 1)) << "erased twice";
  EXPECT_EQ(t.find(1002), -1);
  EXPECT_EQ(t.find(1001), 0);
  EXPECT_EQ(t.find(1003), 2);
  EXPECT_EQ(t.idx.size(), 2u);
}

TEST_F(SigIndexTest, SizedForTheLoadItIsGiven) {
  SigIndex a("test_a", 1'000'000, 0.85, -1, 1);
  // 1M entries / (7 slots * 0.85) = 168,068 buckets of 64 bytes: ~10.8 bytes per entry.
  EXPECT_EQ(a.buckets(), 168'068u);
  EXPECT_LE(a.memory_bytes() / 1'000'000.0, 10.8);
}

// A full table (every slot taken) still finds everything: entries overflow into
// later buckets, wrapping around the end.
TEST_F(SigIndexTest, FillsEverySlotWithOverflowAndWrapAround) {
  Harness t(14, 0.95);  // 3 buckets, 21 slots
  const uint32_t slots = t.idx.buckets() * SigIndex::kSlots;
  for (uint32_t v = 0; v < slots; ++v) {
    t.keys.push_back(0xabc000 + v);
    ASSERT_TRUE(t.idx.insert(t.h(t.keys[v]), v)) << v;
  }
  uint64_t extra = 0x999999;
  EXPECT_FALSE(t.idx.insert(t.h(extra), slots)) << "a full index must refuse, not loop";
  for (uint32_t v = 0; v < slots; ++v) EXPECT_EQ(t.find(t.keys[v]), v);
  EXPECT_EQ(t.find(extra), -1);
  // Erase every other entry; the rest stay reachable across the emptied slots.
  for (uint32_t v = 0; v < slots; v += 2) ASSERT_TRUE(t.idx.erase(t.h(t.keys[v]), v));
  for (uint32_t v = 0; v < slots; ++v) EXPECT_EQ(t.find(t.keys[v]), v % 2 ? int64_t{v} : -1) << v;
}

// Two keys with the same hash (so the same signature): only match() tells them apart.
TEST_F(SigIndexTest, SignatureCollisionsAreResolvedByTheCaller) {
  SigIndex idx("test_c", 64, 0.85, -1, 7);
  const uint64_t h = idx.hash(5, 6);
  std::vector<uint64_t> owner = {111, 222, 333};
  for (uint32_t v = 0; v < owner.size(); ++v) ASSERT_TRUE(idx.insert(h, v));
  for (uint32_t v = 0; v < owner.size(); ++v)
    EXPECT_EQ(idx.find(h, [&](uint32_t x) { return owner[x] == owner[v]; }), v);
  EXPECT_EQ(idx.find(h, [](uint32_t) { return false; }), -1);
  ASSERT_TRUE(idx.erase(h, 1));
  EXPECT_EQ(idx.find(h, [&](uint32_t x) { return owner[x] == 222; }), -1);
  EXPECT_EQ(idx.find(h, [&](uint32_t x) { return owner[x] == 333; }), 2);
}

// Random churn at the sized load against a reference map; overflow counts must
// return to zero when the index empties.
TEST_F(SigIndexTest, RandomChurnAgreesWithAReferenceMap) {
  constexpr uint32_t kCap = 50'000;
  Harness t(kCap, 0.8);
  t.keys.assign(kCap, 0);
  std::unordered_map<uint64_t, uint32_t> ref;
  std::vector<uint32_t> free_vals;
  for (uint32_t v = 0; v < kCap; ++v) free_vals.push_back(kCap - 1 - v);
  std::mt19937_64 rng(3);
  for (int round = 0; round < 400'000; ++round) {
    const bool add = ref.size() < kCap / 2 || (ref.size() < kCap && rng() % 2);
    if (add) {
      const uint64_t key = rng();
      if (ref.count(key)) continue;
      const uint32_t v = free_vals.back();
      free_vals.pop_back();
      t.keys[v] = key;
      ASSERT_TRUE(t.idx.insert(t.h(key), v)) << "insert failed at " << ref.size() << " entries";
      ref[key] = v;
    } else {
      auto it = ref.begin();
      std::advance(it, static_cast<long>(rng() % std::min<size_t>(ref.size(), 64)));
      ASSERT_TRUE(t.idx.erase(t.h(it->first), it->second));
      free_vals.push_back(it->second);
      ref.erase(it);
    }
    if (round % 9973 == 0) {
      for (const auto& [key, v] : ref) ASSERT_EQ(t.find(key), v);
      ASSERT_EQ(t.find(rng() | 1), -1);
    }
  }
  EXPECT_EQ(t.idx.size(), ref.size());
  EXPECT_LE(t.idx.longest_run(), 40u) << "overflow runs should stay short at 80% load";
  for (const auto& [key, v] : ref) ASSERT_TRUE(t.idx.erase(t.h(key), v));
  EXPECT_EQ(t.idx.size(), 0u);
  EXPECT_EQ(t.idx.longest_run(), 0u) << "overflow counts leaked";
}

// Keys that differ only in a few bits (one outside address, consecutive ports)
// must spread over the buckets like random ones: with 5.6 keys per bucket on
// average (Poisson), about 0.4% of buckets get none and none gets 20.
TEST_F(SigIndexTest, NearlyIdenticalKeysSpread) {
  SigIndex idx("test_s", 64'512, 0.8, -1, 9);
  std::vector<uint32_t> homes(idx.buckets(), 0);
  for (uint32_t port = 1024; port < 65536; ++port) {
    const uint64_t a = 0x0a000001cb007101ull;              // fixed addresses
    const uint64_t b = (uint64_t{port} << 16) | 0x1101ull;  // port varies, proto/dir fixed
    ++homes[idx.home(idx.hash(a, b))];
  }
  uint32_t empty = 0, most = 0;
  for (uint32_t c : homes) {
    empty += c == 0;
    most = std::max(most, c);
  }
  EXPECT_LE(empty, idx.buckets() / 100) << "too many buckets unused: the hash ignores the varying bits";
  EXPECT_LT(most, 20u) << "keys pile into one bucket";
}

}  // namespace
}  // namespace natgw::nat
