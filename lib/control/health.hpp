// Whether this natgw can carry traffic: what GET /healthz and `natgwctl health` answer, and what the HA
// agent (scripts/natgw-ha.py) judges a peer and itself by. Unhealthy when a worker stopped polling (the
// heartbeat the systemd watchdog reads: the poll counter workers already bump), when a port is dead after
// a failed reset, or when a port's link is down. The control thread reads the counters and the links
// (rte_eth_link_get_nowait, never from a worker: ENA's admin queue belongs to the control thread), so
// nothing is added to the data path. Pure logic with the clock passed in: tested without DPDK.
#pragma once

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "control/watchdog.hpp"

namespace natgw::control {

// "worker 0 (lcore 1) made no progress for 1.5 s": the systemd watchdog's log line and a health reason.
std::string stuck_text(const WorkerWatchdog::Stuck& s, unsigned lcore);

// Which workers stopped polling, checked every kInterval from READY=1 on, whether or not systemd asked
// for a watchdog. A worker is stuck when its counter did not move between two checks: seen within one to
// two intervals of its stall. Busy-polling workers come round their loop in microseconds, so half a
// second without a poll is a stall, not load.
class WorkerStallMonitor {
 public:
  using Clock = WorkerWatchdog::Clock;
  static constexpr std::chrono::milliseconds kInterval{500};

  WorkerStallMonitor(std::span<const uint64_t> polls, Clock::time_point now)
      : watch_(2 * kInterval, polls, now) {}
  bool due(Clock::time_point now) const { return watch_.due(now); }
  // Compare the counters with the previous check's.
  void check(std::span<const uint64_t> polls, Clock::time_point now) {
    stuck_ = watch_.check(polls, now).stuck;
  }
  const std::vector<WorkerWatchdog::Stuck>& stuck() const { return stuck_; }

 private:
  WorkerWatchdog watch_;
  std::vector<WorkerWatchdog::Stuck> stuck_;
};

struct PortHealth {
  std::string name;     // the interface's name in the config
  bool dead = false;    // its driver-requested reset failed: paused for good
  bool link_up = true;  // as rte_eth_link_get_nowait says (true when the driver cannot tell)
};

struct HealthInput {
  bool started = false;                      // every worker has polled once (READY=1)
  std::vector<unsigned> lcores;              // worker i runs on lcores[i]
  std::vector<uint64_t> polls;               // before `started`: who has not polled yet (0)
  std::vector<WorkerWatchdog::Stuck> stuck;  // after: the stall monitor's verdict
  std::vector<PortHealth> ports;
};

// The reasons natgw is unhealthy, one line each (no newline), workers first, then ports in config
// order; empty when healthy.
std::vector<std::string> health_reasons(const HealthInput& in);

}  // namespace natgw::control
