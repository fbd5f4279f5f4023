#include "route/route_table.hpp"

#include <rte_errno.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <stdexcept>

namespace natgw::route {

namespace {
std::atomic<uint32_t> g_lpm_seq{0};
}

std::unique_ptr<RouteTable> RouteTable::build(const config::Config& cfg) {
  std::unique_ptr<RouteTable> t(new RouteTable());
  // An explicit route for a connected prefix replaces it (validation allows that only
  // on the same link without a gateway); among explicit routes it rejected duplicates.
  std::map<std::pair<uint32_t, uint8_t>, RouteEntry> by_prefix;
  for (size_t i = 0; i < cfg.interfaces.size(); ++i) {
    const config::Prefix p = config::subnet_of(cfg.interfaces[i]);
    by_prefix[{p.addr, p.len}] = RouteEntry{p, NextHop{static_cast<uint16_t>(i), 0}, true};
  }
  for (const auto& r : cfg.routes) {
    NextHop nh{static_cast<uint16_t>(r.interface_index), rte_cpu_to_be_32(r.via)};
    for (const auto& p : r.prefixes) by_prefix[{p.addr, p.len}] = RouteEntry{p, nh, false};
  }

  uint32_t deep = 0;  // prefixes longer than /24 need tbl8 groups
  for (const auto& [k, e] : by_prefix) {
    t->entries_.push_back(e);
    if (e.prefix.len > 24) ++deep;
    auto it = std::find(t->nexthops_.begin(), t->nexthops_.end(), e.nh);
    if (it == t->nexthops_.end()) t->nexthops_.push_back(e.nh);
  }

  rte_lpm_config lc{};
  lc.max_rules = static_cast<uint32_t>(std::max<size_t>(64, t->entries_.size() * 2));
  lc.number_tbl8s = std::min<uint32_t>(1u << 16, std::max<uint32_t>(256, deep + 256));
  const std::string name = "natgw_lpm" + std::to_string(g_lpm_seq.fetch_add(1));
  t->lpm_ = rte_lpm_create(name.c_str(), SOCKET_ID_ANY, &lc);
  if (!t->lpm_)
    throw std::runtime_error("rte_lpm_create failed: " + std::string(rte_strerror(rte_errno)));
  for (const auto& e : t->entries_) {
    const auto idx = static_cast<uint32_t>(
        std::find(t->nexthops_.begin(), t->nexthops_.end(), e.nh) - t->nexthops_.begin());
    if (e.prefix.len == 0) {
      t->default_ = static_cast<int32_t>(idx);
      continue;
    }
    const int rc = rte_lpm_add(t->lpm_, e.prefix.addr, e.prefix.len, idx);
    if (rc != 0)
      throw std::runtime_error("rte_lpm_add " + config::format_prefix(e.prefix) +
                               " failed: " + std::string(rte_strerror(-rc)));
  }
  return t;
}

RouteTable::~RouteTable() {
  if (lpm_) rte_lpm_free(lpm_);
}

void RouteTable::lookup_bulk(const uint32_t* dst_host, int32_t* nh_idx, unsigned n) const {
  uint32_t hops[64];
  for (unsigned off = 0; off < n; off += 64) {
    const unsigned k = std::min(64u, n - off);
    rte_lpm_lookup_bulk(lpm_, dst_host + off, hops, k);
    for (unsigned i = 0; i < k; ++i)
      nh_idx[off + i] = (hops[i] & RTE_LPM_LOOKUP_SUCCESS)
                            ? static_cast<int32_t>(hops[i] & 0x00ffffff) : default_;
  }
}

}  // namespace natgw::route
