// A poll-mode worker: RX burst -> parse -> NAT/route -> L2 -> TX burst, for one
// RX/TX queue of every port. Runs alone on its lcore; shares only lock-free
// structures with other workers (design §7).
#pragma once

#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <cstdint>
#include <vector>

#include "dataplane/context.hpp"
#include "dataplane/counters.hpp"
#include "net/packet.hpp"

namespace natgw::dp {

constexpr uint16_t kBurst = 32;

class Worker {
 public:
  Worker(Context& ctx, uint16_t id, rte_mempool* pool);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // The lcore loop: registers with RCU, polls until ctx.stop, drains TX.
  void run();
  // One iteration: RX from every port, process, flush, housekeeping, quiescent state.
  // `start` is the TSC at which it began; returns the TSC at which it ended, the next
  // poll's start, so the loop reads the clock once per poll (rdtsc costs ~18 ns on a
  // KVM guest, more than an empty memif poll's own work) and busy + idle cycles add up
  // to the whole loop.
  uint64_t poll_once(uint64_t start);

  // The pipeline for a burst that arrived on interface `iface` (tests call this directly).
  void process(uint16_t iface, rte_mbuf** pkts, uint16_t n);
  void flush();
  // Process what other workers handed over (new flows and fragments we own).
  unsigned drain_handoff();
  // Timers: ARP retries, session expiry, fragment expiry, RCU reclaim.
  void housekeeping();

  // Tests: fixed clock and captured TX instead of rte_eth_tx_burst.
  void set_clock_ms(uint32_t ms) { now_ms_ = ms; manual_clock_ = true; }
  uint32_t now_ms() const { return now_ms_; }
  void capture_tx(bool on) { capture_ = on; }
  std::vector<rte_mbuf*> take_captured(uint16_t iface);
  // Tests: pick up the current tables without a poll loop.
  void refresh_tables() { tables_ = ctx_.tables.load(std::memory_order_acquire); }

  const WorkerCounters& counters() const { return counters_; }
  uint16_t id() const { return id_; }

 private:
  struct TxBuf {
    uint16_t n = 0;
    uint32_t bytes = 0;  // of pkts[0..n), summed as they are queued: after TX the PMD owns (may free) them
    rte_mbuf* pkts[64];
  };
  struct PendingArp {  // packets held while their next hop is resolved
    rte_be32_t ip = 0;
    uint16_t iface = 0;
    uint8_t n = 0;
    uint8_t tries = 0;
    uint32_t first_ms = 0;
    uint32_t last_req_ms = 0;
    rte_mbuf* pkts[8];
  };
  struct FragEntry {  // first fragment seen: later ones follow its session
    rte_be32_t src = 0, dst = 0;
    rte_be16_t id = 0;
    uint8_t proto = 0;
    uint8_t dir = 0;     // nat::Dir of the packet that created it, or kFragForward
    bool used = false;   // holds a first fragment's session (until swept after expiry)
    uint16_t table = 0;  // which worker's session table
    uint32_t session = 0;
    uint32_t expires_ms = 0;
    uint32_t created_ms = 0;  // the session's: tells a reused slot from the session itself
  };
  // FragEntry::dir of a first fragment routed untranslated without a session (no
  // SNAT applied, no ACL tracking): its later fragments are forwarded as they are.
  static constexpr uint8_t kFragForward = 2;
  struct HeldFrag {  // a later fragment that arrived before its first
    rte_mbuf* m = nullptr;
    uint16_t iface = 0;
    uint32_t seq = 0;  // arrival order: a full buffer evicts the oldest
    uint32_t expires_ms = 0;
  };

  // After classify(): handled already, a session lookup by inside or outside key, or
  // plain forwarding (routing only, stateless).
  enum class Lane : uint8_t { kDone, kInside, kOutside, kForward };
  void process_burst(uint16_t iface, rte_mbuf** pkts, uint16_t n);
  // forward_only: no SNAT rule and no session ever created, decided once per burst so
  // that all packets of a flow in one burst take the same lane (and keep their order).
  [[gnu::always_inline]] inline Lane classify(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, nat::FlowKey& k,
                                              bool forward_only);
  bool forward_only() const {
    return tables_->snat.empty() && !ctx_.nat_used.load(std::memory_order_relaxed);
  }
  // Hot helpers are always inlined (only worker.cpp calls them): each call level
  // cost ~15-20 instructions of register saves per packet (callgrind).
  // own_checked: this worker's table already missed k (the burst's bulk lookup).
  // probe/probe_addr: the first port to share drawn by the prefetch stage (see
  // nat::SessionTable::prefetch_port), handed on to new_flow's create; 0 = none.
  void resolve(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, const nat::FlowKey& k, Lane lane,
               bool own_checked, uint32_t probe = 0, uint8_t probe_addr = 0);
  [[gnu::always_inline]] inline void finish_in2out(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, uint16_t table, uint32_t idx);
  [[gnu::always_inline]] inline void finish_out2in(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, uint16_t table, uint32_t idx);
  // s: session idx of table `table`, when the caller has it at hand.
  [[gnu::always_inline]] inline void finish_in2out(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, uint16_t table, uint32_t idx,
                                                   nat::Session& s);
  [[gnu::always_inline]] inline void finish_out2in(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, uint16_t table, uint32_t idx,
                                                   nat::Session& s);
  void echo_reply(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p);
  void handle(uint16_t iface, rte_mbuf* m);
  void handle_arp(uint16_t iface, rte_mbuf* m);
  void handle_icmp_error_out2in(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p);
  bool handle_icmp_error_in2out(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p);
  bool icmp_error_of_tracked_flow(const net::Ipv4Packet& p) const;
  void transit_icmp_error(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p);
  void handle_fragment(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, bool local);
  void new_flow(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, const nat::FlowKey& key, uint32_t probe = 0,
                uint8_t probe_addr = 0);
  void forward(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p);
  // The session new_flow (or a hairpin) creates for inside flow `key` of packet `p` (its
  // frame `m`, arrived on `iface`) under `rule`, leaving by `nh`. `egress_pool` (one
  // byte, the caller's) holds the egress interface's address for a rule without a pool.
  [[gnu::always_inline]] inline nat::SessionTable::CreateArgs snat_args(const SnatRule& rule, const route::NextHop& nh,
                                                                       uint16_t iface, rte_mbuf* m,
                                          const net::Ipv4Packet& p, const nat::FlowKey& key, uint8_t* egress_pool) const;
  static Drop create_failure(nat::CreateResult r);
  // An outside-lane packet no session holds: hairpinned, let in by endpoint-independent
  // filtering, or dropped.
  void unmatched_inbound(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, const nat::FlowKey& k);
  bool hairpin_source(uint16_t iface, const net::Ipv4Packet& p) const;
  void hairpin(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p);
  void open_inbound(uint16_t iface, rte_mbuf* m, net::Ipv4Packet& p, const nat::FlowKey& k);
  // Sessions outside packets may open (endpoint-independent filtering): at most this
  // fraction of a worker's table, so that they cannot crowd out inside flows.
  static constexpr uint32_t kInboundShare = 4;

  // The worker whose slice holds port `port` of outside address `addr` (the one that
  // owns its sessions and mapping); this worker when there is one, or for an address
  // NAT does not use.
  uint16_t port_owner(rte_be32_t addr, rte_be16_t port) const {
    if (ctx_.workers == 1) return id_;
    const int a = ctx_.sessions[0]->outside_index(addr);
    return a < 0 ? id_ : ctx_.sessions[0]->owner_of(static_cast<uint32_t>(a), rte_be_to_cpu_16(port));
  }
  // Session lookup across tables: `hint` first, then the others. Returns the table or -1.
  // The table holding k (hint first), or -1; `skip` names a table already searched.
  int find(const nat::FlowKey& k, uint16_t hint, uint32_t& idx, int skip = -1) const;
  [[gnu::always_inline]] inline void out2in(rte_mbuf* m, net::Ipv4Packet& p, nat::Session& s);
  [[gnu::always_inline]] inline void in2out(rte_mbuf* m, net::Ipv4Packet& p, nat::Session& s);
  void undo_in2out(net::Ipv4Packet& p, const nat::Session& s);
  [[gnu::always_inline]] inline void touch(nat::Session& s, const net::Ipv4Packet& p, bool from_inside,
                                           uint16_t iface);
  void reset_transition(nat::Session& s, uint8_t add, bool rst, bool from_inside, uint8_t cur);
  void remember_fragment(const net::Ipv4Packet& p, uint16_t table, uint32_t idx, uint8_t dir);
  void release_held_fragments();

  // Output.
  [[gnu::always_inline]] inline bool fits_mtu(uint16_t in_if, uint16_t out_if, rte_mbuf* m, net::Ipv4Packet& p);
  // Too big for out_if's MTU and not to be fragmented (DF): what fits_mtu refuses.
  bool too_big(uint16_t out_if, const net::Ipv4Packet& p) const {
    return p.total_len > ctx_.ifaces[out_if].mtu && (p.flags & net::PKT_DF);
  }
  [[gnu::always_inline]] inline void send_l3(uint16_t out_if, rte_be32_t nh, rte_mbuf* m);
  [[gnu::always_inline]] inline void send_l2(uint16_t out_if, const rte_ether_addr& dst, rte_mbuf* m);
  // The same to a session's previous hop, out of its in_iface: one 8-byte store (nat::Session::in_mac).
  [[gnu::always_inline]] inline void send_to_prev_hop(const nat::Session& s, rte_mbuf* m);
  [[gnu::always_inline]] inline void send_l2_rest(uint16_t out_if, rte_ether_hdr* eth, rte_mbuf* m);
  void fragment_and_emit(uint16_t out_if, rte_mbuf* m);
  void clamp_mss(uint16_t out_if, rte_mbuf* m);
  [[gnu::always_inline]] inline void emit(uint16_t out_if, rte_mbuf* m);
  void flush_iface(uint16_t out_if);
  void hold_for_arp(uint16_t out_if, rte_be32_t nh, rte_mbuf* m);
  void send_arp_request(uint16_t out_if, rte_be32_t target);
  void send_icmp_error(uint16_t in_if, rte_mbuf* m, const net::Ipv4Packet& p, uint8_t type,
                       uint8_t code, uint16_t mtu = 0);
  void drop(rte_mbuf* m, Drop why) {
    counters_.drops[why].add();
    rte_pktmbuf_free(m);
  }
  void update_clock(uint64_t tsc);
  // Forget cached next hops when the ARP table changed a MAC or interface.
  void check_l2_hops() {
    const uint64_t g = ctx_.arp.generation();
    if (g == l2_gen_) [[likely]] return;
    for (auto& h : l2_hops_) h.iface = kNoIface;
    l2_gen_ = g;
  }
  void hand_off(uint16_t to, uint16_t iface, rte_mbuf* m);

  Context& ctx_;
  const RuntimeTables* tables_ = nullptr;
  uint16_t id_;
  rte_mempool* pool_;
  WorkerCounters counters_;
  TxBuf tx_[kMaxIfaces];
  std::vector<rte_mbuf*> captured_[kMaxIfaces];
  bool capture_ = false;
  bool manual_clock_ = false;
  uint32_t now_ms_ = 0;
  uint64_t tsc0_ = 0;
  uint64_t ms_per_tsc_ = 0;  // 2^64 * 1000 / TSC Hz: milliseconds = TSC cycles * this >> 64 (no division)
  // ICMP error rate limit: token buckets, per worker, one for frag-needed (path MTU
  // discovery must not starve behind a traceroute or a TTL flood) and one for the rest.
  static constexpr uint32_t kIcmpErrorsPerSec = 200;  // per bucket
  static constexpr uint32_t kIcmpRefillMs = 50;       // refilled in small steps: smooth, bounded
  static constexpr uint32_t kIcmpTokens = kIcmpErrorsPerSec * kIcmpRefillMs / 1000;
  static_assert(kIcmpTokens * (1000 / kIcmpRefillMs) == kIcmpErrorsPerSec);
  uint32_t icmp_tokens_[2] = {kIcmpTokens, kIcmpTokens};
  uint32_t icmp_refill_ms_[2] = {0, 0};
  // Next hops resolved through ARP, by the low bits of the address: in2out traffic
  // goes to a handful of gateways, and a hit skips the shared table's hash probe
  // (~25 instructions a packet). Valid while the ARP generation stays l2_gen_.
  struct L2Hop {
    rte_be32_t nh = 0;
    uint16_t iface = kNoIface;
    rte_ether_addr mac{};
  };
  static constexpr uint16_t kNoIface = 0xffff;
  static constexpr unsigned kL2Hops = 8;
  L2Hop l2_hops_[kL2Hops];
  uint64_t l2_gen_ = 0;
  static constexpr unsigned kPendingArp = 64;
  PendingArp pending_[kPendingArp];
  unsigned pending_used_ = 0;
  static constexpr unsigned kFragSlots = 1024;
  FragEntry frags_[kFragSlots];
  unsigned frag_sweep_ = 0;  // housekeeping forgets expired entries from here, a few at a time
  static constexpr unsigned kHeldFrags = 64;
  HeldFrag held_[kHeldFrags];
  unsigned held_used_ = 0;
  uint32_t held_seq_ = 0;
  uint32_t last_housekeeping_ms_ = 0;
  uint32_t last_gw_refresh_ms_ = 0;
  bool gw_refreshed_ = false;
  // Session setup's port prefetch (process_burst): the outside address the last new
  // flow of an unpooled SNAT rule got (a guess for the next ones, -1 = none), and the
  // state of the random draws for the first port to share when an address has none
  // free (seeded per worker: the port a flow shares must not be predictable).
  int16_t egress_guess_ = -1;
  uint32_t probe_rng_ = 1;
};

}  // namespace natgw::dp
