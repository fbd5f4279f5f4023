// Outside ports (or ICMP identifiers) of one outside address and protocol class,
// for one worker: the worker's slice of the address's range, owned by that worker
// alone, so allocation never contends.
//
// Free ports sit in an array with a position index, so taking a specific port
// (port preservation) and taking a random one (RFC 6056-style unpredictability)
// are both O(1). A port in use has a reference count: with port overlapping
// (RFC 7857 §3) several mappings may share it as long as 5-tuples stay unique.
#pragma once

#include <cstdint>
#include <memory>

namespace natgw::nat {

class PortAllocator {
 public:
  PortAllocator(uint16_t lo, uint16_t hi);  // inclusive, host order; lo <= hi

  uint16_t lo() const { return lo_; }
  uint16_t hi() const { return hi_; }
  bool owns(uint16_t port) const { return port >= lo_ && port <= hi_; }
  uint32_t free_count() const { return nfree_; }
  uint32_t size() const { return static_cast<uint32_t>(hi_ - lo_) + 1; }
  uint16_t refs(uint16_t port) const { return state_[port - lo_].refs; }

  // Take `port` if it is free. Returns false if in use or out of range.
  bool take(uint16_t port);
  // Take a free port chosen with `rnd`; returns false if none is free.
  bool take_any(uint32_t rnd, uint16_t& port);
  // Start loading what take(port) reads first.
  void prefetch(uint16_t port) const {
    if (owns(port)) __builtin_prefetch(&state_[port - lo_]);
  }
  // Add a sharer to a port already in use (port overlapping).
  void share(uint16_t port) { ++state_[port - lo_].refs; }
  // Drop one reference; the port becomes free at zero.
  void release(uint16_t port);

 private:
  void remove_free(uint16_t port);
  uint16_t lo_, hi_;
  uint32_t nfree_;
  // A port's position in free_ and its sharers side by side: taking a port reads
  // and writes both, one cache miss instead of two once a pool outgrows the cache.
  struct PortState {
    uint16_t pos;   // index in free_ (valid while free)
    uint16_t refs;  // sharers (0 = free)
  };
  std::unique_ptr<uint16_t[]> free_;      // free ports, first nfree_ valid
  std::unique_ptr<PortState[]> state_;    // port - lo -> PortState
};

}  // namespace natgw::nat
