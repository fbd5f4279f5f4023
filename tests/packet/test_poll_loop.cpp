// The worker's own poll loop (Worker::run) on a pipeline whose ports are paused: its
// millisecond clock follows the TSC, and the busy and idle cycles it reports add up
// to the time the loop ran (one TSC read per poll closes one poll and opens the next).
#include <gtest/gtest.h>
#include <rte_cycles.h>

#include <chrono>
#include <thread>

#include "packet/packet_test.hpp"

namespace natgw::test {
namespace {

TEST(PollLoop, ClockAndCycleAccountingCoverTheWholeRun) {
  const uint64_t t_made = rte_rdtsc();  // before the context's first worker: the clocks' origin
  Pipeline p(kLabConfig);
  for (size_t i = 0; i < p.ctx.ifaces.size(); ++i) p.ctx.port_paused[i].store(true);  // no RX, no TX
  dp::Worker w(p.ctx, 0, p.pool);  // the TSC clock, not the pipeline's manual one
  w.capture_tx(true);              // ARP requests for the gateways stay here
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t t0 = rte_rdtsc();
  std::thread loop([&] { w.run(); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const uint64_t t_stop = rte_rdtsc();
  p.ctx.stop.store(true);
  loop.join();
  const uint64_t t1 = rte_rdtsc();

  const auto& c = w.counters();
  EXPECT_GT(c.polls.get(), 100u);
  EXPECT_EQ(c.busy_cycles.get(), 0u) << "no poll brought a packet";
  // Every cycle between the loop's first and last TSC read is counted once: at least
  // the 200 ms slept (less a thread start), at most the time from before the start to after the join.
  const uint64_t counted = c.busy_cycles.get() + c.idle_cycles.get();
  EXPECT_GE(counted, (t_stop - t0) * 9 / 10);
  EXPECT_LE(counted, t1 - t0);
  // The clock counts milliseconds since the context's first worker was made (one
  // origin for all workers: they agree on session times).
  const uint64_t ms_max = (t1 - t_made) * 1000 / hz + 1;
  // (the clock is read when a poll starts: a worker preempted in its last poll reads low)
  EXPECT_GE(w.now_ms(), 100u);
  EXPECT_LE(w.now_ms(), ms_max);
  const auto arp = w.take_captured(kInternet);
  EXPECT_FALSE(arp.empty()) << "housekeeping ran: it asked for the gateway's MAC";
  for (rte_mbuf* m : arp) rte_pktmbuf_free(m);
  p.ctx.stop.store(false);
}

TEST(PollLoop, WorkersMadeAtDifferentTimesShareOneClock) {
  Pipeline p(kLabConfig);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  dp::Worker late(p.ctx, 0, p.pool);  // made 30 ms after the pipeline's worker
  EXPECT_NE(p.ctx.clock_origin_tsc, 0u);
  // Both read the same TSC: the later one must not read 30 ms less.
  for (size_t i = 0; i < p.ctx.ifaces.size(); ++i) p.ctx.port_paused[i].store(true);
  dp::Worker other(p.ctx, 0, p.pool);  // and one more: all three read the context's origin
  late.capture_tx(true);
  other.capture_tx(true);
  const uint64_t now = rte_rdtsc();
  late.poll_once(now);
  other.poll_once(now);
  EXPECT_GE(late.now_ms(), 30u);
  EXPECT_EQ(late.now_ms(), other.now_ms());
}

}  // namespace
}  // namespace natgw::test
