#include "nat/host_sessions.hpp"

namespace natgw::nat {

HostSessions::HostSessions(const char* what, uint32_t max_hosts, int socket, uint64_t seed)
    : index_(what, max_hosts, 0.8, socket, seed),
      host_mem_("ngw_hosts", size_t{max_hosts} * sizeof(Host), socket),
      free_mem_("ngw_free_hosts", size_t{max_hosts} * 4, socket),
      hosts_(static_cast<Host*>(host_mem_.get())),
      free_(static_cast<uint32_t*>(free_mem_.get())),
      nfree_(max_hosts) {
  for (uint32_t i = 0; i < max_hosts; ++i) free_[i] = max_hosts - 1 - i;  // low slots first
}

HostSessions::Added HostSessions::try_add(rte_be32_t host, uint32_t limit) {
  const uint64_t h = hash_of(host);
  if (const int64_t v = find(host, h); v >= 0) {
    Host& e = hosts_[v];
    if (limit && e.sessions >= limit) return Added::kAtLimit;
    ++e.sessions;
    return Added::kYes;
  }
  if (nfree_ == 0) return Added::kFull;
  const uint32_t v = free_[nfree_ - 1];
  if (!index_.insert(h, v)) return Added::kFull;
  --nfree_;
  hosts_[v] = Host{host, 1};
  live_.store(live_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  return Added::kYes;
}

void HostSessions::remove(rte_be32_t host) {
  const uint64_t h = hash_of(host);
  const int64_t v = find(host, h);
  if (v < 0) return;
  if (--hosts_[v].sessions != 0) return;
  index_.erase(h, static_cast<uint32_t>(v));
  free_[nfree_++] = static_cast<uint32_t>(v);
  live_.store(live_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

uint32_t HostSessions::count(rte_be32_t host) const {
  const int64_t v = find(host, hash_of(host));
  return v < 0 ? 0 : hosts_[v].sessions;
}

}  // namespace natgw::nat
