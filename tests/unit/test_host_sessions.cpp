// HostSessions: per-inside-host session and port counts (nat.max_sessions_per_host,
// max_ports_per_host). Checked against a reference map under random churn, with few
// slots so freed slots are reused by other hosts: the "recent slot" shortcut must never
// count one host on another's slot, nor on a freed one.
#include <gtest/gtest.h>

#include <map>
#include <random>

#include "common/eal_env.hpp"
#include "nat/host_sessions.hpp"

namespace natgw::nat {
namespace {

struct HostSessionsTest : ::testing::Test {
  void SetUp() override { ASSERT_NE(test::eal_pool(), nullptr); }
};

TEST_F(HostSessionsTest, LimitsAndFullTable) {
  HostSessions h("test_hosts_a", 2, -1, 7);
  const rte_be32_t a = 1, b = 2, c = 3;
  EXPECT_EQ(h.try_add(a, 2), HostSessions::Added::kYes);
  EXPECT_EQ(h.try_add(a, 2), HostSessions::Added::kYes);
  EXPECT_EQ(h.try_add(a, 2), HostSessions::Added::kAtLimit);
  EXPECT_EQ(h.add_port(a, 1), HostSessions::Added::kYes);
  EXPECT_EQ(h.add_port(a, 1), HostSessions::Added::kAtLimit);
  EXPECT_EQ(h.add_port(b, 0), HostSessions::Added::kYes);
  EXPECT_EQ(h.try_add(c, 0), HostSessions::Added::kFull) << "two slots, two hosts";
  EXPECT_EQ(h.hosts(), 2u);
  EXPECT_EQ(h.count(a), 2u);
  EXPECT_EQ(h.ports(a), 1u);
  // a's entry lives while either count does.
  h.remove(a), h.remove(a);
  EXPECT_EQ(h.hosts(), 2u);
  h.remove_port(a);
  EXPECT_EQ(h.hosts(), 1u);
  EXPECT_EQ(h.count(a), 0u);
  h.remove_port(a);  // nothing to remove: ignored
  EXPECT_EQ(h.try_add(c, 0), HostSessions::Added::kYes) << "a's slot is free again";
  EXPECT_EQ(h.count(c), 1u);
  EXPECT_EQ(h.ports(b), 1u);
}

// A host's quota events: one a second, measured on the 32-bit millisecond clock across its wrap;
// a host forgotten and counted again starts afresh.
TEST_F(HostSessionsTest, QuotaEventsOnceASecond) {
  HostSessions h("test_hosts_q", 4, -1, 3);
  const rte_be32_t a = 1, b = 2;
  EXPECT_FALSE(h.quota_due(a, 5)) << "a host without an entry";
  ASSERT_EQ(h.try_add(a, 1), HostSessions::Added::kYes);
  ASSERT_EQ(h.try_add(b, 1), HostSessions::Added::kYes);
  const uint32_t t = UINT32_MAX - 500;  // the clock wraps within the second
  EXPECT_TRUE(h.quota_due(a, t));
  EXPECT_FALSE(h.quota_due(a, t));
  EXPECT_TRUE(h.quota_due(b, t)) << "each host its own";
  EXPECT_FALSE(h.quota_due(a, t + 999));
  EXPECT_TRUE(h.quota_due(a, t + 1000)) << "a second later, across the wrap";
  EXPECT_FALSE(h.quota_due(a, t + 1001));
  EXPECT_FALSE(h.quota_due(b, UINT32_MAX)) << "500 ms after its last";
  EXPECT_TRUE(h.quota_due(b, 499)) << "1,000 ms after its last, across the wrap";
  EXPECT_FALSE(h.quota_due(b, 1498));
  h.remove(a);  // forgotten
  ASSERT_EQ(h.try_add(a, 1), HostSessions::Added::kYes);
  EXPECT_TRUE(h.quota_due(a, t + 1002)) << "a new entry has no past event";
}

TEST_F(HostSessionsTest, ChurnMatchesAReferenceMap) {
  constexpr uint32_t kSlots = 8;
  HostSessions h("test_hosts_b", kSlots, -1, 11);
  std::map<rte_be32_t, std::pair<uint32_t, uint32_t>> ref;  // host -> sessions, ports
  std::mt19937 rng(5);
  for (int i = 0; i < 200000; ++i) {
    const rte_be32_t host = 1 + rng() % 12;  // more hosts than slots
    const bool port = rng() & 1;
    auto& [sessions, ports] = ref[host];
    uint32_t& n = port ? ports : sessions;
    if (rng() % 2) {
      const uint32_t limit = rng() % 4;  // 0 = none
      const bool is_new = sessions == 0 && ports == 0;
      size_t live = 0;
      for (const auto& [k, v] : ref) live += v.first || v.second;
      const auto r = port ? h.add_port(host, limit) : h.try_add(host, limit);
      if (is_new && live == kSlots) {
        ASSERT_EQ(r, HostSessions::Added::kFull) << i;
      } else if (limit && n >= limit) {
        ASSERT_EQ(r, HostSessions::Added::kAtLimit) << i;
      } else {
        ASSERT_EQ(r, HostSessions::Added::kYes) << i;
        ++n;
      }
    } else {
      port ? h.remove_port(host) : h.remove(host);
      if (n) --n;
    }
    // Every host, both counts, after every step.
    uint32_t live = 0;
    for (const auto& [k, v] : ref) {
      ASSERT_EQ(h.count(k), v.first) << "step " << i << " host " << k;
      ASSERT_EQ(h.ports(k), v.second) << "step " << i << " host " << k;
      live += v.first || v.second;
    }
    ASSERT_EQ(h.hosts(), live) << i;
  }
}

}  // namespace
}  // namespace natgw::nat
