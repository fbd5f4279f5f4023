// What all workers share: interfaces, the ARP table, the per-worker session tables,
// and the reloadable tables (routes, ACL, SNAT rules, timeouts) published through
// an atomic pointer and reclaimed with rte_rcu_qsbr.
#pragma once

#include <rte_cycles.h>

#include <rte_byteorder.h>
#include <rte_ether.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "acl/acl_table.hpp"
#include "arp/arp_table.hpp"
#include "config/config.hpp"
#include "dataplane/counters.hpp"
#include "nat/session_table.hpp"
#include "route/route_table.hpp"

namespace natgw::dp {

struct Iface {
  std::string name;
  uint16_t port_id = 0;      // DPDK port
  rte_be32_t addr = 0;       // our address on this link
  uint32_t net = 0, mask = 0;  // host order, for "is this on-link"
  uint16_t mtu = 1500;
  uint16_t mss_clamp = 0;
  bool one_armed = false;    // SNAT also flows that leave by the interface they came in on
  rte_ether_addr mac{};
  uint8_t outside_idx = 0;   // this address in the outside-address list
};

struct SnatRule {
  std::vector<std::pair<uint32_t, uint32_t>> from;  // (net, mask) host order
  std::vector<uint8_t> pool;                       // outside address indexes; empty = egress iface
  uint8_t id = 0;                                  // mapping realm (pool id)
};

// Everything a reload replaces, built off the data path and swapped in one step.
struct RuntimeTables {
  uint64_t generation = 0;
  std::unique_ptr<route::RouteTable> routes;
  std::unique_ptr<acl::AclTable> acl;
  std::vector<SnatRule> snat;
  bool snat_pools = false;  // some rule has its own pool (`to = [...]`)
  nat::Timeouts timeouts;
  uint32_t fragment_timeout_ms = 2000;
  bool port_preservation = true;
  bool port_overlapping = true;
  bool hairpinning = false;                     // inside -> an outside address of ours -> inside
  bool endpoint_independent_filtering = false;  // an unsolicited packet to a mapped port opens a session
  uint32_t max_sessions_per_host = 0;           // 0 = no limit
  uint32_t max_ports_per_host = 0;              // 0 = no limit
  std::vector<rte_be32_t> gateways;  // refreshed by ARP periodically

  // The first SNAT rule whose `from` holds addr, or nullptr.
  const SnatRule* snat_rule_from(rte_be32_t addr) const {
    const uint32_t a = rte_be_to_cpu_32(addr);
    for (const auto& r : snat)
      for (const auto& [net, mask] : r.from)
        if ((a & mask) == net) return &r;
    return nullptr;
  }
};

struct Context {
  std::vector<Iface> ifaces;  // config order; index = "iface"
  uint8_t port_to_iface[RTE_MAX_ETHPORTS] = {};
  std::vector<nat::OutsideAddress> outside;  // every address NAT may use
  std::vector<rte_be32_t> local;             // addresses we answer for (ifaces + pools)
  arp::ArpTable arp{4096};
  std::atomic<const RuntimeTables*> tables{nullptr};
  rte_rcu_qsbr* qsbr = nullptr;
  uint64_t clock_origin_tsc = 0;  // TSC at which every worker's millisecond clock reads 0 (the first Worker sets it)
  std::vector<std::unique_ptr<nat::SessionTable>> sessions;  // one per worker
  // Per-worker inbox for packets another worker hands over: new flows go to the
  // worker that owns their inside host (so endpoint-independent mapping holds
  // across workers), fragments to the worker that owns their address pair.
  std::vector<rte_ring*> handoff;
  // Per-worker NAT event rings (nat::NatEvent elements; the worker produces, the control thread
  // consumes). Always there; a worker's table fills its ring only while nat_events is on.
  std::vector<rte_ring*> events;
  static constexpr unsigned kEventRing = 1u << 17;  // ~60 ms of the fastest setup, > 4 drain turns; 4 MB
  uint16_t workers = 1;
  uint32_t max_sessions = 1u << 16;
  bool count_hosts = false;  // a per-host limit was set at start: tables count sessions and ports per host
  std::atomic<bool> stop{false};
  std::atomic<bool> nat_used{false};  // a session was ever created: in2out must look up
  // Set by the control thread around a port reset (ENA's RTE_ETH_EVENT_INTR_RESET):
  // workers neither poll nor transmit on a paused port.
  std::atomic<bool> port_paused[kMaxIfaces] = {};

  // The workers' millisecond clock (Worker::update_clock's formula) at TSC `tsc`: for the control
  // thread, e.g. to turn the times in NAT events into wall-clock times.
  uint32_t clock_ms(uint64_t tsc) const {
    return static_cast<uint32_t>((tsc - clock_origin_tsc) * 1000 / rte_get_tsc_hz());
  }
  // Which worker creates sessions for inside host `src` (network order).
  uint16_t flow_owner(rte_be32_t src) const {
    return workers == 1 ? 0 : static_cast<uint16_t>((rte_be_to_cpu_32(src) * 2654435761u >> 16) % workers);
  }
  // Which worker tracks the fragments between two addresses (order-independent).
  uint16_t fragment_owner(rte_be32_t a, rte_be32_t b) const {
    return workers == 1 ? 0 : static_cast<uint16_t>(((a ^ b) * 2654435761u >> 16) % workers);
  }

  // Every packet asks: a hash probe instead of a scan of `local` (17 -> ~7
  // instructions a packet with four addresses; pools can hold many more).
  bool is_local(rte_be32_t a) const {
    for (uint32_t i = local_home(a);; i = (i + 1) & local_mask) {
      const rte_be32_t s = local_slots[i];
      if (s == a) return a != 0;
      if (s == 0) return false;
    }
  }
  uint32_t local_home(rte_be32_t a) const { return (a * 2654435761u >> 16) & local_mask; }
  // `local` as an open-addressing set (0 = empty, at most half full); init_context fills it.
  std::vector<rte_be32_t> local_slots{0};
  uint32_t local_mask = 0;
};

// Control path. Build the interface list, outside addresses and local addresses
// from a validated config (ports' MACs and ids are filled in by the caller).
// Throws std::runtime_error on a conflict (e.g. one address with two port ranges).
void init_context(Context& ctx, const config::Config& cfg);
// Allocate the qsbr and one session table per worker. Throws on DPDK failure.
void init_sessions(Context& ctx, int socket);
// Build reloadable tables for `cfg` against the running context. Throws
// std::runtime_error naming what cannot change without a restart.
std::unique_ptr<RuntimeTables> build_tables(const Context& ctx, const config::Config& cfg,
                                            uint64_t generation);
// Publish new tables; waits (control thread only) until no worker uses the old ones.
void publish_tables(Context& ctx, std::unique_ptr<RuntimeTables> next);
// Free everything owned through the context (tables pointer, session tables, qsbr).
void destroy_context(Context& ctx);

}  // namespace natgw::dp
