// A whole natgw pipeline in one test process: config text -> context, tables,
// session tables and one Worker with captured TX and a manual clock. Frames go in
// through Worker::process exactly as a poll loop would hand them over.
#pragma once

#include <gtest/gtest.h>
#include <rte_rcu_qsbr.h>

#include <memory>
#include <string>
#include <vector>

#include "common/eal_env.hpp"
#include "common/packet_builder.hpp"
#include "config/config.hpp"
#include "dataplane/context.hpp"
#include "dataplane/worker.hpp"

namespace natgw::test {

// The lab addressing (design §5): inside, endpoint, internet.
inline const char* kLabConfig = R"(
[dataplane]
workers = 1
[[interface]]
name = "inside"
device = "net_null0"
address = "10.0.1.10/24"
[[interface]]
name = "endpoint"
device = "net_null1"
address = "10.0.2.10/24"
[[interface]]
name = "internet"
device = "net_null2"
address = "10.0.3.10/24"
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.3.1"
interface = "internet"
[[route]]
prefix = "198.51.100.0/24"
via = "10.0.2.1"
interface = "endpoint"
[[snat]]
from = ["192.168.0.0/16"]
)";

inline rte_ether_addr mac(uint8_t last) { return rte_ether_addr{{0x02, 0, 0, 0, 0, last}}; }

class Pipeline {
 public:
  // MACs: our interface i has 02:00:00:00:00:1i; neighbours are learnt via ARP helpers.
  explicit Pipeline(const std::string& toml, uint16_t workers = 1) {
    pool = eal_pool();
    auto r = config::load_string(toml, "test.toml");
    if (!r.ok()) {
      for (auto& e : r.errors) ADD_FAILURE() << e.str();
      throw std::runtime_error("bad test config");
    }
    cfg = *r.config;
    cfg.dataplane.workers = workers;
    if (cfg.nat.max_sessions > (1u << 16)) cfg.nat.max_sessions = 1u << 16;
    dp::init_context(ctx, cfg);
    for (size_t i = 0; i < ctx.ifaces.size(); ++i) {
      ctx.ifaces[i].port_id = static_cast<uint16_t>(i);
      ctx.port_to_iface[i] = static_cast<uint8_t>(i);
      ctx.ifaces[i].mac = mac(static_cast<uint8_t>(0x10 + i));
    }
    dp::init_sessions(ctx, SOCKET_ID_ANY);
    dp::publish_tables(ctx, dp::build_tables(ctx, cfg, 1));
    for (uint16_t w = 0; w < workers; ++w) {
      auto wk = std::make_unique<dp::Worker>(ctx, w, pool);
      wk->capture_tx(true);
      wk->set_clock_ms(1000);
      rte_rcu_qsbr_thread_register(ctx.qsbr, w);
      rte_rcu_qsbr_thread_online(ctx.qsbr, w);
      this->workers.push_back(std::move(wk));
    }
  }
  ~Pipeline() {
    for (uint16_t w = 0; w < workers.size(); ++w) {
      rte_rcu_qsbr_thread_offline(ctx.qsbr, w);
      rte_rcu_qsbr_thread_unregister(ctx.qsbr, w);
    }
    workers.clear();
    dp::destroy_context(ctx);
  }

  dp::Worker& worker(uint16_t w = 0) { return *workers[w]; }

  // Feed frames arriving on `iface` to worker `w`; returns nothing, read outputs with out().
  void rx(uint16_t iface, const std::vector<std::vector<uint8_t>>& frames, uint16_t w = 0) {
    std::vector<rte_mbuf*> ms;
    for (auto& f : frames)
      if (rte_mbuf* m = to_mbuf(pool, f)) ms.push_back(m);
    workers[w]->process(iface, ms.data(), static_cast<uint16_t>(ms.size()));
    workers[w]->flush();
    // Let the owning workers process what was handed over (new flows, fragments),
    // as their poll loops would, until no worker has anything left (a bounded
    // number of rounds: a packet handed back and forth forever stays unprocessed).
    for (int round = 0; round < 8; ++round) {
      unsigned n = 0;
      for (auto& wk : workers) {
        if (ctx.workers > 1) n += wk->drain_handoff();
        wk->flush();
      }
      if (n == 0) break;
    }
  }
  void rx(uint16_t iface, const std::vector<uint8_t>& frame, uint16_t w = 0) {
    rx(iface, std::vector<std::vector<uint8_t>>{frame}, w);
  }
  // Frames transmitted on `iface` since the last call (all workers), as bytes.
  std::vector<std::vector<uint8_t>> out(uint16_t iface) {
    std::vector<std::vector<uint8_t>> r;
    for (auto& w : workers)
      for (rte_mbuf* m : w->take_captured(iface)) {
        r.push_back(bytes_of(m));
        rte_pktmbuf_free(m);
      }
    return r;
  }
  // Pre-load a neighbour (what an ARP reply would teach).
  void neighbour(uint16_t iface, const char* addr, uint8_t mac_last) {
    ctx.arp.update(ip(addr), iface, mac(mac_last), 0);
  }
  // Advance every worker's clock and run housekeeping (expiry, reclaim).
  void advance(uint32_t ms) {
    for (auto& w : workers) {
      w->set_clock_ms(w->now_ms() + ms);
      w->housekeeping();
      rte_rcu_qsbr_quiescent(ctx.qsbr, w->id());
      w->housekeeping();
    }
  }
  // Drain expiry fully (the scan is incremental).
  void expire_all() {
    for (int i = 0; i < 2048; ++i)
      for (auto& w : workers) {
        w->housekeeping();
        rte_rcu_qsbr_quiescent(ctx.qsbr, w->id());
      }
  }

  rte_mempool* pool;
  config::Config cfg;
  dp::Context ctx;
  std::vector<std::unique_ptr<dp::Worker>> workers;
};

}  // namespace natgw::test
