// Large, zeroed, cache-line-aligned arrays for the session table: DPDK memory
// (hugepages, the right NUMA socket) when the EAL has it, else anonymous memory
// with transparent huge pages requested. Random access over millions of sessions
// misses the TLB on 4 KB pages; 2 MB pages keep the walk in cache.
#pragma once

#include <cstddef>
#include <utility>

namespace natgw::nat {

class TableMemory {
 public:
  TableMemory() = default;
  // Throws std::runtime_error when neither allocator can give `bytes`.
  TableMemory(const char* what, size_t bytes, int socket);
  ~TableMemory();
  TableMemory(TableMemory&& o) noexcept { *this = std::move(o); }
  TableMemory& operator=(TableMemory&& o) noexcept;
  TableMemory(const TableMemory&) = delete;
  TableMemory& operator=(const TableMemory&) = delete;

  void* get() const { return p_; }
  size_t size() const { return bytes_; }
  bool hugepages() const { return rte_; }  // from the EAL's (hugepage) heap
  // Bytes held in anonymous mappings (the fallback), process-wide: no heap statistic
  // sees them, so memory probes (perf/micro) add this.
  static size_t mapped_bytes();

 private:
  void release();
  void* p_ = nullptr;
  size_t bytes_ = 0;
  bool rte_ = false;
};

}  // namespace natgw::nat
