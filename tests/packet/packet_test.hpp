// Shared pieces of the whole-pipeline tests: the lab's interfaces and neighbours,
// frames from a client behind the TGW and from remote hosts, the expected result
// of a translation computed from scratch, and counters summed over workers.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/pipeline.hpp"

namespace natgw::test {

constexpr uint16_t kInside = 0, kEndpoint = 1, kInternet = 2;
// Neighbour MACs: the TGW on the inside, the endpoint subnet's router, the internet gateway.
constexpr uint8_t kTgwMac = 0x01, kEndpointGwMac = 0x21, kInternetGwMac = 0x31;
inline rte_ether_addr our_mac(uint16_t iface) { return mac(static_cast<uint8_t>(0x10 + iface)); }

// `base` with the first occurrence of `from` replaced by `to` (fails the test if absent).
inline std::string with(std::string base, const std::string& from, const std::string& to) {
  const size_t at = base.find(from);
  if (at == std::string::npos) {
    ADD_FAILURE() << "config text has no '" << from << "'";
    return base;
  }
  base.replace(at, from.size(), to);
  return base;
}

// The lab without NAT (config/lab-forward.toml's shape): routes only, with a
// route back to the clients instead of the SNAT rule.
inline const std::string kForwardConfig =
    with(kLabConfig, "[[snat]]\nfrom = [\"192.168.0.0/16\"]\n",
         "[[route]]\nprefix = \"192.168.0.0/16\"\nvia = \"10.0.1.1\"\ninterface = \"inside\"\n");

// Neighbours already resolved (as if ARP had run), so tests see frames, not ARP.
inline void lab_neighbours(Pipeline& p) {
  p.neighbour(kInternet, "10.0.3.1", kInternetGwMac);
  p.neighbour(kEndpoint, "10.0.2.1", kEndpointGwMac);
  p.neighbour(kInside, "10.0.1.1", kTgwMac);
}

inline std::vector<std::vector<uint8_t>> only(std::vector<std::vector<uint8_t>> v, uint16_t et) {
  std::erase_if(v, [et](const auto& f) { return parse_frame(f).ether_type != et; });
  return v;
}
inline std::vector<std::vector<uint8_t>> ipv4_only(std::vector<std::vector<uint8_t>> v) {
  return only(std::move(v), RTE_ETHER_TYPE_IPV4);
}

// A frame from an on-prem client, arriving on the inside interface from the TGW.
inline PacketSpec client(uint8_t proto, const char* dst, uint16_t sport, uint16_t dport,
                         const char* src = "192.168.10.2") {
  PacketSpec s;
  s.src_mac = mac(kTgwMac);
  s.dst_mac = our_mac(kInside);
  s.src = ip(src);
  s.dst = ip(dst);
  s.proto = proto;
  s.sport = sport;
  s.dport = dport;
  if (proto == IPPROTO_TCP) s.tcp_flags = RTE_TCP_SYN_FLAG;
  return s;
}

// The reply to a frame natgw sent out of `iface` (remote -> our outside address).
inline PacketSpec reply_to(const Parsed& o, uint16_t iface) {
  PacketSpec r;
  r.src_mac = o.dst_mac;
  r.dst_mac = our_mac(iface);
  r.src = o.dst;
  r.dst = o.src;
  r.proto = o.proto;
  r.sport = o.dport;
  r.dport = o.sport;
  if (o.proto == IPPROTO_ICMP) {
    r.icmp_type = 0;  // echo reply, same identifier
    r.sport = o.sport;
  }
  if (o.proto == IPPROTO_TCP) r.tcp_flags = RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG;
  return r;
}

// What a translated frame must be, byte for byte: `in` with the given fields
// rewritten, TTL decremented, MACs set, and every checksum computed from scratch
// (a zero UDP checksum stays zero, a computed zero is written 0xFFFF).
struct Rewrite {
  uint32_t src = 0, dst = 0;      // network order; 0 = unchanged
  int sport = -1, dport = -1;     // host order; -1 = unchanged (ICMP: sport = identifier)
  rte_ether_addr src_mac{}, dst_mac{};
};
inline std::vector<uint8_t> expected(const std::vector<uint8_t>& in, const Rewrite& w) {
  std::vector<uint8_t> f = in;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(f.data());
  eth->src_addr = w.src_mac;
  eth->dst_addr = w.dst_mac;
  auto* iph = reinterpret_cast<rte_ipv4_hdr*>(f.data() + 14);
  if (w.src) iph->src_addr = w.src;
  if (w.dst) iph->dst_addr = w.dst;
  iph->time_to_live--;
  fix_ip_csum(f);
  const size_t ihl = (iph->version_ihl & 0xf) * 4u;
  uint8_t* l4 = f.data() + 14 + ihl;
  const uint16_t l4len = static_cast<uint16_t>(ntohs(iph->total_length) - ihl);
  const bool first = (ntohs(iph->fragment_offset) & 0x1fff) == 0;
  const bool whole = first && !(ntohs(iph->fragment_offset) & 0x2000);
  auto put16 = [](uint8_t* at, uint16_t host) {
    const uint16_t be = htons(host);
    std::memcpy(at, &be, 2);
  };
  if (!first) return f;
  if (iph->next_proto_id == IPPROTO_TCP || iph->next_proto_id == IPPROTO_UDP) {
    if (w.sport >= 0) put16(l4, static_cast<uint16_t>(w.sport));
    if (w.dport >= 0) put16(l4 + 2, static_cast<uint16_t>(w.dport));
  } else if (iph->next_proto_id == IPPROTO_ICMP) {
    const int id = w.sport >= 0 ? w.sport : w.dport;
    if (id >= 0) put16(l4 + 4, static_cast<uint16_t>(id));
  }
  if (!whole) return f;  // a first fragment's L4 checksum covers data the test checks after reassembly
  if (iph->next_proto_id == IPPROTO_TCP) {
    l4[16] = l4[17] = 0;
    const uint16_t c = ref_csum(l4, l4len, pseudo_sum(iph, l4len));
    std::memcpy(l4 + 16, &c, 2);
  } else if (iph->next_proto_id == IPPROTO_UDP) {
    if (l4[6] || l4[7]) {
      l4[6] = l4[7] = 0;
      uint16_t c = ref_csum(l4, l4len, pseudo_sum(iph, l4len));
      if (c == 0) c = 0xffff;
      std::memcpy(l4 + 6, &c, 2);
    }
  } else if (iph->next_proto_id == IPPROTO_ICMP) {
    l4[2] = l4[3] = 0;
    const uint16_t c = ref_csum(l4, l4len);
    std::memcpy(l4 + 2, &c, 2);
  }
  return f;
}

// Check, build and publish tables for `toml` as the control thread does (p.cfg is the
// running config: what restart_reasons compares with). The workers live on this
// thread, so they are taken offline for the grace period (a worker thread would
// report a quiescent state instead), then pick up the new tables.
inline void reload(Pipeline& p, const std::string& toml, uint64_t generation) {
  auto r = config::load_string(toml, "reload.toml");
  ASSERT_TRUE(r.ok()) << (r.errors.empty() ? "" : r.errors[0].str());
  config::Config next = *r.config;  // with what Pipeline overrode at start (workers, a smaller table)
  next.dataplane.workers = p.cfg.dataplane.workers;
  next.nat.max_sessions = p.cfg.nat.max_sessions;
  const auto why = config::restart_reasons(p.cfg, next);
  ASSERT_TRUE(why.empty()) << why[0].str();
  auto t = dp::build_tables(p.ctx, next, generation);
  p.cfg = next;
  for (auto& w : p.workers) rte_rcu_qsbr_thread_offline(p.ctx.qsbr, w->id());
  dp::publish_tables(p.ctx, std::move(t));
  for (auto& w : p.workers) {
    rte_rcu_qsbr_thread_online(p.ctx.qsbr, w->id());
    w->refresh_tables();
  }
  ASSERT_EQ(p.ctx.tables.load()->generation, generation);
}

// Counters summed over every worker.
inline uint64_t drops(Pipeline& p, dp::Drop why) {
  uint64_t n = 0;
  for (auto& w : p.workers) n += w->counters().drops[why].get();
  return n;
}
inline uint64_t total(Pipeline& p, Counter dp::WorkerCounters::*c) {
  uint64_t n = 0;
  for (auto& w : p.workers) n += (w->counters().*c).get();
  return n;
}
inline uint64_t all_drops(Pipeline& p) {
  uint64_t n = 0;
  for (unsigned d = 0; d < dp::kDropCount; ++d) n += drops(p, static_cast<dp::Drop>(d));
  return n;
}
inline uint32_t active_sessions(Pipeline& p) {
  uint32_t n = 0;
  for (auto& t : p.ctx.sessions) n += t->active();
  return n;
}

}  // namespace natgw::test
