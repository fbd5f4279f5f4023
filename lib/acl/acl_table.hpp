// Ordered first-match ACL (allow/deny on prefixes, protocol and port ranges).
//
// ACLs are stateful (design §7): they judge the first packet of a flow, so the
// classifier runs on the session-creation path, not per established packet. Small
// tables are a linear scan over a compact array; above kLinearMaxRules the rules are
// compiled into a DPDK rte_acl trie on the control thread (construction), whose cost
// hardly depends on the rule count (perf/RESULTS.md, "ACL: rte_acl above 32 rules").
#pragma once

#include <rte_byteorder.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "config/config.hpp"

struct rte_acl_ctx;

namespace natgw::acl {

struct Rule {  // host byte order, masks precomputed
  uint32_t src, src_mask, dst, dst_mask;
  uint16_t sport_lo, sport_hi, dport_lo, dport_hi;
  uint8_t proto;  // 0 = any
  bool allow;
};

// kAuto: linear up to kLinearMaxRules rules, rte_acl above. The others force one
// classifier (tests compare them; benchmarks measure where they cross).
enum class Classifier { kAuto, kLinear, kRteAcl };

class AclTable {
 public:
  // perf/micro acl/crossover: a single-key rte_acl walk costs 70-150 ns whatever the rule
  // count; a full scan costs ~1 ns per rule and passes it between 32 (35 ns) and 64 (96 ns).
  static constexpr size_t kLinearMaxRules = 32;

  // Builds the rte_acl context when the rule count calls for it (needs the EAL then);
  // throws std::runtime_error if DPDK cannot create or build it.
  explicit AclTable(const config::Config& cfg, Classifier how = Classifier::kAuto);
  ~AclTable();
  AclTable(const AclTable&) = delete;
  AclTable& operator=(const AclTable&) = delete;

  // Returns true if the flow is allowed. Ports in host order (0 when the protocol has none).
  // Counts the hit on the matching rule (or the default). No allocation, no exceptions.
  bool allow(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport, uint16_t dport) const noexcept {
    const size_t i = ctx_ ? classify(src, dst, proto, sport, dport) : scan(src, dst, proto, sport, dport);
    hits_[i].fetch_add(1, std::memory_order_relaxed);
    return i < rules_.size() ? rules_[i].allow : default_allow_;
  }
  bool empty() const { return rules_.empty() && default_allow_; }
  size_t size() const { return rules_.size(); }
  const std::vector<Rule>& rules() const { return rules_; }
  const std::vector<config::AclRule>& source_rules() const { return source_; }
  bool default_allow() const { return default_allow_; }
  // hits(i) for rule i; hits(size()) for the default action.
  uint64_t hits(size_t i) const { return hits_[i].load(std::memory_order_relaxed); }
  // After a reload: add `old`'s hits to each rule that is the same rule at the same
  // index (and to the default action if it is unchanged), so a counter series, whose
  // labels are index, action and match, never goes backwards. Call once `old` is no
  // longer used by any worker (after the grace period). Workers may be counting here.
  void carry_hits_from(const AclTable& old) noexcept;
  // True when allow() classifies with rte_acl rather than the linear scan.
  bool uses_rte_acl() const { return ctx_ != nullptr; }

 private:
  // Index of the first matching rule, size() when none matches.
  size_t scan(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport, uint16_t dport) const noexcept {
    for (size_t i = 0; i < rules_.size(); ++i) {
      const Rule& r = rules_[i];
      if ((src & r.src_mask) != r.src || (dst & r.dst_mask) != r.dst) continue;
      if (r.proto && r.proto != proto) continue;
      if (sport < r.sport_lo || sport > r.sport_hi || dport < r.dport_lo || dport > r.dport_hi)
        continue;
      return i;
    }
    return rules_.size();
  }
  // The same through rte_acl (acl_table.cpp).
  size_t classify(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport, uint16_t dport) const noexcept;

  std::vector<Rule> rules_;
  std::vector<config::AclRule> source_;
  bool default_allow_;
  std::unique_ptr<std::atomic<uint64_t>[]> hits_;
  rte_acl_ctx* ctx_ = nullptr;  // freed by the destructor (after the reload's RCU grace period)
};

}  // namespace natgw::acl
