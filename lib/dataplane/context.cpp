#include "dataplane/context.hpp"

#include <rte_ring_elem.h>

#include <rte_errno.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>

#include <atomic>

#include <map>
#include <stdexcept>

namespace natgw::dp {

namespace {
uint32_t mask_of(uint8_t len) { return len ? ~0u << (32 - len) : 0; }

std::string where(const config::Location& loc) { return loc.file + ":" + std::to_string(loc.line) + ": "; }

// Port range every outside address gets, from the SNAT rules that can use it.
struct PortRangeUse {  // an outside address's port range and the [[snat]] rule that set it
  uint16_t lo, hi;
  config::Location loc;
};

std::map<uint32_t, PortRangeUse> port_ranges(const config::Config& cfg) {
  std::map<uint32_t, PortRangeUse> r;
  auto set = [&](uint32_t a, uint16_t lo, uint16_t hi, const config::Location& loc) {
    auto [it, fresh] = r.emplace(a, PortRangeUse{lo, hi, loc});
    if (!fresh && (it->second.lo != lo || it->second.hi != hi))
      throw std::runtime_error(loc.file + ":" + std::to_string(loc.line) + ": outside address " +
                               config::format_ipv4(a) + " is used with port ranges " +
                               std::to_string(it->second.lo) + "-" + std::to_string(it->second.hi) +
                               " and " + std::to_string(lo) + "-" + std::to_string(hi) + "; give it one range");
  };
  for (const auto& s : cfg.snat) {
    if (s.to.empty()) {
      for (const auto& i : cfg.interfaces) set(i.addr, s.port_min, s.port_max, s.loc);
    } else {
      for (uint32_t a : s.to) set(a, s.port_min, s.port_max, s.loc);
    }
  }
  return r;
}
}  // namespace

void init_context(Context& ctx, const config::Config& cfg) {
  if (cfg.interfaces.size() > kMaxIfaces)
    throw std::runtime_error("at most " + std::to_string(kMaxIfaces) + " interfaces");
  const auto ranges = port_ranges(cfg);
  auto outside_index = [&](uint32_t a) -> uint8_t {
    for (size_t i = 0; i < ctx.outside.size(); ++i)
      if (ctx.outside[i].addr == rte_cpu_to_be_32(a)) return static_cast<uint8_t>(i);
    auto it = ranges.find(a);
    const auto pr = it == ranges.end() ? std::make_pair<uint16_t, uint16_t>(1024, 65535)
                                       : std::make_pair(it->second.lo, it->second.hi);
    // Session tables name an outside address by an 8-bit index.
    if (ctx.outside.size() == 255)
      throw std::runtime_error((it == ranges.end() ? cfg.path + ": " : where(it->second.loc)) +
                               "at most 255 outside addresses (interfaces and pools together); " +
                               config::format_ipv4(a) + " is one more");
    // Each worker takes its own share of every address's ports.
    if (it != ranges.end() && static_cast<uint32_t>(pr.second - pr.first) + 1 < cfg.dataplane.workers)
      throw std::runtime_error(where(it->second.loc) + "port range " + std::to_string(pr.first) + "-" +
                               std::to_string(pr.second) + " of " + config::format_ipv4(a) + " has fewer ports than the " +
                               std::to_string(cfg.dataplane.workers) + " workers that share it");
    ctx.outside.push_back(nat::OutsideAddress{rte_cpu_to_be_32(a), pr.first, pr.second});
    ctx.local.push_back(rte_cpu_to_be_32(a));
    return static_cast<uint8_t>(ctx.outside.size() - 1);
  };
  ctx.ifaces.clear();
  for (const auto& i : cfg.interfaces) {
    Iface f;
    f.name = i.name;
    f.addr = rte_cpu_to_be_32(i.addr);
    f.mask = mask_of(i.prefix_len);
    f.net = i.addr & f.mask;
    f.mtu = i.mtu;
    f.mss_clamp = i.mss_clamp;
    f.one_armed = i.one_armed;
    f.outside_idx = outside_index(i.addr);
    ctx.ifaces.push_back(f);
  }
  for (const auto& s : cfg.snat)
    for (uint32_t a : s.to) outside_index(a);
  ctx.workers = static_cast<uint16_t>(cfg.dataplane.workers);
  ctx.max_sessions = cfg.nat.max_sessions;
  ctx.count_hosts = cfg.nat.max_sessions_per_host != 0 || cfg.nat.max_ports_per_host != 0;
  uint32_t slots = 16;
  while (slots < 2 * ctx.local.size()) slots *= 2;
  ctx.local_slots.assign(slots, 0);
  ctx.local_mask = slots - 1;
  for (rte_be32_t a : ctx.local) {
    uint32_t i = ctx.local_home(a);
    while (ctx.local_slots[i] != 0 && ctx.local_slots[i] != a) i = (i + 1) & ctx.local_mask;
    ctx.local_slots[i] = a;
  }
}

void init_sessions(Context& ctx, int socket) {
  const size_t sz = rte_rcu_qsbr_get_memsize(ctx.workers);
  ctx.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("natgw_qsbr", sz, RTE_CACHE_LINE_SIZE));
  if (!ctx.qsbr || rte_rcu_qsbr_init(ctx.qsbr, ctx.workers) != 0)
    throw std::runtime_error("cannot allocate the RCU state");
  for (uint16_t w = 0; w < ctx.workers; ++w) {
    nat::SessionTable::Params p;
    p.max_sessions = ctx.max_sessions;
    p.worker = w;
    p.workers = ctx.workers;
    p.outside = ctx.outside;
    p.qsbr = ctx.qsbr;
    p.socket = socket;
    p.count_hosts = ctx.count_hosts;
    ctx.sessions.push_back(nat::SessionTable::create(p));
    static std::atomic<uint32_t> seq{0};
    const std::string name = "ngw_handoff" + std::to_string(w) + "_" + std::to_string(seq++);
    rte_ring* r = rte_ring_create(name.c_str(), 4096, socket, RING_F_SC_DEQ);
    if (!r) throw std::runtime_error("cannot create the handoff ring: " + std::string(rte_strerror(rte_errno)));
    ctx.handoff.push_back(r);
    const std::string ev = "ngw_events" + std::to_string(w) + "_" + std::to_string(seq++);
    rte_ring* e = rte_ring_create_elem(ev.c_str(), sizeof(nat::NatEvent), Context::kEventRing, socket,
                                       RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!e) throw std::runtime_error("cannot create the NAT event ring: " + std::string(rte_strerror(rte_errno)));
    ctx.events.push_back(e);
  }
}

std::unique_ptr<RuntimeTables> build_tables(const Context& ctx, const config::Config& cfg,
                                            uint64_t generation) {
  auto t = std::make_unique<RuntimeTables>();
  t->generation = generation;
  t->routes = route::RouteTable::build(cfg);
  t->acl = std::make_unique<acl::AclTable>(cfg);
  const auto ranges = port_ranges(cfg);
  for (size_t r = 0; r < cfg.snat.size(); ++r) {
    const auto& s = cfg.snat[r];
    SnatRule rule;
    rule.id = static_cast<uint8_t>(r);
    for (const auto& p : s.from) rule.from.emplace_back(p.addr & mask_of(p.len), mask_of(p.len));
    for (uint32_t a : s.to) {
      int idx = -1;
      for (size_t i = 0; i < ctx.outside.size(); ++i)
        if (ctx.outside[i].addr == rte_cpu_to_be_32(a)) idx = static_cast<int>(i);
      if (idx < 0)
        throw std::runtime_error(s.loc.file + ":" + std::to_string(s.loc.line) + ": pool address " +
                                 config::format_ipv4(a) +
                                 " is new: adding outside addresses needs a restart");
      rule.pool.push_back(static_cast<uint8_t>(idx));
    }
    t->snat_pools = t->snat_pools || !rule.pool.empty();
    t->snat.push_back(std::move(rule));
  }
  for (const auto& [a, pr] : ranges) {
    for (const auto& o : ctx.outside)
      if (o.addr == rte_cpu_to_be_32(a) && (o.port_lo != pr.lo || o.port_hi != pr.hi))
        throw std::runtime_error(pr.loc.file + ":" + std::to_string(pr.loc.line) + ": port range of " +
                                 config::format_ipv4(a) + " changed from " + std::to_string(o.port_lo) +
                                 "-" + std::to_string(o.port_hi) + ": that needs a restart");
  }
  // Route next hops index ctx.ifaces: never more interfaces than the context has. What
  // else of an interface may not change live, a reload names first (config::restart_reasons).
  if (cfg.interfaces.size() != ctx.ifaces.size())
    throw std::runtime_error("interfaces changed: that needs a restart");
  t->timeouts.udp = cfg.timeouts.udp * 1000;
  t->timeouts.tcp_established = cfg.timeouts.tcp_established * 1000;
  t->timeouts.tcp_transitory = cfg.timeouts.tcp_transitory * 1000;
  t->timeouts.icmp = cfg.timeouts.icmp * 1000;
  t->fragment_timeout_ms = cfg.timeouts.fragment * 1000;
  t->port_preservation = cfg.nat.port_preservation;
  t->port_overlapping = cfg.nat.port_overlapping;
  t->hairpinning = cfg.nat.hairpinning;
  t->endpoint_independent_filtering = cfg.nat.endpoint_independent_filtering;
  for (const auto& [limit, name] : {std::pair{cfg.nat.max_sessions_per_host, "max_sessions_per_host"},
                                    std::pair{cfg.nat.max_ports_per_host, "max_ports_per_host"}})
    if (limit && !ctx.count_hosts)
      throw std::runtime_error(cfg.nat.loc.file + ":" + std::to_string(cfg.nat.loc.line) + ": nat." + name +
                               " needs a restart (natgw started without a per-host limit)");
  t->max_sessions_per_host = cfg.nat.max_sessions_per_host;
  t->max_ports_per_host = cfg.nat.max_ports_per_host;
  for (const auto& r : cfg.routes)
    if (r.via) t->gateways.push_back(rte_cpu_to_be_32(r.via));
  return t;
}

void publish_tables(Context& ctx, std::unique_ptr<RuntimeTables> next) {
  const RuntimeTables* now = next.get();
  const RuntimeTables* old = ctx.tables.exchange(next.release(), std::memory_order_acq_rel);
  if (old) {
    // Wait until every worker has reported a quiescent state after the swap.
    if (ctx.qsbr) rte_rcu_qsbr_synchronize(ctx.qsbr, RTE_QSBR_THRID_INVALID);
    // No worker counts in the old ACL any more: its totals move over, exact.
    if (now->acl && old->acl) now->acl->carry_hits_from(*old->acl);
    delete old;
  }
}

void destroy_context(Context& ctx) {
  delete ctx.tables.exchange(nullptr);
  ctx.sessions.clear();
  for (rte_ring* r : ctx.handoff) {
    void* m;
    while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf*>(m));
    rte_ring_free(r);
  }
  ctx.handoff.clear();
  for (rte_ring* e : ctx.events) rte_ring_free(e);
  ctx.events.clear();
  rte_free(ctx.qsbr);
  ctx.qsbr = nullptr;
}

}  // namespace natgw::dp
