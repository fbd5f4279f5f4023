#include "acl/acl_table.hpp"

namespace natgw::acl {

namespace {
uint32_t mask_of(uint8_t len) { return len ? ~0u << (32 - len) : 0; }
}  // namespace

AclTable::AclTable(const config::Config& cfg)
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
}

}  // namespace natgw::acl
