// Established-session translation, both directions, at 1k..10M sessions with random
// access across them: bursts of 32 real mbufs through Worker::process + flush, TX into
// net_null ports. Every burst is refilled from a template (processing rewrites the
// packets); the refill + free cost alone is its own benchmark ("baseline") so the
// pipeline's own cost is the difference.
#include <benchmark/benchmark.h>
#include <rte_ethdev.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "common.hpp"
#include "registry.hpp"

namespace natgw::perf {
namespace {

constexpr unsigned kBurst = 32;

// One population of N established sessions, built once and shared by the
// benchmarks of that scale (building 10M sessions takes a while).
struct Population {
  uint32_t n = 0;
  uint8_t proto = 0;
  bool nat = true;
  std::unique_ptr<Pipeline> p;
  std::vector<uint16_t> out_port;  // network order, per flow
  // Replies to send: random flows with the outside port NAT chose, generated once and
  // read in order (a random read of out_port per packet would miss the cache at 1M+
  // flows, in the baseline and the measured loop alike, but not equally).
  struct Reply {
    uint32_t flow;
    rte_be16_t port;
  };
  static constexpr size_t kReplies = 1 << 20;
  std::vector<Reply> replies;
  rte_be32_t out_ip = 0;
  FrameTemplate in_t, out_t;
  MemProbe before, after;
  double setup_s = 0;
  size_t reported_bytes = 0;
  std::string error;
};

std::unique_ptr<Population> g_pop;

// Refill a burst with inside->outside packets of random flows (no memory touched
// but the mbufs and the template). nic_csum: flag each as a NIC with RX IPv4 checksum
// offload does (ENA, i40e, ...): natgw then trusts the verdict instead of summing the
// header (net_null, memif and af_packet give none).
[[gnu::noinline]] void refill_in2out(const Population& pop, Rng& rng, rte_mbuf** pkts, bool nic_csum) {
  if (rte_pktmbuf_alloc_bulk(pool(), pkts, kBurst) != 0) std::abort();
  for (unsigned i = 0; i < kBurst; ++i) {
    const uint32_t f = rng.below(pop.n);
    pop.in_t.write(pkts[i], Flows::in_src(f), Flows::remote(f), Flows::in_sport(f), Flows::remote_port(f));
    if (nic_csum) pkts[i]->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_GOOD;
  }
}

// Outside->inside replies of random flows, from the pre-drawn sequence (`next` wraps).
[[gnu::noinline]] void refill_out2in(const Population& pop, size_t& next, rte_mbuf** pkts, bool nic_csum) {
  if (rte_pktmbuf_alloc_bulk(pool(), pkts, kBurst) != 0) std::abort();
  for (unsigned i = 0; i < kBurst; ++i) {
    const Population::Reply r = pop.replies[next];
    next = (next + 1) & (Population::kReplies - 1);
    pop.out_t.write(pkts[i], Flows::remote(r.flow), pop.out_ip, Flows::remote_port(r.flow), r.port);
    if (nic_csum) pkts[i]->ol_flags |= RTE_MBUF_F_RX_IP_CKSUM_GOOD;
  }
}

// The code under test: the whole pipeline for one burst, then TX.
[[gnu::noinline]] void pipeline_burst(dp::Worker& w, uint16_t iface, rte_mbuf** pkts) {
  w.process(iface, pkts, kBurst);
  w.flush();
}

// Baseline sink: the same TX call into net_null (which frees the mbufs).
[[gnu::noinline]] void baseline_sink(uint16_t port, rte_mbuf** pkts) {
  const uint16_t sent = rte_eth_tx_burst(port, 0, pkts, kBurst);
  if (sent < kBurst) rte_pktmbuf_free_bulk(pkts + sent, kBurst - sent);
}

// Memory a pipeline takes without sessions (route table, ports, a 64-slot session
// table), subtracted so bytes/session is the session tables' own.
MemProbe fixed_overhead() {
  static MemProbe d = [] {
    const MemProbe b = MemProbe::now();
    auto p = std::make_unique<Pipeline>(nat_config(64));
    const MemProbe a = MemProbe::now();
    MemProbe r;
    r.rte_heap = a.rte_heap - b.rte_heap;
    r.c_heap = a.c_heap - b.c_heap;
    r.rss = a.rss > b.rss ? a.rss - b.rss : 0;
    return r;
  }();
  return d;
}

Population* population(uint32_t n, uint8_t proto, bool nat) {
  if (g_pop && g_pop->n == n && g_pop->proto == proto && g_pop->nat == nat) return g_pop.get();
  g_pop.reset();
  if (nat) fixed_overhead();
  auto pop = std::make_unique<Population>();
  pop->n = n;
  pop->proto = proto;
  pop->nat = nat;
  pop->in_t = FrameTemplate::make(mac(0x01), mac(0x10), proto, Flows::in_src(0), Flows::remote(0),
                                  rte_be_to_cpu_16(Flows::in_sport(0)), 443);
  pop->before = MemProbe::now();
  pop->p = std::make_unique<Pipeline>(nat ? nat_config(n) : forward_config());
  const auto t0 = std::chrono::steady_clock::now();
  dp::Worker& w = pop->p->worker();
  if (nat) {
    // First packets create the sessions through the normal slow path.
    rte_mbuf* pkts[kBurst];
    for (uint32_t base = 0; base < n; base += kBurst) {
      const unsigned k = std::min<uint32_t>(kBurst, n - base);
      if (rte_pktmbuf_alloc_bulk(pool(), pkts, k) != 0) std::abort();
      for (unsigned i = 0; i < k; ++i) {
        const uint32_t f = base + i;
        pop->in_t.write(pkts[i], Flows::in_src(f), Flows::remote(f), Flows::in_sport(f), Flows::remote_port(f));
      }
      w.process(kInside, pkts, static_cast<uint16_t>(k));
      w.flush();
    }
    pop->setup_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  // Before this benchmark's own bookkeeping (out_port, replies: ~10 B a session at 1M),
  // so B/session counts natgw's memory only.
  pop->after = MemProbe::now();
  if (nat) {
    nat::SessionTable& st = pop->p->sessions();
    if (st.active() != n) {
      pop->error = "only " + std::to_string(st.active()) + " of " + std::to_string(n) + " sessions created";
    }
    pop->out_port.resize(n);
    for (uint32_t f = 0; f < n && pop->error.empty(); ++f) {
      const nat::FlowKey k = nat::make_key(Flows::in_src(f), Flows::remote(f), Flows::in_sport(f),
                                           Flows::remote_port(f), proto, nat::kInside);
      const int64_t v = st.lookup(k);
      if (v < 0) {
        pop->error = "flow " + std::to_string(f) + " has no session";
        break;
      }
      const nat::Session& s = st.session(static_cast<uint32_t>(v) & ~nat::SessionTable::kOutsideBit);
      if (f == 0) pop->out_ip = s.out_ip;
      if (s.out_ip != pop->out_ip || s.out_iface != kInternet) {
        pop->error = "flow " + std::to_string(f) + " left by an unexpected interface/address";
        break;
      }
      pop->out_port[f] = s.out_port;
    }
    pop->reported_bytes = st.memory_bytes();
    if (pop->error.empty()) {
      Rng rng(0x12345u + n);
      pop->replies.resize(Population::kReplies);
      for (auto& r : pop->replies) {
        r.flow = rng.below(n);
        r.port = pop->out_port[r.flow];
      }
    }
  }
  pop->out_t = FrameTemplate::make(mac(0x31), mac(0x12), proto, Flows::remote(0), pop->out_ip, 443,
                                   nat ? rte_be_to_cpu_16(pop->out_port[0]) : 1);
  g_pop = std::move(pop);
  return g_pop.get();
}

void add_memory_counters(benchmark::State& state, const Population& pop) {
  const double n = pop.n;
  const MemProbe f = fixed_overhead();
  auto d = [](size_t a, size_t b) { return static_cast<double>(a) - static_cast<double>(b); };
  state.counters["B/session(reported)"] = static_cast<double>(pop.reported_bytes) / n;
  state.counters["B/session(alloc)"] =
      (d(pop.after.rte_heap, pop.before.rte_heap) + d(pop.after.c_heap, pop.before.c_heap) -
       static_cast<double>(f.rte_heap + f.c_heap)) / n;
  // Resident pages move by whole pages and by what earlier runs freed: meaningful at scale only.
  if (n >= 100000) state.counters["B/session(rss)"] = (d(pop.after.rss, pop.before.rss) - static_cast<double>(f.rss)) / n;
  state.counters["setup_Msess/s"] = pop.setup_s > 0 ? n / pop.setup_s / 1e6 : 0;
}

void set_rate_counters(benchmark::State& state) {
  const double pkts = static_cast<double>(state.iterations()) * kBurst;
  state.SetItemsProcessed(static_cast<int64_t>(pkts));
  state.counters["ns/pkt"] = benchmark::Counter(pkts, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

enum class Dir { kIn2Out, kOut2In };

void bm_pipeline(benchmark::State& state, uint32_t n, uint8_t proto, Dir dir, bool nat, bool nic_csum = false) {
  Population* pop = population(n, proto, nat);
  if (!pop->error.empty()) {
    state.SkipWithError(pop->error.c_str());
    return;
  }
  dp::Worker& w = pop->p->worker();
  const auto& c = w.counters();
  const uint64_t drops0 = pop->p->drops();
  const uint64_t done0 = c.in2out.get() + c.out2in.get() + c.forwarded.get();
  Rng rng(0x12345u + n);
  size_t next = 0;
  rte_mbuf* pkts[kBurst];
  const uint16_t iface = dir == Dir::kIn2Out ? kInside : kInternet;
  for (auto _ : state) {
    if (dir == Dir::kIn2Out)
      refill_in2out(*pop, rng, pkts, nic_csum);
    else
      refill_out2in(*pop, next, pkts, nic_csum);
    pipeline_burst(w, iface, pkts);
  }
  const uint64_t done = c.in2out.get() + c.out2in.get() + c.forwarded.get() - done0;
  if (pop->p->drops() != drops0 || done != static_cast<uint64_t>(state.iterations()) * kBurst) {
    state.SkipWithError("the pipeline dropped packets or took an unexpected path");
    return;
  }
  set_rate_counters(state);
  if (nat) add_memory_counters(state, *pop);
  state.counters["sessions"] = nat ? n : 0;
}

void bm_baseline(benchmark::State& state, uint32_t n, uint8_t proto, Dir dir, bool nic_csum = false) {
  Population* pop = population(n, proto, true);
  if (!pop->error.empty()) {
    state.SkipWithError(pop->error.c_str());
    return;
  }
  Rng rng(0x12345u + n);
  size_t next = 0;
  rte_mbuf* pkts[kBurst];
  const uint16_t port = null_port(dir == Dir::kIn2Out ? kInternet : kInside);
  for (auto _ : state) {
    if (dir == Dir::kIn2Out)
      refill_in2out(*pop, rng, pkts, nic_csum);
    else
      refill_out2in(*pop, next, pkts, nic_csum);
    baseline_sink(port, pkts);
  }
  set_rate_counters(state);
}

// The session index alone: bulk lookups of bursts of 32 random established keys
// (keys built from the flow number, no packet memory). What the established path's
// table misses cost on this machine, the floor under "established" at this scale.
void bm_lookup(benchmark::State& state, uint32_t n, uint8_t proto, Dir dir) {
  Population* pop = population(n, proto, true);
  if (!pop->error.empty()) {
    state.SkipWithError(pop->error.c_str());
    return;
  }
  const nat::SessionTable& st = pop->p->sessions();
  Rng rng(0x12345u + n);
  size_t next = 0;
  nat::FlowKey keys[kBurst];
  const nat::FlowKey* kp[kBurst];
  for (unsigned i = 0; i < kBurst; ++i) kp[i] = &keys[i];
  uint64_t hits = 0, misses = 0;
  for (auto _ : state) {
    for (unsigned i = 0; i < kBurst; ++i) {
      if (dir == Dir::kIn2Out) {
        const uint32_t f = rng.below(pop->n);
        keys[i] = nat::make_key(Flows::in_src(f), Flows::remote(f), Flows::in_sport(f), Flows::remote_port(f),
                                proto, nat::kInside);
      } else {
        const Population::Reply r = pop->replies[next];
        next = (next + 1) & (Population::kReplies - 1);
        keys[i] = nat::make_key(Flows::remote(r.flow), pop->out_ip, Flows::remote_port(r.flow), r.port, proto,
                                nat::kOutside);
      }
    }
    uint64_t mask = 0;
    int64_t vals[kBurst];
    st.lookup_bulk(kp, kBurst, mask, vals);
    benchmark::DoNotOptimize(vals);
    hits += static_cast<uint64_t>(__builtin_popcountll(mask));
    misses += kBurst - static_cast<uint64_t>(__builtin_popcountll(mask));
  }
  if (misses) {
    state.SkipWithError("a lookup of an established key missed");
    return;
  }
  set_rate_counters(state);
  state.counters["sessions"] = n;
}

// Rough memory a population needs (measured: see perf/RESULTS.md), to skip cleanly.
bool fits(uint32_t n, std::string& why) {
  const Options& o = options();
  if (o.max_sessions && n > o.max_sessions) {
    why = "above --max-sessions/NATGW_PERF_MAX_SESSIONS=" + std::to_string(o.max_sessions);
    return false;
  }
  const double rte_need = 320.0 * n + (64u << 20), heap_need = 160.0 * n + (64u << 20);
  if (n > 2000000 && !o.hugepages) {
    why = "needs hugepages";
    return false;
  }
  const double rte_have = o.hugepages ? static_cast<double>(free_hugepage_bytes())
                                      : (o.eal_mem_mb ? o.eal_mem_mb : 2048) * double(1 << 20);
  if (rte_need > rte_have || heap_need > static_cast<double>(mem_available_bytes())) {
    why = "needs ~" + std::to_string(static_cast<unsigned>(rte_need / (1 << 20))) + " MB of hugepages (free: " +
          std::to_string(static_cast<unsigned>(rte_have / (1 << 20))) + " MB) and ~" +
          std::to_string(static_cast<unsigned>(heap_need / (1 << 20))) + " MB of RAM";
    return false;
  }
  return true;
}

std::string scale_name(uint32_t n) {
  if (n % 1000000 == 0) return std::to_string(n / 1000000) + "M";
  if (n % 1000 == 0) return std::to_string(n / 1000) + "k";
  return std::to_string(n);
}

benchmark::internal::Benchmark* tune(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kNanosecond);
  if (options().iterations) b->Iterations(static_cast<benchmark::IterationCount>(options().iterations));
  if (options().smoke) b->MinTime(0.01);
  return b;
}

}  // namespace

void register_established() {
  const Options& o = options();
  tune(benchmark::RegisterBenchmark("forward/udp/in2out", [](benchmark::State& s) {
    bm_pipeline(s, 1000000, IPPROTO_UDP, Dir::kIn2Out, false);
  }));
  std::vector<std::pair<uint32_t, uint8_t>> sets;
  uint32_t tcp_scale = 0;
  for (uint32_t n : o.scales) {
    std::string why;
    if (!fits(n, why)) {
      std::fprintf(stderr, "natgw-micro: skipping established/*/%s: %s\n", scale_name(n).c_str(), why.c_str());
      benchmark::AddCustomContext("skipped_" + scale_name(n), why);
      continue;
    }
    sets.emplace_back(n, IPPROTO_UDP);
    if (n <= 1000000) tcp_scale = n;
  }
  if (tcp_scale) sets.emplace_back(tcp_scale, IPPROTO_TCP);
  for (auto [n, proto] : sets) {
    const std::string pn = proto == IPPROTO_TCP ? "tcp" : "udp";
    const std::string sn = "/sessions:" + scale_name(n);
    tune(benchmark::RegisterBenchmark(("established/" + pn + "/in2out" + sn).c_str(),
                                      [n, proto](benchmark::State& s) { bm_pipeline(s, n, proto, Dir::kIn2Out, true); }));
    tune(benchmark::RegisterBenchmark(("baseline/" + pn + "/in2out" + sn).c_str(),
                                      [n, proto](benchmark::State& s) { bm_baseline(s, n, proto, Dir::kIn2Out); }));
    tune(benchmark::RegisterBenchmark(("established/" + pn + "/out2in" + sn).c_str(),
                                      [n, proto](benchmark::State& s) { bm_pipeline(s, n, proto, Dir::kOut2In, true); }));
    tune(benchmark::RegisterBenchmark(("baseline/" + pn + "/out2in" + sn).c_str(),
                                      [n, proto](benchmark::State& s) { bm_baseline(s, n, proto, Dir::kOut2In); }));
    if (proto != IPPROTO_UDP) continue;
    // As on a NIC that verifies IPv4 header checksums (ENA): the software sum is skipped.
    for (Dir d : {Dir::kIn2Out, Dir::kOut2In}) {
      const std::string dn = d == Dir::kIn2Out ? "/in2out(nic-csum)" : "/out2in(nic-csum)";
      tune(benchmark::RegisterBenchmark(("established/" + pn + dn + sn).c_str(),
                                        [n, proto, d](benchmark::State& s) { bm_pipeline(s, n, proto, d, true, true); }));
      tune(benchmark::RegisterBenchmark(("baseline/" + pn + dn + sn).c_str(),
                                        [n, proto, d](benchmark::State& s) { bm_baseline(s, n, proto, d, true); }));
    }
    tune(benchmark::RegisterBenchmark(("lookup/" + pn + "/in2out" + sn).c_str(),
                                      [n, proto](benchmark::State& s) { bm_lookup(s, n, proto, Dir::kIn2Out); }));
    tune(benchmark::RegisterBenchmark(("lookup/" + pn + "/out2in" + sn).c_str(),
                                      [n, proto](benchmark::State& s) { bm_lookup(s, n, proto, Dir::kOut2In); }));
  }
}

void release_established() { g_pop.reset(); }

}  // namespace natgw::perf
