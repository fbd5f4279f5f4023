// A compact hash index from a key to a 32-bit value, for one writer and any number
// of lock-free readers. It stores no keys: each slot is a 32-bit signature and the
// value, and the caller checks a candidate against the object the value names
// (for sessions: the session itself, which the packet needs next anyway). That is
// 8 bytes per entry instead of rte_hash's key + data + bucket (~40 B), and one
// cache line per lookup instead of two (bucket, then key store).
//
// Layout: 64-byte buckets of 7 slots (signatures, then values) and an overflow count. An entry lives in its
// home bucket or, when that is full, in the next bucket with room (linear probing
// over buckets); `overflow` counts the entries that went past a bucket, so a lookup
// stops at the first bucket whose count is zero. Entries never move, so a reader
// needs no retry: it may miss an entry being inserted, or find one being erased,
// both only during the race itself. The caller reclaims what a value names only
// after a grace period (RCU), so a reader that found an erased value reads it intact.
//
// Hash: one 64x64->128 multiply of the two key words with per-table random seeds,
// folded (a flood of chosen outside ports cannot aim at one bucket without the seeds).
// The low half picks the bucket (multiply-shift range reduction: any bucket count,
// no power-of-two waste), the high half is the signature.
#pragma once

#include <rte_prefetch.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include <atomic>
#include <cstdint>

#include "nat/table_memory.hpp"

namespace natgw::nat {

class SigIndex {
 public:
  static constexpr unsigned kSlots = 7;
  // Signatures apart from values, so one bucket's 7 signatures are compared in two
  // 16-byte vector steps; sig[7] stays 0 and never matches (signatures are odd).
  struct alignas(64) Bucket {
    std::atomic<uint32_t> sig[kSlots + 1];  // 0 = empty
    std::atomic<uint32_t> val[kSlots];
    std::atomic<uint16_t> overflow;  // entries homed at or before here, stored after
    uint8_t used;                    // writer only: bitmap of occupied slots
    uint8_t pad;
  };
  static_assert(sizeof(Bucket) == 64);

  SigIndex() = default;
  // Room for `entries` at a load of at most `load` (throws on allocation failure).
  SigIndex(const char* what, uint32_t entries, double load, int socket, uint64_t seed);

  uint64_t hash(uint64_t a, uint64_t b) const {
    const __uint128_t m = static_cast<__uint128_t>(a ^ seed_[0]) * (b ^ seed_[1]);
    return static_cast<uint64_t>(m) ^ static_cast<uint64_t>(m >> 64);
  }

  // Bit i set when slot i of bucket b carries signature sig.
  static unsigned matches(const Bucket& b, uint32_t sig) {
#if defined(__SSE2__)
    const __m128i s = _mm_set1_epi32(static_cast<int>(sig));
    const __m128i lo = _mm_load_si128(reinterpret_cast<const __m128i*>(&b.sig[0]));
    const __m128i hi = _mm_load_si128(reinterpret_cast<const __m128i*>(&b.sig[4]));
    const unsigned m = static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(lo, s)))) |
                       static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(hi, s)))) << 4;
    // Aligned 16-byte loads read each 32-bit lane atomically on x86; the fence
    // keeps the value loads after the signature loads.
    std::atomic_thread_fence(std::memory_order_acquire);
    return m;
#else
    unsigned m = 0;
    for (unsigned i = 0; i < kSlots; ++i) m |= (b.sig[i].load(std::memory_order_acquire) == sig) << i;
    return m;
#endif
  }

  static constexpr uint32_t kNoBucket = ~0u;
  // First value in bucket `b` whose signature matches, or -1: a guess to prefetch
  // what it names before find() confirms it. With no match in a bucket that entries
  // overflowed past, `next` names the bucket to peek next (else kNoBucket): at 80%
  // load ~9% of the entries live there, and a bulk lookup prefetches it instead of
  // walking to it with two serial misses (bucket, session).
  int64_t peek(uint32_t b, uint64_t h, uint32_t& next) const {
    const Bucket& bk = buckets_[b];
    const unsigned m = matches(bk, sig_of(h));
    if (m) {
      next = kNoBucket;
      return bk.val[__builtin_ctz(m)].load(std::memory_order_acquire);
    }
    next = bk.overflow.load(std::memory_order_relaxed) ? (b + 1 == nbuckets_ ? 0 : b + 1) : kNoBucket;
    return -1;
  }
  void prefetch_bucket(uint32_t b) const { rte_prefetch0(&buckets_[b]); }

  // The value whose signature matches and for which match(value) holds, or -1. A
  // reader racing an erase + insert into the same slot may read the new value under
  // the old signature: match() then fails, as for any key not (yet) present.
  template <class Match>
  int64_t find(uint64_t h, Match&& match) const {
    uint32_t b = home(h);
    const uint32_t sig = sig_of(h);
    for (uint32_t probes = 0; probes < nbuckets_; ++probes) {
      const Bucket& bk = buckets_[b];
      for (unsigned m = matches(bk, sig); m; m &= m - 1) {
        const uint32_t v = bk.val[__builtin_ctz(m)].load(std::memory_order_acquire);
        if (match(v)) return v;
      }
      if (bk.overflow.load(std::memory_order_acquire) == 0) return -1;
      b = b + 1 == nbuckets_ ? 0 : b + 1;
    }
    return -1;
  }

  // --- the writer only ---
  // Publishes the value (release: readers that see it see what it names, written
  // before). False when every bucket is full.
  bool insert(uint64_t h, uint32_t value);
  // Removes the entry (h, value); false when absent.
  bool erase(uint64_t h, uint32_t value);

  uint32_t size() const { return size_; }
  uint32_t buckets() const { return nbuckets_; }
  size_t memory_bytes() const { return mem_.size(); }
  // Longest run of consecutive buckets with entries overflowing past them: what the
  // slowest miss walks. A health figure for tests and benchmarks.
  uint32_t longest_run() const;
  // The bucket a hash starts at (tests check the spread).
  uint32_t home(uint64_t h) const {
    return static_cast<uint32_t>((static_cast<uint64_t>(static_cast<uint32_t>(h)) * nbuckets_) >> 32);
  }

 private:
  // Odd, so never 0 (empty).
  static uint32_t sig_of(uint64_t h) { return static_cast<uint32_t>(h >> 32) | 1; }

  TableMemory mem_;
  Bucket* buckets_ = nullptr;
  uint32_t nbuckets_ = 0;
  uint32_t size_ = 0;
  uint64_t seed_[3] = {};
};

}  // namespace natgw::nat
