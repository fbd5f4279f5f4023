// Route lookup (rte_lpm through route::RouteTable) with a realistic table, and ACL
// classification (acl::AclTable: linear first match up to kLinearMaxRules, rte_acl above)
// at 10 and 1,000 rules, and both classifiers forced across small rule counts (acl/crossover)
// to place kLinearMaxRules.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <string>
#include <utility>
#include <memory>

#include <rte_prefetch.h>

#include "acl/acl_table.hpp"
#include "common.hpp"
#include "nat/table_memory.hpp"
#include "registry.hpp"
#include "route/route_table.hpp"

namespace natgw::perf {
namespace {

constexpr unsigned kAddrs = 4096;  // a spread of destinations, well beyond one burst

config::Config route_config(const std::vector<config::Prefix>& prefixes) {
  config::Config c;
  const uint32_t addrs[3] = {0x0a00010a, 0x0a00020a, 0x0a00030a};
  const char* names[3] = {"inside", "endpoint", "internet"};
  for (unsigned i = 0; i < 3; ++i) {
    config::Interface itf;
    itf.name = names[i];
    itf.device = "net_null" + std::to_string(i);
    itf.addr = addrs[i];
    itf.prefix_len = 24;
    c.interfaces.push_back(itf);
  }
  config::Route def;
  def.prefixes = {config::Prefix{0, 0}};
  def.via = 0x0a000301;
  def.interface = "internet";
  def.interface_index = 2;
  c.routes.push_back(def);
  config::Route onprem;
  onprem.prefixes = {config::Prefix{0x64400000, 10}};
  onprem.via = 0x0a000101;
  onprem.interface = "inside";
  onprem.interface_index = 0;
  c.routes.push_back(onprem);
  config::Route s3;
  s3.prefixes = prefixes;
  s3.prefix_list = "s3.txt";
  s3.via = 0x0a000201;
  s3.interface = "endpoint";
  s3.interface_index = 1;
  c.routes.push_back(s3);
  return c;
}

struct LpmSet {
  std::unique_ptr<route::RouteTable> table;
  std::vector<uint32_t> dst_be;    // network order, for lookup()
  std::vector<uint32_t> dst_host;  // host order, for lookup_bulk()
  std::string source;
  size_t prefixes = 0;
  unsigned to_endpoint = 0;
};

LpmSet make_lpm(bool s3_only) {
  LpmSet s;
  const auto prefixes = aws_prefixes(s3_only, s.source);
  s.prefixes = prefixes.size();
  s.table = route::RouteTable::build(route_config(prefixes));
  // Half the destinations inside a listed prefix (S3 traffic), half anywhere else.
  Rng rng(99);
  for (unsigned i = 0; i < kAddrs; ++i) {
    uint32_t a;
    if (i % 2 == 0) {
      const auto& p = prefixes[rng.below(static_cast<uint32_t>(prefixes.size()))];
      a = p.addr | (rng.next() & ~config::prefix_mask(p.len));
    } else {
      a = rte_be_to_cpu_32(Flows::remote(rng.next()));
    }
    s.dst_host.push_back(a);
    s.dst_be.push_back(rte_cpu_to_be_32(a));
    route::NextHop nh;
    if (s.table->lookup(rte_cpu_to_be_32(a), nh) && nh.iface == 1) ++s.to_endpoint;
  }
  return s;
}

void bm_lpm(benchmark::State& state, bool s3_only, bool bulk) {
  release_established();
  static std::unique_ptr<LpmSet> sets[2];
  auto& sp = sets[s3_only ? 0 : 1];
  if (!sp) sp = std::make_unique<LpmSet>(make_lpm(s3_only));
  LpmSet& s = *sp;
  unsigned i = 0;
  uint64_t hits = 0;
  for (auto _ : state) {
    if (bulk) {
      int32_t nh[32];
      s.table->lookup_bulk(&s.dst_host[i], nh, 32);
      benchmark::DoNotOptimize(nh);
      hits += nh[0] >= 0;
    } else {
      for (unsigned k = 0; k < 32; ++k) {
        route::NextHop nh;
        hits += s.table->lookup(s.dst_be[i + k], nh);
        benchmark::DoNotOptimize(nh);
      }
    }
    i = (i + 32) % kAddrs;
  }
  benchmark::DoNotOptimize(hits);
  const double n = static_cast<double>(state.iterations()) * 32;
  state.SetItemsProcessed(static_cast<int64_t>(n));
  state.counters["ns/lookup"] = benchmark::Counter(n, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["prefixes"] = static_cast<double>(s.prefixes + 2);
  state.counters["to_endpoint%"] = 100.0 * s.to_endpoint / kAddrs;
}

struct AclSet {
  std::unique_ptr<acl::AclTable> table;
  struct Tuple {
    uint32_t src, dst;
    uint16_t sport, dport;
    uint8_t proto;
  };
  std::vector<Tuple> tuples;
};

// match = false: the synthetic flows (no rule matches: every rule is scanned, default
// action). match = true: each tuple matches a uniformly chosen rule (scan ~half).
AclSet make_acl(unsigned rules, bool match, acl::Classifier how) {
  AclSet s;
  config::Config c;
  c.acl = make_acl_rules(rules);
  s.table = std::make_unique<acl::AclTable>(c, how);
  Rng rng(1234);
  for (unsigned i = 0; i < kAddrs; ++i) {
    AclSet::Tuple t{};
    if (match) {
      const auto& r = c.acl[rng.below(rules)];
      t.src = r.src ? (r.src->addr | (rng.next() & ~config::prefix_mask(r.src->len))) : rng.next();
      t.dst = r.dst ? (r.dst->addr | (rng.next() & ~config::prefix_mask(r.dst->len))) : rng.next();
      t.proto = r.proto ? r.proto : static_cast<uint8_t>(IPPROTO_UDP);
      t.sport = static_cast<uint16_t>(1024 + rng.below(60000));
      t.dport = static_cast<uint16_t>(r.dport.lo + rng.below(static_cast<uint32_t>(r.dport.hi - r.dport.lo) + 1));
    } else {
      const uint32_t f = rng.next() & 0xffffff;
      t.src = rte_be_to_cpu_32(Flows::in_src(f));
      t.dst = rte_be_to_cpu_32(Flows::remote(f));
      t.sport = rte_be_to_cpu_16(Flows::in_sport(f));
      t.dport = 443;
      t.proto = static_cast<uint8_t>((f & 1) ? IPPROTO_TCP : IPPROTO_UDP);
    }
    s.tuples.push_back(t);
  }
  return s;
}

void bm_acl(benchmark::State& state, unsigned rules, bool match, acl::Classifier how = acl::Classifier::kAuto) {
  release_established();
  AclSet s = make_acl(rules, match, how);
  unsigned i = 0;
  uint64_t allowed = 0;
  for (auto _ : state) {
    const auto& t = s.tuples[i];
    allowed += s.table->allow(t.src, t.dst, t.proto, t.sport, t.dport);
    i = (i + 1) % kAddrs;
  }
  benchmark::DoNotOptimize(allowed);
  state.SetItemsProcessed(state.iterations());
  state.counters["ns/flow"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["rte_acl"] = s.table->uses_rte_acl() ? 1 : 0;
}

benchmark::internal::Benchmark* tune(benchmark::internal::Benchmark* b) {
  b->Unit(benchmark::kNanosecond);
  if (options().iterations) b->Iterations(static_cast<benchmark::IterationCount>(options().iterations));
  if (options().smoke) b->MinTime(0.01);
  return b;
}

// The machine's floor under the established path: per packet, two dependent random
// cache-line reads (an index bucket, then the line it names), 32 packets at a time,
// each level prefetched for the whole batch before it is read (what lookup_bulk does),
// over arrays the size of the session index and sessions at `n` sessions, in the same
// memory the tables use. No hashing, no compare: memory latency and parallelism alone.
// Two variants answer design questions with the same arrays:
//   kOneLine    one random line per packet over the sessions array alone: the floor of
//               a table that finds an in2out session with one miss (sessions stored in
//               their key's hash slots; such a table would be ~1/0.8 the size);
//   kPipelined  the two levels software-pipelined through the burst instead of level by
//               level: step i prefetches packet i's bucket, reads packet i-8's bucket and
//               prefetches its line, and reads packet i-16's line.
enum class Floor { kTwoLines, kOneLine, kPipelined };

void bm_memory_floor(benchmark::State& state, uint32_t n, Floor shape) {
  struct alignas(64) Line {
    uint64_t w[8];
  };
  const size_t nb = static_cast<size_t>(n * 2 / 0.8 / 7) + 1, ns = n;  // as SessionTable sizes them
  nat::TableMemory ma("memory floor index", nb * sizeof(Line), SOCKET_ID_ANY);
  nat::TableMemory mb("memory floor sessions", ns * sizeof(Line), SOCKET_ID_ANY);
  auto* a = static_cast<Line*>(ma.get());
  auto* b = static_cast<Line*>(mb.get());
  Rng fill(7);
  for (size_t i = 0; i < nb; ++i) a[i].w[0] = fill.below(static_cast<uint32_t>(ns));
  for (size_t i = 0; i < ns; ++i) b[i].w[0] = i;
  Rng rng(0x12345u + n);
  constexpr unsigned kBurst = 32, kDistance = 8;
  uint64_t sum = 0;
  for (auto _ : state) {
    uint32_t ia[kBurst];
    uint64_t ib[kBurst];
    switch (shape) {
      case Floor::kTwoLines:
        for (unsigned i = 0; i < kBurst; ++i) {
          ia[i] = rng.below(static_cast<uint32_t>(nb));
          rte_prefetch0(&a[ia[i]]);
        }
        for (unsigned i = 0; i < kBurst; ++i) {
          ib[i] = a[ia[i]].w[0];
          rte_prefetch0(&b[ib[i]]);
        }
        for (unsigned i = 0; i < kBurst; ++i) sum += b[ib[i]].w[0];
        break;
      case Floor::kOneLine:
        for (unsigned i = 0; i < kBurst; ++i) {
          ib[i] = rng.below(static_cast<uint32_t>(ns));
          rte_prefetch0(&b[ib[i]]);
        }
        for (unsigned i = 0; i < kBurst; ++i) sum += b[ib[i]].w[0];
        break;
      case Floor::kPipelined:
        for (unsigned i = 0; i < kBurst + 2 * kDistance; ++i) {
          if (i < kBurst) {
            ia[i] = rng.below(static_cast<uint32_t>(nb));
            rte_prefetch0(&a[ia[i]]);
          }
          if (i >= kDistance && i - kDistance < kBurst) {
            ib[i - kDistance] = a[ia[i - kDistance]].w[0];
            rte_prefetch0(&b[ib[i - kDistance]]);
          }
          if (i >= 2 * kDistance) sum += b[ib[i - 2 * kDistance]].w[0];
        }
        break;
    }
  }
  benchmark::DoNotOptimize(sum);
  const double pkts = static_cast<double>(state.iterations()) * kBurst;
  state.SetItemsProcessed(static_cast<int64_t>(pkts));
  state.counters["ns/pkt"] = benchmark::Counter(pkts, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["MB"] = static_cast<double>((shape == Floor::kOneLine ? 0 : ma.size()) + mb.size()) / (1 << 20);
  state.counters["hugepages"] = ma.hugepages() && mb.hugepages();
}

}  // namespace

void register_tables() {
  // Say where the route table comes from (ip-ranges.json or synthesized) in the
  // report's context, which is printed before the first benchmark runs.
  for (bool s3 : {true, false}) {
    std::string source;
    const size_t n = aws_prefixes(s3, source).size();
    benchmark::AddCustomContext(s3 ? "lpm_s3_source" : "lpm_aws_source", source);
    if (source.rfind("synthesized", 0) == 0)
      std::fprintf(stderr, "natgw-micro: %s: LPM uses %zu synthesized prefixes\n", source.c_str(), n);
  }
  for (uint32_t n : options().scales) {
    if (n > 2000000 && !options().hugepages) continue;
    const std::string sn = n % 1000000 == 0 ? std::to_string(n / 1000000) + "M" : std::to_string(n / 1000) + "k";
    const std::pair<const char*, Floor> floors[] = {
        {"memory/floor/", Floor::kTwoLines}, {"memory/floor-one-line/", Floor::kOneLine},
        {"memory/floor-pipelined/", Floor::kPipelined}};
    for (const auto& [name, shape] : floors)
      tune(benchmark::RegisterBenchmark((name + std::string("sessions:") + sn).c_str(),
                                        [n, shape = shape](benchmark::State& s) { bm_memory_floor(s, n, shape); }));
  }
  tune(benchmark::RegisterBenchmark("lpm/s3+default/lookup", [](benchmark::State& s) { bm_lpm(s, true, false); }));
  tune(benchmark::RegisterBenchmark("lpm/s3+default/lookup_bulk32", [](benchmark::State& s) { bm_lpm(s, true, true); }));
  tune(benchmark::RegisterBenchmark("lpm/all-aws+default/lookup", [](benchmark::State& s) { bm_lpm(s, false, false); }));
  for (unsigned rules : {10u, 1000u}) {
    tune(benchmark::RegisterBenchmark(("acl/rules:" + std::to_string(rules) + "/no-match(full scan)").c_str(),
                                      [rules](benchmark::State& s) { bm_acl(s, rules, false); }));
    tune(benchmark::RegisterBenchmark(("acl/rules:" + std::to_string(rules) + "/match(random rule)").c_str(),
                                      [rules](benchmark::State& s) { bm_acl(s, rules, true); }));
  }
  // Where the scan stops paying: the same rule sets through each classifier.
  for (auto [how, name] : {std::pair{acl::Classifier::kLinear, "linear"}, std::pair{acl::Classifier::kRteAcl, "rte_acl"}})
    for (unsigned rules : {4u, 8u, 16u, 32u, 64u, 128u, 256u, 1000u})
      for (bool match : {false, true})
        tune(benchmark::RegisterBenchmark(("acl/crossover/" + std::string(name) + "/rules:" + std::to_string(rules) +
                                           (match ? "/match" : "/no-match")).c_str(),
                                          [rules, match, how = how](benchmark::State& s) { bm_acl(s, rules, match, how); }));
}

}  // namespace natgw::perf
