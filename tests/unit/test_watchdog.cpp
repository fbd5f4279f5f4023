// The systemd watchdog's decision (control/watchdog.hpp): fed only while every worker's poll counter
// moves from one check to the next; a worker that stops is named, once, and feeding resumes when it moves.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "control/health.hpp"
#include "control/watchdog.hpp"
#include "natgw/counter.hpp"

namespace natgw::control {
namespace {

using namespace std::chrono_literals;
using Clock = WorkerWatchdog::Clock;
using Polls = std::vector<uint64_t>;

const Clock::time_point t0{};  // any origin: the class only ever subtracts

std::vector<size_t> stuck_workers(const WorkerWatchdog::Verdict& v) {
  std::vector<size_t> out;
  for (const auto& s : v.stuck) out.push_back(s.worker);
  return out;
}

TEST(WorkerWatchdog, ATinyTimeoutStillChecksAtMostEveryMillisecond) {
  WorkerWatchdog wd(1us, Polls{0}, t0);  // WATCHDOG_USEC=1: the control loop must not spin
  EXPECT_EQ(wd.interval(), 1ms);
  EXPECT_EQ(wd.next_check(), t0 + 1ms);
}

TEST(WorkerWatchdog, ChecksEveryHalfTimeoutFromTheLastCheck) {
  WorkerWatchdog wd(10s, Polls{0, 0}, t0);
  EXPECT_EQ(wd.interval(), 5s);
  EXPECT_EQ(wd.next_check(), t0 + 5s);
  EXPECT_FALSE(wd.due(t0 + 4999ms));
  EXPECT_TRUE(wd.due(t0 + 5s));
  // A control loop that came round late: the next check is an interval after this one, not sooner.
  wd.check(Polls{1, 1}, t0 + 7s);
  EXPECT_EQ(wd.next_check(), t0 + 12s);
  EXPECT_FALSE(wd.due(t0 + 11s));
}

TEST(WorkerWatchdog, FeedsWhileEveryWorkerMoves) {
  WorkerWatchdog wd(10s, Polls{100, 200, 300}, t0);
  for (int i = 1; i <= 5; ++i) {
    const uint64_t n = static_cast<uint64_t>(i);
    const auto v = wd.check(Polls{100 + n, 200 + n * 1000, 300 + n}, t0 + i * 5s);
    EXPECT_TRUE(v.feed) << "check " << i;
    EXPECT_TRUE(v.stuck.empty()) << "check " << i;
    EXPECT_FALSE(v.changed) << "check " << i;
  }
}

TEST(WorkerWatchdog, OneStuckWorkerStopsTheFeedAndIsNamed) {
  WorkerWatchdog wd(10s, Polls{10, 20, 30}, t0);
  ASSERT_TRUE(wd.check(Polls{11, 21, 31}, t0 + 5s).feed);
  // Worker 1 stops (its counter stays at 21); the others go on.
  auto v = wd.check(Polls{12, 21, 32}, t0 + 10s);
  EXPECT_FALSE(v.feed);
  EXPECT_TRUE(v.changed);
  ASSERT_EQ(stuck_workers(v), std::vector<size_t>{1});
  EXPECT_EQ(v.stuck[0].idle, 5s);  // last seen moving at the check at t0 + 5 s
  // Still stuck: still not fed, the idle time grows, and nothing new to log.
  v = wd.check(Polls{13, 21, 33}, t0 + 15s);
  EXPECT_FALSE(v.feed);
  EXPECT_FALSE(v.changed);
  ASSERT_EQ(stuck_workers(v), std::vector<size_t>{1});
  EXPECT_EQ(v.stuck[0].idle, 10s);
  // It moves again: fed again, and that is a change worth a line.
  v = wd.check(Polls{14, 22, 34}, t0 + 20s);
  EXPECT_TRUE(v.feed);
  EXPECT_TRUE(v.changed);
  EXPECT_TRUE(v.stuck.empty());
  v = wd.check(Polls{15, 23, 35}, t0 + 25s);
  EXPECT_TRUE(v.feed);
  EXPECT_FALSE(v.changed);
}

TEST(WorkerWatchdog, ProgressCountsSinceThePreviousCheckNotSinceStart) {
  // A worker that polled a million times after READY=1 and then stopped is stuck all the same.
  WorkerWatchdog wd(400ms, Polls{0}, t0);
  ASSERT_TRUE(wd.check(Polls{1'000'000}, t0 + 200ms).feed);
  const auto v = wd.check(Polls{1'000'000}, t0 + 400ms);
  EXPECT_FALSE(v.feed);
  EXPECT_EQ(stuck_workers(v), std::vector<size_t>{0});
}

TEST(WorkerWatchdog, AWorkerThatNeverMovedIsStuckFromTheStart) {
  WorkerWatchdog wd(10s, Polls{5, 7}, t0);
  const auto v = wd.check(Polls{6, 7}, t0 + 5s);
  EXPECT_FALSE(v.feed);
  ASSERT_EQ(stuck_workers(v), std::vector<size_t>{1});
  EXPECT_EQ(v.stuck[0].idle, 5s);
}

TEST(WorkerWatchdog, EveryStuckWorkerIsNamedAndAChangeInWhichIsReported) {
  WorkerWatchdog wd(10s, Polls{0, 0, 0, 0}, t0);
  auto v = wd.check(Polls{1, 0, 1, 1}, t0 + 5s);
  EXPECT_EQ(stuck_workers(v), std::vector<size_t>{1});
  EXPECT_TRUE(v.changed);
  v = wd.check(Polls{2, 0, 2, 1}, t0 + 10s);  // worker 3 stops too
  EXPECT_FALSE(v.feed);
  EXPECT_EQ(stuck_workers(v), (std::vector<size_t>{1, 3}));
  EXPECT_TRUE(v.changed);
  EXPECT_EQ(v.stuck[0].idle, 10s);
  EXPECT_EQ(v.stuck[1].idle, 5s);
  v = wd.check(Polls{3, 1, 3, 1}, t0 + 15s);  // worker 1 recovers, 3 does not
  EXPECT_FALSE(v.feed);
  EXPECT_EQ(stuck_workers(v), std::vector<size_t>{3});
  EXPECT_TRUE(v.changed);
}

TEST(WorkerWatchdog, WithoutWorkersTheControlThreadAloneKeepsItFed) {
  WorkerWatchdog wd(1s, Polls{}, t0);
  EXPECT_TRUE(wd.check(Polls{}, t0 + 500ms).feed);
}

TEST(WorkerWatchdog, RefusesNonsense) {
  EXPECT_THROW(WorkerWatchdog(0us, Polls{0}, t0), std::invalid_argument);
  EXPECT_THROW(WorkerWatchdog(-1s, Polls{0}, t0), std::invalid_argument);
  WorkerWatchdog wd(1s, Polls{0, 0}, t0);
  EXPECT_THROW(wd.check(Polls{1}, t0 + 1s), std::invalid_argument);
  EXPECT_THROW(wd.check(Polls{1, 1, 1}, t0 + 1s), std::invalid_argument);
}

// What the daemon does, with real threads: a "worker" bumps its natgw::Counter in a loop (as
// Worker::poll_once bumps counters().polls), the control side reads it with Counter::get(): fed
// while it runs, not once it stops.
TEST(WorkerWatchdog, ReadsALiveCounterFromAnotherThread) {
  Counter polls;
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      polls.add();
      std::this_thread::yield();
    }
  });
  const auto read = [&] { return Polls{polls.get()}; };
  WorkerWatchdog wd(200ms, read(), Clock::now());
  int fed = 0;
  for (int i = 0; i < 5; ++i) {
    std::this_thread::sleep_for(wd.interval());
    fed += wd.check(read(), Clock::now()).feed;
  }
  stop = true;
  worker.join();
  EXPECT_EQ(fed, 5);
  wd.check(read(), Clock::now());  // may still see the last polls before the stop
  const auto v = wd.check(read(), Clock::now() + 100ms);
  EXPECT_FALSE(v.feed);
  EXPECT_EQ(stuck_workers(v), std::vector<size_t>{0});
}

// ------------------------------------------------------------------------------------------ health
// GET /healthz and `natgwctl health` (control/health.hpp): the reasons natgw cannot carry traffic.

TEST(Health, HealthyWhenEveryWorkerPollsAndEveryLinkIsUp) {
  HealthInput in;
  in.started = true;
  in.lcores = {1, 2};
  in.ports = {{"inside", false, true}, {"internet", false, true}};
  EXPECT_TRUE(health_reasons(in).empty());
}

TEST(Health, BeforeReadyAWorkerThatHasNotPolledIsNamed) {
  HealthInput in;
  in.lcores = {1, 2};
  in.polls = {5, 0};
  EXPECT_EQ(health_reasons(in), std::vector<std::string>{"starting: worker 1 (lcore 2) not polling yet"});
  in.polls = {5, 1};
  EXPECT_TRUE(health_reasons(in).empty());
}

TEST(Health, EveryReasonOneLineWorkersFirstThenPortsInOrder) {
  HealthInput in;
  in.started = true;
  in.lcores = {1, 3};
  in.stuck = {WorkerWatchdog::Stuck{1, 1500ms}};
  in.ports = {{"inside", false, false}, {"endpoint", true, true}, {"internet", false, true}};
  const std::vector<std::string> want{
      "worker 1 (lcore 3) made no progress for 1.5 s",
      "inside: link down",
      "endpoint: port dead: its driver-requested reset failed (a restart probes it afresh)",
  };
  EXPECT_EQ(health_reasons(in), want);
  for (const auto& r : health_reasons(in)) EXPECT_EQ(r.find('\n'), std::string::npos) << r;
}

// The stall monitor runs whether or not systemd asked for a watchdog: a worker that stops is stuck at the
// first check after one that saw it move (within 0.5 to 1 s), and healthy again once it moves.
TEST(Health, TheStallMonitorNamesAStoppedWorkerWithinOneInterval) {
  const auto i = WorkerStallMonitor::kInterval;
  WorkerStallMonitor m(Polls{0, 0}, t0);
  EXPECT_FALSE(m.due(t0 + i - 1ms));
  ASSERT_TRUE(m.due(t0 + i));
  m.check(Polls{10, 10}, t0 + i);
  EXPECT_TRUE(m.stuck().empty());
  // Worker 0 stops right after that check.
  m.check(Polls{10, 20}, t0 + 2 * i);
  ASSERT_EQ(m.stuck().size(), 1u);
  EXPECT_EQ(m.stuck()[0].worker, 0u);
  EXPECT_EQ(m.stuck()[0].idle, i);
  HealthInput in;
  in.started = true;
  in.lcores = {1, 2};
  in.stuck = m.stuck();
  EXPECT_EQ(health_reasons(in), std::vector<std::string>{"worker 0 (lcore 1) made no progress for 0.5 s"});
  m.check(Polls{11, 30}, t0 + 3 * i);
  EXPECT_TRUE(m.stuck().empty());
}

TEST(Health, StuckTextMatchesTheWatchdogsLogLine) {
  EXPECT_EQ(stuck_text(WorkerWatchdog::Stuck{0, 5s}, 1), "worker 0 (lcore 1) made no progress for 5.0 s");
  EXPECT_EQ(stuck_text(WorkerWatchdog::Stuck{3, 250ms}, 7), "worker 3 (lcore 7) made no progress for 0.2 s");
}

}  // namespace
}  // namespace natgw::control
