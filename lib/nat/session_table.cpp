#include "nat/session_table.hpp"

#include "net/checksum.hpp"

#include <rte_errno.h>
#include <rte_hash_crc.h>
#include <rte_cycles.h>

#include <atomic>
#include <random>
#include <stdexcept>
#include <string>

namespace natgw::nat {

namespace {
std::atomic<uint32_t> g_seq{0};

// Each port allocator's own random order, independent of the index seeds (outside
// ports are visible to anyone; the index seeds must not be derivable from them).
uint64_t port_seed() {
  static std::random_device rd;
  uint64_t z = (uint64_t{rd()} << 32 | rd()) ^ rte_rdtsc();
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;  // splitmix64's finalizer
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string unique_name(const char* what, uint16_t worker) {
  // rte_malloc names: short and unique per table.
  return std::string(what) + std::to_string(worker) + "_" + std::to_string(g_seq.fetch_add(1));
}

}  // namespace

std::unique_ptr<SessionTable> SessionTable::create(const Params& p) {
  if (!p.qsbr) throw std::invalid_argument("SessionTable needs an rte_rcu_qsbr");
  if (p.outside.size() > 255) throw std::invalid_argument("at most 255 outside addresses");
  if (p.max_sessions >= kOutsideBit) throw std::invalid_argument("max_sessions must be below 2^31");
  std::unique_ptr<SessionTable> t(new SessionTable());
  t->max_ = p.max_sessions < 64 ? 64 : p.max_sessions;
  t->worker_ = p.worker;
  t->workers_ = p.workers ? p.workers : 1;
  t->outside_ = p.outside;
  t->exhausted_event_ms_.assign(t->outside_.size() * kProtoClasses, 0);
  t->qsbr_ = p.qsbr;
  const uint32_t n = t->max_;
  const uint64_t seed = rte_rdtsc() ^ (uint64_t{p.worker} << 48) ^ g_seq.fetch_add(1);

  // Two keys per session at <= 80% load (a hit then needs a second bucket ~18% of
  // the time, a miss walks ~2 buckets); mappings (at most one per session) likewise.
  t->flows_ = SigIndex(unique_name("ngw_flows", p.worker).c_str(), 2 * n, kIndexLoad, p.socket, seed);
  t->maps_ = SigIndex(unique_name("ngw_maps", p.worker).c_str(), n, kIndexLoad, p.socket, ~seed);
  t->session_mem_ = TableMemory("ngw_sessions", size_t{n} * sizeof(Session), p.socket);
  t->free_session_mem_ = TableMemory("ngw_free_sessions", size_t{n} * 4, p.socket);
  t->mapping_mem_ = TableMemory("ngw_mappings", size_t{n} * sizeof(Mapping), p.socket);
  t->free_mapping_mem_ = TableMemory("ngw_free_mappings", size_t{n} * 4, p.socket);
  t->sessions_ = static_cast<Session*>(t->session_mem_.get());
  t->free_sessions_ = static_cast<uint32_t*>(t->free_session_mem_.get());
  t->mappings_ = static_cast<Mapping*>(t->mapping_mem_.get());
  t->free_mappings_ = static_cast<uint32_t*>(t->free_mapping_mem_.get());
  // Hand out low indexes first: a lightly loaded table stays in few cache lines.
  for (uint32_t i = 0; i < n; ++i) {
    new (&t->sessions_[i]) Session();
    new (&t->mappings_[i]) Mapping();
    t->free_sessions_[i] = n - 1 - i;
    t->free_mappings_[i] = n - 1 - i;
  }
  t->nfree_sessions_ = n;
  t->nfree_mappings_ = n;

  for (const auto& o : t->outside_) {
    const uint32_t size = static_cast<uint32_t>(o.port_hi - o.port_lo) + 1;
    const uint32_t w = t->worker_, nw = t->workers_;
    const uint32_t lo = o.port_lo + (size * w + nw - 1) / nw;
    const uint32_t hi = o.port_lo + (size * (w + 1) + nw - 1) / nw - 1;
    if (hi < lo) throw std::invalid_argument("port range smaller than the number of workers");
    for (int c = 0; c < kProtoClasses; ++c)
      t->allocs_.push_back(
          std::make_unique<PortAllocator>(static_cast<uint16_t>(lo), static_cast<uint16_t>(hi), port_seed()));
  }
  t->rng_ ^= static_cast<uint32_t>(rte_rdtsc()) | 1;

  if (p.count_hosts)
    t->hosts_ = std::make_unique<HostSessions>(unique_name("ngw_hosts", p.worker).c_str(), n, p.socket, seed ^ 0x5bd1e995);
  t->memory_bytes_ = t->flows_.memory_bytes() + t->maps_.memory_bytes() + t->session_mem_.size() +
                     t->free_session_mem_.size() + t->mapping_mem_.size() + t->free_mapping_mem_.size() +
                     (t->hosts_ ? t->hosts_->memory_bytes() : 0);
  return t;
}

SessionTable::~SessionTable() = default;  // TableMemory frees; no reader may outlive the table

FlowKey SessionTable::key_of(uint32_t v) const {
  const Session& s = sessions_[v & ~kOutsideBit];
  if (v & kOutsideBit)
    return make_key(s.remote_ip, s.out_ip, s.remote_port, s.out_port, s.proto, kOutside);
  return make_key(s.in_ip, s.remote_ip, s.in_port, s.remote_port, s.proto, kInside);
}

constexpr unsigned kPeekRounds = 3;  // buckets past home a bulk lookup prefetches

void SessionTable::guess_bulk(const FlowKey** keys, unsigned n, uint64_t* h, int64_t* vals) const {
  uint32_t next[kBulkMax];  // the bucket each key peeks at next
  uint8_t left[kBulkMax];   // keys whose guess needs another bucket
  if (n > kBulkMax) n = kBulkMax;
  for (unsigned i = 0; i < n; ++i) {
    h[i] = hash_of(*keys[i]);
    next[i] = flows_.home(h[i]);
    flows_.prefetch_bucket(next[i]);
  }
  // Guess key i's session from bucket next[i] and prefetch it; true when the bucket
  // has no match but entries overflowed past it: the next bucket is prefetched for
  // another round. At 80% load ~9% of the entries live past their home bucket, ~4%
  // past the next one too (linear probing); each round is one miss for all keys
  // left, instead of a serial walk (bucket, then session) below.
  const auto guess = [&](unsigned i) {
    vals[i] = flows_.peek(next[i], h[i], next[i]);
    if (vals[i] >= 0) {
      rte_prefetch0(&sessions_[static_cast<uint32_t>(vals[i]) & ~kOutsideBit]);
      return false;
    }
    if (next[i] == SigIndex::kNoBucket) return false;
    flows_.prefetch_bucket(next[i]);
    return true;
  };
  unsigned nleft = 0;
  for (unsigned i = 0; i < n; ++i)
    if (guess(i)) left[nleft++] = static_cast<uint8_t>(i);
  for (unsigned round = 0; round < kPeekRounds && nleft; ++round) {
    unsigned kept = 0;
    for (unsigned j = 0; j < nleft; ++j)
      if (guess(left[j])) left[kept++] = left[j];
    nleft = kept;
  }
}

void SessionTable::lookup_bulk(const FlowKey** keys, unsigned n, uint64_t& hit_mask,
                               int64_t* vals) const {
  uint64_t h[kBulkMax];
  if (n > kBulkMax) n = kBulkMax;
  guess_bulk(keys, n, h, vals);
  hit_mask = 0;
  for (unsigned i = 0; i < n; ++i) {
    vals[i] = confirm(*keys[i], h[i], vals[i]);
    if (vals[i] >= 0) hit_mask |= uint64_t{1} << i;
  }
}

uint16_t SessionTable::owner_of(uint32_t a, uint16_t port) const {
  const OutsideAddress& o = outside_[a];
  if (workers_ == 1 || port < o.port_lo || port > o.port_hi) return 0;
  const uint32_t size = static_cast<uint32_t>(o.port_hi - o.port_lo) + 1;
  return static_cast<uint16_t>(static_cast<uint64_t>(port - o.port_lo) * workers_ / size);
}

int SessionTable::outside_index(rte_be32_t addr) const {
  for (size_t i = 0; i < outside_.size(); ++i)
    if (outside_[i].addr == addr) return static_cast<int>(i);
  return -1;
}

uint32_t SessionTable::next_rand() { return xorshift32(rng_); }

uint32_t SessionTable::timeout_of(const Session& s, const Timeouts& t) {
  switch (s.proto) {
    case IPPROTO_UDP: return t.udp;
    case IPPROTO_ICMP: return t.icmp;
    case IPPROTO_TCP: {
      const uint8_t f = s.flags.load(std::memory_order_relaxed);
      if ((f & kRst) || ((f & kFinIn) && (f & kFinOut))) return t.tcp_transitory;
      return (f & kSeenOut) ? t.tcp_established : t.tcp_transitory;
    }
    default: return t.udp;
  }
}

namespace {
FlowKey outside_key(const FlowKey& in, rte_be32_t out_ip, rte_be16_t out_port) {
  if (in.proto == IPPROTO_ICMP) return make_key(in.dst, out_ip, 0, out_port, in.proto, kOutside);
  return make_key(in.dst, out_ip, in.dport, out_port, in.proto, kOutside);
}
}  // namespace

bool SessionTable::alloc_mapping(const CreateArgs& a, int pc, uint32_t now_ms, uint32_t& midx) {
  const FlowKey& in = *a.in;
  const uint8_t addr_idx = paired_address(in.src, a.pool, a.pool_len);
  PortAllocator& pa = allocator(addr_idx, pc);
  const rte_be32_t out_ip = outside_[addr_idx].addr;
  uint16_t port = 0;
  bool got = false;
  if (a.port_preservation) got = pa.take(rte_be_to_cpu_16(in.sport));
  if (got) {
    port = rte_be_to_cpu_16(in.sport);
  } else {
    got = pa.take_any(port);
  }
  if (!got && a.port_overlapping) {
    // RFC 7857 §3: share a port already mapped, as long as the 5-tuple toward this
    // destination is unused.
    // A few random probes first; then a scan from a random start, so a port that is
    // free toward this destination is always found (exhaustion is the rare, slow path).
    const uint32_t size = pa.size();
    const uint32_t start = next_rand() % size;
    const bool hinted = a.first_probe != 0 && a.probe_addr == addr_idx;
    // The destination as the scan sees it: this address's ports toward (dst, dport).
    const uint64_t tag = uint64_t{in.dst} << 32 | uint64_t{in.dport} << 16 | uint64_t{addr_idx} << 8 |
                         static_cast<uint64_t>(pc) << 1 | 1;  // never 0 (empty)
    Exhausted& ex = exhausted_[(tag * 0x9E3779B97F4A7C15ull) >> kExhaustedShift];
    const bool scan = !(ex.tag == tag && static_cast<int32_t>(ex.until_ms - now_ms) > 0);
    const uint32_t probes = 16 + (scan ? size : 0);
    if (scan) stats_.port_scans.add();
    for (uint32_t n = 0; n < probes && !got; ++n) {
      const uint16_t cand = n < 16 ? pa.at(n == 0 && hinted ? a.first_probe : next_rand())
                                   : static_cast<uint16_t>(pa.lo() + (start + n - 16) % size);
      if (pa.refs(cand) == 0 || pa.refs(cand) == UINT16_MAX) continue;
      const FlowKey ok = outside_key(in, out_ip, rte_cpu_to_be_16(cand));
      if (lookup(ok) >= 0) continue;
      pa.share(cand);
      port = cand;  // its holder becomes this mapping below
      got = true;
      stats_.overlapped.add();
      if (n == 0 && hinted) stats_.first_probes.add();
    }
    if (!got && scan) ex = Exhausted{tag, now_ms + kExhaustedMs};
  }
  if (!got) {
    emit_exhausted(in, addr_idx, pc, now_ms);
    return false;
  }
  midx = free_mappings_[--nfree_mappings_];
  Mapping& m = mappings_[midx];
  m.key = MapKey{in.src, in.sport, in.proto, a.pool_id};
  m.out_port = rte_cpu_to_be_16(port);
  m.out_addr = addr_idx;
  m.refs = 0;
  if (!maps_.insert(hash_of(m.key), midx)) {
    pa.release(port);
    free_mappings_[nfree_mappings_++] = midx;
    return false;
  }
  pa.set_holder(port, midx);
  stats_.mappings.add();
  return true;
}

uint8_t SessionTable::hop_id(uint64_t hop) {
  for (unsigned i = static_cast<unsigned>(hop * 0x9E3779B97F4A7C15ull >> 56);; i = (i + 1) % kHopSlots) {
    if (i == kNoHop) continue;  // never an id
    if (hops_[i] == hop) return static_cast<uint8_t>(i);
    if (hops_[i] != 0) continue;
    if (nhops_ >= kMaxHops) return kNoHop;
    hops_[i] = hop;
    ++nhops_;
    return static_cast<uint8_t>(i);
  }
}

bool SessionTable::mapping_of_port(uint8_t addr_idx, uint16_t port, uint8_t proto, PortMapping& out) const {
  const int pc = proto_class(proto);
  if (pc < 0 || addr_idx >= outside_.size()) return false;
  const PortAllocator& pa = allocator(addr_idx, pc);
  if (!pa.owns(port) || pa.refs(port) != 1) return false;  // free, or shared (overlapping): no one endpoint
  const uint32_t midx = pa.holder(port);
  if (midx >= max_) return false;
  // The holder is the mapping that took or last shared the port; after a sharer left,
  // the one remaining may be another: then no endpoint answers for the port.
  const Mapping& m = mappings_[midx];
  if (m.refs == 0 || m.out_addr != addr_idx || m.key.proto != proto || rte_be_to_cpu_16(m.out_port) != port)
    return false;
  out.key = m.key;
  out.hop = m.hop == kNoHop ? 0 : hops_[m.hop];
  return true;
}

void SessionTable::drop_mapping_ref(uint32_t midx) {
  Mapping& m = mappings_[midx];
  if (m.refs > 0 && --m.refs > 0) return;
  allocator(m.out_addr, proto_class(m.key.proto)).release(rte_be_to_cpu_16(m.out_port));
  if (hosts_) hosts_->remove_port(m.key.in_ip);
  maps_.erase(hash_of(m.key), midx);
  free_mappings_[nfree_mappings_++] = midx;
  stats_.mappings.sub();
}

uint32_t SessionTable::prefetch_port(const FlowKey& in, uint8_t addr_idx, bool preserve, bool overlap,
                                     uint32_t& rng, PortRun& run) const {
  const int pc = proto_class(in.proto);
  if (pc < 0 || addr_idx >= outside_.size()) return 0;
  const PortAllocator& pa = allocator(addr_idx, pc);
  const rte_be32_t out_ip = outside_[addr_idx].addr;
  const auto bucket_of = [&](rte_be16_t port) {
    flows_.prefetch_bucket(flows_.home(hash_of(outside_key(in, out_ip, port))));
  };
  if (pa.free_count() == 0) {  // every port in use (none to preserve): the first port to share
    if (!overlap) return 0;
    const uint32_t draw = xorshift32(rng);
    const uint16_t cand = pa.at(draw);
    pa.prefetch(cand);
    bucket_of(rte_cpu_to_be_16(cand));
    return draw;
  }
  if (preserve) {
    pa.prefetch(rte_be_to_cpu_16(in.sport));
    bucket_of(in.sport);
  }
  const int run_id = addr_idx * kProtoClasses + pc;  // one allocator
  run.n = run.id == run_id ? run.n + 1 : 0;
  run.id = run_id;
  if (const int32_t any = pa.next_any(run.n); any >= 0) bucket_of(rte_cpu_to_be_16(static_cast<uint16_t>(any)));
  return 0;
}

CreateResult SessionTable::create_session(const CreateArgs& a, uint32_t now_ms, uint32_t& idx) {
  if (hosts_ && !a.inbound) [[unlikely]]
    return create_counted(a, now_ms, idx);
  return create_mapped(a, now_ms, idx);
}

// The host's allowance first (counted now, given back if the session is not made): a
// host at its limit costs no port and no mapping. Apart, so that without a limit a new
// flow pays one test for it.
[[gnu::noinline]] CreateResult SessionTable::create_counted(const CreateArgs& a, uint32_t now_ms, uint32_t& idx) {
  auto added = hosts_->try_add(a.in->src, a.host_limit);
  if (added == HostSessions::Added::kFull) [[unlikely]] {
    // Every host slot may be held by hosts whose sessions are only closing (their mappings
    // wait out the grace period): free what can be, then try once more.
    reclaim();
    added = hosts_->try_add(a.in->src, a.host_limit);
  }
  switch (added) {
    case HostSessions::Added::kYes: break;
    case HostSessions::Added::kAtLimit:
      stats_.host_limited.add();
      emit_quota(NatEventKind::kQuotaSessions, a, a.host_limit, now_ms);
      return CreateResult::kHostLimit;
    case HostSessions::Added::kFull: stats_.table_full.add(); return CreateResult::kTableFull;
  }
  const CreateResult r = create_mapped(a, now_ms, idx);
  if (r != CreateResult::kOk) hosts_->remove(a.in->src);
  return r;
}

CreateResult SessionTable::create_mapped(const CreateArgs& a, uint32_t now_ms, uint32_t& idx) {
  const FlowKey& in = *a.in;
  const int pc = proto_class(in.proto);
  if (pc < 0 || a.pool_len == 0) return CreateResult::kNoPort;
  if (in.proto == IPPROTO_ICMP && in.dport != 0) return CreateResult::kNoPort;  // query keys carry the id in sport only
  if (nfree_sessions_ == 0 || nfree_mappings_ == 0) reclaim();
  if (nfree_sessions_ == 0 || nfree_mappings_ == 0) {
    stats_.table_full.add();
    return CreateResult::kTableFull;
  }
  // Endpoint-independent mapping: reuse the inside endpoint's outside address:port.
  const MapKey mk{in.src, in.sport, in.proto, a.pool_id};
  uint32_t midx;
  bool new_mapping = false;
  if (const int64_t found = maps_.find(hash_of(mk), MapMatches{this, &mk}); found >= 0) {
    midx = static_cast<uint32_t>(found);
  } else {
    // The host's port allowance first, so a host at its limit takes no port. Counted
    // whenever hosts are (an outside-opened session's mapping too, without a limit):
    // drop_mapping_ref gives every mapping's count back.
    if (hosts_) [[unlikely]] {
      const auto added = hosts_->add_port(in.src, a.inbound ? 0 : a.host_port_limit);
      if (added != HostSessions::Added::kYes) {
        if (added == HostSessions::Added::kFull) return stats_.table_full.add(), CreateResult::kTableFull;
        stats_.host_port_limited.add();
        emit_quota(NatEventKind::kQuotaPorts, a, a.host_port_limit, now_ms);
        return CreateResult::kHostPortLimit;
      }
    }
    if (!alloc_mapping(a, pc, now_ms, midx)) {
      if (hosts_) hosts_->remove_port(in.src);
      stats_.no_port.add();
      return CreateResult::kNoPort;
    }
    new_mapping = true;
  }
  Mapping& m = mappings_[midx];
  m.hop = hop_id(Session::hop_word(*a.in_mac, a.in_iface));  // the hop of the endpoint's latest new flow
  const rte_be32_t out_ip = outside_[m.out_addr].addr;
  const FlowKey out = outside_key(in, out_ip, m.out_port);
  if (lookup(out) >= 0) {  // this outside 5-tuple is taken by a sharer of the port
    if (new_mapping) drop_mapping_ref(midx);
    stats_.collisions.add();  // not no_port: ports are free, this endpoint's is taken toward here
    return CreateResult::kCollision;
  }
  m.refs++;
  return install(a, out, out_ip, m.out_port, m.out_addr, midx, now_ms, idx);
}

CreateResult SessionTable::create_passthrough(const CreateArgs& a, uint32_t now_ms, uint32_t& idx) {
  const FlowKey& in = *a.in;
  if (proto_class(in.proto) < 0 || (in.proto == IPPROTO_ICMP && in.dport != 0)) return CreateResult::kNoPort;
  if (nfree_sessions_ == 0) reclaim();
  if (nfree_sessions_ == 0) {
    stats_.table_full.add();
    return CreateResult::kTableFull;
  }
  const FlowKey out = outside_key(in, in.src, in.sport);
  if (lookup(out) >= 0) return CreateResult::kCollision;
  return install(a, out, in.src, in.sport, 0, kNoMapping, now_ms, idx);
}

// Take a session slot, fill it and publish both keys (owner only).
CreateResult SessionTable::install(const CreateArgs& a, const FlowKey& out, rte_be32_t out_ip,
                                   rte_be16_t out_port, uint8_t out_addr, uint32_t midx, uint32_t now_ms,
                                   uint32_t& idx) {
  const FlowKey& in = *a.in;
  const int pc = proto_class(in.proto);
  idx = free_sessions_[--nfree_sessions_];
  Session& s = sessions_[idx];
  s.in_ip = in.src;
  s.out_ip = out_ip;
  s.remote_ip = in.dst;
  s.in_port = in.sport;
  s.out_port = out_port;
  s.remote_port = in.dport;
  s.proto = in.proto;
  s.in_iface = a.in_iface;
  s.in_mac.store(Session::hop_word(*a.in_mac, a.in_iface), std::memory_order_relaxed);
  s.out_iface = a.out_iface;
  s.out_addr = out_addr;
  s.out_nh = a.out_nh;
  const uint32_t d_ip = net::csum_delta32(in.src, out_ip);
  const uint32_t d_port = net::csum_delta16(in.sport, out_port);
  s.l3_delta = net::csum_fold(d_ip);
  s.l4_delta = in.proto == IPPROTO_ICMP ? net::csum_fold(d_port) : net::csum_fold(d_ip + d_port);
  s.mapping = midx;
  s.created_ms = now_ms;
  s.last_seen_ms.store(now_ms, std::memory_order_relaxed);
  s.flags.store(0, std::memory_order_relaxed);
  s.state = SessionState::kActive;
  s.owner = static_cast<uint8_t>(worker_);
  s.inbound = a.inbound;

  s.next_closing = kNil;

  // Publish: SigIndex::insert stores with release semantics, so readers that find
  // a key see the session fields written above.
  const uint32_t v_out = idx | kOutsideBit;
  const bool ok_in = flows_.insert(hash_of(in), idx);
  const bool ok_out = ok_in && flows_.insert(hash_of(out), v_out);
  if (!ok_out) [[unlikely]] {  // cannot happen below the sized load; undo what was published
    if (ok_in) flows_.erase(hash_of(in), idx);
    s.state = SessionState::kClosing;
    queue_closing(idx);
    stats_.table_full.add();
    return CreateResult::kTableFull;
  }
  ++active_;
  inbound_ += a.inbound;
  ++inserts_;
  if (rte_ring* r = events_.load(std::memory_order_relaxed); r && midx != kNoMapping) [[unlikely]]
    emit(r, NatEventKind::kCreate, s);
  stats_.active[pc].add();
  stats_.created[pc].add();
  return CreateResult::kOk;
}

void SessionTable::remove(uint32_t idx) {
  Session& s = sessions_[idx];
  if (s.state != SessionState::kActive) return;
  flows_.erase(hash_of(key_of(idx)), idx);
  flows_.erase(hash_of(key_of(idx | kOutsideBit)), idx | kOutsideBit);
  s.state = SessionState::kClosing;
  --active_;
  inbound_ -= s.inbound;
  if (hosts_ && s.mapping != kNoMapping && !s.inbound) hosts_->remove(s.in_ip);
  if (rte_ring* r = events_.load(std::memory_order_relaxed); r && s.mapping != kNoMapping) [[unlikely]]
    emit(r, NatEventKind::kDelete, s);
  const int pc = proto_class(s.proto);
  stats_.active[pc].sub();
  stats_.expired[pc].add();
  queue_closing(idx);
}

NatEvent SessionTable::event_of(NatEventKind kind, const Session& s) const {
  NatEvent e;
  e.start_ms = s.created_ms;
  e.end_ms = kind == NatEventKind::kDelete ? s.last_seen_ms.load(std::memory_order_relaxed) : s.created_ms;
  e.kind = kind;
  e.proto = s.proto;
  e.worker = worker_;
  e.in_ip = s.in_ip;
  e.out_ip = s.out_ip;
  e.remote_ip = s.remote_ip;
  e.in_port = s.in_port;
  e.out_port = s.out_port;
  e.remote_port = s.remote_port;
  return e;
}

void SessionTable::emit(rte_ring* ring, NatEventKind kind, const Session& s) {
  NatEvent e = event_of(kind, s);
  push(ring, e);
}

// A new flow refused (at a host's limit, or for want of a port), as an event: the flow and when.
NatEvent SessionTable::refused_event(NatEventKind kind, const FlowKey& in, uint32_t now_ms) const {
  NatEvent e{};
  e.start_ms = now_ms;
  e.kind = kind;
  e.proto = in.proto;
  e.worker = worker_;
  e.in_ip = in.src;
  e.remote_ip = in.dst;
  e.in_port = in.sport;
  e.remote_port = in.dport;  // 0 for ICMP (its keys carry the identifier in sport only)
  return e;
}

void SessionTable::push(rte_ring* ring, NatEvent& e) {  // non-const: DPDK 22.11's enqueue takes void*
  if (rte_ring_sp_enqueue_elem(ring, &e, sizeof e) != 0) stats_.events_lost.add();
}

// A host's new flow refused at its limit: a quota event, at most one a second per host.
void SessionTable::emit_quota(NatEventKind kind, const CreateArgs& a, uint32_t limit, uint32_t now_ms) {
  rte_ring* r = events_.load(std::memory_order_relaxed);
  if (!r || !hosts_->quota_due(a.in->src, now_ms)) return;
  NatEvent e = refused_event(kind, *a.in, now_ms);
  e.end_ms = limit;
  push(r, e);
}

// No port for a new flow on its address: a ports-exhausted event, at most one a second per
// address and protocol class (every refused flow is counted in no_port regardless).
void SessionTable::emit_exhausted(const FlowKey& in, uint8_t addr_idx, int pc, uint32_t now_ms) {
  rte_ring* r = events_.load(std::memory_order_relaxed);
  if (!r || !event_due(exhausted_event_ms_[addr_idx * kProtoClasses + static_cast<unsigned>(pc)], now_ms)) return;
  NatEvent e = refused_event(NatEventKind::kPortsExhausted, in, now_ms);
  e.out_ip = outside_[addr_idx].addr;
  push(r, e);
}

// A removed session joins the open batch; reclaim() gives the batch its token.
void SessionTable::queue_closing(uint32_t idx) {
  sessions_[idx].next_closing = kNil;
  if (open_.count == 0)
    open_.head = idx;
  else
    sessions_[open_.tail].next_closing = idx;
  open_.tail = idx;
  ++open_.count;
  ++closing_;
}

uint32_t SessionTable::expire_step(uint32_t now_ms, const Timeouts& t, uint32_t budget) {
  uint32_t expired = 0;
  if (active_ == 0) return 0;
  for (uint32_t n = 0; n < budget; ++n) {
    const uint32_t i = cursor_;
    cursor_ = cursor_ + 1 == max_ ? 0 : cursor_ + 1;
    Session& s = sessions_[i];
    if (s.state != SessionState::kActive) continue;
    const uint32_t idle = now_ms - s.last_seen_ms.load(std::memory_order_relaxed);
    if (static_cast<int32_t>(idle) > static_cast<int32_t>(timeout_of(s, t))) {
      remove(i);
      ++expired;
    }
  }
  return expired;
}

void SessionTable::reclaim() {
  // Seal the open batch with a token: readers that may hold its sessions are the
  // ones that have not reported quiescent since now. A full ring keeps the batch
  // open (it only waits longer).
  if (open_.count > 0 && batch_count_ < kBatches) {
    open_.token = rte_rcu_qsbr_start(qsbr_);
    batches_[(batch_head_ + batch_count_) % kBatches] = open_;
    ++batch_count_;
    open_ = ClosingBatch{kNil, kNil, 0, 0};
  }
  while (batch_count_ > 0) {
    ClosingBatch& b = batches_[batch_head_];
    if (rte_rcu_qsbr_check(qsbr_, b.token, false) != 1) break;  // oldest first: the rest are newer
    for (uint32_t i = b.head, n = 0; n < b.count; ++n) {
      const uint32_t next = sessions_[i].next_closing;
      release(i);
      i = next;
    }
    batch_head_ = (batch_head_ + 1) % kBatches;
    --batch_count_;
  }
}

void SessionTable::release(uint32_t idx) {
  Session& s = sessions_[idx];
  if (s.mapping != kNoMapping) drop_mapping_ref(s.mapping);
  s.state = SessionState::kFree;
  free_sessions_[nfree_sessions_++] = idx;
  --closing_;
}

}  // namespace natgw::nat
