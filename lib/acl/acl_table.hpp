// Ordered first-match ACL (allow/deny on prefixes, protocol and port ranges).
//
// ACLs are stateful (design §7): they judge the first packet of a flow, so the
// classifier runs on the session-creation path, not per established packet. For
// the rule counts operators write (tens to a few thousand) a linear scan over a
// compact array is what we use; perf/ measures it against the rule count.
#pragma once

#include <rte_byteorder.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.hpp"

namespace natgw::acl {

struct Rule {  // host byte order, masks precomputed
  uint32_t src, src_mask, dst, dst_mask;
  uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
  uint8_t proto;  // 0 = any
  bool allow;
};

class AclTable {
 public:
  explicit AclTable(const config::Config& cfg);

  // Returns true if the flow is allowed. Ports in host order (0 when the protocol has none).
  // Counts the hit on the matching rule (or the default).
  bool allow(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport, uint16_t dport) const {
    for (size_t i = 0; i < rules_.size(); ++i) {
      const Rule& r = rules_[i];
      if ((src & r.src_mask) != r.src || (dst & r.dst_mask) != r.dst) continue;
      if (r.proto && r.proto != proto) continue;
      if (sport < r.sport_lo || sport > r.sport_hi || dport < r.dport_lo || dport > r.dport_hi)
        continue;
      hits_[i].fetch_add(1, std::memory_order_relaxed);
      return r.allow;
    }
    hits_[rules_.size()].fetch_add(1, std::memory_order_relaxed);
    return default_allow_;
  }
  bool empty() const { return rules_.empty() && default_allow_; }
  size_t size() const { return rules_.size(); }
  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<config::AclRule>& source_rules() const { return source_; }
  bool default_allow() const { return default_allow_; }
  // hits(i) for rule i; hits(size()) for the default action.
  uint64_t hits(size_t i) const { return hits_[i].load(std::memory_order_relaxed); }

 private:
  std::vector<Rule> rules_;
  std::vector<config::AclRule> source_;
  bool default_allow_;
  std::unique_ptr<std::atomic<uint64_t>[]> hits_;
};

}  // namespace natgw::acl
