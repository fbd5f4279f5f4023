#include "nat/session_table.hpp"

#include "net/checksum.hpp"

#include <rte_errno.h>
#include <rte_hash_crc.h>

#include <atomic>
#include <stdexcept>
#include <string>

namespace natgw::nat {

namespace {
std::atomic<uint32_t> g_seq{0};

std::string unique_name(const char* what, uint16_t worker) {
  // rte_hash / ring names are global and at most 31 characters.
  return std::string(what) + std::to_string(worker) + "_" + std::to_string(g_seq.fetch_add(1));
}

uint32_t host_hash(rte_be32_t ip) { return rte_hash_crc_4byte(ip, 0x5bd1e995); }
}  // namespace

std::unique_ptr<SessionTable> SessionTable::create(const Params& p) {
  if (!p.qsbr) throw std::invalid_argument("SessionTable needs an rte_rcu_qsbr");
  if (p.outside.size() > 255) throw std::invalid_argument("at most 255 outside addresses");
  std::unique_ptr<SessionTable> t(new SessionTable());
  t->max_ = p.max_sessions < 64 ? 64 : p.max_sessions;
  t->worker_ = p.worker;
  t->workers_ = p.workers ? p.workers : 1;
  t->outside_ = p.outside;

  // Two keys per session; headroom keeps cuckoo insertion from failing near full.
  const std::string hname = unique_name("ngw_sess", p.worker);
  rte_hash_parameters hp{};
  hp.name = hname.c_str();
  hp.entries = t->max_ * 2 + t->max_ / 4;
  hp.key_len = sizeof(FlowKey);
  hp.hash_func = rte_hash_crc;
  hp.socket_id = p.socket;
  hp.extra_flag = RTE_HASH_EXTRA_FLAGS_RW_CONCURRENCY_LF;
  t->hash_ = rte_hash_create(&hp);
  if (!t->hash_)
    throw std::runtime_error("rte_hash_create(sessions) failed: " +
                             std::string(rte_strerror(rte_errno)));

  const std::string mname = unique_name("ngw_map", p.worker);
  rte_hash_parameters mp{};
  mp.name = mname.c_str();
  mp.entries = t->max_ + t->max_ / 4;
  mp.key_len = sizeof(MapKey);
  mp.hash_func = rte_hash_crc;
  mp.socket_id = p.socket;
  t->map_hash_ = rte_hash_create(&mp);
  if (!t->map_hash_)
    throw std::runtime_error("rte_hash_create(mappings) failed: " +
                             std::string(rte_strerror(rte_errno)));

  const std::string dname = unique_name("ngw_dq", p.worker);
  rte_rcu_qsbr_dq_parameters dp{};
  dp.name = dname.c_str();
  dp.flags = RTE_RCU_QSBR_DQ_MT_UNSAFE;  // only the owner enqueues and reclaims
  dp.size = t->max_ + 1;
  dp.esize = sizeof(Deferred);
  dp.trigger_reclaim_limit = 64;
  dp.max_reclaim_size = 256;
  dp.free_fn = &SessionTable::free_deferred;
  dp.p = t.get();
  dp.v = p.qsbr;
  t->dq_ = rte_rcu_qsbr_dq_create(&dp);
  if (!t->dq_)
    throw std::runtime_error("rte_rcu_qsbr_dq_create failed: " +
                             std::string(rte_strerror(rte_errno)));

  t->sessions_.reset(new Session[t->max_]());
  t->free_sessions_.reset(new uint32_t[t->max_]);
  t->mappings_.reset(new Mapping[t->max_]());
  t->free_mappings_.reset(new uint32_t[t->max_]);
  // Hand out low indexes first: a lightly loaded table stays in few cache lines.
  for (uint32_t i = 0; i < t->max_; ++i) {
    t->free_sessions_[i] = t->max_ - 1 - i;
    t->free_mappings_[i] = t->max_ - 1 - i;
  }
  t->nfree_sessions_ = t->max_;
  t->nfree_mappings_ = t->max_;

  for (const auto& o : t->outside_) {
    const uint32_t size = static_cast<uint32_t>(o.port_hi - o.port_lo) + 1;
    const uint32_t w = t->worker_, n = t->workers_;
    const uint32_t lo = o.port_lo + (size * w + n - 1) / n;
    const uint32_t hi = o.port_lo + (size * (w + 1) + n - 1) / n - 1;
    if (hi < lo) throw std::invalid_argument("port range smaller than the number of workers");
    for (int c = 0; c < kProtoClasses; ++c)
      t->allocs_.push_back(
          std::make_unique<PortAllocator>(static_cast<uint16_t>(lo), static_cast<uint16_t>(hi)));
  }
  t->rng_ ^= static_cast<uint32_t>(rte_rdtsc()) | 1;

  const size_t hash_bytes = static_cast<size_t>(hp.entries) * (sizeof(FlowKey) + 8) +
                            static_cast<size_t>(rte_align32pow2(hp.entries)) / 8 * 64;
  t->memory_bytes_ = hash_bytes + static_cast<size_t>(t->max_) * sizeof(Session) +
                     static_cast<size_t>(t->max_) * (sizeof(Mapping) + 8) +
                     static_cast<size_t>(mp.entries) * (sizeof(MapKey) + 8) +
                     static_cast<size_t>(dp.size) * (sizeof(Deferred) + 8);
  return t;
}

SessionTable::~SessionTable() {
  if (dq_) rte_rcu_qsbr_dq_delete(dq_);  // reclaims what is left once readers allow
  if (hash_) rte_hash_free(hash_);
  if (map_hash_) rte_hash_free(map_hash_);
}

void SessionTable::lookup_bulk(const FlowKey** keys, unsigned n, uint64_t& hit_mask,
                               int64_t* vals) const {
  void* data[RTE_HASH_LOOKUP_BULK_MAX];
  hit_mask = 0;
  rte_hash_lookup_bulk_data(hash_, reinterpret_cast<const void**>(keys), n, &hit_mask, data);
  for (unsigned i = 0; i < n; ++i)
    vals[i] = (hit_mask >> i) & 1 ? static_cast<int64_t>(reinterpret_cast<uintptr_t>(data[i])) : -1;
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

uint32_t SessionTable::next_rand() {
  uint32_t x = rng_;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return rng_ = x;
}

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

bool SessionTable::alloc_mapping(const CreateArgs& a, int pc, uint32_t rnd, uint32_t& midx) {
  const FlowKey& in = *a.in;
  const uint8_t addr_idx = a.pool[host_hash(in.src) % a.pool_len];  // paired pooling
  PortAllocator& pa = *allocs_[addr_idx * kProtoClasses + pc];
  const rte_be32_t out_ip = outside_[addr_idx].addr;
  uint16_t port = 0;
  bool got = false;
  if (a.port_preservation) got = pa.take(rte_be_to_cpu_16(in.sport));
  if (got) {
    port = rte_be_to_cpu_16(in.sport);
  } else {
    got = pa.take_any(rnd, port);
  }
  if (!got && a.port_overlapping) {
    // RFC 7857 §3: share a port already mapped, as long as the 5-tuple toward this
    // destination is unused.
    // A few random probes first; then a scan from a random start, so a port that is
    // free toward this destination is always found (exhaustion is the rare, slow path).
    const uint32_t size = pa.size();
    const uint32_t start = next_rand() % size;
    for (uint32_t n = 0; n < 16 + size && !got; ++n) {
      const uint32_t off = n < 16 ? next_rand() % size : (start + n - 16) % size;
      const uint16_t cand = static_cast<uint16_t>(pa.lo() + off);
      if (pa.refs(cand) == 0 || pa.refs(cand) == UINT16_MAX) continue;
      const FlowKey ok = outside_key(in, out_ip, rte_cpu_to_be_16(cand));
      if (lookup(ok) >= 0) continue;
      pa.share(cand);
      port = cand;
      got = true;
      stats_.overlapped.add();
    }
  }
  if (!got) return false;
  midx = free_mappings_[--nfree_mappings_];
  Mapping& m = mappings_[midx];
  m.key = MapKey{in.src, in.sport, in.proto, a.pool_id};
  m.out_ip = out_ip;
  m.out_port = rte_cpu_to_be_16(port);
  m.out_addr = addr_idx;
  m.pc = static_cast<uint8_t>(pc);
  m.refs = 0;
  if (rte_hash_add_key_data(map_hash_, &m.key, reinterpret_cast<void*>(uintptr_t{midx})) < 0) {
    pa.release(port);
    free_mappings_[nfree_mappings_++] = midx;
    return false;
  }
  stats_.mappings.add();
  return true;
}

void SessionTable::drop_mapping_ref(uint32_t midx) {
  Mapping& m = mappings_[midx];
  if (m.refs > 0 && --m.refs > 0) return;
  allocs_[m.out_addr * kProtoClasses + m.pc]->release(rte_be_to_cpu_16(m.out_port));
  rte_hash_del_key(map_hash_, &m.key);
  free_mappings_[nfree_mappings_++] = midx;
  stats_.mappings.sub();
}

CreateResult SessionTable::create_session(const CreateArgs& a, uint32_t now_ms, uint32_t& idx) {
  const FlowKey& in = *a.in;
  const int pc = proto_class(in.proto);
  if (pc < 0 || a.pool_len == 0) return CreateResult::kNoPort;
  if (nfree_sessions_ == 0 || nfree_mappings_ == 0) {
    stats_.table_full.add();
    return CreateResult::kTableFull;
  }
  // Endpoint-independent mapping: reuse the inside endpoint's outside address:port.
  const MapKey mk{in.src, in.sport, in.proto, a.pool_id};
  void* mdata;
  uint32_t midx;
  bool new_mapping = false;
  if (rte_hash_lookup_data(map_hash_, &mk, &mdata) >= 0) {
    midx = static_cast<uint32_t>(reinterpret_cast<uintptr_t>(mdata));
  } else {
    if (!alloc_mapping(a, pc, next_rand(), midx)) {
      stats_.no_port.add();
      return CreateResult::kNoPort;
    }
    new_mapping = true;
  }
  Mapping& m = mappings_[midx];
  const FlowKey out = outside_key(in, m.out_ip, m.out_port);
  if (lookup(out) >= 0) {  // this outside 5-tuple is taken by a sharer of the port
    if (new_mapping) drop_mapping_ref(midx);
    stats_.collisions.add();
    stats_.no_port.add();
    return CreateResult::kCollision;
  }
  m.refs++;
  return install(a, out, m.out_ip, m.out_port, m.out_addr, midx, now_ms, idx);
}

CreateResult SessionTable::create_passthrough(const CreateArgs& a, uint32_t now_ms, uint32_t& idx) {
  const FlowKey& in = *a.in;
  if (proto_class(in.proto) < 0) return CreateResult::kNoPort;
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
  s.in_mac = *a.in_mac;
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

  // Publish: rte_hash's add has release semantics, so readers that find a key see
  // the session fields written above.
  const int r1 = rte_hash_add_key_data(hash_, &in, reinterpret_cast<void*>(uintptr_t{idx}));
  const int r2 = r1 < 0 ? r1
                        : rte_hash_add_key_data(hash_, &out,
                                                reinterpret_cast<void*>(uintptr_t{idx | kOutsideBit}));
  ++active_;
  stats_.active[pc].add();
  stats_.created[pc].add();
  if (r2 < 0) {  // hash full: undo through the normal removal path (readers may have seen key 1)
    remove(idx);
    stats_.expired[pc].sub();
    stats_.created[pc].sub();
    stats_.table_full.add();
    return CreateResult::kTableFull;
  }
  return CreateResult::kOk;
}

void SessionTable::remove(uint32_t idx) {
  Session& s = sessions_[idx];
  if (s.state != SessionState::kActive) return;
  const FlowKey in = s.proto == IPPROTO_ICMP
                         ? make_key(s.in_ip, s.remote_ip, s.in_port, 0, s.proto, kInside)
                         : make_key(s.in_ip, s.remote_ip, s.in_port, s.remote_port, s.proto, kInside);
  const FlowKey out = outside_key(in, s.out_ip, s.out_port);
  Deferred d{rte_hash_del_key(hash_, &in), rte_hash_del_key(hash_, &out), idx};
  s.state = SessionState::kClosing;
  --active_;
  const int pc = proto_class(s.proto);
  stats_.active[pc].sub();
  stats_.expired[pc].add();
  if (rte_rcu_qsbr_dq_enqueue(dq_, &d) != 0) {
    // Cannot happen (the queue holds every session); leaking one slot beats a crash.
    stats_.table_full.add();
  }
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
  unsigned freed, pending, available;
  rte_rcu_qsbr_dq_reclaim(dq_, 256, &freed, &pending, &available);
}

void SessionTable::free_deferred(void* self, void* elems, unsigned n) {
  auto* t = static_cast<SessionTable*>(self);
  const auto* d = static_cast<const Deferred*>(elems);
  for (unsigned i = 0; i < n; ++i) t->release(d[i]);
}

void SessionTable::release(const Deferred& d) {
  if (d.in_pos >= 0) rte_hash_free_key_with_position(hash_, d.in_pos);
  if (d.out_pos >= 0) rte_hash_free_key_with_position(hash_, d.out_pos);
  Session& s = sessions_[d.idx];
  if (s.mapping != kNoMapping) drop_mapping_ref(s.mapping);
  s.state = SessionState::kFree;
  free_sessions_[nfree_sessions_++] = d.idx;
}

}  // namespace natgw::nat
