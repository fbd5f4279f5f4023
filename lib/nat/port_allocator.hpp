// Outside ports (or ICMP identifiers) of one outside address and protocol class,
// for one worker: the worker's slice of the address's range, owned by that worker
// alone, so allocation never contends.
//
// Free ports sit in an array kept in random order, with a position index: taking a
// specific port (port preservation) swaps it out, and taking "any" port pops the
// array's end. The randomness is paid where ports come back, not where they are
// handed out: the array starts shuffled and a released port rejoins it at a random
// place (RFC 6056: an observer cannot predict the next port, and a released port is
// no likelier than any other free port to be handed out next). So a new flow's port
// costs no cache miss in a pool that outgrows the cache (the end of the array is
// hot; the port's own state is only written), and the next ports are known ahead,
// for prefetching what they lead to.
// A port in use has a reference count: with port overlapping (RFC 7857 §3) several
// mappings may share it as long as 5-tuples stay unique.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

namespace natgw::nat {

class PortAllocator {
 public:
  // lo..hi inclusive, host order, lo <= hi; `seed` picks the random order.
  PortAllocator(uint16_t lo, uint16_t hi, uint64_t seed = 1);

  uint16_t lo() const { return lo_; }
  uint16_t hi() const { return hi_; }
  bool owns(uint16_t port) const { return port >= lo_ && port <= hi_; }
  // Free ports; the control thread may read it (port-usage gauges).
  uint32_t free_count() const { return nfree_.load(std::memory_order_relaxed); }
  uint32_t size() const { return static_cast<uint32_t>(hi_ - lo_) + 1; }
  uint16_t refs(uint16_t port) const { return state_[port - lo_].refs; }

  // Take `port` if it is free. Returns false if in use or out of range.
  bool take(uint16_t port);
  // Take the next free port of the random order; false if none is free.
  bool take_any(uint16_t& port);
  // The port take_any() gives after `nth` more takes, or -1: what a caller can
  // prefetch for. Every take uses up the array's end (take(port) moves it into the
  // hole), so this holds unless one of those takes names a port of that tail.
  int32_t next_any(uint32_t nth) const {
    const uint32_t n = free_count();
    return nth < n ? free_[n - 1 - nth] : -1;
  }
  // The port of the range a 32-bit random draw names (uniform; in use or not).
  uint16_t at(uint32_t draw) const { return static_cast<uint16_t>(lo_ + scale(draw, size())); }
  // Start loading what take(port) reads first.
  void prefetch(uint16_t port) const {
    if (owns(port)) __builtin_prefetch(&state_[port - lo_]);
  }
  // Add a sharer to a port already in use (port overlapping).
  void share(uint16_t port) { ++state_[port - lo_].refs; }
  // The owner's tag for a port in use: SessionTable records the mapping that took or
  // last shared it (endpoint-independent filtering finds an inbound packet's inside
  // endpoint by it). Meaningless while the port is free.
  uint32_t holder(uint16_t port) const { return state_[port - lo_].holder; }
  void set_holder(uint16_t port, uint32_t h) { state_[port - lo_].holder = h; }
  // Drop one reference; at zero the port rejoins the free ports at a random place.
  void release(uint16_t port);

 private:
  uint32_t next_rand();
  // Put free port `port` at index i of free_ (and remember where).
  void place(uint32_t i, uint16_t port) {
    free_[i] = port;
    state_[port - lo_].pos = static_cast<uint16_t>(i);
  }
  // A 32-bit random draw scaled to [0, n) by multiply-shift (no division).
  static uint32_t scale(uint32_t r, uint32_t n) { return static_cast<uint32_t>((uint64_t{r} * n) >> 32); }
  uint16_t lo_, hi_;
  std::atomic<uint32_t> nfree_;  // written by the owning worker only (load + store, no locked op)
  uint64_t rng_;
  uint32_t drawn_ = 0;  // the next release's random draw (see release())
  // A port's position in free_, its sharers and its holder side by side: taking a
  // port reads and writes them together, one cache miss once a pool outgrows the cache.
  struct PortState {
    uint16_t pos;     // index in free_ (valid while free)
    uint16_t refs;    // sharers (0 = free)
    uint32_t holder;  // see holder()
  };
  std::unique_ptr<uint16_t[]> free_;    // free ports in random order, first nfree_ valid
  std::unique_ptr<PortState[]> state_;  // port - lo -> PortState
};

}  // namespace natgw::nat
