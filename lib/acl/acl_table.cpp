#include "acl/acl_table.hpp"

#include <rte_acl.h>
#include <rte_errno.h>
#include <rte_memory.h>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace natgw::acl {

namespace {
uint32_t mask_of(uint8_t len) { return len ? ~0u << (32 - len) : 0; }

// The classify key, laid out as rte_acl reads it: the first field is one byte on its
// own, then 4-byte input groups (src, dst, both ports). Network byte order, as in a
// packet header; rule values are host order (DPDK's l3fwd-acl convention).
struct Key {
  uint8_t proto;
  uint8_t pad[3];
  uint32_t src, dst;
  uint16_t sport, dport;
};
static_assert(sizeof(Key) == 16);

enum { kProto, kSrc, kDst, kSport, kDport, kFields };
RTE_ACL_RULE_DEF(AclRule5, kFields);

rte_acl_config field_layout() {
  rte_acl_config c{};
  c.num_categories = 1;
  c.num_fields = kFields;
  c.defs[kProto] = {RTE_ACL_FIELD_TYPE_BITMASK, sizeof(uint8_t), kProto, 0, offsetof(Key, proto)};
  c.defs[kSrc] = {RTE_ACL_FIELD_TYPE_MASK, sizeof(uint32_t), kSrc, 1, offsetof(Key, src)};
  c.defs[kDst] = {RTE_ACL_FIELD_TYPE_MASK, sizeof(uint32_t), kDst, 2, offsetof(Key, dst)};
  c.defs[kSport] = {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint16_t), kSport, 3, offsetof(Key, sport)};
  c.defs[kDport] = {RTE_ACL_FIELD_TYPE_RANGE, sizeof(uint16_t), kDport, 3, offsetof(Key, dport)};
  return c;
}

[[noreturn]] void fail(const char* what, int err) {
  throw std::runtime_error(std::string("ACL: ") + what + ": " + rte_strerror(err < 0 ? -err : err));
}

// Compiles rules (first match wins) into a new rte_acl context; userdata = index + 1.
rte_acl_ctx* build_ctx(const std::vector<Rule>& rules) {
  static std::atomic<uint64_t> seq{0};  // context names must be unique while both live (reload)
  const std::string name = "natgw_acl_" + std::to_string(seq.fetch_add(1));
  rte_acl_param p{};
  p.name = name.c_str();
  p.socket_id = SOCKET_ID_ANY;
  p.rule_size = RTE_ACL_RULE_SZ(kFields);
  p.max_rule_num = static_cast<uint32_t>(rules.size());
  rte_acl_ctx* ctx = rte_acl_create(&p);
  if (!ctx) fail("cannot create the rte_acl context", rte_errno);
  std::vector<AclRule5> v(rules.size());
  const uint32_t n = static_cast<uint32_t>(rules.size());
  for (uint32_t i = 0; i < n; ++i) {
    const Rule& r = rules[i];
    AclRule5& a = v[i];
    a.data.category_mask = 1;
    a.data.priority = static_cast<int32_t>(n - i);  // highest for the first rule
    a.data.userdata = i + 1;                         // 0 is "no match"
    a.field[kProto].value.u8 = r.proto;
    a.field[kProto].mask_range.u8 = r.proto ? 0xff : 0;
    a.field[kSrc].value.u32 = r.src;
    a.field[kSrc].mask_range.u32 = static_cast<uint32_t>(__builtin_popcount(r.src_mask));  // prefix length
    a.field[kDst].value.u32 = r.dst;
    a.field[kDst].mask_range.u32 = static_cast<uint32_t>(__builtin_popcount(r.dst_mask));
    a.field[kSport].value.u16 = r.sport_lo;
    a.field[kSport].mask_range.u16 = r.sport_hi;
    a.field[kDport].value.u16 = r.dport_lo;
    a.field[kDport].mask_range.u16 = r.dport_hi;
  }
  int rc = rte_acl_add_rules(ctx, reinterpret_cast<const rte_acl_rule*>(v.data()), n);
  if (rc == 0) {
    const rte_acl_config cfg = field_layout();
    rc = rte_acl_build(ctx, &cfg);
  }
  // One key per call (flows are judged one at a time): the scalar walk beats the SIMD
  // paths, whose setup is amortised over 4-16 keys (perf/micro acl/crossover).
  if (rc == 0) rc = rte_acl_set_ctx_classify(ctx, RTE_ACL_CLASSIFY_SCALAR);
  if (rc != 0) {
    rte_acl_free(ctx);
    fail("cannot build the rte_acl context", rc);
  }
  return ctx;
}
}  // namespace

AclTable::AclTable(const config::Config& cfg, Classifier how)
    : source_(cfg.acl),
      default_allow_(cfg.acl_default_allow),
      hits_(new std::atomic<uint64_t>[cfg.acl.size() + 1]) {
  for (size_t i = 0; i <= cfg.acl.size(); ++i) hits_[i].store(0);
  for (const auto& a : cfg.acl) {
    Rule r{};
    if (a.src) {
      r.src_mask = mask_of(a.src->len);
      r.src = a.src->addr & r.src_mask;
    }
    if (a.dst) {
      r.dst_mask = mask_of(a.dst->len);
      r.dst = a.dst->addr & r.dst_mask;
    }
    r.proto = a.proto;
    r.sport_lo = a.sport.lo;
    r.sport_hi = a.sport.hi;
    r.dport_lo = a.dport.lo;
    r.dport_hi = a.dport.hi;
    r.allow = a.allow;
    rules_.push_back(r);
  }
  const bool use_acl = how == Classifier::kRteAcl || (how == Classifier::kAuto && rules_.size() > kLinearMaxRules);
  if (use_acl && !rules_.empty()) ctx_ = build_ctx(rules_);
}

AclTable::~AclTable() { rte_acl_free(ctx_); }

size_t AclTable::classify(uint32_t src, uint32_t dst, uint8_t proto, uint16_t sport,
                          uint16_t dport) const noexcept {
  Key k{};
  k.proto = proto;
  k.src = rte_cpu_to_be_32(src);
  k.dst = rte_cpu_to_be_32(dst);
  k.sport = rte_cpu_to_be_16(sport);
  k.dport = rte_cpu_to_be_16(dport);
  const uint8_t* data = reinterpret_cast<const uint8_t*>(&k);
  uint32_t result = 0;
  if (rte_acl_classify(ctx_, &data, &result, 1, 1) != 0 || result == 0) return rules_.size();
  return result - 1;
}

void AclTable::carry_hits_from(const AclTable& old) noexcept {
  const auto same = [](const config::AclRule& a, const config::AclRule& b) {
    return a.allow == b.allow && a.src == b.src && a.dst == b.dst && a.proto == b.proto && a.sport == b.sport &&
           a.dport == b.dport;
  };
  for (size_t i = 0; i < std::min(size(), old.size()); ++i)
    if (same(source_[i], old.source_[i])) hits_[i].fetch_add(old.hits(i), std::memory_order_relaxed);
  if (default_allow_ == old.default_allow_)
    hits_[size()].fetch_add(old.hits(old.size()), std::memory_order_relaxed);
}

}  // namespace natgw::acl
