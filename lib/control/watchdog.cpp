#include "control/watchdog.hpp"

#include <stdexcept>
#include <string>

namespace natgw::control {

WorkerWatchdog::WorkerWatchdog(std::chrono::microseconds timeout, std::span<const uint64_t> polls,
                               Clock::time_point now)
    : timeout_(timeout),
      next_(now + std::max(timeout / 2, std::chrono::microseconds(1000))),  // as interval()
      polls_(polls.begin(), polls.end()),
      moved_(polls.size(), now),
      stuck_(polls.size(), false) {
  if (timeout.count() <= 0) throw std::invalid_argument("watchdog timeout must be positive");
}

WorkerWatchdog::Verdict WorkerWatchdog::check(std::span<const uint64_t> polls, Clock::time_point now) {
  if (polls.size() != polls_.size())
    throw std::invalid_argument("watchdog: " + std::to_string(polls.size()) + " poll counters, expected " +
                                std::to_string(polls_.size()));
  Verdict v;
  for (size_t w = 0; w < polls.size(); ++w) {
    // "Moved", not "grew": a counter only ever counts up, but equality is the one thing that
    // proves a worker did not come round its loop.
    const bool moved = polls[w] != polls_[w];
    if (moved)
      moved_[w] = now;
    else
      v.stuck.push_back(Stuck{w, now - moved_[w]});
    if (stuck_[w] == moved) v.changed = true;  // was stuck and moved, or was moving and stopped
    stuck_[w] = !moved;
    polls_[w] = polls[w];
  }
  v.feed = v.stuck.empty();
  // From now, not from the planned time: a control loop that was late does not catch up with a burst.
  next_ = now + interval();
  return v;
}

}  // namespace natgw::control
