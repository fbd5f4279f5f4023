// natgw-micro: Google Benchmark driver. Our own flags are taken out of argv first
// (see --help-natgw), then EAL starts (hugepages when reserved, unless --no-huge),
// then benchmarks are registered for the scales that fit in memory.
#include <benchmark/benchmark.h>
#include <rte_eal.h>

#include <cstdio>
#include <cstring>
#include <exception>

#include "common.hpp"
#include "registry.hpp"

namespace {
const char* kHelp =
    "natgw-micro [natgw flags] [--benchmark_* flags]\n"
    "  --no-huge            EAL without hugepages (also NATGW_PERF_NO_HUGE=1); CI smoke runs use it\n"
    "  --smoke              tiny scales and short runs (what the meson 'perf' suite runs)\n"
    "  --scales=A,B,...     established-path session counts (default 1000,100000,1000000,10000000)\n"
    "  --max-sessions=N     skip scales above N (also NATGW_PERF_MAX_SESSIONS)\n"
    "  --iterations=N       fixed iteration count for every benchmark (callgrind runs)\n"
    "  --aws-json=PATH      ip-ranges.json for the LPM table (default ../shared/data/aws-ip-ranges.json)\n"
    "  --eal-mem=MB         EAL memory with --no-huge (default 2048, smoke 256)\n";
}

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "--help-natgw") == 0) {
      std::fputs(kHelp, stdout);
      return 0;
    }
  try {
    natgw::perf::parse_options(argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
    natgw::perf::start_eal();
    const auto& o = natgw::perf::options();
    benchmark::AddCustomContext("natgw_eal", o.eal_summary);
    benchmark::AddCustomContext("natgw_hugepages", o.hugepages ? "yes" : "no");
    natgw::perf::register_established();
    natgw::perf::register_setup();
    natgw::perf::register_tables();
    natgw::perf::register_expiry();
    benchmark::RunSpecifiedBenchmarks();
    natgw::perf::release_established();
    benchmark::Shutdown();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "natgw-micro: %s\n", e.what());
    return 1;
  }
  return 0;
}
