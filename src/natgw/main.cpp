// natgw: the daemon. Loads and validates the config, brings up EAL and the ports,
// starts one worker per lcore, and runs the control loop on the main lcore
// (signals, reload, counters). `natgw --check FILE` only validates.
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "control/stats.hpp"
#include "dataplane/context.hpp"
#include "dataplane/port.hpp"
#include "dataplane/worker.hpp"
#include "natgw_version.hpp"

namespace {

using namespace natgw;

volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_reload = 0;
volatile std::sig_atomic_t g_dump = 0;

void on_signal(int sig) {
  if (sig == SIGHUP) g_reload = 1;
  else if (sig == SIGUSR1) g_dump = 1;
  else g_stop = 1;
}

int usage(const char* argv0, int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: %s --config FILE      run the gateway\n"
               "       %s --check FILE       validate FILE and exit (0 = valid)\n"
               "       %s --version\n"
               "signals: SIGHUP reloads the config, SIGUSR1 prints counters, SIGINT/SIGTERM stop.\n",
               argv0, argv0, argv0);
  return rc;
}

bool report(const config::LoadResult& r) {
  for (const auto& e : r.errors) std::cerr << e.str() << "\n";
  if (!r.ok()) std::cerr << r.errors.size() << " error(s)\n";
  return r.ok();
}

std::string summary(const config::Config& c) {
  size_t prefixes = 0;
  for (const auto& r : c.routes) prefixes += r.prefixes.size();
  return std::to_string(c.interfaces.size()) + " interfaces, " + std::to_string(c.routes.size()) +
         " routes (" + std::to_string(prefixes) + " prefixes), " + std::to_string(c.snat.size()) +
         " snat rules, " + std::to_string(c.acl.size()) + " acl rules, " +
         std::to_string(c.dataplane.workers) + " worker(s)";
}

// Config values that are parsed but not implemented yet are refused, never ignored.
bool refuse_unimplemented(const config::Config& c) {
  if (c.nat.hairpinning) {
    std::cerr << c.path << ": [nat] hairpinning = true is not implemented yet\n";
    return false;
  }
  return true;
}

struct WorkerSlot {
  dp::Worker* worker;
};

int worker_main(void* arg) {
  static_cast<WorkerSlot*>(arg)->worker->run();
  return 0;
}

class Daemon {
 public:
  explicit Daemon(config::Config cfg) : cfg_(std::move(cfg)) {}
  int run(const char* argv0);

 private:
  bool init_eal(const char* argv0);
  void reload();
  control::Snapshot snap(bool ports) const {
    std::vector<const dp::Worker*> ws;
    for (const auto& w : workers_) ws.push_back(w.get());
    return control::snapshot(ctx_, ws, ports);
  }

  config::Config cfg_;
  dp::Context ctx_;
  rte_mempool* pool_ = nullptr;
  std::vector<std::unique_ptr<dp::Worker>> workers_;
  std::vector<WorkerSlot> slots_;
  uint64_t generation_ = 1;
};

bool Daemon::init_eal(const char* argv0) {
  std::vector<std::string> args{argv0};
  for (const auto& a : cfg_.dataplane.eal) args.push_back(a);
  const bool has_cores = std::any_of(args.begin(), args.end(), [](const std::string& a) {
    return a == "-l" || a == "-c" || a == "--lcores" || a.rfind("--lcores=", 0) == 0;
  });
  if (!has_cores) {
    args.push_back("-l");
    args.push_back("0-" + std::to_string(cfg_.dataplane.workers));
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  if (rte_eal_init(static_cast<int>(args.size()), argv.data()) < 0) {
    std::cerr << "natgw: EAL initialisation failed: " << rte_strerror(rte_errno)
              << " (eal = [...] in " << cfg_.path << ")\n";
    return false;
  }
  if (rte_lcore_count() < cfg_.dataplane.workers + 1) {
    std::cerr << "natgw: " << cfg_.dataplane.workers << " worker(s) need "
              << cfg_.dataplane.workers + 1 << " lcores (one for control), EAL has "
              << rte_lcore_count() << "\n";
    return false;
  }
  return true;
}

void Daemon::reload() {
  const auto r = config::load_file(cfg_.path);
  if (!report(r) || !refuse_unimplemented(*r.config)) {
    std::cerr << "natgw: reload rejected; the running config (generation " << generation_ - 1
              << ") stays\n";
    return;
  }
  try {
    auto t = dp::build_tables(ctx_, *r.config, generation_);
    dp::publish_tables(ctx_, std::move(t));
    cfg_ = *r.config;
    std::cout << "natgw: reloaded " << cfg_.path << " (generation " << generation_ << "): "
              << summary(cfg_) << std::endl;
    ++generation_;
  } catch (const std::exception& e) {
    std::cerr << "natgw: reload rejected: " << e.what() << "; the running config stays\n";
  }
}

int Daemon::run(const char* argv0) {
  if (!init_eal(argv0)) return 1;
  int rc = 0;
  std::vector<uint16_t> started;
  try {
    dp::init_context(ctx_, cfg_);
    uint16_t max_mtu = 0;
    for (size_t i = 0; i < cfg_.interfaces.size(); ++i) {
      const uint16_t port = dp::probe_port(cfg_.interfaces[i].device);
      ctx_.ifaces[i].port_id = port;
      ctx_.port_to_iface[port] = static_cast<uint8_t>(i);
      rte_eth_macaddr_get(port, &ctx_.ifaces[i].mac);
      max_mtu = std::max(max_mtu, cfg_.interfaces[i].mtu);
    }
    const uint16_t workers = static_cast<uint16_t>(cfg_.dataplane.workers);
    dp::PortParams pp;
    pp.queues = workers;
    const uint32_t per_port = workers * (pp.rx_desc + pp.tx_desc + 2 * dp::kBurst);
    const uint32_t mbufs = cfg_.dataplane.mbufs
                               ? cfg_.dataplane.mbufs
                               : static_cast<uint32_t>(ctx_.ifaces.size()) * per_port +
                                     workers * (256 + 64 * 8 + 64 + 64 * 16) + 4096;
    pool_ = rte_pktmbuf_pool_create("natgw_mbufs", mbufs, 256, 0, dp::mbuf_data_room(max_mtu),
                                    static_cast<int>(rte_socket_id()));
    if (!pool_)
      throw std::runtime_error("cannot create the mbuf pool of " + std::to_string(mbufs) +
                               " mbufs: " + rte_strerror(rte_errno) +
                               " (raise -m in eal, or reserve more hugepages)");
    for (size_t i = 0; i < cfg_.interfaces.size(); ++i) {
      pp.mtu = cfg_.interfaces[i].mtu;
      dp::start_port(ctx_.ifaces[i].port_id, pp, pool_, cfg_.interfaces[i].name);
      started.push_back(ctx_.ifaces[i].port_id);
    }
    dp::init_sessions(ctx_, static_cast<int>(rte_socket_id()));
    dp::publish_tables(ctx_, dp::build_tables(ctx_, cfg_, generation_++));
  } catch (const std::exception& e) {
    std::cerr << "natgw: " << e.what() << "\n";
    for (uint16_t p : started) dp::stop_port(p);
    rte_eal_cleanup();
    return 1;
  }

  for (uint16_t w = 0; w < cfg_.dataplane.workers; ++w)
    workers_.push_back(std::make_unique<dp::Worker>(ctx_, w, pool_));
  slots_.resize(workers_.size());
  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  for (size_t w = 0; w < workers_.size(); ++w, lcore = rte_get_next_lcore(lcore, 1, 0)) {
    slots_[w].worker = workers_[w].get();
    rte_eal_remote_launch(worker_main, &slots_[w], lcore);
  }
  std::cout << "natgw: running: " << summary(cfg_) << std::endl;
  for (size_t i = 0; i < ctx_.ifaces.size(); ++i) {
    char mac[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(mac, sizeof(mac), &ctx_.ifaces[i].mac);
    std::cout << "  " << ctx_.ifaces[i].name << ": port " << ctx_.ifaces[i].port_id << " "
              << config::format_ipv4(cfg_.interfaces[i].addr) << "/"
              << int(cfg_.interfaces[i].prefix_len) << " mac " << mac << " mtu "
              << ctx_.ifaces[i].mtu << " (" << cfg_.interfaces[i].device << ")" << std::endl;
  }

  while (!g_stop) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (g_reload) {
      g_reload = 0;
      reload();
    }
    if (g_dump) {
      g_dump = 0;
      std::cout << control::format_text(snap(true)) << std::flush;
    }
  }

  std::cout << "natgw: stopping" << std::endl;
  ctx_.stop.store(true);
  rte_eal_mp_wait_lcore();
  std::cout << "natgw: final counters\n" << control::format_text(snap(true)) << std::flush;
  workers_.clear();  // frees held packets before the ports go
  for (uint16_t p : started) dp::stop_port(p);
  dp::destroy_context(ctx_);
  rte_mempool_free(pool_);
  rte_eal_cleanup();
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--config" || a == "-c") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--check" && i + 1 < argc) {
      config_path = argv[++i];
      check_only = true;
    } else if (a == "--check") {
      check_only = true;
    } else if (a == "--version") {
      std::cout << "natgw " << NATGW_VERSION << "\n";
      return 0;
    } else if (a == "--help" || a == "-h") {
      return usage(argv[0], 0);
    } else {
      std::cerr << "natgw: unknown argument '" << a << "'\n";
      return usage(argv[0], 2);
    }
  }
  if (config_path.empty()) return usage(argv[0], 2);

  const auto r = config::load_file(config_path);
  if (!report(r)) return 2;
  if (!refuse_unimplemented(*r.config)) return 2;
  if (check_only) {
    std::cout << config_path << ": OK: " << summary(*r.config) << "\n";
    return 0;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGHUP, on_signal);
  std::signal(SIGUSR1, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  Daemon d(*r.config);
  return d.run(argv[0]);
}
