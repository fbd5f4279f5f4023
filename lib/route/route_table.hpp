// Next-hop selection by longest-prefix match (rte_lpm).
//
// Built on the control thread from the config (explicit routes, prefix lists and
// the connected subnet of every interface), then published read-only to workers.
#pragma once

#include <rte_byteorder.h>
#include <rte_lpm.h>
#include <rte_prefetch.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace natgw::route {

struct NextHop {
  uint16_t iface = 0;      // index into the interface list (config order)
  rte_be32_t gateway = 0;  // 0 = on-link: resolve the destination itself
  bool operator==(const NextHop&) const = default;
};

struct RouteEntry {  // for display (natgwctl routes)
  config::Prefix prefix;
  NextHop nh;
  bool connected = false;
};

class RouteTable {
 public:
  // Throws std::runtime_error with a reason (e.g. rte_lpm could not be created).
  static std::unique_ptr<RouteTable> build(const config::Config& cfg);
  ~RouteTable();
  RouteTable(const RouteTable&) = delete;
  RouteTable& operator=(const RouteTable&) = delete;

  // Hot path. dst in network byte order.
  bool lookup(rte_be32_t dst, NextHop& nh) const {
    uint32_t idx;
    if (rte_lpm_lookup(lpm_, rte_be_to_cpu_32(dst), &idx) != 0) {
      if (default_ < 0) return false;  // rte_lpm has no /0: the default route lives here
      idx = static_cast<uint32_t>(default_);
    }
    nh = nexthops_[idx];
    return true;
  }
  // Start the cache miss a lookup of dst will take: tbl24 is 64 MB, so a random
  // destination misses even with a handful of routes (the first packets of new flows).
  void prefetch(rte_be32_t dst) const { rte_prefetch0(&lpm_->tbl24[rte_be_to_cpu_32(dst) >> 8]); }
  // Bulk form for a burst (up to 64). Returns per-packet next-hop index or -1.
  void lookup_bulk(const uint32_t* dst_host, int32_t* nh_idx, unsigned n) const;
  const NextHop& nexthop(uint32_t idx) const { return nexthops_[idx]; }

  const std::vector<RouteEntry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }

 private:
  RouteTable() = default;
  rte_lpm* lpm_ = nullptr;
  int32_t default_ = -1;  // next-hop index of 0.0.0.0/0, if any
  std::vector<NextHop> nexthops_;
  std::vector<RouteEntry> entries_;
};

}  // namespace natgw::route
