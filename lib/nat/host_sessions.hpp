// Sessions and outside ports per inside host, for nat.max_sessions_per_host and
// nat.max_ports_per_host: one host (a runaway client, a compromised instance, a P2P
// node) must not take a worker's whole session table or an address's ports. Every
// translated session and mapping of an inside host lives in the table of the worker
// that owns the host (dp::Context::flow_owner), so one worker's counts are the host's.
// A host's ports are its endpoint-independent mappings (one outside port, or ICMP
// identifier, each), however many sessions share them. Owner only, like the rest of
// the session table; hosts() may be read by the control thread.
#pragma once

#include <rte_byteorder.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "nat/nat_event.hpp"
#include "nat/sig_index.hpp"
#include "nat/table_memory.hpp"

namespace natgw::nat {

class HostSessions {
 public:
  // Room for `max_hosts` hosts (a table of N sessions has at most N hosts: a host is
  // kept while it has a session or a mapping, and every mapping has a session); throws
  // std::runtime_error when the memory cannot be had.
  HostSessions(const char* what, uint32_t max_hosts, int socket, uint64_t seed);

  // Count one more session for `host`, unless it already has `limit` (0 = no limit).
  // kFull: a new host and no room, which means every session slot holds another host's
  // session, active or closing (a host lives while it has a session or a mapping, and a
  // mapping outlives its last session only until the grace period ends): the caller
  // reclaims closing sessions and tries again; then the session table is full.
  enum class Added : uint8_t { kYes, kAtLimit, kFull };
  Added try_add(rte_be32_t host, uint32_t limit);
  // One session of `host` ended (a host without a count is ignored).
  void remove(rte_be32_t host);
  uint32_t count(rte_be32_t host) const;
  // The same for the host's ports (mappings): add_port before a new mapping takes a
  // port, remove_port when a mapping is freed (or was not made after all).
  Added add_port(rte_be32_t host, uint32_t limit);
  void remove_port(rte_be32_t host);
  uint32_t ports(rte_be32_t host) const;
  // Whether a quota event for `host`, just refused by try_add or add_port (so it has an
  // entry), is due: none in the last second. Marks it sent when it is.
  bool quota_due(rte_be32_t host, uint32_t now_ms);
  // Start loading the index bucket try_add(host) reads first (a burst's new flows).
  void prefetch(rte_be32_t host) const { index_.prefetch_bucket(index_.home(hash_of(host))); }
  // Hosts with at least one session or port.
  uint32_t hosts() const { return live_.load(std::memory_order_relaxed); }
  size_t memory_bytes() const { return index_.memory_bytes() + host_mem_.size() + free_mem_.size(); }

 private:
  struct Host {
    rte_be32_t addr;
    uint32_t sessions;
    uint32_t ports;
    uint32_t quota_ms;  // its last quota event (event_due)
  };
  Added add(rte_be32_t host, uint32_t limit, uint32_t Host::*count);
  void sub(rte_be32_t host, uint32_t Host::*count);
  uint32_t get(rte_be32_t host, uint32_t Host::*count) const;
  uint64_t hash_of(rte_be32_t a) const { return index_.hash(a, 0x2545F4914F6CDD1Dull); }
  int64_t find(rte_be32_t a, uint64_t h) const {
    return index_.find(h, [&](uint32_t v) { return hosts_[v].addr == a; });
  }
  // The slot the last add or sub found, if it still holds `a`: a new session that makes a new
  // mapping counts the host twice (its session, then its port); the second needs no hash and
  // probe. A freed slot has both counts 0, so it never passes for a live one.
  int64_t recent(rte_be32_t a) const {
    if (recent_ == kNone) return -1;
    const Host& e = hosts_[recent_];
    return e.addr == a && (e.sessions | e.ports) != 0 ? int64_t{recent_} : -1;
  }
  static constexpr uint32_t kNone = UINT32_MAX;
  // The host's slot, or -1: the recent one without a probe, else the index's.
  int64_t slot(rte_be32_t a) const {
    const int64_t v = recent(a);
    return v >= 0 ? v : find(a, hash_of(a));
  }

  SigIndex index_;  // host address -> slot in hosts_
  TableMemory host_mem_, free_mem_;
  Host* hosts_ = nullptr;
  uint32_t* free_ = nullptr;  // free slots of hosts_, first nfree_ valid
  uint32_t nfree_ = 0;
  uint32_t recent_ = kNone;  // see recent()
  std::atomic<uint32_t> live_{0};
};

}  // namespace natgw::nat
