// One worker's NAT sessions: the sessions it created, their two lookup keys, the
// endpoint-independent mappings and the worker's slice of every outside port range.
//
// Concurrency (design §7): the owning worker is the only writer; every worker may
// look up any table lock-free (SigIndex: signature + index slots, the keys are
// checked against the session itself). A removed session leaves the index at once;
// its slot, mapping and port are reused only after all workers have passed a
// quiescent state (rte_rcu_qsbr tokens, one per batch of removals), so a reader
// never sees a reused session.
//
// Memory per session (design §7, issue 5: <= 128 B with both keys): the 64-byte
// session, two 8-byte index slots at <= 80% load (~23 B), a 4-byte free-list entry,
// and a 16-byte mapping with its own index slot and free-list entry (~31 B): ~122 B.
// An outside packet names its owner by port: each worker owns a slice of every
// outside address's port range.
#pragma once

#include <rte_hash_crc.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>
#include <rte_ring_elem.h>

#include <cstring>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "natgw/counter.hpp"
#include "nat/flow_key.hpp"
#include "nat/host_sessions.hpp"
#include "nat/nat_event.hpp"
#include "nat/port_allocator.hpp"
#include "nat/session.hpp"
#include "nat/sig_index.hpp"
#include "nat/table_memory.hpp"

namespace natgw::nat {

// Outside addresses NAT may use, with their port ranges (host order). Shared by all
// workers; fixed at start (a reload that needs a new address asks for a restart).
struct OutsideAddress {
  rte_be32_t addr;
  uint16_t port_lo;
  uint16_t port_hi;
};

struct Timeouts {  // milliseconds
  uint32_t udp = 300'000;
  uint32_t tcp_established = 7'440'000;
  uint32_t tcp_transitory = 240'000;
  uint32_t icmp = 60'000;
};

struct SessionStats {  // owner-written, read by the control thread
  Counter created[kProtoClasses];
  Counter expired[kProtoClasses];
  Counter active[kProtoClasses];
  Counter no_port;      // port allocation failed (exhaustion)
  Counter table_full;   // no free session slot or hash full
  Counter collisions;   // refused: the mapping's outside 5-tuple toward this destination is in use
  Counter overlapped;   // ports given out shared (RFC 7857 overlapping)
  Counter first_probes; // of those, the first probe drawn (and prefetched) ahead
  Counter port_scans;   // full scans of a port range for a port to share (exhaustion's slow path)
  Counter mappings;     // live endpoint-independent mappings
  Counter host_limited; // refused: the inside host had nat.max_sessions_per_host sessions
  Counter host_port_limited; // refused: the flow needed a new port and the host had nat.max_ports_per_host
  Counter events_lost;  // NAT events not logged: the event ring was full (the control thread fell behind)
};

// kHostLimit: the inside host already has nat.max_sessions_per_host sessions;
// kHostPortLimit: the flow needs a new mapping and the host has nat.max_ports_per_host.
enum class CreateResult : uint8_t { kOk, kNoPort, kTableFull, kCollision, kHostLimit, kHostPortLimit };

class SessionTable {
 public:
  struct Params {
    uint32_t max_sessions = 1 << 16;
    uint16_t worker = 0;
    uint16_t workers = 1;
    std::vector<OutsideAddress> outside;
    rte_rcu_qsbr* qsbr = nullptr;  // required
    int socket = -1;               // SOCKET_ID_ANY
    bool count_hosts = false;      // keep sessions and ports per inside host (CreateArgs::host_limit, host_port_limit)
  };
  // Control path; throws std::runtime_error with the DPDK reason on failure.
  static std::unique_ptr<SessionTable> create(const Params& p);
  ~SessionTable();
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // --- any worker, lock-free ---
  // Returns the session index (bit 31 set for an outside-key hit) or -1.
  int64_t lookup(const FlowKey& k) const { return flows_.find(hash_of(k), Matches{this, &k}); }
  // Bulk lookup of up to 64 keys: hit_mask bit i set when keys[i] hit; vals[i] as
  // lookup(). Pipelined across the keys: index buckets, then the candidate sessions,
  // are prefetched for all keys before any is compared, so the misses overlap.
  void lookup_bulk(const FlowKey** keys, unsigned n, uint64_t& hit_mask, int64_t* vals) const;
  // lookup_bulk in two halves, for a caller that works on each hit as it confirms it
  // (the burst's later sessions still arriving meanwhile): guess_bulk hashes the keys
  // (h[i]) and guesses, prefetched, each one's session (vals[i], -1 = none found);
  // confirm(keys[i], h[i], vals[i]) then returns what lookup(keys[i]) would.
  static constexpr unsigned kBulkMax = 64;
  void guess_bulk(const FlowKey** keys, unsigned n, uint64_t* h, int64_t* vals) const;
  // The guess is right nearly always; a miss, or a signature shared in the bucket,
  // takes the full walk.
  int64_t confirm(const FlowKey& k, uint64_t h, int64_t guess) const {
    if (guess >= 0 && has_key(static_cast<uint32_t>(guess), k)) return guess;
    return flows_.find(h, Matches{this, &k});
  }
  Session& session(uint32_t idx) { return sessions_[idx]; }
  const Session& session(uint32_t idx) const { return sessions_[idx]; }
  static constexpr uint32_t kOutsideBit = 1u << 31;

  // Which worker owns outside port `port` (host order) of outside address index `a`.
  uint16_t owner_of(uint32_t a, uint16_t port) const;
  // Index of an outside address, or -1.
  int outside_index(rte_be32_t addr) const;

  // --- owner only ---
  // Create a session for the inside flow `in` (dir kInside). `pool` lists the
  // candidate outside address indexes (paired pooling picks one per inside host);
  // `pool_id` distinguishes mapping realms. On success `idx` is the new session.
  struct CreateArgs {
    const FlowKey* in;
    const uint8_t* pool;  // outside address indexes
    uint8_t pool_len;
    uint8_t pool_id;
    uint8_t in_iface;
    uint8_t out_iface;
    rte_be32_t out_nh;
    const rte_ether_addr* in_mac;
    bool port_preservation;
    bool port_overlapping;
    // A random draw for the first port to share when the address has no free port
    // (prefetch_port drew it and prefetched what it leads to); 0 = none. Used only
    // when the flow's address is probe_addr.
    uint32_t first_probe = 0;
    uint8_t probe_addr = 0;
    bool inbound = false;  // opened by an outside packet (counted in inbound_active())
    // Sessions an inside host may open (0 = no limit; needs Params::count_hosts).
    // Outside-opened sessions (inbound) are not counted: an outside sender must not
    // be able to use up a host's allowance and lock it out.
    uint32_t host_limit = 0;
    // Outside ports (endpoint-independent mappings) an inside host may hold (0 = no
    // limit; needs Params::count_hosts): a flow that needs a new one is refused at it,
    // a flow that shares one of the host's mappings is not.
    uint32_t host_port_limit = 0;
  };
  CreateResult create_session(const CreateArgs& a, uint32_t now_ms, uint32_t& idx);
  // Start loading what creating a session for inside flow `in` reads first, when it
  // is the `nth` (0-based) session this table creates from now: the mapping's index
  // bucket (any pool: the pool is compared, not hashed) and the free session and
  // mapping slots it will take. Reads only; a guess that turns out wrong (an existing
  // mapping, a flow not created) costs a useless prefetch.
  void prefetch_create(const FlowKey& in, unsigned nth) const {
    maps_.prefetch_bucket(maps_.home(hash_of(MapKey{in.src, in.sport, in.proto, 0})));
    if (nth < nfree_sessions_) rte_prefetch0(&sessions_[free_sessions_[nfree_sessions_ - 1 - nth]]);
    if (nth < nfree_mappings_) rte_prefetch0(&mappings_[free_mappings_[nfree_mappings_ - 1 - nth]]);
    if (hosts_) hosts_->prefetch(in.src);
  }
  // A burst's consecutive new flows on one allocator (see prefetch_port).
  struct PortRun {
    int id = -1;
    uint32_t n = 0;
  };
  // What create_session reads next for the port the flow will get on outside address
  // `addr_idx` (paired pooling's pick for a rule with a pool, or a guess): with port
  // preservation, the inside port's allocator state and the bucket of the outside key
  // it gives; and the bucket of the outside key of the port take_any would give
  // (preservation off, or the inside port taken). `run` follows a burst's consecutive
  // new flows on one allocator (address and protocol class; one host opening many
  // flows): the nth of them would take the nth next port (a preserved port also uses
  // up one: see PortAllocator::next_any). A wrong guess (a wrong address, after a flow
  // whose mapping exists, a repeat of an earlier flow) costs a useless prefetch.
  // When the allocator has no free port, create_session shares one (port overlapping)
  // and probes random ports: with `overlap`, the first probe is drawn here (from `rng`,
  // the caller's xorshift32 state, seeded) and its allocator state and outside-key
  // bucket are prefetched. Returns that draw (0 = none), for CreateArgs::first_probe.
  uint32_t prefetch_port(const FlowKey& in, uint8_t addr_idx, bool preserve, bool overlap, uint32_t& rng,
                         PortRun& run) const;
  // Whether outside address `addr_idx` has no free port for `proto` (overlapping
  // then shares one); false for an unknown address or protocol.
  bool ports_exhausted(uint8_t addr_idx, uint8_t proto) const {
    const int pc = proto_class(proto);
    return pc >= 0 && addr_idx < outside_.size() && allocator(addr_idx, pc).free_count() == 0;
  }
  // One xorshift32 step (state never 0): the cheap draws of port overlapping's probes.
  static uint32_t xorshift32(uint32_t& x) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
  }
  // Paired pooling (RFC 4787 REQ-2): every flow of one inside host gets the same
  // outside address of the pool.
  static uint8_t paired_address(rte_be32_t in_ip, const uint8_t* pool, uint8_t pool_len) {
    return pool[rte_hash_crc_4byte(in_ip, 0x5bd1e995) % pool_len];
  }
  // Endpoint-independent filtering (owner only): the mapping that holds port `port`
  // (host order) of outside address `addr_idx` for `proto`. False when the port is
  // free or shared by several mappings (overlapping): an unsolicited packet to it has
  // no one endpoint to go to.
  struct PortMapping {
    MapKey key;         // the inside endpoint and its pool
    uint64_t hop;  // the previous hop (Session::hop_word) its latest new flow came from; 0 = unknown
  };
  bool mapping_of_port(uint8_t addr_idx, uint16_t port, uint8_t proto, PortMapping& out) const;
  // A session that translates nothing (outside address:port = inside address:port, no
  // port taken, no mapping): state for a flow routed untranslated, so that a stateful
  // ACL lets its replies through. Only in_iface/out_iface/out_nh/in_mac of `a` are used.
  CreateResult create_passthrough(const CreateArgs& a, uint32_t now_ms, uint32_t& idx);
  static constexpr uint32_t kNoMapping = ~0u;

  // Expire idle sessions: examine up to `budget` slots from a rotating cursor.
  // Returns how many sessions were expired.
  uint32_t expire_step(uint32_t now_ms, const Timeouts& t, uint32_t budget);
  // Remove one session now (owner only), e.g. for tests or a flush command.
  void remove(uint32_t idx);
  // Free whatever the grace period has released, and start the grace period of the
  // sessions removed since the last call (one RCU token for all of them). Never blocks.
  void reclaim();
  // Sessions removed but not yet reusable (waiting for the grace period).
  uint32_t closing() const { return closing_; }

  uint32_t active() const { return active_; }
  // Live sessions that an outside packet opened (CreateArgs::inbound).
  uint32_t inbound_active() const { return inbound_; }
  // NAT events (nat_events): translated sessions' creations and ends go on `ring` (elements of
  // sizeof(NatEvent), this worker the only producer); nullptr = none. Set by the control thread.
  void set_event_ring(rte_ring* ring) { events_.store(ring, std::memory_order_release); }
  // The event of a translated session (kind, endpoints, times).
  NatEvent event_of(NatEventKind kind, const Session& s) const;
  // Every live translated session (workers stopped: at shutdown their end is logged from here).
  template <class F>
  void for_each_translated(F&& f) const {
    for (uint32_t i = 0; i < max_; ++i)
      if (sessions_[i].state == SessionState::kActive && sessions_[i].mapping != kNoMapping) f(sessions_[i]);
  }
  // Sessions per inside host (Params::count_hosts), else nullptr.
  const HostSessions* hosts() const { return hosts_.get(); }
  // Sessions published so far (wraps): a caller that looked keys up earlier can
  // tell whether its misses may have become hits since.
  uint32_t inserts() const { return inserts_; }
  uint32_t capacity() const { return max_; }
  const SessionStats& stats() const { return stats_; }
  const PortAllocator& allocator(uint32_t addr_idx, int pc) const {
    return *allocs_[addr_idx * kProtoClasses + pc];
  }
  PortAllocator& allocator(uint32_t addr_idx, int pc) { return *allocs_[addr_idx * kProtoClasses + pc]; }
  size_t memory_bytes() const { return memory_bytes_; }
  bool in_hugepages() const { return session_mem_.hugepages(); }
  uint16_t worker() const { return worker_; }

  // Session timeout for its protocol and TCP state.
  static uint32_t timeout_of(const Session& s, const Timeouts& t);

 private:
  SessionTable() = default;
  struct Mapping {  // 16 bytes
    MapKey key;
    rte_be16_t out_port;
    uint8_t out_addr;
    uint8_t hop;  // the inside endpoint's previous hop, in hops_ (kNoHop: unknown)
    uint32_t refs;
  };
  static_assert(sizeof(Mapping) == 16);
  // A reader's key check: does the session named by `v` carry key *k?
  struct Matches {
    const SessionTable* t;
    const FlowKey* k;
    bool operator()(uint32_t v) const { return t->has_key(v, *k); }
  };
  struct MapMatches {
    const SessionTable* t;
    const MapKey* k;
    bool operator()(uint32_t v) const { return t->mappings_[v].key == *k; }
  };
  // Removed sessions wait in batches, one RCU token per batch (a token per session
  // would cost 8 bytes each); the sessions of a batch are linked through next_closing.
  struct ClosingBatch {
    uint32_t head, tail, count;
    uint64_t token;
  };
  static constexpr uint32_t kBatches = 64;
  static constexpr double kIndexLoad = 0.8;
  static constexpr uint32_t kNil = ~0u;

  uint64_t hash_of(const FlowKey& k) const {
    uint64_t w[2];
    std::memcpy(w, &k, sizeof w);
    return flows_.hash(w[0], w[1]);
  }
  // Without the pool byte, so prefetch_create finds the bucket before the flow is
  // routed (an endpoint mapped in several pools shares a bucket; the key tells them apart).
  uint64_t hash_of(const MapKey& k) const {
    static_assert(offsetof(MapKey, pool) == 7);
    uint64_t w;
    std::memcpy(&w, &k, sizeof w);
    return maps_.hash(w & ~(uint64_t{0xff} << 56), 0x5bd1e995);
  }
  // The key under which index value v (session index | kOutsideBit) was published.
  FlowKey key_of(uint32_t v) const;
  // key_of(v) == k, reading the session's key fields as two words (see Session's layout).
  bool has_key(uint32_t v, const FlowKey& k) const {
    const uint64_t out = v >> 31;
    const auto* b = reinterpret_cast<const uint8_t*>(&sessions_[v & ~kOutsideBit]);
    uint64_t kw[2], addrs;
    uint32_t ports;
    std::memcpy(kw, &k, sizeof kw);
    std::memcpy(&addrs, b + 4 * out, 8);       // {in_ip, remote_ip} or {remote_ip, out_ip}
    std::memcpy(&ports, b + 12 + 2 * out, 4);  // {in_port, remote_port} or {remote_port, out_port}
    const uint64_t rest = ports | uint64_t{b[offsetof(Session, proto)]} << 32 | out << 40;
    return addrs == kw[0] && rest == kw[1];
  }
  void release(uint32_t idx);
  void queue_closing(uint32_t idx);
  // The event for session `s`, on the ring if there is room (else counted lost).
  void emit(rte_ring* ring, NatEventKind kind, const Session& s);
  NatEvent refused_event(NatEventKind kind, const FlowKey& in, uint32_t now_ms) const;
  void push(rte_ring* ring, NatEvent& e);
  void emit_quota(NatEventKind kind, const CreateArgs& a, uint32_t limit, uint32_t now_ms);
  void emit_exhausted(const FlowKey& in, uint8_t addr_idx, int pc, uint32_t now_ms);
  // Inside previous hops a mapping names by one byte (Mapping::hop): an unsolicited
  // packet that endpoint-independent filtering lets in opens a session toward the hop
  // its inside endpoint's traffic comes from. There are few (routers, TGW ENIs,
  // on-link hosts); open addressing, 0 = empty, a slot's index is the hop's id. Full
  // at kMaxHops (short probe chains): later hops are kNoHop, found by route instead.
  static constexpr uint8_t kNoHop = 0xff;
  static constexpr unsigned kHopSlots = 256, kMaxHops = 192;
  uint8_t hop_id(uint64_t hop);
  uint64_t hops_[kHopSlots] = {};
  unsigned nhops_ = 0;
  bool alloc_mapping(const CreateArgs& a, int pc, uint32_t now_ms, uint32_t& midx);
  void drop_mapping_ref(uint32_t midx);
  CreateResult create_counted(const CreateArgs& a, uint32_t now_ms, uint32_t& idx);
  // create_session without the per-host count (inlined: one call per new flow, as without a count).
  [[gnu::always_inline]] inline CreateResult create_mapped(const CreateArgs& a, uint32_t now_ms, uint32_t& idx);
  CreateResult install(const CreateArgs& a, const FlowKey& out, rte_be32_t out_ip, rte_be16_t out_port,
                       uint8_t out_addr, uint32_t midx, uint32_t now_ms, uint32_t& idx);
  uint32_t next_rand();

  SigIndex flows_;  // both keys of every session -> session index (| kOutsideBit)
  SigIndex maps_;   // MapKey -> mapping index (owner only)
  rte_rcu_qsbr* qsbr_ = nullptr;
  TableMemory session_mem_, free_session_mem_, mapping_mem_, free_mapping_mem_;
  Session* sessions_ = nullptr;
  uint32_t* free_sessions_ = nullptr;
  uint32_t nfree_sessions_ = 0;
  Mapping* mappings_ = nullptr;
  uint32_t* free_mappings_ = nullptr;
  uint32_t nfree_mappings_ = 0;
  ClosingBatch open_{kNil, kNil, 0, 0};  // removals not yet given a token
  ClosingBatch batches_[kBatches] = {};  // sealed, oldest first (ring)
  uint32_t batch_head_ = 0, batch_count_ = 0;
  uint32_t closing_ = 0;
  std::vector<std::unique_ptr<PortAllocator>> allocs_;  // [addr * 3 + class]
  std::unique_ptr<HostSessions> hosts_;                 // Params::count_hosts
  std::atomic<rte_ring*> events_{nullptr};              // set_event_ring
  std::vector<OutsideAddress> outside_;
  uint32_t max_ = 0;
  uint32_t cursor_ = 0;
  uint32_t active_ = 0;
  uint32_t inbound_ = 0;
  uint32_t inserts_ = 0;
  uint32_t rng_ = 0x9e3779b9;
  // Destinations a full scan found no port to share for (outside address, remote
  // address and port, protocol class), each for kExhaustedMs: until then their new
  // flows try only the random probes. Without it, every packet of a flow that cannot
  // get a port (each retransmitted SYN, each datagram) scanned the whole range
  // (~64k lookups, milliseconds) and stalled the worker.
  static constexpr unsigned kExhaustedShift = 60;  // a 64-bit hash's top 4 bits pick the slot
  static constexpr unsigned kExhaustedSlots = 1u << (64 - kExhaustedShift);
  static constexpr uint32_t kExhaustedMs = 1000;
  struct Exhausted {
    uint64_t tag = 0;  // 0 = empty
    uint32_t until_ms = 0;
  };
  Exhausted exhausted_[kExhaustedSlots];
  std::vector<uint32_t> exhausted_event_ms_;  // per address and protocol class: its last ports-exhausted event (event_due)
  uint16_t worker_ = 0;
  uint16_t workers_ = 1;
  size_t memory_bytes_ = 0;
  SessionStats stats_;
};

}  // namespace natgw::nat
