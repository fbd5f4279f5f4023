// Expiry cost: removing idle sessions (two key deletes, deferred-queue enqueue) and
// reclaiming them after the grace period (key slots, mapping, port), per session;
// and the cost of the housekeeping scan over live sessions that do not expire.
#include <benchmark/benchmark.h>
#include <rte_rcu_qsbr.h>

#include <memory>

#include "common.hpp"
#include "registry.hpp"

namespace natgw::perf {
namespace {

void fill(Pipeline& p, uint32_t n, uint32_t now) {
  nat::FlowKey key{};
  const uint8_t pool_idx[1] = {p.ctx().ifaces[kInternet].outside_idx};
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
  for (uint32_t f = 0; f < n; ++f) {
    key = nat::make_key(Flows::in_src(f), Flows::remote(f), Flows::in_sport(f), Flows::remote_port(f), IPPROTO_UDP,
                        nat::kInside);
    uint32_t idx;
    p.sessions().create_session(a, now, idx);
  }
}

[[gnu::noinline]] uint32_t expire_all(Pipeline& p, uint32_t now, uint32_t n) {
  nat::SessionTable& st = p.sessions();
  const nat::Timeouts t;
  const uint32_t expired = st.expire_step(now, t, n);
  // Grace period: the only reader (this worker) reports quiescence; then reclaim
  // everything (the deferred queue hands back at most 256 per call).
  for (uint32_t i = 0; i < n / 256 + 4; ++i) {
    rte_rcu_qsbr_quiescent(p.ctx().qsbr, 0);
    st.reclaim();
  }
  return expired;
}

void bm_expire(benchmark::State& state, uint32_t n) {
  release_established();
  uint64_t total = 0;
  for (auto _ : state) {
    state.PauseTiming();
    auto p = std::make_unique<Pipeline>(nat_config(n));
    fill(*p, n, 1000);
    if (p->sessions().active() != n) {
      state.SkipWithError("fill failed");
      return;
    }
    state.ResumeTiming();
    total += expire_all(*p, 1000 + 400'000, n);  // past the 300 s UDP timeout
    state.PauseTiming();
    const bool ok = p->sessions().active() == 0 && p->sessions().stats().mappings.get() == 0;
    p.reset();
    state.ResumeTiming();
    if (!ok) {
      state.SkipWithError("sessions or mappings were not all reclaimed");
      return;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(total));
  state.counters["ns/session"] =
      benchmark::Counter(static_cast<double>(total), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// Housekeeping examines 64 slots per millisecond; here none of them expires.
void bm_scan(benchmark::State& state, uint32_t n) {
  release_established();
  auto p = std::make_unique<Pipeline>(nat_config(n));
  fill(*p, n, 1000);
  const nat::Timeouts t;
  uint64_t expired = 0;
  for (auto _ : state) expired += p->sessions().expire_step(2000, t, 64);
  if (expired) {
    state.SkipWithError("sessions expired during the idle scan");
    return;
  }
  const double slots = static_cast<double>(state.iterations()) * 64;
  state.SetItemsProcessed(static_cast<int64_t>(slots));
  state.counters["ns/slot"] = benchmark::Counter(slots, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

}  // namespace

void register_expiry() {
  const Options& o = options();
  std::vector<uint32_t> scales = o.smoke ? std::vector<uint32_t>{4096} : std::vector<uint32_t>{100000, 1000000};
  for (uint32_t n : scales) {
    if (o.max_sessions && n > o.max_sessions) continue;
    auto* b = benchmark::RegisterBenchmark(("expiry/remove+reclaim/sessions:" + std::to_string(n)).c_str(),
                                           [n](benchmark::State& s) { bm_expire(s, n); });
    b->Unit(benchmark::kNanosecond)->Iterations(static_cast<benchmark::IterationCount>(
        o.iterations ? o.iterations : (o.smoke ? 1 : 3)));
    auto* c = benchmark::RegisterBenchmark(("expiry/scan-idle/sessions:" + std::to_string(n)).c_str(),
                                           [n](benchmark::State& s) { bm_scan(s, n); });
    c->Unit(benchmark::kNanosecond);
    if (o.smoke) c->MinTime(0.01);
    if (o.iterations) c->Iterations(static_cast<benchmark::IterationCount>(o.iterations));
  }
}

}  // namespace natgw::perf
