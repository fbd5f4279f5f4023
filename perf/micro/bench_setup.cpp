// New-session setup rate (sessions/s per core, port allocation included): the first
// packet of a flow through Worker::process (route lookup, SNAT rule, ACL, mapping,
// port, two hash inserts, rewrite, TX), and SessionTable::create_session alone.
// Each run fills an empty table of `sessions` slots once.
#include <benchmark/benchmark.h>

#include <memory>

#include <rte_ring_elem.h>

#include "common.hpp"
#include "registry.hpp"

namespace natgw::perf {
namespace {

constexpr unsigned kBurst = 32;

struct Variant {
  std::string name;
  uint8_t proto = IPPROTO_UDP;
  uint32_t sessions = 0;
  std::string snat_extra;  // e.g. a pool
  std::string tail;        // e.g. ACL rules
  bool direct = false;     // SessionTable::create_session without a packet
  bool ephemeral = false;  // random source ports in Linux's ephemeral range, not 16 fixed ones per host
  bool events = false;     // [nat_events] on: each new session queues its record (the ring emptied each burst)
};

// What the control thread would take off the event ring (outside setup_burst: callgrind counts the worker).
[[gnu::noinline]] void discard_events(rte_ring* r) {
  nat::NatEvent buf[64];
  while (rte_ring_sc_dequeue_burst_elem(r, buf, sizeof(nat::NatEvent), 64, nullptr) != 0) {
  }
}

// A client's source port as Linux picks it (32768-60999), pseudo-random per flow.
rte_be16_t ephemeral_port(uint32_t f) {
  uint32_t x = f * 0x9e3779b1u;
  x ^= x >> 15;
  return rte_cpu_to_be_16(static_cast<uint16_t>(32768 + x % 28232));
}

[[gnu::noinline]] void refill_new(const FrameTemplate& t, uint32_t first, bool ephemeral, rte_mbuf** pkts) {
  if (rte_pktmbuf_alloc_bulk(pool(), pkts, kBurst) != 0) std::abort();
  for (unsigned i = 0; i < kBurst; ++i) {
    const uint32_t f = first + i;
    t.write(pkts[i], Flows::in_src(f), Flows::remote(f), ephemeral ? ephemeral_port(f) : Flows::in_sport(f),
            Flows::remote_port(f));
  }
}

[[gnu::noinline]] void setup_burst(dp::Worker& w, rte_mbuf** pkts) {
  w.process(kInside, pkts, kBurst);
  w.flush();
}

[[gnu::noinline]] bool create_direct(nat::SessionTable& st, const nat::SessionTable::CreateArgs& a,
                                     uint32_t now) {
  uint32_t idx;
  return st.create_session(a, now, idx) == nat::CreateResult::kOk;
}

uint64_t created(Pipeline& p) {
  const auto& s = p.sessions().stats();
  return s.created[0].get() + s.created[1].get() + s.created[2].get();
}

void bm_setup(benchmark::State& state, const Variant& v) {
  release_established();
  const std::string cfg = nat_config(v.sessions, v.snat_extra, v.tail);
  auto p = std::make_unique<Pipeline>(cfg);
  if (v.events) p->sessions().set_event_ring(p->ctx().events[0]);
  const FrameTemplate t = FrameTemplate::make(mac(0x01), mac(0x10), v.proto, Flows::in_src(0), Flows::remote(0),
                                              rte_be_to_cpu_16(Flows::in_sport(0)), 443);
  uint32_t next = 0;
  uint64_t made = 0, base = 0;
  rte_mbuf* pkts[kBurst];
  nat::FlowKey key{};
  const uint8_t pool_idx[1] = {p->ctx().ifaces[kInternet].outside_idx};
  const rte_ether_addr in_mac = mac(0x01);
  nat::SessionTable::CreateArgs a{};
  a.in = &key;
  a.pool = pool_idx;
  a.pool_len = 1;
  a.pool_id = 128 + kInternet;
  a.in_iface = kInside;
  a.out_iface = kInternet;
  a.out_nh = rte_cpu_to_be_32(0x0a000301);
  a.in_mac = &in_mac;
  a.port_preservation = true;
  a.port_overlapping = true;
  for (auto _ : state) {
    if (next + kBurst > v.sessions) {
      state.PauseTiming();
      made += created(*p) - base;
      p.reset();
      p = std::make_unique<Pipeline>(cfg);
      if (v.events) p->sessions().set_event_ring(p->ctx().events[0]);
      base = created(*p);
      next = 0;
      state.ResumeTiming();
    }
    if (v.direct) {
      for (unsigned i = 0; i < kBurst; ++i) {
        const uint32_t f = next + i;
        key = nat::make_key(Flows::in_src(f), Flows::remote(f), Flows::in_sport(f), Flows::remote_port(f), v.proto,
                            nat::kInside);
        create_direct(p->sessions(), a, 1000);
      }
    } else {
      refill_new(t, next, v.ephemeral, pkts);
      setup_burst(p->worker(), pkts);
      if (v.events) discard_events(p->ctx().events[0]);
    }
    next += kBurst;
  }
  made += created(*p) - base;
  const double total = static_cast<double>(state.iterations()) * kBurst;
  if (static_cast<double>(made) != total) {
    state.SkipWithError(("only " + std::to_string(made) + " of " + std::to_string(static_cast<uint64_t>(total)) +
                         " flows got a session")
                            .c_str());
    return;
  }
  state.SetItemsProcessed(static_cast<int64_t>(total));
  state.counters["ns/session"] =
      benchmark::Counter(total, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["overlapped"] = static_cast<double>(p->sessions().stats().overlapped.get());
}

std::string pool_of(unsigned n) {
  std::string s = "to = [";
  for (unsigned i = 0; i < n; ++i) s += (i ? ", " : "") + std::string("\"10.0.3.") + std::to_string(20 + i) + "\"";
  return s + "]";
}

}  // namespace

void register_setup() {
  const Options& o = options();
  const uint32_t small = o.smoke ? 4096 : 60000;  // fits one address's free ports (64,512)
  const uint32_t big = o.smoke ? 8192 : 1000000;
  std::vector<Variant> vs = {
      {"setup/pipeline/udp/addr:1/sessions:" + std::to_string(small), IPPROTO_UDP, small},
      {"setup/pipeline/tcp/addr:1/sessions:" + std::to_string(small), IPPROTO_TCP, small},
      {"setup/pipeline/udp/addr:1(overlap)/sessions:" + std::to_string(big), IPPROTO_UDP, big},
      {"setup/pipeline/udp/pool:16/sessions:" + std::to_string(big), IPPROTO_UDP, big, pool_of(16)},
      {"setup/pipeline/udp/pool:16(ephemeral)/sessions:" + std::to_string(big), IPPROTO_UDP, big, pool_of(16), "",
       false, true},
      // nat.max_sessions_per_host at the benchmark's 16 flows per inside host: every flow counted, none refused.
      {"setup/pipeline/udp/addr:1/host-limit/sessions:" + std::to_string(small), IPPROTO_UDP, small, "",
       "max_sessions_per_host = 16\n"},
      {"setup/pipeline/udp/pool:16/host-limit/sessions:" + std::to_string(big), IPPROTO_UDP, big, pool_of(16),
       "max_sessions_per_host = 16\n"},
      // nat.max_ports_per_host likewise: each of a host's 16 flows takes its own port.
      {"setup/pipeline/udp/addr:1/host-port-limit/sessions:" + std::to_string(small), IPPROTO_UDP, small, "",
       "max_ports_per_host = 16\n"},
      {"setup/pipeline/udp/addr:1/nat-events/sessions:" + std::to_string(small), IPPROTO_UDP, small, "", "", false,
       false, true},
      {"setup/pipeline/udp/addr:1/acl:10/sessions:" + std::to_string(small), IPPROTO_UDP, small, "",
       acl_toml(make_acl_rules(10))},
      {"setup/pipeline/udp/addr:1/acl:1000/sessions:" + std::to_string(small), IPPROTO_UDP, small, "",
       acl_toml(make_acl_rules(1000))},
      {"setup/create_session/udp/addr:1/sessions:" + std::to_string(small), IPPROTO_UDP, small, "", "", true},
      {"setup/create_session/udp/addr:1(overlap)/sessions:" + std::to_string(big), IPPROTO_UDP, big, "", "", true},
  };
  for (const auto& v : vs) {
    if (o.max_sessions && v.sessions > o.max_sessions) continue;
    auto* b = benchmark::RegisterBenchmark(v.name.c_str(), [v](benchmark::State& s) { bm_setup(s, v); });
    b->Unit(benchmark::kNanosecond);
    b->Iterations(static_cast<benchmark::IterationCount>(o.iterations ? o.iterations : v.sessions / kBurst));
  }
}

}  // namespace natgw::perf
