#include "nat/port_allocator.hpp"

namespace natgw::nat {

PortAllocator::PortAllocator(uint16_t lo, uint16_t hi, uint64_t seed)
    : lo_(lo),
      hi_(hi),
      nfree_(size()),
      rng_(seed ? seed : 0x9E3779B97F4A7C15ull),
      free_(new uint16_t[size()]),
      state_(new PortState[size()]) {
  for (uint32_t i = 0; i < size(); ++i) free_[i] = static_cast<uint16_t>(lo_ + i);
  for (uint32_t i = size() - 1; i > 0; --i) {  // Fisher-Yates
    const uint32_t j = scale(next_rand(), i + 1);
    const uint16_t t = free_[i];
    free_[i] = free_[j];
    free_[j] = t;
  }
  for (uint32_t i = 0; i < size(); ++i) state_[free_[i] - lo_] = PortState{static_cast<uint16_t>(i), 0, ~0u};
  drawn_ = next_rand();
}

uint32_t PortAllocator::next_rand() {  // xorshift64*: a few instructions, no memory
  rng_ ^= rng_ >> 12;
  rng_ ^= rng_ << 25;
  rng_ ^= rng_ >> 27;
  return static_cast<uint32_t>((rng_ * 0x2545F4914F6CDD1DULL) >> 32);
}

bool PortAllocator::take(uint16_t port) {
  if (!owns(port)) return false;
  PortState& st = state_[port - lo_];
  if (st.refs != 0) return false;
  const uint32_t n = free_count() - 1;
  place(st.pos, free_[n]);  // the end of the array moves into the hole
  nfree_.store(n, std::memory_order_relaxed);
  st.refs = 1;
  return true;
}

bool PortAllocator::take_any(uint16_t& port) {
  const uint32_t n = free_count();
  if (n == 0) return false;
  port = free_[n - 1];
  nfree_.store(n - 1, std::memory_order_relaxed);
  state_[port - lo_].refs = 1;  // a store only: pos means nothing while in use
  return true;
}

void PortAllocator::release(uint16_t port) {
  PortState& st = state_[port - lo_];
  if (st.refs == 0) return;  // defensive: double release is a bug, never a crash
  if (--st.refs != 0) return;
  // Join at a random place r: the port there moves to the end. r was drawn at the
  // previous release, which prefetched its line (a miss once the pool outgrows the
  // cache; the next release is usually this allocator's again).
  const uint32_t n = free_count();
  const uint32_t r = scale(drawn_, n + 1);
  drawn_ = next_rand();
  __builtin_prefetch(free_.get() + scale(drawn_, n + 2));  // may be one past the end: a prefetch only
  if (r != n) place(n, free_[r]);
  place(r, port);
  nfree_.store(n + 1, std::memory_order_relaxed);
}

}  // namespace natgw::nat
