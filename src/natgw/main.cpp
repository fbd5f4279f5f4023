// natgw: the daemon. Loads and validates the config, brings up EAL and the ports,
// starts one worker per lcore, and runs the control loop on the main lcore
// (signals, reload, counters). `natgw --check FILE` only validates.
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_telemetry.h>
#include <rte_timer.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "control/event_log.hpp"
#include "control/health.hpp"
#include "control/server.hpp"
#include "control/stats.hpp"
#include "control/systemd_notify.hpp"
#include "control/views.hpp"
#include "control/watchdog.hpp"
#include "dataplane/context.hpp"
#include "dataplane/port.hpp"
#include "dataplane/worker.hpp"
#include "natgw_version.hpp"
#include "unmap_guard.hpp"
#ifdef NATGW_HAVE_XDP
#include "xdp/steering.hpp"
#endif

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
// What this build cannot do that the config asks for (the loader refuses what no build does);
// empty when nothing.
std::string refuse_unimplemented(const config::Config& c) {
  std::string why;
#ifndef NATGW_HAVE_XDP
  for (const auto& itf : c.interfaces)
    if (itf.xdp_steering)
      why += itf.loc.file + ":" + std::to_string(itf.loc.line) + ": interface " + itf.name +
             ": xdp_steering needs a natgw built with libbpf (install libbpf-dev and clang, rebuild)\n";
#else
  (void)c;
#endif
  return why;
}

// What init_context and the session tables would refuse at startup (an address used
// with two port ranges, a range smaller than the worker count, too many outside
// addresses, too few mbufs), checked without DPDK so that --check catches it too. Empty when fine.
std::string refuse_at_startup(const config::Config& c) {
  try {
    dp::Context scratch;
    dp::init_context(scratch, c);
  } catch (const std::exception& e) {
    return std::string(e.what()) + "\n";
  }
  // Fewer mbufs than one RX burst and one TX batch per port and worker: natgw could
  // not move a burst (PMDs that prefill their rings need far more, and say so at start).
  const uint32_t least = static_cast<uint32_t>(c.interfaces.size()) * c.dataplane.workers * 2 * dp::kBurst;
  if (c.dataplane.mbufs && c.dataplane.mbufs < least)
    return c.path + ":" + std::to_string(c.dataplane.loc.line) + ": dataplane.mbufs " +
           std::to_string(c.dataplane.mbufs) + " is too few: " + std::to_string(c.interfaces.size()) +
           " interface(s) x " + std::to_string(c.dataplane.workers) + " worker(s) x " + std::to_string(2 * dp::kBurst) +
           " (a burst in, a batch out) need at least " + std::to_string(least) +
           " (leave it out for a default sized for the rings)\n";
  return {};
}

#ifdef NATGW_HAVE_XDP
// AF_XDP sharing an interface with the kernel (interface.xdp_steering, lib/xdp). The af_xdp PMD loads
// and attaches natgw_steer.bpf.o (xdp_prog= devarg) when the port starts; natgw then fills its pinned
// maps: the host's addresses go to the kernel, natgw's own and transit traffic to natgw's sockets.
class XdpHooks {
 public:
  // The device string to probe: drops a natgw_steer a killed natgw left behind (the PMD cannot attach
  // over it) and names our program. Other interfaces keep their device string.
  static std::string device(const config::Interface& itf) {
    if (!itf.xdp_steering) return itf.device;
    const std::string ifname = xdp::af_xdp_iface(itf.device);
    if (xdp::XdpSteering::detach_stale(ifname))
      std::cerr << "natgw: " << itf.name << ": removed a stale natgw_steer from " << ifname << "\n";
    const std::string obj = xdp::find_object();
    if (obj.empty())
      throw std::runtime_error(itf.name + ": xdp_steering: natgw_steer.bpf.o not found next to natgw or in the "
                               "build/install folders (set NATGW_XDP_OBJECT)");
    return xdp::with_xdp_prog(itf.device, obj);
  }

  // After the ports started, and again after a reload (host addresses may have changed).
  // `outside`: every outside address, fixed at start. One a reload took out of a pool
  // still carries live sessions (and stays ours), so its ARP must keep reaching natgw.
  void configure(const config::Config& cfg, const std::vector<nat::OutsideAddress>& outside) {
    for (size_t i = 0; i < cfg.interfaces.size(); ++i) {
      const auto& itf = cfg.interfaces[i];
      if (!itf.xdp_steering) continue;
      const std::string ifname = xdp::af_xdp_iface(itf.device);
      if (open_.size() <= i) open_.resize(i + 1);
      if (!open_[i]) open_[i] = xdp::XdpSteering::open(ifname);
      xdp::SteeringConfig sc;
      sc.host_addresses = itf.xdp_host_addresses.empty() ? xdp::XdpSteering::kernel_addresses(ifname)
                                                         : itf.xdp_host_addresses;
      sc.natgw_addresses.push_back(itf.addr);
      for (const auto& o : outside) {  // pool addresses on this link (secondary IPs of the ENI)
        const uint32_t a = rte_be_to_cpu_32(o.addr);
        if (config::contains(config::subnet_of(itf), a) && a != itf.addr) sc.natgw_addresses.push_back(a);
      }
      open_[i]->configure(sc);
      std::string host;
      for (uint32_t a : sc.host_addresses) host += " " + config::format_ipv4(a);
      std::cout << "  " << itf.name << ": XDP steering on " << ifname << " (prog id " << open_[i]->prog_id()
                << ", maps in " << open_[i]->pin_dir() << "): to the kernel:" << (host.empty() ? " -" : host)
                << "; to natgw: " << sc.natgw_addresses.size() << " address(es) and transit" << std::endl;
    }
  }

  // The steering counters for /metrics (read from the maps on the control thread).
  std::string prometheus() const {
    std::vector<const xdp::XdpSteering*> v;
    for (const auto& s : open_)
      if (s) v.push_back(&*s);
    return xdp::prometheus_text(v);
  }

  // Before the ports stop: every frame to the kernel.
  void disable() noexcept {
    for (auto& s : open_)
      if (s) try { s->set_flags(0); } catch (const std::exception& e) { std::cerr << "natgw: " << e.what() << "\n"; }
  }

  // After the ports closed (the PMD detaches the program itself): make sure it is gone, remove the pins.
  void remove() noexcept {
    for (auto& s : open_)
      if (s) try { s->detach(); } catch (const std::exception& e) { std::cerr << "natgw: " << e.what() << "\n"; }
    open_.clear();
  }

 private:
  std::vector<std::optional<xdp::XdpSteering>> open_;
};
#else
struct XdpHooks {  // built without libbpf: refuse_unimplemented() rejects xdp_steering
  static std::string device(const config::Interface& itf) { return itf.device; }
  void configure(const config::Config&, const std::vector<nat::OutsideAddress>&) {}
  std::string prometheus() const { return {}; }
  void disable() noexcept {}
  void remove() noexcept {}
};
#endif

struct WorkerSlot {
  dp::Worker* worker;
};

int worker_main(void* arg) {
  static_cast<WorkerSlot*>(arg)->worker->run();
  return 0;
}

class Daemon {
 public:
  // `watchdog`: systemd's watchdog timeout (0 = none); fed through `notify`.
  Daemon(config::Config cfg, control::SystemdNotifier notify, std::chrono::microseconds watchdog)
      : cfg_(std::move(cfg)), notify_(std::move(notify)), watchdog_timeout_(watchdog) {}
  int run(const char* argv0);

 private:
  using Clock = std::chrono::steady_clock;
  bool init_eal(const char* argv0);
  // A reload, told to systemd: RELOADING=1 before, READY=1 after (whether it took or was rejected).
  control::Reply reload();
  control::Reply apply_reload();
  // READY=1 once every worker has polled, then the watchdog: called from the control loop.
  void systemd_tick();
  std::vector<uint64_t> poll_counts() const;
  std::string status_line(const std::string& what) const;
  int loop_timeout_ms() const;
  control::Reply command(const std::string& line);
  // GET /healthz and `natgwctl health`: ok, or the reasons (one per line) this natgw cannot carry traffic.
  control::Reply health() const;
  std::vector<std::string> health_reasons() const;
  void health_tick();
  void reset_ports();
  void reconnect_memif_clients();
  // Stops the workers polling and sending on interface i, and returns once none is inside a
  // burst on it any more (a grace period): the port can then be stopped, reset or restarted.
  void pause_port(size_t i) {
    ctx_.port_paused[i].store(true, std::memory_order_release);
    rte_rcu_qsbr_synchronize(ctx_.qsbr, RTE_QSBR_THRID_INVALID);
  }
  void resume_port(size_t i) { ctx_.port_paused[i].store(false, std::memory_order_release); }
  void register_telemetry();
  static int telemetry_stats(const char* cmd, const char* params, rte_tel_data* d);

 public:
  control::Snapshot snap(bool ports) const {
    std::vector<const dp::Worker*> ws;
    for (const auto& w : workers_) ws.push_back(w.get());
    control::Snapshot s = control::snapshot(ctx_, ws, ports);
    s.generation = reload_.generation;
    return s;
  }

 private:
  config::Config cfg_;
  dp::Context ctx_;
  rte_mempool* pool_ = nullptr;
  std::vector<std::unique_ptr<dp::Worker>> workers_;
  std::vector<WorkerSlot> slots_;
  uint64_t generation_ = 1;
  control::ReloadStatus reload_;
  control::ControlServer server_;
  XdpHooks xdp_;
  control::SystemdNotifier notify_;
  std::chrono::microseconds watchdog_timeout_;
  std::optional<control::WorkerWatchdog> watchdog_;  // from READY=1 on, when systemd asked for one
  std::optional<control::WorkerStallMonitor> stalls_;  // from READY=1 on, always: the health check's
  std::vector<std::string> said_health_;               // the reasons last logged (empty: healthy)
  std::vector<unsigned> lcores_;                     // worker i runs on lcore lcores_[i]
  bool ready_ = false;                               // READY=1 sent
  Clock::time_point launched_;
  bool said_slow_start_ = false;
  static constexpr auto kSlowStart = std::chrono::seconds(5);  // workers not polling yet: say so
  std::optional<std::string> unsent_ready_;                      // a READY=1 status systemd did not take
  std::set<std::string> dead_ports_;                             // interfaces whose reset failed
  std::vector<unsigned> memif_client_down_;  // per interface: checks a memif client was down (~0u: no client)
  void tell_ready(const std::string& status);
  control::EventLog events_;
  static int64_t wall_ms() {  // the wall clock, ms since the epoch: NAT event times
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  // Write what the workers queued: one budget's worth (the control loop comes back at once while
  // more is pending), or what the rings held (before a reload reconfigures the targets, at stop):
  // bounded by their size, so that workers producing as fast as this writes cannot hold it forever.
  void drain_events(bool all = false) {
    const size_t rounds = all ? ctx_.events.size() * dp::Context::kEventRing / control::EventLog::kBudget + 1 : 1;
    for (size_t i = 0; i < rounds; ++i) {
      events_.drain(ctx_.events, wall_ms(), ctx_.clock_ms(rte_get_tsc_cycles()));
      if (!control::EventLog::pending(ctx_.events)) break;
    }
  }
  // Each worker's table logs its sessions to its ring while nat_events has a target.
  void set_event_rings() {
    for (size_t w = 0; w < ctx_.sessions.size(); ++w)
      ctx_.sessions[w]->set_event_ring(events_.enabled() ? ctx_.events[w] : nullptr);
  }
  void check_watchdog(bool early);
};

// For DPDK telemetry callbacks (C function pointers, run on DPDK's telemetry thread):
// cleared under the mutex before the workers and session tables go, so a telemetry
// client polling during shutdown reads nothing freed.
Daemon* g_daemon = nullptr;
std::mutex g_daemon_mutex;
std::atomic<uint32_t> g_reset_pending{0};  // bit per interface: the PMD asked for a reset

int on_reset_event(uint16_t port, rte_eth_event_type, void* cb_arg, void*) {
  // Runs on the interrupt thread: only note it; the control loop does the reset.
  const auto* ctx = static_cast<const dp::Context*>(cb_arg);
  for (size_t i = 0; i < ctx->ifaces.size(); ++i)
    if (ctx->ifaces[i].port_id == port) g_reset_pending.fetch_or(1u << i);
  return 0;
}

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
  rte_timer_subsystem_init();  // before ports start: ENA arms its watchdog timer then
  if (rte_lcore_count() < cfg_.dataplane.workers + 1) {
    std::cerr << "natgw: " << cfg_.dataplane.workers << " worker(s) need "
              << cfg_.dataplane.workers + 1 << " lcores (one for control), EAL has "
              << rte_lcore_count() << "\n";
    return false;
  }
  return true;
}

control::Reply Daemon::reload() {
  // Before READY=1 there is no running state for systemd to leave: the READY=1 to come says it.
  if (ready_) notify_.reloading("reloading " + cfg_.path);
  check_watchdog(true);  // a reload may wait for every worker: start it with a fresh feed
  control::Reply r = apply_reload();
  check_watchdog(true);
  if (ready_) {
    if (r.ok) {
      tell_ready(status_line("reloaded"));
    } else {
      const std::string first = reload_.last_error.substr(0, reload_.last_error.find('\n'));
      const auto more = std::count(reload_.last_error.begin(), reload_.last_error.end(), '\n') - 1;
      tell_ready("reload rejected, generation " + std::to_string(reload_.generation) + " stays in force: " + first +
                 (more > 0 ? " (and " + std::to_string(more) + " more)" : ""));
    }
  }
  return r;
}

// READY=1 that systemd did not take (a full notify queue) is sent again on every loop turn: without
// it a start times out, and after a reload `systemctl reload` waits for its own timeout.
void Daemon::tell_ready(const std::string& status) {
  if (notify_.ready(status) || !notify_.active())
    unsent_ready_.reset();
  else
    unsent_ready_ = status;
}

control::Reply Daemon::apply_reload() {
  reload_.last_time = static_cast<double>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const auto r = config::load_file(cfg_.path);
  std::string why;
  for (const auto& e : r.errors) why += e.str() + "\n";
  if (r.ok()) {
    why += refuse_unimplemented(*r.config);
    for (const auto& e : config::restart_reasons(cfg_, *r.config)) why += e.str() + "\n";
  }
  if (why.empty()) {
    try {
      auto t = dp::build_tables(ctx_, *r.config, generation_);
      // XDP steering and the NAT event targets next: if either refuses the new config, nothing has
      // changed yet (XDP's maps are put back as the running config has them; a failed event
      // configure changes nothing). What was queued goes to the running event targets first.
      drain_events(true);
      try {
        xdp_.configure(*r.config, ctx_.outside);
        events_.configure(r.config->nat_events);
      } catch (...) {
        try {
          xdp_.configure(cfg_, ctx_.outside);
        } catch (const std::exception& e) {
          std::cerr << "natgw: restoring XDP steering: " << e.what() << "\n";
        }
        throw;
      }
      dp::publish_tables(ctx_, std::move(t));
      cfg_ = *r.config;
      set_event_rings();
      drain_events(true);  // what came in during the grace period
      reload_.generation = generation_++;
      reload_.last_ok = true;
      reload_.last_error.clear();
      const std::string msg = "reloaded " + cfg_.path + " (generation " +
                              std::to_string(reload_.generation) + "): " + summary(cfg_);
      std::cout << "natgw: " << msg << std::endl;
      return {true, msg + "\n"};
    } catch (const std::exception& e) {
      why = std::string(e.what()) + "\n";
    }
  }
  reload_.last_ok = false;
  reload_.last_error = why;
  const std::string msg = "reload rejected, generation " + std::to_string(reload_.generation) +
                          " stays in force:\n" + why;
  std::cerr << "natgw: " << msg << std::flush;
  return {false, msg};
}

std::vector<uint64_t> Daemon::poll_counts() const {
  std::vector<uint64_t> v;
  v.reserve(workers_.size());
  for (const auto& w : workers_) v.push_back(w->counters().polls.get());  // relaxed loads: no lock, no write
  return v;
}

std::string Daemon::status_line(const std::string& what) const {
  return what + ", generation " + std::to_string(reload_.generation) + ": " + summary(cfg_);
}

int Daemon::loop_timeout_ms() const {
  if (!ready_) return Clock::now() - launched_ > kSlowStart ? 50 : 1;  // READY=1 as soon as the workers poll
  if (control::EventLog::pending(ctx_.events)) return 0;  // the last drain stopped at its budget
  if (unsent_ready_) return 50;
  if (!watchdog_) return 50;
  // Wake when the check is due (rounded up: waking early would spin until it is).
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(watchdog_->next_check() - Clock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 50));
}

void Daemon::systemd_tick() {
  const auto now = Clock::now();
  if (!ready_) {
    const std::vector<uint64_t> polls = poll_counts();
    std::string idle;
    for (size_t w = 0; w < polls.size(); ++w)
      if (!polls[w]) idle += " " + std::to_string(w) + " (lcore " + std::to_string(lcores_[w]) + ")";
    if (idle.empty()) {
      ready_ = true;
      tell_ready(status_line("running"));
      if (watchdog_timeout_.count()) watchdog_.emplace(watchdog_timeout_, polls, now);
      stalls_.emplace(polls, now);
      if (notify_.active())
        std::cout << "natgw: systemd: READY=1 sent to " << notify_.socket()
                  << (watchdog_
                          ? "; watchdog fed every " + std::to_string(watchdog_->interval().count() / 1000) +
                                " ms while every worker polls"
                          : std::string())
                  << std::endl;
    } else if (!said_slow_start_ && now - launched_ > kSlowStart) {
      said_slow_start_ = true;  // READY=1 waits; systemd's start timeout decides
      std::cerr << "natgw: worker(s)" << idle << " not polling 5 s after launch: not telling systemd READY=1"
                << std::endl;
    }
    return;
  }
  if (unsent_ready_) tell_ready(*unsent_ready_);
  check_watchdog(false);
  health_tick();
}

// Every half second from READY=1: which workers still poll; a change in health is logged, with why.
void Daemon::health_tick() {
  const auto now = Clock::now();
  if (!stalls_ || !stalls_->due(now)) return;
  stalls_->check(poll_counts(), now);
  std::vector<std::string> why = health_reasons();
  // A stall's growing idle time is not news: compare without it.
  const auto key = [](std::vector<std::string> v) {
    for (auto& r : v) r = r.substr(0, r.find(" made no progress for "));
    return v;
  };
  if (key(why) == key(said_health_)) return;
  if (why.empty()) {
    std::cerr << "natgw: health: ok again" << std::endl;
  } else {
    std::string all;
    for (const auto& w : why) all += (all.empty() ? "" : "; ") + w;
    std::cerr << "natgw: health: unhealthy: " << all << std::endl;
  }
  said_health_ = std::move(why);
}

std::vector<std::string> Daemon::health_reasons() const {
  control::HealthInput in;
  in.started = ready_;
  in.lcores = lcores_;
  if (stalls_)
    in.stuck = stalls_->stuck();
  else
    in.polls = poll_counts();
  for (size_t i = 0; i < ctx_.ifaces.size(); ++i) {
    control::PortHealth p;
    p.name = ctx_.ifaces[i].name;
    p.dead = dead_ports_.count(p.name) > 0;
    // The link as the driver last saw it, without waiting: on the control thread only (ENA's admin queue).
    rte_eth_link link{};
    if (!p.dead && rte_eth_link_get_nowait(ctx_.ifaces[i].port_id, &link) == 0)
      p.link_up = link.link_status == RTE_ETH_LINK_UP;
    in.ports.push_back(std::move(p));
  }
  return control::health_reasons(in);
}

control::Reply Daemon::health() const {
  const std::vector<std::string> why = health_reasons();
  if (why.empty()) return {true, "ok\n"};
  std::string body;
  for (const auto& w : why) body += w + "\n";
  return {false, body};
}

// `early`: before and after what may block the control thread for seconds (a reload, a port reset),
// so that it has the whole watchdog timeout, not what is left of it since the last feed. Not within
// 100 ms of the previous check: a worker busy with one burst must not look stuck.
void Daemon::check_watchdog(bool early) {
  if (!ready_ || !watchdog_) return;
  const auto now = Clock::now();
  const bool due = early ? now - (watchdog_->next_check() - watchdog_->interval()) >= std::chrono::milliseconds(100)
                         : watchdog_->due(now);
  if (!due) return;
  const control::WorkerWatchdog::Verdict v = watchdog_->check(poll_counts(), now);
  // A port whose reset failed is dead while the workers poll on: systemd's restart probes it afresh.
  if (v.feed && dead_ports_.empty()) notify_.watchdog();
  if (!v.changed) return;
  if (v.stuck.empty()) {
    std::cerr << "natgw: watchdog: every worker is polling again: feeding systemd's watchdog" << std::endl;
    notify_.status(status_line("running"));
    return;
  }
  std::string who;
  for (const auto& s : v.stuck) who += (who.empty() ? "" : ", ") + control::stuck_text(s, lcores_[s.worker]);
  std::cerr << "natgw: watchdog: " << who << ": stuck, not feeding systemd's watchdog (it restarts natgw "
            << watchdog_->timeout().count() / 1000 << " ms after the last feed)" << std::endl;
  notify_.status("stuck: " + who + "; watchdog not fed");
}

// ENA (and other PMDs) may ask for a device reset. Pause the port, wait for an RCU
// grace period so no worker is inside an RX/TX call on it, reset and restart it.
void Daemon::reset_ports() {
  const uint32_t pending = g_reset_pending.exchange(0);
  for (size_t i = 0; i < ctx_.ifaces.size(); ++i) {
    if (!(pending & (1u << i))) continue;
    const uint16_t port = ctx_.ifaces[i].port_id;
    std::cerr << "natgw: " << ctx_.ifaces[i].name << ": the driver requested a reset; resetting\n";
    check_watchdog(true);  // a reset may take seconds: start it with a fresh feed
    pause_port(i);
    try {
      int rc = rte_eth_dev_reset(port);
      if (rc != 0) throw std::runtime_error(std::string("rte_eth_dev_reset: ") + rte_strerror(-rc));
      dp::PortParams pp;
      pp.queues = static_cast<uint16_t>(cfg_.dataplane.workers);
      pp.mtu = cfg_.interfaces[i].mtu;
      dp::start_port(port, pp, pool_, cfg_.interfaces[i].name);
      resume_port(i);
      dead_ports_.erase(ctx_.ifaces[i].name);
      std::cerr << "natgw: " << ctx_.ifaces[i].name << ": reset done\n";
    } catch (const std::exception& e) {
      dead_ports_.insert(ctx_.ifaces[i].name);
      std::cerr << "natgw: " << ctx_.ifaces[i].name << ": reset failed: " << e.what() << "; the port stays paused"
                << (watchdog_ ? ", systemd's watchdog is no longer fed (a restart probes the port afresh)" : "")
                << "\n";
      notify_.status(ctx_.ifaces[i].name + ": reset failed: " + e.what() + "; port paused");
    }
    check_watchdog(true);
  }
}

// A memif client whose server went away (restarted, upgraded) stays down in DPDK 22.11: the PMD
// connects only when the port starts. Once a second, a client port down for two checks running
// (a handshake in progress gets one) is restarted, which connects again if the server is back;
// the workers leave it first, as for a reset.
void Daemon::reconnect_memif_clients() {
  for (size_t i = 0; i < memif_client_down_.size(); ++i) {
    unsigned& down = memif_client_down_[i];
    if (down == ~0u || dead_ports_.count(ctx_.ifaces[i].name)) continue;
    const uint16_t port = ctx_.ifaces[i].port_id;
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(port, &link) == 0 && link.link_status == RTE_ETH_LINK_UP) {
      if (down >= 2) std::cerr << "natgw: " << ctx_.ifaces[i].name << ": memif reconnected\n";
      down = 0;
      continue;
    }
    if (++down < 2) continue;
    if (down == 2)
      std::cerr << "natgw: " << ctx_.ifaces[i].name << ": memif server gone; reconnecting every second\n";
    pause_port(i);
    rte_eth_dev_stop(port);
    // Started again (connected or connecting): polled again. Not started: paused until it is.
    if (rte_eth_dev_start(port) == 0) resume_port(i);
  }
}

control::Reply Daemon::command(const std::string& line) {
  std::istringstream in(line);
  std::string verb, arg;
  in >> verb >> arg;
  if (verb == "stats") {
    const auto s = snap(true);
    return {true, control::format_text(s) + events_.summary(s.events_lost)};
  }
  if (verb == "sessions") return {true, control::format_sessions(ctx_, arg, 1000)};
  if (verb == "routes") return {true, control::format_routes(ctx_)};
  if (verb == "arp") return {true, control::format_arp(ctx_)};
  if (verb == "acl") return {true, control::format_acl(ctx_)};
  if (verb == "metrics")
    return {true, control::render_prometheus(snap(true), ctx_, reload_) + xdp_.prometheus() + events_.prometheus()};
  if (verb == "reload") return reload();
  if (verb == "health") {  // an ERR line "unhealthy", then the reasons: natgwctl exits 1
    control::Reply h = health();
    if (!h.ok) h.body = "unhealthy\n" + h.body.substr(0, h.body.size() - 1);
    return h;
  }
  if (verb == "version") return {true, std::string("natgw ") + NATGW_VERSION + "\n"};
  if (verb == "help" || verb.empty())
    return {true,
            "commands: stats | sessions [ADDR] | routes | arp | acl | metrics | health | reload | version\n"};
  return {false, "unknown command '" + verb + "' (try: help)"};
}

int Daemon::telemetry_stats(const char*, const char*, rte_tel_data* d) {
  control::Snapshot s;
  {
    const std::lock_guard<std::mutex> lock(g_daemon_mutex);
    if (!g_daemon) return -1;  // stopping
    s = g_daemon->snap(false);
  }
  rte_tel_data_start_dict(d);
  for (const auto& i : s.ifaces) {
    rte_tel_data_add_dict_u64(d, (i.name + ".rx_packets").c_str(), i.rx_packets);
    rte_tel_data_add_dict_u64(d, (i.name + ".tx_packets").c_str(), i.tx_packets);
    rte_tel_data_add_dict_u64(d, (i.name + ".rx_bytes").c_str(), i.rx_bytes);
    rte_tel_data_add_dict_u64(d, (i.name + ".tx_bytes").c_str(), i.tx_bytes);
  }
  rte_tel_data_add_dict_u64(d, "forwarded", s.forwarded);
  rte_tel_data_add_dict_u64(d, "in2out", s.in2out);
  rte_tel_data_add_dict_u64(d, "out2in", s.out2in);
  for (int p = 0; p < nat::kProtoClasses; ++p) {
    const char* proto = nat::proto_class_name(p);
    rte_tel_data_add_dict_u64(d, (std::string("sessions_active.") + proto).c_str(), s.sessions_active[p]);
    rte_tel_data_add_dict_u64(d, (std::string("sessions_created.") + proto).c_str(), s.sessions_created[p]);
    rte_tel_data_add_dict_u64(d, (std::string("sessions_expired.") + proto).c_str(), s.sessions_expired[p]);
  }
  rte_tel_data_add_dict_u64(d, "port_allocation_errors", s.port_alloc_errors);
  rte_tel_data_add_dict_u64(d, "mapping_collisions", s.mapping_collisions);
  for (unsigned r = 0; r < dp::kDropCount; ++r)
    rte_tel_data_add_dict_u64(d, (std::string("drops.") + dp::drop_name(r)).c_str(), s.drops[r]);
  rte_tel_data_add_dict_u64(d, "config_generation", s.generation);
  return 0;
}

void Daemon::register_telemetry() {
  {
    const std::lock_guard<std::mutex> lock(g_daemon_mutex);
    g_daemon = this;
  }
  rte_telemetry_register_cmd("/natgw/stats", telemetry_stats,
                             "natgw counters: per-interface packets/bytes, NAT paths, sessions, drops");
}

int Daemon::run(const char* argv0) {
  if (!init_eal(argv0)) return 1;
  int rc = 0;
  std::vector<uint16_t> started;
  try {
    // The control socket first: a second natgw on the same socket stops here, before
    // it touches the ports. Without it (or without the metrics asked for) natgw could
    // not be controlled or watched: refuse to run.
    server_.listen_unix(cfg_.control.socket);
    if (!cfg_.metrics.listen.empty()) server_.listen_http(cfg_.metrics.listen);
    dp::init_context(ctx_, cfg_);
    uint16_t max_mtu = 0;
    for (size_t i = 0; i < cfg_.interfaces.size(); ++i) {
      const uint16_t port = dp::probe_port(XdpHooks::device(cfg_.interfaces[i]));
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
    for (size_t i = 0; i < ctx_.ifaces.size(); ++i)
      rte_eth_dev_callback_register(ctx_.ifaces[i].port_id, RTE_ETH_EVENT_INTR_RESET, on_reset_event,
                                    &ctx_);
    dp::init_sessions(ctx_, static_cast<int>(rte_socket_id()));
    if (!ctx_.sessions.empty()) {
      const nat::SessionTable& st = *ctx_.sessions[0];
      std::cout << "natgw: sessions: " << ctx_.sessions.size() << " table(s) of " << st.capacity() << " slots, "
                << (st.memory_bytes() + (1u << 19)) / (1u << 20) << " MB each ("
                << (st.in_hugepages()            ? "hugepages"
                    : rte_eal_has_hugepages() ? "ordinary memory: no room left in the EAL's hugepages"
                                              : "ordinary memory: the EAL runs without hugepages")
                << ")"
                << std::endl;
    }
    dp::publish_tables(ctx_, dp::build_tables(ctx_, cfg_, generation_++));
    xdp_.configure(cfg_, ctx_.outside);
    events_.configure(cfg_.nat_events);
    set_event_rings();
  } catch (const std::exception& e) {
    std::cerr << "natgw: " << e.what() << "\n";
    notify_.status(std::string("failed to start: ") + e.what());
    xdp_.disable();
    for (uint16_t p : started) dp::stop_port(p);
    xdp_.remove();
    // Free what DPDK memory holds (session tables, rings) while EAL is still up: ~Context would
    // otherwise touch it after rte_eal_cleanup and crash instead of exiting 1.
    dp::destroy_context(ctx_);
    rte_mempool_free(pool_);
    pool_ = nullptr;
    rte_eal_cleanup();
    return 1;
  }

  arm_unmap_guard(ctx_.qsbr);  // a memif peer leaving must not unmap a ring under a worker
  // The configured device string: XdpHooks::device() would detach the natgw_steer just attached.
  for (const auto& itf : cfg_.interfaces)
    memif_client_down_.push_back(dp::is_memif_client(itf.device) ? 0u : ~0u);
  for (uint16_t w = 0; w < cfg_.dataplane.workers; ++w)
    workers_.push_back(std::make_unique<dp::Worker>(ctx_, w, pool_));
  slots_.resize(workers_.size());
  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  for (size_t w = 0; w < workers_.size(); ++w, lcore = rte_get_next_lcore(lcore, 1, 0)) {
    slots_[w].worker = workers_[w].get();
    rte_eal_remote_launch(worker_main, &slots_[w], lcore);
    lcores_.push_back(lcore);
  }
  launched_ = Clock::now();
  reload_.generation = generation_ - 1;
  register_telemetry();
  std::cout << "natgw: running: " << summary(cfg_) << std::endl;
  for (size_t i = 0; i < ctx_.ifaces.size(); ++i) {
    char mac[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(mac, sizeof(mac), &ctx_.ifaces[i].mac);
    std::cout << "  " << ctx_.ifaces[i].name << ": port " << ctx_.ifaces[i].port_id << " "
              << config::format_ipv4(cfg_.interfaces[i].addr) << "/"
              << int(cfg_.interfaces[i].prefix_len) << " mac " << mac << " mtu "
              << ctx_.ifaces[i].mtu << " (" << cfg_.interfaces[i].device << ")" << std::endl;
  }

  const auto on_command = [this](const std::string& l) { return command(l); };
  const auto on_metrics = [this] {
    return control::render_prometheus(snap(true), ctx_, reload_) + xdp_.prometheus() + events_.prometheus();
  };
  const auto on_health = [this] { return health(); };
  uint64_t last_timer = rte_get_timer_cycles();
  while (!g_stop) {
    server_.poll_once(loop_timeout_ms(), on_command, on_metrics, on_health);
    drain_events();
    systemd_tick();
    // ENA's keep-alive watchdog is an rte_timer armed on this lcore.
    if (rte_get_timer_cycles() - last_timer > rte_get_timer_hz()) {
      last_timer = rte_get_timer_cycles();
      rte_timer_manage();
      reconnect_memif_clients();
    }
    if (g_reset_pending.load()) reset_ports();
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
  notify_.stopping("stopping");
  xdp_.disable();  // the host keeps its traffic while natgw winds down
  ctx_.stop.store(true);
  rte_eal_mp_wait_lcore();
  disarm_unmap_guard();
  if (const uint64_t n = unmap_guard_waits())
    std::cout << "natgw: " << n
              << " unmap(s) by the interrupt thread waited for the workers (a memif peer left)" << std::endl;
  // What the workers logged last, then the end of every session still open (its last packet):
  // without it an outside port reused after a restart would seem still held by its old owner.
  drain_events(true);
  if (events_.enabled()) {
    const int64_t wall = wall_ms();
    const uint32_t now = ctx_.clock_ms(rte_get_tsc_cycles());
    for (const auto& t : ctx_.sessions)
      t->for_each_translated([&](const nat::Session& ss) {
        events_.log(t->event_of(nat::NatEventKind::kDelete, ss), wall, now);
      });
    drain_events(true);  // flushes
  }
  std::cout << "natgw: final counters\n" << control::format_text(snap(true)) << std::flush;
  {
    const std::lock_guard<std::mutex> lock(g_daemon_mutex);  // telemetry stays up until rte_eal_cleanup
    g_daemon = nullptr;
  }
  workers_.clear();  // frees held packets before the ports go
  for (uint16_t p : started) dp::stop_port(p);
  xdp_.remove();
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
    } else if (a == "--config" || a == "-c") {
      std::cerr << "natgw: " << a << " needs a config file\n";
      return usage(argv[0], 2);
    } else {
      std::cerr << "natgw: unknown argument '" << a << "'\n";
      return usage(argv[0], 2);
    }
  }
  if (config_path.empty()) return usage(argv[0], 2);

  const auto r = config::load_file(config_path);
  if (!report(r)) return 2;
  if (const std::string why = refuse_unimplemented(*r.config) + refuse_at_startup(*r.config); !why.empty()) {
    std::cerr << why;
    return 2;
  }
  if (check_only) {
    std::cout << config_path << ": OK: " << summary(*r.config) << "\n";
    return 0;
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGHUP, on_signal);
  std::signal(SIGUSR1, on_signal);
  std::signal(SIGPIPE, SIG_IGN);
  // systemd's environment, read while natgw is still one thread (getenv races with a setenv elsewhere).
  control::SystemdNotifier notify = control::SystemdNotifier::from_env();
  std::chrono::microseconds watchdog = control::watchdog_timeout_from_env(::getpid());
  if (watchdog.count() && !notify.active()) {
    std::cerr << "natgw: WATCHDOG_USEC is set but there is no usable NOTIFY_SOCKET: no watchdog\n";
    watchdog = {};
  }
  Daemon d(*r.config, std::move(notify), watchdog);
  return d.run(argv[0]);
}
