#include "nat/table_memory.hpp"

#include <rte_eal.h>
#include <rte_malloc.h>

#include <sys/mman.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace natgw::nat {

namespace {
std::atomic<size_t> g_mapped{0};
}

size_t TableMemory::mapped_bytes() { return g_mapped.load(std::memory_order_relaxed); }

TableMemory::TableMemory(const char* what, size_t bytes, int socket) : bytes_(bytes) {
  if (bytes == 0) return;
  // Only hugepage-backed EAL memory is worth it; with --no-huge the EAL heap is
  // small (-m) and on 4 KB pages, so plain anonymous memory with THP is better.
  if (rte_eal_has_hugepages()) {
    p_ = rte_zmalloc_socket(what, bytes, 64, socket);
    if (p_) {
      rte_ = true;
      return;
    }
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error(std::string("cannot allocate ") + std::to_string(bytes >> 20) + " MB for " + what);
  madvise(p, bytes, MADV_HUGEPAGE);  // advisory: fine if THP is off
  p_ = p;
  g_mapped.fetch_add(bytes, std::memory_order_relaxed);
}

TableMemory& TableMemory::operator=(TableMemory&& o) noexcept {
  if (this != &o) {
    release();
    p_ = std::exchange(o.p_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    rte_ = o.rte_;
  }
  return *this;
}

TableMemory::~TableMemory() { release(); }

void TableMemory::release() {
  if (!p_) return;
  if (rte_)
    rte_free(p_);
  else {
    munmap(p_, bytes_);
    g_mapped.fetch_sub(bytes_, std::memory_order_relaxed);
  }
  p_ = nullptr;
}

}  // namespace natgw::nat
