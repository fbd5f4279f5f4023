// Renderings of the running state for natgwctl and Prometheus (control thread only).
#pragma once

#include <cstdint>
#include <string>

#include "control/stats.hpp"
#include "dataplane/context.hpp"

namespace natgw::control {

struct ReloadStatus {
  uint64_t generation = 0;
  bool last_ok = true;
  double last_time = 0;  // unix seconds of the last reload attempt (0 = never)
  std::string last_error;
};

// "a.b.c.d:port" from network-order fields.
std::string format_endpoint(rte_be32_t addr, rte_be16_t port);

// Prometheus text exposition (format 0.0.4).
std::string render_prometheus(const Snapshot& s, const dp::Context& ctx, const ReloadStatus& r);

// `natgwctl sessions [ADDR]`: active sessions, optionally those whose inside,
// outside or remote address is ADDR. At most `limit` lines.
std::string format_sessions(const dp::Context& ctx, const std::string& filter, size_t limit);
std::string format_routes(const dp::Context& ctx);
std::string format_arp(const dp::Context& ctx);
std::string format_acl(const dp::Context& ctx);

}  // namespace natgw::control
