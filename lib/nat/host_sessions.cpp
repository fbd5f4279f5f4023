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

// A host's entry lives while either count is non-zero.
HostSessions::Added HostSessions::add(rte_be32_t host, uint32_t limit, uint32_t Host::*count) {
  if (const int64_t found = slot(host); found >= 0) {
    Host& e = hosts_[found];
    recent_ = static_cast<uint32_t>(found);
    if (limit && e.*count >= limit) return Added::kAtLimit;
    ++(e.*count);
    return Added::kYes;
  }
  if (nfree_ == 0) return Added::kFull;
  const uint32_t v = free_[nfree_ - 1];
  if (!index_.insert(hash_of(host), v)) return Added::kFull;
  --nfree_;
  hosts_[v] = Host{host, 0, 0, 0};
  hosts_[v].*count = 1;
  recent_ = v;
  live_.store(live_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  return Added::kYes;
}

void HostSessions::sub(rte_be32_t host, uint32_t Host::*count) {
  const int64_t v = slot(host);
  if (v < 0) return;
  Host& e = hosts_[v];
  recent_ = static_cast<uint32_t>(v);
  if (e.*count == 0) return;
  --(e.*count);
  if (e.sessions != 0 || e.ports != 0) return;
  index_.erase(hash_of(host), static_cast<uint32_t>(v));
  free_[nfree_++] = static_cast<uint32_t>(v);
  live_.store(live_.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
}

uint32_t HostSessions::get(rte_be32_t host, uint32_t Host::*count) const {
  const int64_t v = slot(host);
  return v < 0 ? 0 : hosts_[v].*count;
}

HostSessions::Added HostSessions::try_add(rte_be32_t host, uint32_t limit) { return add(host, limit, &Host::sessions); }
void HostSessions::remove(rte_be32_t host) { sub(host, &Host::sessions); }
uint32_t HostSessions::count(rte_be32_t host) const { return get(host, &Host::sessions); }
HostSessions::Added HostSessions::add_port(rte_be32_t host, uint32_t limit) { return add(host, limit, &Host::ports); }
void HostSessions::remove_port(rte_be32_t host) { sub(host, &Host::ports); }
uint32_t HostSessions::ports(rte_be32_t host) const { return get(host, &Host::ports); }

bool HostSessions::quota_due(rte_be32_t host, uint32_t now_ms) {
  const int64_t v = slot(host);
  return v >= 0 && event_due(hosts_[v].quota_ms, now_ms);
}

}  // namespace natgw::nat
