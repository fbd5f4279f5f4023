// Counter snapshots for people and machines: the control side sums the per-worker
// counters on demand (workers never aggregate) and renders them as text, as
// Prometheus exposition, or as telemetry.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/context.hpp"
#include "dataplane/worker.hpp"

namespace natgw::control {

struct IfaceStats {
  std::string name;
  uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0;
  // From the port itself (rte_eth_stats): what the NIC/PMD saw and dropped.
  uint64_t port_ipackets = 0, port_opackets = 0, port_imissed = 0, port_ierrors = 0,
           port_oerrors = 0, port_rx_nombuf = 0;
  // Every extended statistic the PMD offers (rte_eth_xstats), e.g. ENA's
  // bw_in_allowance_exceeded or pps_allowance_exceeded. Control thread only.
  std::vector<std::pair<std::string, uint64_t>> xstats;
};

struct WorkerStats {
  uint64_t busy_cycles = 0, idle_cycles = 0, polls = 0;
  uint32_t sessions = 0;
};

// One outside address's ports (or ICMP identifiers), summed over the workers' slices.
struct OutsidePorts {
  rte_be32_t addr = 0;
  uint64_t size[3] = {}, in_use[3] = {};  // by protocol class: tcp, udp, icmp
};

struct Snapshot {
  std::vector<IfaceStats> ifaces;
  uint64_t drops[dp::kDropCount] = {};
  uint64_t malformed[8] = {};
  uint64_t forwarded = 0, in2out = 0, out2in = 0, icmp_errors_translated = 0, icmp_errors_sent = 0,
           icmp_errors_ratelimited = 0, echo_replies = 0, arp_requests_sent = 0,
           arp_replies_sent = 0, arp_learned = 0, arp_table_full = 0, fragments_translated = 0,
           fragments_buffered = 0, fragments_created = 0, mss_clamped = 0, handed_off = 0,
           hairpinned = 0, inbound_sessions = 0;
  uint64_t sessions_active[3] = {}, sessions_created[3] = {}, sessions_expired[3] = {};
  uint64_t port_alloc_errors = 0, mapping_collisions = 0, table_full = 0, mappings = 0, port_overlapped = 0, port_scans = 0;
  std::vector<OutsidePorts> outside;
  bool hosts_counted = false;  // nat.max_sessions_per_host was set at start
  uint64_t hosts = 0;          // inside hosts with translated sessions (when counted)
  uint64_t events_lost = 0;    // NAT events dropped: a worker's event ring was full
  uint64_t arp_entries = 0;
  uint64_t generation = 0;
  std::vector<WorkerStats> workers;
};

Snapshot snapshot(const dp::Context& ctx, const std::vector<const dp::Worker*>& workers,
                  bool read_ports);

// Human-readable block, printed on SIGUSR1, at exit, and by `natgwctl stats`.
std::string format_text(const Snapshot& s);

}  // namespace natgw::control
