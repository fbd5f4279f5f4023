#include "dataplane/worker.hpp"

#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_debug.h>
#include <rte_ethdev.h>
#include <rte_prefetch.h>
#include <rte_random.h>

#include <algorithm>
#include <cstring>

#include "net/build.hpp"
#include "net/checksum.hpp"

namespace natgw::dp {

using net::Ipv4Packet;
using nat::FlowKey;
using nat::Session;

namespace {

constexpr uint32_t kArpRetryMs = 1000;
constexpr uint32_t kArpGiveUpMs = 3000;
constexpr uint32_t kGatewayRefreshMs = 15000;
// Expiry visits every session slot at least once per kExpiryPassMs (so a session outlives
// its timeout by at most that), and never fewer than kExpiryMinBudget slots per millisecond.
constexpr uint32_t kExpiryPassMs = 2000;
constexpr uint32_t kExpiryMinBudget = 64;
// Session setup guesses a new flow's outside address (to prefetch its port) only
// above this many active sessions: below, what it would prefetch is in cache.
constexpr uint32_t kGuessPortsAbove = 1u << 15;

inline net::IcmpHdr* icmp_of(const Ipv4Packet& p) { return reinterpret_cast<net::IcmpHdr*>(p.l4); }

// TTL decrement and its checksum delta. The (ttl, proto) word x becomes x - 0x0100
// (network order; callers checked TTL > 1, so nothing borrows), and ~x + (x - 0x0100)
// is the same for every x: a constant, not two loads and a sum per packet.
constexpr uint32_t kTtlDecDelta = 0xffffu - RTE_BE16(0x0100);
static_assert(kTtlDecDelta == net::csum_delta16(RTE_BE16(0x4011), RTE_BE16(0x3f11)));
inline uint32_t ttl_dec(rte_ipv4_hdr* ip) {
  RTE_ASSERT(ip->time_to_live > 1);
  ip->time_to_live--;
  return kTtlDecDelta;
}

// Two MAC addresses equal: one 4-byte and one 2-byte compare (rte_is_same_ether_addr
// compares three 2-byte words).
inline bool same_mac(const rte_ether_addr& a, const rte_ether_addr& b) {
  uint32_t a4, b4;
  uint16_t a2, b2;
  std::memcpy(&a4, a.addr_bytes, 4);
  std::memcpy(&b4, b.addr_bytes, 4);
  std::memcpy(&a2, a.addr_bytes + 4, 2);
  std::memcpy(&b2, b.addr_bytes + 4, 2);
  return ((a4 ^ b4) | static_cast<uint32_t>(a2 ^ b2)) == 0;
}

// Build the inside-direction key of a packet, or return false if NAT cannot map it.
inline bool inside_key(const Ipv4Packet& p, FlowKey& k) {
  const rte_ipv4_hdr* ip = p.ip;
  switch (p.proto) {
    case IPPROTO_TCP:
    case IPPROTO_UDP: {
      const auto* ports = reinterpret_cast<const rte_be16_t*>(p.l4);
      k = nat::make_key(ip->src_addr, ip->dst_addr, ports[0], ports[1], p.proto, nat::kInside);
      return true;
    }
    case IPPROTO_ICMP: {
      const auto* ic = icmp_of(p);
      if (!net::is_icmp_query(ic->type)) return false;
      k = nat::make_key(ip->src_addr, ip->dst_addr, ic->id, 0, p.proto, nat::kInside);
      return true;
    }
    default: return false;
  }
}

inline bool outside_key(const Ipv4Packet& p, FlowKey& k) {
  const rte_ipv4_hdr* ip = p.ip;
  switch (p.proto) {
    case IPPROTO_TCP:
    case IPPROTO_UDP: {
      const auto* ports = reinterpret_cast<const rte_be16_t*>(p.l4);
      k = nat::make_key(ip->src_addr, ip->dst_addr, ports[0], ports[1], p.proto, nat::kOutside);
      return true;
    }
    case IPPROTO_ICMP: {
      const auto* ic = icmp_of(p);
      if (!net::is_icmp_query(ic->type)) return false;
      k = nat::make_key(ip->src_addr, ip->dst_addr, 0, ic->id, p.proto, nat::kOutside);
      return true;
    }
    default: return false;
  }
}

// 6 bits of a flow key (for a 64-bit "seen" mask).
inline unsigned key_tag(const nat::FlowKey& k) {
  uint64_t w[2];
  std::memcpy(w, &k, sizeof w);
  return static_cast<unsigned>((w[0] ^ w[1]) * 0x9E3779B97F4A7C15ull >> 58);
}

inline uint32_t frag_hash(rte_be32_t src, rte_be32_t dst, rte_be16_t id, uint8_t proto) {
  uint32_t h = src * 2654435761u ^ dst * 2246822519u ^ (static_cast<uint32_t>(id) << 8 | proto);
  return h ^ (h >> 15);
}

}  // namespace

Worker::Worker(Context& ctx, uint16_t id, rte_mempool* pool) : ctx_(ctx), id_(id), pool_(pool) {
  const uint64_t hz = rte_get_tsc_hz();  // 0 only before the EAL is up (tests set the clock)
  ms_per_tsc_ = hz ? static_cast<uint64_t>((static_cast<__uint128_t>(1000) << 64) / hz) : 0;
  // One origin for every worker's millisecond clock: a session two workers touch
  // (touch() stores last_seen_ms when it differs) is not rewritten back and forth,
  // and expiry reads the same time as the workers that refresh it.
  if (!ctx_.clock_origin_tsc) ctx_.clock_origin_tsc = rte_get_tsc_cycles();
  tsc0_ = ctx_.clock_origin_tsc;
  tables_ = ctx_.tables.load(std::memory_order_acquire);
  probe_rng_ = static_cast<uint32_t>(rte_rand()) | 1;  // xorshift32: never 0
}

Worker::~Worker() {
  for (auto& t : tx_)
    for (uint16_t i = 0; i < t.n; ++i) rte_pktmbuf_free(t.pkts[i]);
  for (auto& v : captured_)
    for (auto* m : v) rte_pktmbuf_free(m);
  for (auto& pa : pending_)
    for (uint8_t i = 0; i < pa.n; ++i) rte_pktmbuf_free(pa.pkts[i]);
  for (auto& h : held_)
    if (h.m) rte_pktmbuf_free(h.m);
}

void Worker::update_clock(uint64_t tsc) {
  if (manual_clock_) return;
  now_ms_ = static_cast<uint32_t>((static_cast<__uint128_t>(tsc - tsc0_) * ms_per_tsc_) >> 64);
}

void Worker::run() {
  rte_rcu_qsbr_thread_register(ctx_.qsbr, id_);
  rte_rcu_qsbr_thread_online(ctx_.qsbr, id_);
  for (uint64_t t = rte_rdtsc(); !ctx_.stop.load(std::memory_order_relaxed);) t = poll_once(t);
  flush();
  rte_rcu_qsbr_thread_offline(ctx_.qsbr, id_);
  rte_rcu_qsbr_thread_unregister(ctx_.qsbr, id_);
}

uint64_t Worker::poll_once(uint64_t start) {
  update_clock(start);
  tables_ = ctx_.tables.load(std::memory_order_acquire);
  unsigned total = 0;
  rte_mbuf* pkts[kBurst];
  for (uint16_t i = 0; i < ctx_.ifaces.size(); ++i) {
    if (ctx_.port_paused[i].load(std::memory_order_acquire)) [[unlikely]] continue;
    const uint16_t n = rte_eth_rx_burst(ctx_.ifaces[i].port_id, id_, pkts, kBurst);
    if (n) {
      process(i, pkts, n);
      total += n;
    }
  }
  if (ctx_.workers > 1) total += drain_handoff();
  flush();
  if (now_ms_ != last_housekeeping_ms_) housekeeping();  // at most once per millisecond
  rte_rcu_qsbr_quiescent(ctx_.qsbr, id_);
  const uint64_t end = rte_rdtsc();
  (total ? counters_.busy_cycles : counters_.idle_cycles).add(end - start);
  counters_.polls.add();
  return end;
}

void Worker::process(uint16_t iface, rte_mbuf** pkts, uint16_t n) {
  check_l2_hops();
  counters_.iface[iface].rx_packets.add(n);  // rx_bytes: process_burst, which reads each mbuf anyway
  for (uint16_t off = 0; off < n; off = static_cast<uint16_t>(off + kBurst))
    process_burst(iface, pkts + off, std::min<uint16_t>(kBurst, static_cast<uint16_t>(n - off)));
}

// The burst in passes (l3fwd / VPP style): classify every packet and pull its
// session key (what is neither session traffic nor plain forwarding is handled right
// there); forward the plain-forwarding packets, their route lookups prefetched
// together; look all keys up at once in this worker's table (the index buckets,
// then the candidate sessions, are prefetched for the whole burst before any key is
// compared); rewrite and queue the hits; then the misses (new flows, other workers'
// sessions), whose creates' first reads were prefetched meanwhile. Hits thus leave
// before the burst's misses: flows may change order, a flow's own packets do not.
void Worker::process_burst(uint16_t iface, rte_mbuf** pkts, uint16_t n) {
  FlowKey keys[kBurst];
  const FlowKey* kp[kBurst];
  Ipv4Packet ps[kBurst];
  rte_mbuf* ms[kBurst];
  Lane lanes[kBurst];
  unsigned k = 0, nf = 0;  // session lanes fill ps/ms from the bottom, plain forwarding from the top
  const bool fwd_only = forward_only();
  for (uint16_t i = 0; i < n && i < 4; ++i) rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void*));
  uint32_t bytes = 0;
  for (uint16_t i = 0; i < n; ++i) {
    if (i + 4 < n) rte_prefetch0(rte_pktmbuf_mtod(pkts[i + 4], void*));
    bytes += pkts[i]->pkt_len;  // as received (classify trims Ethernet padding)
    const Lane lane = classify(iface, pkts[i], ps[k], keys[k], fwd_only);
    if (lane == Lane::kDone) continue;
    if (lane == Lane::kForward) {  // k + nf <= i < n: the two ends never meet
      ++nf;
      ps[kBurst - nf] = ps[k];
      ms[kBurst - nf] = pkts[i];
      continue;
    }
    ms[k] = pkts[i];
    lanes[k] = lane;
    kp[k] = &keys[k];
    ++k;
  }
  counters_.iface[iface].rx_bytes.add(bytes);
  if (nf) {
    // Route lookups miss the cache for spread-out destinations (tbl24 is 64 MB): start them all
    // first, then forward in arrival order (top down).
    const route::RouteTable& routes = *tables_->routes;
    for (unsigned j = kBurst - nf; j < kBurst; ++j) routes.prefetch(ps[j].ip->dst_addr);
    for (unsigned j = kBurst; j-- > kBurst - nf;) forward(iface, ms[j], ps[j]);
  }
  if (k == 0) return;
  nat::SessionTable& own = *ctx_.sessions[id_];
  int64_t vals[kBurst];
  uint64_t hashes[kBurst];
  uint32_t probes[kBurst];  // first ports to share, drawn ahead (0 = none; see egress_guess_)
  uint8_t probe_addrs[kBurst];  // read only where probes[j] != 0
  const uint32_t inserts = own.inserts();
  // Every key's index bucket, then its guessed session, prefetched for the whole burst.
  static_assert(kBurst <= nat::SessionTable::kBulkMax);
  own.guess_bulk(kp, k, hashes, vals);
  // New flows (or another worker's). What creating their sessions reads first misses
  // the cache at scale, one flow after the other: start it for all of them as they are
  // found, the route (rte_lpm's tbl24 is 64 MB), the mapping's index bucket and the
  // free session and mapping slots the creates will take, in order.
  const RuntimeTables& t = *tables_;
  nat::SessionTable::PortRun run;
  unsigned nth = 0;
  const auto prepare_miss = [&](unsigned j) {
    probes[j] = 0;
    if (lanes[j] != Lane::kInside) return;
    t.routes->prefetch(ps[j].ip->dst_addr);
    // new_flow hands a translated flow to the worker that owns its inside host.
    if (ctx_.workers > 1 && !t.snat.empty() && ctx_.flow_owner(keys[j].src) != id_) return;
    own.prefetch_create(keys[j], nth++);
    // The port's state and the outside key's bucket can start too when the outside
    // address is known without the route: a rule with its own pool names it (paired
    // pooling). Else guess the one the last new flow got (most leave by one route),
    // for the costliest case only: an address with every port in use, where
    // create_session probes a random port to share.
    const SnatRule* r = t.snat_pools ? t.snat_rule_from(keys[j].src) : nullptr;
    if (t.snat_pools && !r) return;  // untranslated: no port to prefetch
    int addr = -1;
    if (r && !r->pool.empty())
      addr = nat::SessionTable::paired_address(keys[j].src, r->pool.data(), static_cast<uint8_t>(r->pool.size()));
    else if (egress_guess_ >= 0 && t.port_overlapping && !t.snat.empty() && own.active() >= kGuessPortsAbove &&
             own.ports_exhausted(static_cast<uint8_t>(egress_guess_), keys[j].proto))
      addr = egress_guess_;
    if (addr < 0) return;
    probes[j] = own.prefetch_port(keys[j], static_cast<uint8_t>(addr), t.port_preservation, t.port_overlapping,
                                  probe_rng_, run);
    probe_addrs[j] = static_cast<uint8_t>(addr);
  };
  // One pass confirms each key, rewrites a hit right away (the later sessions' lines
  // still arriving) and prepares a miss as it is met: fewer instructions than three
  // passes, the same time (perf/RESULTS.md session 7). A flow's packets share a key:
  // they keep their order.
  Session* const sessions = &own.session(0);  // once: packet stores might alias the table's fields
  uint64_t hits = 0;
  for (unsigned j = 0; j < k; ++j) {
    vals[j] = own.confirm(keys[j], hashes[j], vals[j]);
    if (vals[j] < 0) [[unlikely]] {
      prepare_miss(j);
      continue;
    }
    hits |= uint64_t{1} << j;
    const uint32_t idx = static_cast<uint32_t>(vals[j]) & ~nat::SessionTable::kOutsideBit;
    if (lanes[j] == Lane::kOutside)
      finish_out2in(iface, ms[j], ps[j], id_, idx, sessions[idx]);
    else
      finish_in2out(iface, ms[j], ps[j], id_, idx, sessions[idx]);
  }
  const bool all_hit = hits == (uint64_t{1} << k) - 1;
  if (all_hit) [[likely]]
    return;
  // Other tables, or a new flow. The own table's miss stands while no session was
  // created since the bulk lookup; for an inside key also unless an earlier miss of
  // this burst had the same key (a flow's second packet, whose session the first may
  // have created): a 6-bit tag per key resolved so far tells, conservatively, so a
  // burst of new flows does not look each one up twice.
  uint64_t tags = 0;
  for (unsigned j = 0; j < k; ++j) {
    if ((hits >> j) & 1) continue;
    bool own_checked = own.inserts() == inserts;
    if (lanes[j] == Lane::kInside) {
      const uint64_t bit = uint64_t{1} << key_tag(keys[j]);
      own_checked = own_checked || !(tags & bit);
      tags |= bit;
    }
    resolve(iface, ms[j], ps[j], keys[j], lanes[j], own_checked, probes[j], probes[j] ? probe_addrs[j] : 0);
  }
}

// One packet at a time (handed-over packets and held fragments).
void Worker::handle(uint16_t iface, rte_mbuf* m) {
  Ipv4Packet p;
  FlowKey k{};
  const Lane lane = classify(iface, m, p, k, forward_only());
  if (lane == Lane::kForward) return forward(iface, m, p);
  if (lane != Lane::kDone) resolve(iface, m, p, k, lane, false);
}

Worker::Lane Worker::classify(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, FlowKey& k, bool forward_only) {
  if (m->data_len < sizeof(rte_ether_hdr)) return drop(m, kDropMalformed), Lane::kDone;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) [[unlikely]] {
    if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) return handle_arp(iface, m), Lane::kDone;
    return drop(m, kDropNonIpv4), Lane::kDone;
  }
  if (!same_mac(eth->dst_addr, ctx_.ifaces[iface].mac)) return drop(m, kDropNotForUs), Lane::kDone;
  const net::ParseError err = net::parse_ipv4_mbuf(m, p);
  if (err != net::ParseError::none) [[unlikely]] {
    counters_.malformed[static_cast<unsigned>(err) & 7].add();
    return drop(m, kDropMalformed), Lane::kDone;
  }
  // Fragments of one datagram are all tracked by one worker, whatever queue they
  // arrived on (ENA's RSS does not hash fragments). Transit fragments go to the
  // worker that creates sessions for their source: a first fragment that opens a
  // flow is translated, and its fragment entry kept, where the later ones arrive
  // (by address pair, new_flow would hand it to the flow owner, and the flow owner
  // back to the pair's owner, forever). Fragments to our addresses only look up.
  if ((p.flags & net::PKT_FRAGMENT) && ctx_.workers > 1) [[unlikely]] {
    const uint16_t owner = ctx_.is_local(p.ip->dst_addr)
                               ? ctx_.fragment_owner(p.ip->src_addr, p.ip->dst_addr)
                               : ctx_.flow_owner(p.ip->src_addr);
    if (owner != id_) return hand_off(owner, iface, m), Lane::kDone;
  }
  if (ctx_.is_local(p.ip->dst_addr)) {
    if (!(p.flags & net::PKT_FIRST_FRAGMENT)) return handle_fragment(iface, m, p, true), Lane::kDone;
    if (p.proto == IPPROTO_ICMP) {
      net::IcmpHdr* ic = icmp_of(p);
      if (ic->type == RTE_IP_ICMP_ECHO_REQUEST) return echo_reply(iface, m, p), Lane::kDone;
      if (net::is_icmp_error(ic->type)) return handle_icmp_error_out2in(iface, m, p), Lane::kDone;
    }
    if (!outside_key(p, k)) return drop(m, kDropNotForUs), Lane::kDone;
    return Lane::kOutside;
  }
  if (p.ip->time_to_live <= 1) [[unlikely]] {
    send_icmp_error(iface, m, p, 11, 0);
    return drop(m, kDropTtl), Lane::kDone;
  }
  // Forwarding only: stateless unless an ACL must judge flows; then flows are tracked
  // (pass-through sessions) so that the replies of allowed ones pass, as with NAT.
  if (forward_only && tables_->acl->empty()) return Lane::kForward;
  // Later fragments follow their first (they carry no ports to translate or judge).
  if (!(p.flags & net::PKT_FIRST_FRAGMENT)) return handle_fragment(iface, m, p, false), Lane::kDone;
  if (p.proto == IPPROTO_ICMP && net::is_icmp_error(icmp_of(p)->type)) return transit_icmp_error(iface, m, p), Lane::kDone;
  if (!(p.flags & net::PKT_HAS_PORTS) || !inside_key(p, k)) return new_flow(iface, m, p, FlowKey{}), Lane::kDone;
  return Lane::kInside;
}

// A key this worker's table did not hold: another worker's table (the outside
// port names the owner), else a new flow (inside) or nothing (outside).
void Worker::resolve(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, const FlowKey& k, Lane lane,
                     bool own_checked, uint32_t probe, uint8_t probe_addr) {
  const uint16_t hint = lane == Lane::kOutside ? port_owner(k.dst, k.dport) : id_;
  uint32_t idx;
  const int table = find(k, hint, idx, own_checked ? id_ : -1);
  if (lane == Lane::kOutside) {
    if (table < 0) return unmatched_inbound(iface, m, p, k);
    return finish_out2in(iface, m, p, static_cast<uint16_t>(table), idx);
  }
  if (table < 0) return new_flow(iface, m, p, k, probe, probe_addr);
  finish_in2out(iface, m, p, static_cast<uint16_t>(table), idx);
}

void Worker::finish_out2in(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, uint16_t table, uint32_t idx) {
  finish_out2in(iface, m, p, table, idx, ctx_.sessions[table]->session(idx));
}

void Worker::finish_out2in(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, uint16_t table, uint32_t idx,
                           Session& s) {
  if (p.ip->time_to_live <= 1) [[unlikely]] {
    send_icmp_error(iface, m, p, 11, 0);
    return drop(m, kDropTtl);
  }
  if (!fits_mtu(iface, s.in_iface, m, p)) return;
  if (p.flags & net::PKT_FRAGMENT) [[unlikely]] remember_fragment(p, table, idx, nat::kOutside);
  touch(s, p, false, iface);
  out2in(m, p, s);
  counters_.out2in.add();
  send_to_prev_hop(s, m);
}

void Worker::finish_in2out(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, uint16_t table, uint32_t idx) {
  finish_in2out(iface, m, p, table, idx, ctx_.sessions[table]->session(idx));
}

void Worker::finish_in2out(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, uint16_t table, uint32_t idx,
                           Session& s) {
  if (!fits_mtu(iface, s.out_iface, m, p)) return;
  if (p.flags & net::PKT_FRAGMENT) [[unlikely]] remember_fragment(p, table, idx, nat::kInside);
  touch(s, p, true, iface);
  in2out(m, p, s);
  counters_.in2out.add();
  send_l3(s.out_iface, s.out_nh, m);
}

[[gnu::noinline]] void Worker::echo_reply(uint16_t iface, rte_mbuf* m, Ipv4Packet& p) {
  if (p.flags & net::PKT_FRAGMENT) return drop(m, kDropNotForUs);  // no reassembly for ourselves
  net::make_echo_reply(p);
  counters_.echo_replies.add();
  const rte_ether_addr back = rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr;
  send_l2(iface, back, m);
}

void Worker::hand_off(uint16_t to, uint16_t iface, rte_mbuf* m) {
  m->port = ctx_.ifaces[iface].port_id;
  if (rte_ring_mp_enqueue(ctx_.handoff[to], m) != 0) return drop(m, kDropHandoff);
  counters_.handed_off.add();
}

unsigned Worker::drain_handoff() {
  rte_mbuf* pkts[kBurst];
  const unsigned n = rte_ring_sc_dequeue_burst(ctx_.handoff[id_], reinterpret_cast<void**>(pkts),
                                               kBurst, nullptr);
  if (n) check_l2_hops();
  for (unsigned i = 0; i < n; ++i) handle(ctx_.port_to_iface[pkts[i]->port], pkts[i]);
  return n;
}

// ---------------------------------------------------------------- sessions

int Worker::find(const FlowKey& k, uint16_t hint, uint32_t& idx, int skip) const {
  if (hint != skip) {
    const int64_t v = ctx_.sessions[hint]->lookup(k);
    if (v >= 0) {
      idx = static_cast<uint32_t>(v) & ~nat::SessionTable::kOutsideBit;
      return hint;
    }
  }
  for (uint16_t w = 0; w < ctx_.workers; ++w) {
    if (w == hint || w == skip) continue;
    const int64_t r = ctx_.sessions[w]->lookup(k);
    if (r >= 0) {
      idx = static_cast<uint32_t>(r) & ~nat::SessionTable::kOutsideBit;
      return w;
    }
  }
  return -1;
}

void Worker::touch(Session& s, const Ipv4Packet& p, bool from_inside, uint16_t iface) {
  // Refresh only when the coarse clock moved: a session used from two workers
  // does not bounce its cache line on every packet.
  if (s.last_seen_ms.load(std::memory_order_relaxed) != now_ms_)
    s.last_seen_ms.store(now_ms_, std::memory_order_relaxed);
  // The previous hop inside traffic comes from (replies go back to it): a hop that
  // changed its MAC (failover, a new NIC) is followed from the next inside packet. A
  // compare on a line in cache; stored only when it differs.
  if (from_inside)
    s.learn_prev_hop(Session::hop_word(
        reinterpret_cast<const rte_ether_hdr*>(reinterpret_cast<const uint8_t*>(p.ip) - sizeof(rte_ether_hdr)),
        static_cast<uint8_t>(iface)));
  uint8_t add = from_inside ? 0 : nat::kSeenOut;
  const uint8_t cur = s.flags.load(std::memory_order_relaxed);
  if (p.proto == IPPROTO_TCP && (p.flags & net::PKT_HAS_PORTS)) {
    const uint8_t tf = reinterpret_cast<const rte_tcp_hdr*>(p.l4)->tcp_flags;
    if (tf & RTE_TCP_SYN_FLAG) {
      add |= from_inside ? nat::kSynIn : nat::kSynOut;
      if (!(tf & RTE_TCP_ACK_FLAG)) [[unlikely]] {
        // A client's SYN (no ACK) on a closed connection's 5-tuple opens a new one: it
        // starts over instead of inheriting the closed one's transitory timeout. From
        // outside only on a session outside opened, and only once fully closed: an
        // outside host must not rewrite a half-closed or reset outbound connection's state.
        if (cur & (nat::kRst | nat::kFinIn | nat::kFinOut)) {
          constexpr uint8_t kBothFins = nat::kFinIn | nat::kFinOut;
          if (from_inside || (s.inbound && ((cur & nat::kRst) || (cur & kBothFins) == kBothFins))) {
            s.flags.store(from_inside ? nat::kSynIn : nat::kSynOut, std::memory_order_relaxed);
            return;
          }
        }
        // A bare SYN from outside answers nothing (a connection endpoint-independent
        // filtering let in, or simultaneous open): established needs more from there.
        add &= static_cast<uint8_t>(~nat::kSeenOut);
      }
    }
    if (tf & RTE_TCP_FIN_FLAG) add |= from_inside ? nat::kFinIn : nat::kFinOut;
    if ((tf & RTE_TCP_RST_FLAG) || (cur & nat::kRst)) [[unlikely]]
      return reset_transition(s, add, (tf & RTE_TCP_RST_FLAG) != 0, from_inside, cur);
  }
  if ((cur | add) != cur) s.flags.fetch_or(add, std::memory_order_relaxed);
}

// An RST, or a packet of a session an RST moved to the transitory timeout. RFC 7857
// 2.2 keeps a reset session for that timeout "if no packets are received". Ends that
// ignored the RST (out of window, RFC 5961) go on talking both ways; after a real reset
// only the other side's packets in flight follow, and they are answered with RSTs.
// Both sides heard from since the last RST: established again. One compare-and-swap,
// so a reset on one worker and traffic on another cannot undo each other.
[[gnu::noinline]] void Worker::reset_transition(Session& s, uint8_t add, bool rst, bool from_inside, uint8_t cur) {
  constexpr uint8_t kAlive = nat::kAliveIn | nat::kAliveOut;
  const uint8_t other = from_inside ? nat::kAliveOut : nat::kAliveIn;
  const uint8_t mine = from_inside ? nat::kAliveIn : nat::kAliveOut;
  uint8_t next;
  do {
    next = cur | add;
    if (rst)
      next = static_cast<uint8_t>((next | nat::kRst) & ~kAlive);
    else if (cur & nat::kRst)
      next = (cur & other) ? static_cast<uint8_t>(next & ~(nat::kRst | kAlive)) : static_cast<uint8_t>(next | mine);
  } while (next != cur && !s.flags.compare_exchange_weak(cur, next, std::memory_order_relaxed));
}

void Worker::in2out(rte_mbuf* m, Ipv4Packet& p, Session& s) {
  (void)m;
  rte_ipv4_hdr* ip = p.ip;
  ip->src_addr = s.out_ip;
  ip->hdr_checksum = net::csum_apply(ip->hdr_checksum, s.l3_delta + ttl_dec(ip));
  if (!(p.flags & net::PKT_FIRST_FRAGMENT)) return;  // later fragments carry no L4 header
  switch (p.proto) {
    case IPPROTO_TCP: {
      auto* th = reinterpret_cast<rte_tcp_hdr*>(p.l4);
      th->src_port = s.out_port;
      th->cksum = net::csum_apply(th->cksum, s.l4_delta);
      break;
    }
    case IPPROTO_UDP: {
      auto* uh = reinterpret_cast<rte_udp_hdr*>(p.l4);
      uh->src_port = s.out_port;
      uh->dgram_cksum = net::udp_csum_apply(uh->dgram_cksum, s.l4_delta);
      break;
    }
    case IPPROTO_ICMP: {
      auto* ic = icmp_of(p);
      ic->id = s.out_port;
      ic->cksum = net::csum_apply(ic->cksum, s.l4_delta);
      break;
    }
  }
}

void Worker::out2in(rte_mbuf* m, Ipv4Packet& p, Session& s) {
  (void)m;
  rte_ipv4_hdr* ip = p.ip;
  ip->dst_addr = s.in_ip;
  ip->hdr_checksum =
      net::csum_apply(ip->hdr_checksum, net::csum_delta_negate(s.l3_delta) + ttl_dec(ip));
  if (!(p.flags & net::PKT_FIRST_FRAGMENT)) return;
  const uint16_t back = net::csum_delta_negate(s.l4_delta);
  switch (p.proto) {
    case IPPROTO_TCP: {
      auto* th = reinterpret_cast<rte_tcp_hdr*>(p.l4);
      th->dst_port = s.in_port;
      th->cksum = net::csum_apply(th->cksum, back);
      break;
    }
    case IPPROTO_UDP: {
      auto* uh = reinterpret_cast<rte_udp_hdr*>(p.l4);
      uh->dst_port = s.in_port;
      uh->dgram_cksum = net::udp_csum_apply(uh->dgram_cksum, back);
      break;
    }
    case IPPROTO_ICMP: {
      auto* ic = icmp_of(p);
      ic->id = s.in_port;
      ic->cksum = net::csum_apply(ic->cksum, back);
      break;
    }
  }
}

// A packet in2out translated (TTL aside) back to what its inside host sent: source
// address and port, and their checksums (a hairpin's second half that must be refused
// to its sender).
void Worker::undo_in2out(Ipv4Packet& p, const Session& s) {
  p.ip->src_addr = s.in_ip;
  p.ip->hdr_checksum = net::csum_apply(p.ip->hdr_checksum, net::csum_delta_negate(s.l3_delta));
  if (p.proto == IPPROTO_TCP) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(p.l4);
    th->src_port = s.in_port;
    th->cksum = net::csum_apply(th->cksum, net::csum_delta_negate(s.l4_delta));
  } else if (p.proto == IPPROTO_UDP) {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(p.l4);
    uh->src_port = s.in_port;
    uh->dgram_cksum = net::udp_csum_apply(uh->dgram_cksum, net::csum_delta_negate(s.l4_delta));
  }
}

// ---------------------------------------------------------------- directions

// Slow path: the first packet of a flow (or a packet NAT does not map).
[[gnu::noinline]] void Worker::new_flow(uint16_t iface, rte_mbuf* m, Ipv4Packet& p,
                                        const FlowKey& key, uint32_t probe, uint8_t probe_addr) {
  const RuntimeTables& t = *tables_;
  // A reply of a flow routed untranslated under a stateful ACL: its pass-through
  // session is found by the reply's outside-direction key (in any worker's table).
  if (!t.acl->empty() && key.proto != 0) {
    FlowKey ok;
    uint32_t idx;
    if (outside_key(p, ok)) {
      const int table = find(ok, id_, idx);
      if (table >= 0) return finish_out2in(iface, m, p, static_cast<uint16_t>(table), idx);
    }
  }
  if (ctx_.workers > 1 && !t.snat.empty()) {
    // Sessions of one inside host are all created by one worker: its mappings and
    // pooled address stay the same whichever queue RSS picked.
    const uint16_t owner = ctx_.flow_owner(p.ip->src_addr);
    if (owner != id_) return hand_off(owner, iface, m);
  }
  route::NextHop nh;
  if (!t.routes->lookup(p.ip->dst_addr, nh)) {
    send_icmp_error(iface, m, p, 3, 0);  // net unreachable
    return drop(m, kDropNoRoute);
  }
  // SNAT applies to flows from a configured source that leave by another interface, or by the
  // same one on a one-armed interface when the destination is not itself an inside address.
  const SnatRule* rule = nullptr;
  const bool same_arm = nh.iface == iface;
  if (!same_arm || ctx_.ifaces[iface].one_armed) {
    rule = t.snat_rule_from(p.ip->src_addr);
    if (rule && same_arm && t.snat_rule_from(p.ip->dst_addr)) rule = nullptr;
  }
  if (!t.acl->empty()) {
    uint16_t sport = 0, dport = 0;
    if ((p.proto == IPPROTO_TCP || p.proto == IPPROTO_UDP) && (p.flags & net::PKT_HAS_PORTS)) {
      const auto* ports = reinterpret_cast<const rte_be16_t*>(p.l4);
      sport = rte_be_to_cpu_16(ports[0]);
      dport = rte_be_to_cpu_16(ports[1]);
    }
    if (!t.acl->allow(rte_be_to_cpu_32(p.ip->src_addr), rte_be_to_cpu_32(p.ip->dst_addr), p.proto,
                      sport, dport))
      return drop(m, kDropAcl);
  }
  if (!rule) {
    if (!t.acl->empty() && key.proto != 0) {
      // Remember the allowed flow so its replies pass the ACL (design: ACLs are
      // stateful, also for untranslated traffic). A full table only costs the replies.
      nat::SessionTable::CreateArgs a{};
      a.in = &key;
      a.in_iface = static_cast<uint8_t>(iface);
      a.out_iface = static_cast<uint8_t>(nh.iface);
      a.out_nh = nh.gateway ? nh.gateway : p.ip->dst_addr;
      a.in_mac = &rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr;
      uint32_t idx;
      if (ctx_.sessions[id_]->create_passthrough(a, now_ms_, idx) == nat::CreateResult::kOk)
        return finish_in2out(iface, m, p, id_, idx);
    }
    // Its later fragments go the same way (held otherwise: they carry no ports for the
    // ACL, or come from a source NAT would translate); others are forwarded anyway.
    if ((p.flags & net::PKT_FRAGMENT) && (!t.acl->empty() || t.snat_rule_from(p.ip->src_addr)))
      remember_fragment(p, 0, 0, kFragForward);
    return forward(iface, m, p);
  }
  if (!(p.flags & net::PKT_HAS_PORTS) || nat::proto_class(p.proto) < 0 ||
      (p.proto == IPPROTO_ICMP && !net::is_icmp_query(icmp_of(p)->type)))
    return drop(m, kDropUnsupported);  // never leak an untranslated inside address

  uint8_t egress_pool[1];
  nat::SessionTable::CreateArgs a = snat_args(*rule, nh, iface, m, p, key, egress_pool);
  a.first_probe = probe;
  a.probe_addr = probe_addr;
  if (rule->pool.empty()) egress_guess_ = egress_pool[0];
  uint32_t idx;
  nat::SessionTable& st = *ctx_.sessions[id_];
  if (const auto r = st.create_session(a, now_ms_, idx); r != nat::CreateResult::kOk)
    return drop(m, create_failure(r));
  if (!ctx_.nat_used.load(std::memory_order_relaxed)) ctx_.nat_used.store(true, std::memory_order_relaxed);
  finish_in2out(iface, m, p, id_, idx);
}

nat::SessionTable::CreateArgs Worker::snat_args(const SnatRule& rule, const route::NextHop& nh, uint16_t iface,
                                               rte_mbuf* m, const Ipv4Packet& p, const FlowKey& key,
                                               uint8_t* egress_pool) const {
  const RuntimeTables& t = *tables_;
  egress_pool[0] = ctx_.ifaces[nh.iface].outside_idx;
  nat::SessionTable::CreateArgs a{};
  a.in = &key;
  a.pool = rule.pool.empty() ? egress_pool : rule.pool.data();
  a.pool_len = static_cast<uint8_t>(rule.pool.empty() ? 1 : rule.pool.size());
  a.pool_id = static_cast<uint8_t>(rule.pool.empty() ? 128 + nh.iface : rule.id);
  a.in_iface = static_cast<uint8_t>(iface);
  a.out_iface = static_cast<uint8_t>(nh.iface);
  a.out_nh = nh.gateway ? nh.gateway : p.ip->dst_addr;
  a.in_mac = &rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr;
  a.port_preservation = t.port_preservation;
  a.port_overlapping = t.port_overlapping;
  a.host_limit = t.max_sessions_per_host;
  a.host_port_limit = t.max_ports_per_host;
  return a;
}

// Why a new flow's session was not made, as a drop reason.
Drop Worker::create_failure(nat::CreateResult r) {
  switch (r) {
    case nat::CreateResult::kTableFull: return kDropTableFull;
    case nat::CreateResult::kHostLimit: return kDropHostLimit;
    case nat::CreateResult::kHostPortLimit: return kDropHostPortLimit;
    default: return kDropNoPort;  // no port, or the mapping's 5-tuple toward here is taken
  }
}

void Worker::forward(uint16_t iface, rte_mbuf* m, Ipv4Packet& p) {
  route::NextHop nh;
  if (!tables_->routes->lookup(p.ip->dst_addr, nh)) {
    send_icmp_error(iface, m, p, 3, 0);
    return drop(m, kDropNoRoute);
  }
  if (!fits_mtu(iface, nh.iface, m, p)) return;
  p.ip->hdr_checksum = net::csum_apply(p.ip->hdr_checksum, ttl_dec(p.ip));
  counters_.forwarded.add();
  send_l3(nh.iface, nh.gateway ? nh.gateway : p.ip->dst_addr, m);
}

// ---------------------------------------------------------------- hairpinning, endpoint-independent filtering

[[gnu::noinline]] void Worker::unmatched_inbound(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, const FlowKey& k) {
  const RuntimeTables& t = *tables_;
  // An inside host's packet is never an outside endpoint's: without hairpinning it
  // must not reach another inside endpoint, least of all with its inside source.
  if ((t.hairpinning || t.endpoint_independent_filtering) && hairpin_source(iface, p))
    return t.hairpinning ? hairpin(iface, m, p) : drop(m, kDropNoSession);
  if (t.endpoint_independent_filtering) return open_inbound(iface, m, p, k);
  drop(m, kDropNoSession);
}

// Whether a packet to one of our outside addresses comes from an inside host: its
// source is one a [[snat]] rule translates, and it arrived where new_flow would
// translate it (not by the interface its destination is routed to, unless that
// interface is one-armed): a host on the outside subnet inside a `from` prefix is
// an outside host here, as it is for new_flow. Never one of our own addresses (a
// hairpinned packet handed to another worker is an outside packet there).
bool Worker::hairpin_source(uint16_t iface, const Ipv4Packet& p) const {
  const RuntimeTables& t = *tables_;
  if (ctx_.is_local(p.ip->src_addr) || !t.snat_rule_from(p.ip->src_addr)) return false;
  route::NextHop nh;
  if (!t.routes->lookup(p.ip->dst_addr, nh)) return false;
  return nh.iface != iface || ctx_.ifaces[iface].one_armed;
}

// nat.hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): an inside host's packet to an
// outside address:port of ours. Translated as if it left (its source becomes the
// host's mapped outside address:port, what an outside peer would see: REQ-9 b), then
// as if it came back in, to the inside endpoint that address:port maps, as filtering
// allows. Every packet of such a flow comes here (its destination is ours, so
// classify gives it the outside lane, whose lookup misses): hairpinning is the rare
// case, a slow path's two lookups are fine.
[[gnu::noinline]] void Worker::hairpin(uint16_t iface, rte_mbuf* m, Ipv4Packet& p) {
  const RuntimeTables& t = *tables_;
  FlowKey ik;
  // TCP and UDP (an echo request to our address is answered by natgw); no fragments:
  // their later pieces would need to follow both translations.
  if ((p.proto != IPPROTO_TCP && p.proto != IPPROTO_UDP) || (p.flags & net::PKT_FRAGMENT) || !inside_key(p, ik))
    return drop(m, kDropUnsupported);
  if (p.ip->time_to_live <= 1) {
    send_icmp_error(iface, m, p, 11, 0);
    return drop(m, kDropTtl);
  }
  // The outbound half is the host's own session: created by the worker that owns it.
  if (ctx_.workers > 1) {
    const uint16_t owner = ctx_.flow_owner(p.ip->src_addr);
    if (owner != id_) return hand_off(owner, iface, m);
  }
  const auto* ports = reinterpret_cast<const rte_be16_t*>(p.l4);
  uint32_t idx;
  int table = find(ik, id_, idx);
  if (table < 0) {
    route::NextHop nh;  // where the destination would leave: its outside address (pool) is the mapping's
    if (!t.routes->lookup(p.ip->dst_addr, nh)) return drop(m, kDropNoRoute);
    if (!t.acl->empty() && !t.acl->allow(rte_be_to_cpu_32(p.ip->src_addr), rte_be_to_cpu_32(p.ip->dst_addr), p.proto,
                                         rte_be_to_cpu_16(ports[0]), rte_be_to_cpu_16(ports[1])))
      return drop(m, kDropAcl);
    uint8_t egress_pool[1];
    const auto a = snat_args(*t.snat_rule_from(p.ip->src_addr), nh, iface, m, p, ik, egress_pool);  // hairpin_source checked the rule
    if (const auto r = ctx_.sessions[id_]->create_session(a, now_ms_, idx); r != nat::CreateResult::kOk)
      return drop(m, create_failure(r));
    ctx_.nat_used.store(true, std::memory_order_relaxed);
    table = id_;
  }
  Session& out = ctx_.sessions[table]->session(idx);
  touch(out, p, true, iface);
  // The way back in: from the host's outside address:port to the peer's. Looked up
  // before translating, so that a packet too big for the peer's link gets its
  // frag-needed as the host sent it (to the host, not to its outside address).
  const FlowKey ok = nat::make_key(out.out_ip, p.ip->dst_addr, out.out_port, ports[1], p.proto, nat::kOutside);
  const int peer = find(ok, port_owner(ok.dst, ok.dport), idx);
  if (peer < 0 && !t.endpoint_independent_filtering) return drop(m, kDropNoSession);
  if (peer >= 0 && !fits_mtu(iface, ctx_.sessions[peer]->session(idx).in_iface, m, p)) return;
  in2out(m, p, out);
  // One hop through natgw, one TTL decrement: finish_out2in takes it; undo in2out's.
  p.ip->time_to_live++;
  p.ip->hdr_checksum = net::csum_apply(p.ip->hdr_checksum, net::csum_delta_negate(kTtlDecDelta));
  if (peer >= 0) {
    counters_.hairpinned.add();
    return finish_out2in(iface, m, p, static_cast<uint16_t>(peer), idx);
  }
  open_inbound(iface, m, p, ok);  // counts it hairpinned if it passes, on whichever worker
}

// nat.filtering = "endpoint-independent" (RFC 4787 REQ-8, RFC 5382 REQ-3): a UDP
// datagram or a TCP SYN from any remote endpoint to an outside address:port that a
// mapping holds opens a session to that mapping's inside endpoint, as if the endpoint
// had sent to the remote first (same outside address:port: the mapping is reused).
// The ACL judges it as that outbound flow. A port shared by several mappings (port
// overlapping) has no one endpoint: nothing opens there. A TCP session opened so
// stays transitory until the handshake completes (touch: a bare SYN from outside is
// not an answer), and sessions opened from outside may take at most 1/kInboundShare
// of a worker's table: a flood of (spoofed) sources cannot crowd out inside flows.
[[gnu::noinline]] void Worker::open_inbound(uint16_t iface, rte_mbuf* m, Ipv4Packet& p, const FlowKey& k) {
  const RuntimeTables& t = *tables_;
  // No fragments: the hand-offs below and classify's fragment owner would pass a first
  // fragment back and forth between two workers.
  if ((k.proto != IPPROTO_TCP && k.proto != IPPROTO_UDP) || !(p.flags & net::PKT_HAS_PORTS) ||
      (p.flags & net::PKT_FRAGMENT))
    return drop(m, kDropNoSession);
  if (k.proto == IPPROTO_TCP &&
      (reinterpret_cast<const rte_tcp_hdr*>(p.l4)->tcp_flags & (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG | RTE_TCP_RST_FLAG |
                                                                 RTE_TCP_FIN_FLAG)) != RTE_TCP_SYN_FLAG)
    return drop(m, kDropNoSession);
  nat::SessionTable& own = *ctx_.sessions[id_];
  const int a = own.outside_index(k.dst);
  const uint16_t port = rte_be_to_cpu_16(k.dport);
  if (a < 0 || port < ctx_.outside[a].port_lo || port > ctx_.outside[a].port_hi)
    return drop(m, kDropNoSession);
  // From one of our own addresses: the second half of a hairpin another worker
  // translated, so the sender's half exists (its outside key is this packet's
  // reverse). Else an outside host spoofs our address to reflect an inside reply onto
  // another inside host.
  int sender = -1;  // that first half's table (sender_idx its session)
  uint32_t sender_idx = 0;
  if (ctx_.is_local(k.src)) {
    sender = find(nat::make_key(k.dst, k.src, k.dport, k.sport, k.proto, nat::kOutside), id_, sender_idx);
    if (sender < 0) return drop(m, kDropNoSession);
  }
  // The mapping lives with the worker whose slice of the port range holds its port.
  if (ctx_.workers > 1) {
    const uint16_t owner = own.owner_of(static_cast<uint32_t>(a), port);
    if (owner != id_) return hand_off(owner, iface, m);
  }
  nat::SessionTable::PortMapping pm;
  if (!own.mapping_of_port(static_cast<uint8_t>(a), port, k.proto, pm)) return drop(m, kDropNoSession);
  if (own.inbound_active() >= own.capacity() / kInboundShare) return drop(m, kDropTableFull);
  if (!t.acl->empty() && !t.acl->allow(rte_be_to_cpu_32(pm.key.in_ip), rte_be_to_cpu_32(k.src), k.proto,
                                       rte_be_to_cpu_16(pm.key.in_port), rte_be_to_cpu_16(k.sport)))
    return drop(m, kDropAcl);
  route::NextHop back;  // toward the remote, as the endpoint's own flow to it would leave
  if (!t.routes->lookup(k.src, back)) return drop(m, kDropNoRoute);
  // A source a [[snat]] rule translates is an inside host's: from outside, only a
  // neighbour on the arrival link may use it (a host of the outside subnet inside a
  // `from` prefix); else it is spoofed, and the endpoint's reply would go to that
  // inside host translated (a reflection).
  if (!ctx_.is_local(k.src) && t.snat_rule_from(k.src) && (back.iface != iface || back.gateway != 0))
    return drop(m, kDropNoSession);
  // Toward the inside endpoint: the hop its traffic came from; else (the hop table was
  // full) its route, if resolved, unless it leads where the remote is (no route
  // inside, as with a TGW whose clients are reached through the hop they came from).
  // No ARP request from here: an outside flood must not become ARP broadcasts inside
  // (a route's gateway is resolved by the periodic refresh).
  rte_ether_addr in_mac;
  uint8_t in_if;
  if (pm.hop) {
    std::memcpy(&in_mac, &pm.hop, sizeof in_mac);
    in_if = static_cast<uint8_t>(pm.hop >> 48);
  } else {
    route::NextHop nh;
    arp::ArpTable::Hit hit;
    if (!t.routes->lookup(pm.key.in_ip, nh) || nh.iface == back.iface ||
        !ctx_.arp.lookup(nh.gateway ? nh.gateway : pm.key.in_ip, hit) || hit.iface != nh.iface)
      return drop(m, kDropNoRoute);
    in_mac = hit.mac;
    in_if = static_cast<uint8_t>(nh.iface);
  }
  // What finish_out2in would refuse, refused before a session exists for it.
  if (p.ip->time_to_live <= 1) {
    send_icmp_error(iface, m, p, 11, 0);
    return drop(m, kDropTtl);
  }
  if (too_big(in_if, p)) {
    // A hairpin's second half: the frag-needed goes to the sender as it sent the packet
    // (its inside address and port), not to its outside address.
    if (sender >= 0) undo_in2out(p, ctx_.sessions[sender]->session(sender_idx));
    fits_mtu(iface, in_if, m, p);
    return;
  }
  const FlowKey in = nat::make_key(pm.key.in_ip, k.src, pm.key.in_port, k.sport, k.proto, nat::kInside);
  const uint8_t pool[1] = {static_cast<uint8_t>(a)};
  nat::SessionTable::CreateArgs ca{};
  ca.in = &in;
  ca.pool = pool;
  ca.pool_len = 1;
  ca.pool_id = pm.key.pool;
  ca.in_iface = in_if;
  ca.out_iface = static_cast<uint8_t>(back.iface);
  ca.out_nh = back.gateway ? back.gateway : k.src;
  ca.in_mac = &in_mac;
  ca.port_preservation = t.port_preservation;
  ca.port_overlapping = t.port_overlapping;
  ca.inbound = true;
  uint32_t idx;
  if (const auto r = own.create_session(ca, now_ms_, idx); r != nat::CreateResult::kOk)
    return drop(m, create_failure(r));
  Session& s = own.session(idx);
  if (s.out_ip != k.dst || s.out_port != k.dport) [[unlikely]] {  // the mapping named this port: cannot happen
    own.remove(idx);
    return drop(m, kDropNoSession);
  }
  counters_.inbound_sessions.add();
  if (ctx_.is_local(k.src)) counters_.hairpinned.add();  // a hairpin's second half, here or handed over
  finish_out2in(iface, m, p, id_, idx, s);
}

// ---------------------------------------------------------------- ICMP errors (RFC 5508)

namespace {
// The packet quoted inside an ICMP error, validated far enough to read its ports.
struct Embedded {
  rte_ipv4_hdr* ip;
  uint8_t* l4;
  uint16_t l4_avail;
};
// A quoted later fragment starts with payload, not ports: no session to match.
bool quotes_later_fragment(const Embedded& e) {
  return (rte_be_to_cpu_16(e.ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK) != 0;
}
// The key of the flow a quoted packet belongs to (TCP, UDP or an ICMP query), or false.
// `reply`: the quote travelled the flow's second direction (toward its client); kInside
// keys name the client first, kOutside keys the remote (a quote natgw sent: reply = true).
bool key_of_quote(const Embedded& e, bool reply, nat::Dir dir, FlowKey& k) {
  const uint8_t proto = e.ip->next_proto_id;
  const rte_be32_t a = reply ? e.ip->dst_addr : e.ip->src_addr;
  const rte_be32_t b = reply ? e.ip->src_addr : e.ip->dst_addr;
  if (proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
    const auto* ports = reinterpret_cast<const rte_be16_t*>(e.l4);
    k = nat::make_key(a, b, ports[reply ? 1 : 0], ports[reply ? 0 : 1], proto, dir);
    return true;
  }
  const auto* ic = reinterpret_cast<const net::IcmpHdr*>(e.l4);
  if (proto != IPPROTO_ICMP || !net::is_icmp_query(ic->type)) return false;
  // A query's identifier stands where the inside key has its port: first for kInside, second for kOutside.
  k = dir == nat::kInside ? nat::make_key(a, b, ic->id, 0, proto, dir) : nat::make_key(a, b, 0, ic->id, proto, dir);
  return true;
}
bool embedded_of(const Ipv4Packet& p, Embedded& e) {
  if (p.l4_len < sizeof(net::IcmpHdr) + sizeof(rte_ipv4_hdr) + 8) return false;
  e.ip = reinterpret_cast<rte_ipv4_hdr*>(p.l4 + sizeof(net::IcmpHdr));
  if ((e.ip->version_ihl >> 4) != 4) return false;
  const uint16_t hl = static_cast<uint16_t>((e.ip->version_ihl & 0xf) * 4);
  if (hl < sizeof(rte_ipv4_hdr) || sizeof(net::IcmpHdr) + hl + 8u > p.l4_len) return false;
  e.l4 = reinterpret_cast<uint8_t*>(e.ip) + hl;
  e.l4_avail = static_cast<uint16_t>(p.l4_len - sizeof(net::IcmpHdr) - hl);
  return true;
}
// Fix the quoted L4 checksum when it lies inside the quote.
void adjust_embedded_l4(const Embedded& e, uint16_t delta) {
  switch (e.ip->next_proto_id) {
    case IPPROTO_TCP:
      if (e.l4_avail >= 18) {
        auto* th = reinterpret_cast<rte_tcp_hdr*>(e.l4);
        th->cksum = net::csum_apply(th->cksum, delta);
      }
      break;
    case IPPROTO_UDP: {
      auto* uh = reinterpret_cast<rte_udp_hdr*>(e.l4);
      uh->dgram_cksum = net::udp_csum_apply(uh->dgram_cksum, delta);
      break;
    }
    case IPPROTO_ICMP: {
      auto* ic = reinterpret_cast<net::IcmpHdr*>(e.l4);
      ic->cksum = net::csum_apply(ic->cksum, delta);
      break;
    }
  }
}
void refresh_icmp_checksum(Ipv4Packet& p) {
  auto* ic = icmp_of(p);
  ic->cksum = 0;
  ic->cksum = net::csum_buffer(ic, p.l4_len);
}
}  // namespace

// An error from outside about a packet we translated: the quote shows our outside
// address and port as source; restore the inside ones in the quote and the outer header.
[[gnu::noinline]] void Worker::handle_icmp_error_out2in(uint16_t iface, rte_mbuf* m, Ipv4Packet& p) {
  Embedded e;
  if (!embedded_of(p, e)) return drop(m, kDropMalformed);
  // An error goes to the sender of the packet it quotes: that is us, at this address.
  if (e.ip->src_addr != p.ip->dst_addr || quotes_later_fragment(e)) return drop(m, kDropNoSession);
  // Not translated: a redirect (no one inside should follow our upstream's advice), and
  // an error in fragments (its checksum covers the whole datagram; no reassembly here).
  if (icmp_of(p)->type == 5 || (p.flags & net::PKT_FRAGMENT)) return drop(m, kDropUnsupported);
  const uint8_t proto = e.ip->next_proto_id;
  FlowKey k;
  if (!key_of_quote(e, true, nat::kOutside, k)) return drop(m, kDropNoSession);
  uint32_t idx;
  const int table = find(k, id_, idx);
  if (table < 0) return drop(m, kDropNoSession);
  Session& s = ctx_.sessions[table]->session(idx);
  if (p.ip->time_to_live <= 1) return drop(m, kDropTtl);  // never an error about an error
  // Outer header: to the inside host. Quote: its source becomes the inside endpoint.
  p.ip->dst_addr = s.in_ip;
  p.ip->hdr_checksum = net::csum_apply(p.ip->hdr_checksum,
                                       net::csum_delta_negate(s.l3_delta) + ttl_dec(p.ip));
  e.ip->src_addr = s.in_ip;
  e.ip->hdr_checksum = net::csum_apply(e.ip->hdr_checksum, net::csum_delta_negate(s.l3_delta));
  if (proto == IPPROTO_ICMP)
    reinterpret_cast<net::IcmpHdr*>(e.l4)->id = s.in_port;
  else
    reinterpret_cast<rte_be16_t*>(e.l4)[0] = s.in_port;
  adjust_embedded_l4(e, net::csum_delta_negate(s.l4_delta));
  refresh_icmp_checksum(p);
  counters_.icmp_errors_translated.add();
  send_to_prev_hop(s, m);
}


// With an ACL: is this ICMP error about a flow the ACL let through (its pass-through
// session, either direction), and addressed to the sender of the packet it quotes?
// (Without that check, an outside host with an allowed flow could send errors that
// quote it to any inside host.) Redirects are never "about a flow".
[[gnu::noinline]] bool Worker::icmp_error_of_tracked_flow(const Ipv4Packet& p) const {
  if (icmp_of(p)->type == 5) return false;  // redirect
  Embedded e;
  if (!embedded_of(p, e) || e.ip->src_addr != p.ip->dst_addr || quotes_later_fragment(e)) return false;
  // The quote is a packet of the flow's first direction (the error goes back to the
  // client) or of its replies (the error goes to the server). Only pass-through
  // sessions count: a translated flow's packets never leave with the inside address.
  const auto tracked = [&](bool reply) {
    FlowKey k;
    uint32_t idx;
    if (!key_of_quote(e, reply, nat::kInside, k)) return false;
    const int table = find(k, id_, idx);
    return table >= 0 && ctx_.sessions[table]->session(idx).mapping == nat::SessionTable::kNoMapping;
  };
  return tracked(false) || tracked(true);
}

// An ICMP error passing through (to none of our addresses): translated when it is about
// a session (RFC 5508); about an untranslated flow the ACL tracks (PMTUD through a
// default deny), passed as it is unless a host NAT translates sent it; else judged as
// a packet of its own (routes, ACL; from a host NAT translates it is dropped:
// forwarding it would show the inside address).
[[gnu::noinline]] void Worker::transit_icmp_error(uint16_t iface, rte_mbuf* m, Ipv4Packet& p) {
  if (handle_icmp_error_in2out(iface, m, p)) return;
  const RuntimeTables& t = *tables_;
  if (!t.acl->empty() && !t.snat_rule_from(p.ip->src_addr) && icmp_error_of_tracked_flow(p))
    return forward(iface, m, p);
  new_flow(iface, m, p, FlowKey{});
}

// An error from the inside (a host or an on-prem router) about reply traffic: the
// quote shows the inside endpoint as destination; show the outside one instead and
// send it from our outside address.
[[gnu::noinline]] bool Worker::handle_icmp_error_in2out(uint16_t iface, rte_mbuf* m,
                                                        Ipv4Packet& p) {
  (void)iface;
  Embedded e;
  // Only an error addressed to the sender of the reply it quotes, about that reply's
  // own header (not a later fragment's bytes), and no redirect, whose gateway field
  // would name an inside address. Anything else is a packet of its own (routes, ACL):
  // a host with a session could otherwise send any ICMP payload, anywhere, from our
  // outside address.
  if (icmp_of(p)->type == 5 || !embedded_of(p, e) || e.ip->src_addr != p.ip->dst_addr || quotes_later_fragment(e))
    return false;
  const uint8_t proto = e.ip->next_proto_id;
  FlowKey k;
  if (!key_of_quote(e, true, nat::kInside, k)) return false;
  uint32_t idx;
  const int table = find(k, id_, idx);
  if (table < 0) return false;
  Session& s = ctx_.sessions[table]->session(idx);
  // A pass-through session (an untranslated flow the ACL tracks): nothing to rewrite;
  // the caller passes the error unchanged (its source may be a router on the way).
  if (s.mapping == nat::SessionTable::kNoMapping) return false;
  // In fragments: its checksum covers the whole datagram (no reassembly here).
  if (p.flags & net::PKT_FRAGMENT) return drop(m, kDropUnsupported), true;
  p.ip->src_addr = s.out_ip;
  p.ip->time_to_live--;
  net::ipv4_set_checksum(p.ip);
  e.ip->dst_addr = s.out_ip;
  e.ip->hdr_checksum = net::csum_apply(e.ip->hdr_checksum, s.l3_delta);
  if (proto == IPPROTO_ICMP)
    reinterpret_cast<net::IcmpHdr*>(e.l4)->id = s.out_port;
  else
    reinterpret_cast<rte_be16_t*>(e.l4)[1] = s.out_port;
  adjust_embedded_l4(e, s.l4_delta);
  refresh_icmp_checksum(p);
  counters_.icmp_errors_translated.add();
  send_l3(s.out_iface, s.out_nh, m);
  return true;
}

// ---------------------------------------------------------------- fragments

void Worker::remember_fragment(const Ipv4Packet& p, uint16_t table, uint32_t idx, uint8_t dir) {
  const rte_ipv4_hdr* ip = p.ip;
  FragEntry& f = frags_[frag_hash(ip->src_addr, ip->dst_addr, ip->packet_id, p.proto) % kFragSlots];
  const uint32_t created = dir == kFragForward ? 0 : ctx_.sessions[table]->session(idx).created_ms;
  f = FragEntry{ip->src_addr, ip->dst_addr, ip->packet_id, p.proto, dir, true, table, idx,
                now_ms_ + tables_->fragment_timeout_ms, created};
  if (held_used_) release_held_fragments();
}

// A non-first fragment: no ports, so it follows the session its first fragment found.
[[gnu::noinline]] void Worker::handle_fragment(uint16_t iface, rte_mbuf* m, Ipv4Packet& p,
                                               bool local) {
  const rte_ipv4_hdr* ip = p.ip;
  const FragEntry& f =
      frags_[frag_hash(ip->src_addr, ip->dst_addr, ip->packet_id, p.proto) % kFragSlots];
  const bool hit = f.used && f.src == ip->src_addr && f.dst == ip->dst_addr &&
                   f.id == ip->packet_id && f.proto == p.proto &&
                   static_cast<int32_t>(f.expires_ms - now_ms_) >= 0;
  if (hit && f.dir == kFragForward) return forward(iface, m, p);  // its first was routed as it was
  if (hit) {
    Session& s = ctx_.sessions[f.table]->session(f.session);
    // The entry outlives quiescent states, so its session may have expired and its
    // slot been reused since (timeouts shorter than the fragment timeout, a flush).
    const bool same = s.created_ms == f.created_ms && s.proto == p.proto &&
                      (f.dir == nat::kOutside ? s.remote_ip == ip->src_addr && s.out_ip == ip->dst_addr
                                              : s.in_ip == ip->src_addr && s.remote_ip == ip->dst_addr);
    if (!same) [[unlikely]] return drop(m, kDropFragment);
    if (f.dir == nat::kOutside) {
      // Fragments to our address skip classify's TTL check: an expired one is dropped
      // here (no ICMP error about a later fragment), not sent on with its TTL wrapped.
      if (p.ip->time_to_live <= 1) [[unlikely]] return drop(m, kDropTtl);
      if (!fits_mtu(iface, s.in_iface, m, p)) return;
      out2in(m, p, s);
      counters_.fragments_translated.add();
      return send_to_prev_hop(s, m);
    }
    if (!fits_mtu(iface, s.out_iface, m, p)) return;
    in2out(m, p, s);
    counters_.fragments_translated.add();
    return send_l3(s.out_iface, s.out_nh, m);
  }
  // Not (yet) known. A fragment from a non-NAT source is plain forwarding, unless an
  // ACL must judge it: then it waits for its first fragment's verdict.
  if (!local && tables_->acl->empty() && !tables_->snat_rule_from(ip->src_addr)) return forward(iface, m, p);
  // Hold it briefly: fragments may arrive before their first fragment.
  HeldFrag* slot = nullptr;
  for (auto& h : held_)
    if (!h.m) {
      slot = &h;
      break;
    }
  if (!slot) {
    // Full (maybe a flood of orphan fragments): the oldest goes, so the buffer keeps
    // serving fragments that arrive just before their first.
    slot = &held_[0];
    for (auto& h : held_)
      if (static_cast<int32_t>(h.seq - slot->seq) < 0) slot = &h;
    drop(slot->m, kDropFragment);
    slot->m = nullptr;
    --held_used_;
  }
  slot->m = m;
  slot->iface = iface;
  slot->seq = held_seq_++;
  slot->expires_ms = now_ms_ + tables_->fragment_timeout_ms;
  ++held_used_;
  counters_.fragments_buffered.add();
}

void Worker::release_held_fragments() {
  for (auto& h : held_) {
    if (!h.m) continue;
    const auto* ip = rte_pktmbuf_mtod_offset(h.m, const rte_ipv4_hdr*, net::kEtherHdrLen);
    const FragEntry& f =
        frags_[frag_hash(ip->src_addr, ip->dst_addr, ip->packet_id, ip->next_proto_id) % kFragSlots];
    if (!f.used || f.src != ip->src_addr || f.dst != ip->dst_addr || f.id != ip->packet_id) continue;
    rte_mbuf* m = h.m;
    h.m = nullptr;
    --held_used_;
    Ipv4Packet p;
    if (net::parse_ipv4_mbuf(m, p) != net::ParseError::none) {
      drop(m, kDropMalformed);
      continue;
    }
    handle_fragment(h.iface, m, p, f.dir == nat::kOutside);
  }
}

// ---------------------------------------------------------------- ARP

[[gnu::noinline]] void Worker::handle_arp(uint16_t iface, rte_mbuf* m) {
  if (m->data_len < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) return drop(m, kDropMalformed);
  auto* arp = rte_pktmbuf_mtod_offset(m, rte_arp_hdr*, sizeof(rte_ether_hdr));
  if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
      arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
      arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4)
    return drop(m, kDropMalformed);
  const Iface& itf = ctx_.ifaces[iface];
  const rte_be32_t sip = arp->arp_data.arp_sip;
  const rte_be32_t tip = arp->arp_data.arp_tip;
  const bool sender_on_link = (rte_be_to_cpu_32(sip) & itf.mask) == itf.net && sip != itf.addr;
  // Answer for our interface address and for pool addresses on this link.
  const bool for_us = tip == itf.addr ||
                      (ctx_.is_local(tip) && (rte_be_to_cpu_32(tip) & itf.mask) == itf.net);
  if (sender_on_link && !rte_is_zero_ether_addr(&arp->arp_data.arp_sha)) {
    arp::ArpTable::Hit old;
    const bool known = ctx_.arp.lookup(sip, old);
    // Learn from anyone addressing us; refresh entries we already have (gratuitous ARP).
    if (for_us || known) {
      if (!known || !rte_is_same_ether_addr(&old.mac, &arp->arp_data.arp_sha) ||
          now_ms_ - old.updated_ms > 1000) {
        if (ctx_.arp.update(sip, iface, arp->arp_data.arp_sha, now_ms_)) {
          counters_.arp_learned.add();
          // The rest of this burst uses the new MAC. The slot is cleared directly too:
          // when two workers learn the same change at once, only one bumps the generation.
          l2_hops_[rte_be_to_cpu_32(sip) % kL2Hops].iface = kNoIface;
          check_l2_hops();
        } else {
          counters_.arp_table_full.add();
        }
      }
    }
  }
  if (arp->arp_opcode == rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) && for_us) {
    net::make_arp_reply(m, itf.mac);
    counters_.arp_replies_sent.add();
    emit(iface, m);
    return;
  }
  rte_pktmbuf_free(m);  // replies and requests for others end here (not a drop)
}

void Worker::send_arp_request(uint16_t out_if, rte_be32_t target) {
  const Iface& itf = ctx_.ifaces[out_if];
  rte_mbuf* r = net::build_arp_request(pool_, itf.mac, itf.addr, target);
  if (!r) {
    counters_.drops[kDropNoMbuf].add();
    return;
  }
  counters_.arp_requests_sent.add();
  emit(out_if, r);
}

void Worker::hold_for_arp(uint16_t out_if, rte_be32_t nh, rte_mbuf* m) {
  PendingArp* free_slot = nullptr;
  for (auto& pa : pending_) {
    if (pa.n && pa.ip == nh && pa.iface == out_if) {
      if (pa.n == sizeof(pa.pkts) / sizeof(pa.pkts[0])) return drop(m, kDropArpUnresolved);
      pa.pkts[pa.n++] = m;
      return;
    }
    if (!pa.n && !free_slot) free_slot = &pa;
  }
  if (!free_slot) return drop(m, kDropArpUnresolved);
  *free_slot = PendingArp{};
  free_slot->ip = nh;
  free_slot->iface = out_if;
  free_slot->pkts[0] = m;
  free_slot->n = 1;
  free_slot->tries = 1;
  free_slot->first_ms = free_slot->last_req_ms = now_ms_;
  ++pending_used_;
  send_arp_request(out_if, nh);
}

// ---------------------------------------------------------------- output

bool Worker::fits_mtu(uint16_t in_if, uint16_t out_if, rte_mbuf* m, Ipv4Packet& p) {
  if (!too_big(out_if, p)) return true;  // non-DF: fragmented at output
  const uint16_t mtu = ctx_.ifaces[out_if].mtu;
  // Too big and must not be fragmented: tell the sender the next-hop MTU, quoting
  // the packet as it sent it (this runs before translation).
  send_icmp_error(in_if, m, p, 3, 4, mtu);
  drop(m, kDropMtu);
  return false;
}

// Split an IPv4 packet that exceeds the egress MTU into single-segment fragments
// (RFC 791): every PMD can send them, and the original's own fragment offset and
// MF flag are kept, so a fragment can be fragmented again.
[[gnu::noinline]] void Worker::fragment_and_emit(uint16_t out_if, rte_mbuf* m) {
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
  const uint16_t hlen = static_cast<uint16_t>((ip->version_ihl & 0xf) * 4);
  const uint16_t total = rte_be_to_cpu_16(ip->total_length);
  const uint16_t frag = rte_be_to_cpu_16(ip->fragment_offset);
  const uint16_t mtu = ctx_.ifaces[out_if].mtu;
  const uint16_t chunk = static_cast<uint16_t>((mtu - hlen) & ~7u);
  if (chunk == 0 || (frag & RTE_IPV4_HDR_DF_FLAG)) return drop(m, kDropMtu);
  const uint16_t payload = static_cast<uint16_t>(total - hlen);
  const uint8_t* data = reinterpret_cast<const uint8_t*>(ip) + hlen;
  for (uint16_t off = 0; off < payload; off = static_cast<uint16_t>(off + chunk)) {
    const uint16_t len = std::min<uint16_t>(chunk, static_cast<uint16_t>(payload - off));
    rte_mbuf* f = rte_pktmbuf_alloc(pool_);
    auto* d = f ? reinterpret_cast<uint8_t*>(rte_pktmbuf_append(f, static_cast<uint16_t>(
                                                                 sizeof(rte_ether_hdr) + hlen + len)))
                : nullptr;
    if (!d) {
      if (f) rte_pktmbuf_free(f);
      counters_.drops[kDropNoMbuf].add();
      break;
    }
    std::memcpy(d, eth, sizeof(rte_ether_hdr) + hlen);
    std::memcpy(d + sizeof(rte_ether_hdr) + hlen, data + off, len);
    auto* fip = reinterpret_cast<rte_ipv4_hdr*>(d + sizeof(rte_ether_hdr));
    fip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(hlen + len));
    const bool more = off + len < payload || (frag & RTE_IPV4_HDR_MF_FLAG);
    fip->fragment_offset = rte_cpu_to_be_16(static_cast<uint16_t>(
        ((frag & RTE_IPV4_HDR_OFFSET_MASK) + off / 8) | (more ? RTE_IPV4_HDR_MF_FLAG : 0)));
    net::ipv4_set_checksum(fip);
    counters_.fragments_created.add();
    emit(out_if, f);
  }
  rte_pktmbuf_free(m);
}

// Lower the MSS option of a TCP SYN leaving an interface with mss_clamp set.
[[gnu::noinline]] void Worker::clamp_mss(uint16_t out_if, rte_mbuf* m) {
  auto* ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr*, sizeof(rte_ether_hdr));
  if (ip->next_proto_id != IPPROTO_TCP ||
      (rte_be_to_cpu_16(ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK))
    return;
  const uint16_t hlen = static_cast<uint16_t>((ip->version_ihl & 0xf) * 4);
  auto* th = reinterpret_cast<rte_tcp_hdr*>(reinterpret_cast<uint8_t*>(ip) + hlen);
  if (!(th->tcp_flags & RTE_TCP_SYN_FLAG)) return;
  const uint16_t doff = static_cast<uint16_t>((th->data_off >> 4) * 4);
  const uint16_t avail = static_cast<uint16_t>(rte_be_to_cpu_16(ip->total_length) - hlen);
  if (doff > avail) return;
  uint8_t* opt = reinterpret_cast<uint8_t*>(th + 1);
  uint8_t* end = reinterpret_cast<uint8_t*>(th) + doff;
  const uint16_t clamp = ctx_.ifaces[out_if].mss_clamp;
  while (opt < end) {
    if (*opt == 0) break;            // end of options
    if (*opt == 1) { ++opt; continue; }  // NOP
    if (opt + 1 >= end || opt[1] < 2 || opt + opt[1] > end) break;
    if (opt[0] == 2 && opt[1] == 4) {
      uint16_t mss_be;
      std::memcpy(&mss_be, opt + 2, 2);
      if (rte_be_to_cpu_16(mss_be) > clamp) {
        const uint16_t new_be = rte_cpu_to_be_16(clamp);
        std::memcpy(opt + 2, &new_be, 2);
        // An odd offset puts the field's bytes in two checksum words: its weight in the
        // one's-complement sum is then the byte-swapped value (RFC 1071 byte-order
        // independence). Patched either way, never recomputed: a SYN may be a first
        // fragment, whose checksum covers bytes this packet does not hold.
        const bool even = ((opt + 2) - reinterpret_cast<uint8_t*>(th)) % 2 == 0;
        th->cksum = net::csum_apply(th->cksum, even ? net::csum_delta16(mss_be, new_be)
                                                    : net::csum_delta16(rte_bswap16(mss_be), rte_bswap16(new_be)));
        counters_.mss_clamped.add();
      }
      return;
    }
    opt += opt[1];
  }
}

void Worker::send_l3(uint16_t out_if, rte_be32_t nh, rte_mbuf* m) {
  L2Hop& c = l2_hops_[rte_be_to_cpu_32(nh) % kL2Hops];
  if (c.nh == nh && c.iface == out_if) [[likely]] return send_l2(out_if, c.mac, m);
  arp::ArpTable::Hit hit;
  if (!ctx_.arp.lookup(nh, hit) || hit.iface != out_if) return hold_for_arp(out_if, nh, m);
  c = L2Hop{nh, out_if, hit.mac};
  send_l2(out_if, hit.mac, m);
}

void Worker::send_l2(uint16_t out_if, const rte_ether_addr& dst, rte_mbuf* m) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  rte_ether_addr_copy(&dst, &eth->dst_addr);
  send_l2_rest(out_if, eth, m);
}

void Worker::send_to_prev_hop(const Session& s, rte_mbuf* m) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  const uint64_t hop = s.in_mac.load(std::memory_order_relaxed);
  std::memcpy(eth, &hop, sizeof hop);  // the destination, and 2 bytes (in_iface) the source overwrites next
  send_l2_rest(s.in_iface, eth, m);
}

void Worker::send_l2_rest(uint16_t out_if, rte_ether_hdr* eth, rte_mbuf* m) {
  const Iface& itf = ctx_.ifaces[out_if];
  rte_ether_addr_copy(&itf.mac, &eth->src_addr);
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  if (itf.mss_clamp) [[unlikely]] clamp_mss(out_if, m);
  if (m->pkt_len > itf.mtu + sizeof(rte_ether_hdr)) [[unlikely]] return fragment_and_emit(out_if, m);
  emit(out_if, m);
}

void Worker::emit(uint16_t out_if, rte_mbuf* m) {
  TxBuf& b = tx_[out_if];
  b.bytes += m->pkt_len;
  b.pkts[b.n++] = m;
  if (b.n == sizeof(b.pkts) / sizeof(b.pkts[0])) flush_iface(out_if);
}

void Worker::flush_iface(uint16_t out_if) {
  TxBuf& b = tx_[out_if];
  if (!b.n) return;
  IfaceCounters& ic = counters_.iface[out_if];
  uint32_t bytes = b.bytes;
  uint16_t sent = b.n;
  if (capture_) {
    captured_[out_if].insert(captured_[out_if].end(), b.pkts, b.pkts + b.n);
  } else {
    sent = ctx_.port_paused[out_if].load(std::memory_order_acquire)
               ? 0
               : rte_eth_tx_burst(ctx_.ifaces[out_if].port_id, id_, b.pkts, b.n);
    for (uint16_t i = sent; i < b.n; ++i) {  // still ours
      bytes -= b.pkts[i]->pkt_len;
      drop(b.pkts[i], kDropTxFull);
    }
  }
  ic.tx_packets.add(sent);
  ic.tx_bytes.add(bytes);
  b.n = 0;
  b.bytes = 0;
}

void Worker::flush() {
  for (uint16_t i = 0; i < ctx_.ifaces.size(); ++i) flush_iface(i);
}

std::vector<rte_mbuf*> Worker::take_captured(uint16_t iface) {
  flush();
  std::vector<rte_mbuf*> out;
  out.swap(captured_[iface]);
  return out;
}

[[gnu::noinline]] void Worker::send_icmp_error(uint16_t in_if, rte_mbuf* m, const Ipv4Packet& p,
                                               uint8_t type, uint8_t code, uint16_t mtu) {
  // Never about an ICMP error, a later fragment, or a source that cannot be answered.
  if (!(p.flags & net::PKT_FIRST_FRAGMENT)) return;
  if (p.proto == IPPROTO_ICMP && !net::is_icmp_query(icmp_of(p)->type)) return;
  const uint32_t src = rte_be_to_cpu_32(p.ip->src_addr);
  if (src == 0 || (src >> 24) == 127 || (src >> 28) == 0xe || src == 0xffffffff) return;
  const unsigned bucket = type == 3 && code == 4 ? 0 : 1;
  if (now_ms_ - icmp_refill_ms_[bucket] >= kIcmpRefillMs) {
    icmp_tokens_[bucket] = kIcmpTokens;
    icmp_refill_ms_[bucket] = now_ms_;
  }
  if (icmp_tokens_[bucket] == 0) {
    counters_.icmp_errors_ratelimited.add();
    return;
  }
  --icmp_tokens_[bucket];
  rte_mbuf* r = net::build_icmp_error(pool_, p.ip, p.total_len, type, code,
                                      ctx_.ifaces[in_if].addr, mtu);
  if (!r) {
    counters_.drops[kDropNoMbuf].add();
    return;
  }
  counters_.icmp_errors_sent.add();
  // Back the way the packet came, to the neighbour that sent it.
  const rte_ether_addr back = rte_pktmbuf_mtod(m, rte_ether_hdr*)->src_addr;
  send_l2(in_if, back, r);
}

// ---------------------------------------------------------------- timers

void Worker::housekeeping() {
  // Milliseconds since the last call (a long burst or a pause can skip some), capped.
  const uint32_t elapsed = std::min<uint32_t>(now_ms_ - last_housekeeping_ms_, 10);
  last_housekeeping_ms_ = now_ms_;
  const RuntimeTables& t = *tables_;
  if (pending_used_) {
    for (auto& pa : pending_) {
      if (!pa.n) continue;
      arp::ArpTable::Hit hit;
      if (ctx_.arp.lookup(pa.ip, hit) && hit.iface == pa.iface) {
        for (uint8_t i = 0; i < pa.n; ++i) send_l2(pa.iface, hit.mac, pa.pkts[i]);
        pa.n = 0;
        --pending_used_;
      } else if (now_ms_ - pa.first_ms >= kArpGiveUpMs) {
        for (uint8_t i = 0; i < pa.n; ++i) drop(pa.pkts[i], kDropArpUnresolved);
        pa.n = 0;
        --pending_used_;
      } else if (now_ms_ - pa.last_req_ms >= kArpRetryMs) {
        pa.last_req_ms = now_ms_;
        ++pa.tries;
        send_arp_request(pa.iface, pa.ip);
      }
    }
  }
  // Keep gateways resolved before traffic needs them (worker 0 only).
  if (id_ == 0 && (!gw_refreshed_ || now_ms_ - last_gw_refresh_ms_ >= kGatewayRefreshMs)) {
    gw_refreshed_ = true;
    last_gw_refresh_ms_ = now_ms_;
    for (rte_be32_t gw : t.gateways) {
      route::NextHop nh;
      if (t.routes->lookup(gw, nh)) send_arp_request(nh.iface, gw);
    }
  }
  // Forget expired fragment entries, 16 slots a tick (all of them every 64 ms): the
  // expiry test compares the millisecond clock modulo 2^32, so an entry left in
  // place (or never used) would match again 24.8 days on, with a stale session.
  for (unsigned n = 0; n < 16; ++n) {
    FragEntry& f = frags_[frag_sweep_];
    if (f.used && static_cast<int32_t>(f.expires_ms - now_ms_) < 0) f.used = false;
    frag_sweep_ = frag_sweep_ + 1 == kFragSlots ? 0 : frag_sweep_ + 1;
  }
  if (held_used_) {
    for (auto& h : held_) {
      if (h.m && static_cast<int32_t>(h.expires_ms - now_ms_) < 0) {
        drop(h.m, kDropFragment);
        h.m = nullptr;
        --held_used_;
      }
    }
  }
  if (!ctx_.sessions.empty()) {
    nat::SessionTable& st = *ctx_.sessions[id_];
    const uint32_t per_ms = std::max(kExpiryMinBudget, (st.capacity() + kExpiryPassMs - 1) / kExpiryPassMs);
    st.expire_step(now_ms_, t.timeouts, per_ms * std::max<uint32_t>(elapsed, 1));
    st.reclaim();
  }
}

}  // namespace natgw::dp
