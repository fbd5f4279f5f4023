#include "nat/sig_index.hpp"

#include <cmath>
#include <new>
#include <stdexcept>

namespace natgw::nat {

namespace {
uint64_t splitmix(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
}  // namespace

SigIndex::SigIndex(const char* what, uint32_t entries, double load, int socket, uint64_t seed) {
  if (!(load > 0.1 && load <= 0.95)) throw std::invalid_argument("SigIndex load must be in (0.1, 0.95]");
  const double want = std::ceil(static_cast<double>(entries) / (kSlots * load));
  if (want > 0xFFFFFFF0u) throw std::invalid_argument("SigIndex too large");
  nbuckets_ = want < 2 ? 2 : static_cast<uint32_t>(want);
  mem_ = TableMemory(what, static_cast<size_t>(nbuckets_) * sizeof(Bucket), socket);
  buckets_ = static_cast<Bucket*>(mem_.get());
  for (uint32_t i = 0; i < nbuckets_; ++i) new (&buckets_[i]) Bucket{};
  for (auto& s : seed_) s = splitmix(seed) | 1;
}

bool SigIndex::insert(uint64_t h, uint32_t value) {
  const uint32_t first = home(h);
  uint32_t b = first;
  for (uint32_t probes = 0; probes < nbuckets_; ++probes) {
    Bucket& bk = buckets_[b];
    if (bk.used != (1u << kSlots) - 1) {
      // Count the entry on every bucket it passes before publishing it; a count
      // that would wrap means the index is hopelessly overloaded: refuse.
      for (uint32_t p = first; p != b; p = p + 1 == nbuckets_ ? 0 : p + 1)
        if (buckets_[p].overflow.load(std::memory_order_relaxed) == UINT16_MAX) return false;
      for (uint32_t p = first; p != b; p = p + 1 == nbuckets_ ? 0 : p + 1)
        buckets_[p].overflow.store(static_cast<uint16_t>(buckets_[p].overflow.load(std::memory_order_relaxed) + 1),
                                   std::memory_order_relaxed);
      const unsigned i = static_cast<unsigned>(__builtin_ctz(~bk.used));
      bk.used = static_cast<uint8_t>(bk.used | 1u << i);
      bk.val[i].store(value, std::memory_order_release);  // a reader may pair it with an older signature
      bk.sig[i].store(sig_of(h), std::memory_order_release);
      ++size_;
      return true;
    }
    b = b + 1 == nbuckets_ ? 0 : b + 1;
  }
  return false;
}

bool SigIndex::erase(uint64_t h, uint32_t value) {
  const uint32_t first = home(h);
  const uint32_t sig = sig_of(h);
  uint32_t b = first;
  for (uint32_t probes = 0; probes < nbuckets_; ++probes) {
    Bucket& bk = buckets_[b];
    for (unsigned i = 0; i < kSlots; ++i) {
      if (bk.sig[i].load(std::memory_order_relaxed) != sig || bk.val[i].load(std::memory_order_relaxed) != value)
        continue;
      bk.sig[i].store(0, std::memory_order_release);
      bk.used = static_cast<uint8_t>(bk.used & ~(1u << i));
      for (uint32_t p = first; p != b; p = p + 1 == nbuckets_ ? 0 : p + 1)
        buckets_[p].overflow.store(static_cast<uint16_t>(buckets_[p].overflow.load(std::memory_order_relaxed) - 1),
                                   std::memory_order_release);
      --size_;
      return true;
    }
    if (bk.overflow.load(std::memory_order_relaxed) == 0) return false;
    b = b + 1 == nbuckets_ ? 0 : b + 1;
  }
  return false;
}

uint32_t SigIndex::longest_run() const {
  uint32_t best = 0, run = 0;
  for (uint32_t pass = 0; pass < 2; ++pass)  // twice: runs may wrap around the end
    for (uint32_t i = 0; i < nbuckets_; ++i) {
      run = buckets_[i].overflow.load(std::memory_order_relaxed) ? run + 1 : 0;
      if (run > best) best = run;
    }
  return best > nbuckets_ ? nbuckets_ : best;
}

}  // namespace natgw::nat
