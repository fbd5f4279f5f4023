// When natgw may tell systemd's watchdog it is alive: only while every worker keeps polling. The
// control thread reads each worker's poll counter (a relaxed atomic the worker already bumps once a
// poll: nothing is added to the data path) every half timeout, and feeds the watchdog only if every
// counter moved since the previous check. A stuck worker thus stops the feed within half a timeout,
// and systemd restarts natgw one timeout after the last feed; a stuck control thread stops it too.
// Pure logic with the clock passed in: tested without DPDK, threads or waiting.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace natgw::control {

class WorkerWatchdog {
 public:
  using Clock = std::chrono::steady_clock;

  struct Stuck {
    size_t worker;         // index into the poll counts
    Clock::duration idle;  // no progress for at least this long (since the check that last saw it move)
  };
  struct Verdict {
    bool feed = false;         // every worker moved since the previous check: send WATCHDOG=1
    std::vector<Stuck> stuck;  // the workers that did not, by index
    bool changed = false;      // `stuck` names other workers than the previous check did: worth a log line
  };

  // `timeout`: $WATCHDOG_USEC (> 0). `polls`: every worker's poll counter at `now` (when natgw said
  // READY=1); the first check compares with them.
  WorkerWatchdog(std::chrono::microseconds timeout, std::span<const uint64_t> polls, Clock::time_point now);

  std::chrono::microseconds timeout() const { return timeout_; }
  // Half the timeout, as sd_watchdog_enabled(3) advises: one late or lost datagram costs no restart.
  // At least 1 ms: WATCHDOG_USEC=1 must not make the control loop spin.
  std::chrono::microseconds interval() const {
    return std::max(timeout_ / 2, std::chrono::microseconds(1000));
  }
  Clock::time_point next_check() const { return next_; }
  bool due(Clock::time_point now) const { return now >= next_; }

  // Compare `polls` (as many as at construction; std::invalid_argument otherwise) with the previous
  // check's, and schedule the next check one interval from `now`.
  Verdict check(std::span<const uint64_t> polls, Clock::time_point now);

 private:
  std::chrono::microseconds timeout_;
  Clock::time_point next_;
  std::vector<uint64_t> polls_;           // as the previous check read them
  std::vector<Clock::time_point> moved_;  // when a check last saw each one move
  std::vector<bool> stuck_;               // the previous verdict's
};

}  // namespace natgw::control
