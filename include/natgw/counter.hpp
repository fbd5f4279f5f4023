// A statistics counter written by exactly one thread and read by others.
//
// The writer does a relaxed load + relaxed store (no locked instruction, no
// shared-line RMW); readers do a relaxed load. This is race-free C++ and costs
// the same as a plain increment on x86.
#pragma once

#include <atomic>
#include <cstdint>

namespace natgw {

class Counter {
 public:
  void add(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }
  void sub(uint64_t n = 1) { v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed); }
  void set(uint64_t n) { v_.store(n, std::memory_order_relaxed); }
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

}  // namespace natgw
