#include "control/views.hpp"

#include <arpa/inet.h>

#include <iomanip>
#include <sstream>

#include "net/packet.hpp"

namespace natgw::control {

namespace {

std::string ip(rte_be32_t be) { return config::format_ipv4(rte_be_to_cpu_32(be)); }
}  // namespace

std::string format_endpoint(rte_be32_t addr, rte_be16_t port) {
  return ip(addr) + ":" + std::to_string(rte_be_to_cpu_16(port));
}

namespace {

// Prometheus label values escape backslash, quote and newline.
std::string esc(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}

class Prom {
 public:
  void family(const char* name, const char* help, const char* type) {
    o_ << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  }
  void sample(const std::string& name, const std::string& labels, double v) {
    o_ << name;
    if (!labels.empty()) o_ << "{" << labels << "}";
    // Enough digits for a unix timestamp: the stream's default of 6 printed 1.79819e+09 (a 3-hour step).
    o_ << " " << std::setprecision(15) << v << "\n";
  }
  void sample(const std::string& name, const std::string& labels, uint64_t v) {
    o_ << name;
    if (!labels.empty()) o_ << "{" << labels << "}";
    o_ << " " << v << "\n";
  }
  std::string str() const { return o_.str(); }

 private:
  std::ostringstream o_;
};

std::string rule_text(const config::AclRule& r) {
  std::string s = r.allow ? "allow" : "deny";
  if (r.src) s += " src " + config::format_prefix(*r.src);
  if (r.dst) s += " dst " + config::format_prefix(*r.dst);
  if (r.proto) s += " proto " + std::to_string(r.proto);
  if (r.sport.lo != 0 || r.sport.hi != 65535)
    s += " sport " + std::to_string(r.sport.lo) + "-" + std::to_string(r.sport.hi);
  if (r.dport.lo != 0 || r.dport.hi != 65535)
    s += " dport " + std::to_string(r.dport.lo) + "-" + std::to_string(r.dport.hi);
  return s;
}
}  // namespace

std::string render_prometheus(const Snapshot& s, const dp::Context& ctx, const ReloadStatus& r) {
  Prom p;
  const struct {
    const char* name;
    const char* help;
    uint64_t IfaceStats::*field;
  } iface_fields[] = {
      {"natgw_interface_rx_packets_total", "Packets received by the dataplane", &IfaceStats::rx_packets},
      {"natgw_interface_rx_bytes_total", "Bytes received by the dataplane", &IfaceStats::rx_bytes},
      {"natgw_interface_tx_packets_total", "Packets transmitted by the dataplane", &IfaceStats::tx_packets},
      {"natgw_interface_tx_bytes_total", "Bytes transmitted by the dataplane", &IfaceStats::tx_bytes},
      {"natgw_port_rx_missed_total", "Packets the port dropped for lack of RX descriptors", &IfaceStats::port_imissed},
      {"natgw_port_rx_nombuf_total", "RX mbuf allocation failures", &IfaceStats::port_rx_nombuf},
      {"natgw_port_rx_errors_total", "Erroneous packets received by the port", &IfaceStats::port_ierrors},
      {"natgw_port_tx_errors_total", "Failed transmissions reported by the port", &IfaceStats::port_oerrors},
  };
  for (const auto& f : iface_fields) {
    p.family(f.name, f.help, "counter");
    for (const auto& i : s.ifaces) p.sample(f.name, "interface=\"" + esc(i.name) + "\"", i.*(f.field));
  }
  p.family("natgw_port_xstat", "The port driver's extended statistics (rte_eth_xstats), by name",
           "untyped");
  for (const auto& i : s.ifaces)
    for (const auto& [name, v] : i.xstats)
      p.sample("natgw_port_xstat", "interface=\"" + esc(i.name) + "\",name=\"" + esc(name) + "\"", v);
  p.family("natgw_drops_total", "Packets dropped, by reason", "counter");
  for (unsigned d = 0; d < dp::kDropCount; ++d)
    p.sample("natgw_drops_total", std::string("reason=\"") + dp::drop_name(d) + "\"", s.drops[d]);
  p.family("natgw_malformed_total", "Malformed packets, by defect", "counter");
  for (unsigned d = 1; d < 7; ++d)
    p.sample("natgw_malformed_total",
             std::string("defect=\"") + net::parse_error_name(static_cast<net::ParseError>(d)) + "\"",
             s.malformed[d]);
  p.family("natgw_packets_total", "Packets handled, by path", "counter");
  p.sample("natgw_packets_total", "path=\"forwarded\"", s.forwarded);
  p.sample("natgw_packets_total", "path=\"in2out\"", s.in2out);
  p.sample("natgw_packets_total", "path=\"out2in\"", s.out2in);
  p.sample("natgw_packets_total", "path=\"icmp_error_translated\"", s.icmp_errors_translated);
  p.sample("natgw_packets_total", "path=\"fragment_translated\"", s.fragments_translated);
  p.family("natgw_sessions_active", "Active NAT sessions", "gauge");
  for (int i = 0; i < 3; ++i)
    p.sample("natgw_sessions_active", std::string("protocol=\"") + nat::proto_class_name(i) + "\"", s.sessions_active[i]);
  p.family("natgw_sessions_created_total", "NAT sessions created", "counter");
  for (int i = 0; i < 3; ++i)
    p.sample("natgw_sessions_created_total", std::string("protocol=\"") + nat::proto_class_name(i) + "\"",
             s.sessions_created[i]);
  p.family("natgw_sessions_expired_total", "NAT sessions expired or removed", "counter");
  for (int i = 0; i < 3; ++i)
    p.sample("natgw_sessions_expired_total", std::string("protocol=\"") + nat::proto_class_name(i) + "\"",
             s.sessions_expired[i]);
  p.family("natgw_port_allocation_errors_total", "New flows refused: no free outside port", "counter");
  p.sample("natgw_port_allocation_errors_total", "", s.port_alloc_errors);
  p.family("natgw_mapping_collisions_total",
           "New flows refused: their endpoint's shared outside port is in use toward this destination", "counter");
  p.sample("natgw_mapping_collisions_total", "", s.mapping_collisions);
  p.family("natgw_ports_shared_total", "Outside ports given to a new mapping while in use (RFC 7857 overlapping)",
           "counter");
  p.sample("natgw_ports_shared_total", "", s.port_overlapped);
  p.family("natgw_port_scans_total",
           "Full scans of a port range for a port to share (an address with every port in use)", "counter");
  p.sample("natgw_port_scans_total", "", s.port_scans);
  p.family("natgw_session_table_full_total", "New flows refused: session table full", "counter");
  p.sample("natgw_session_table_full_total", "", s.table_full);
  p.family("natgw_outside_ports", "Outside ports (ICMP: identifiers) of each outside address, all workers' slices",
           "gauge");
  for (const auto& a : s.outside)
    for (int i = 0; i < 3; ++i)
      p.sample("natgw_outside_ports", "address=\"" + ip(a.addr) + "\",protocol=\"" + nat::proto_class_name(i) + "\"", a.size[i]);
  p.family("natgw_outside_ports_in_use",
           "Outside ports held by at least one mapping (at the range's size, new mappings share ports: RFC 7857)",
           "gauge");
  for (const auto& a : s.outside)
    for (int i = 0; i < 3; ++i)
      p.sample("natgw_outside_ports_in_use", "address=\"" + ip(a.addr) + "\",protocol=\"" + nat::proto_class_name(i) + "\"",
               a.in_use[i]);
  if (s.hosts_counted) {
    p.family("natgw_inside_hosts", "Inside hosts with translated sessions or ports (kept with nat.max_sessions_per_host or max_ports_per_host)",
             "gauge");
    p.sample("natgw_inside_hosts", "", s.hosts);
  }
  p.family("natgw_nat_events_lost_total", "NAT events dropped: a worker's event ring was full (nat_events)", "counter");
  p.sample("natgw_nat_events_lost_total", "", s.events_lost);
  p.family("natgw_mappings_active", "Endpoint-independent mappings", "gauge");
  p.sample("natgw_mappings_active", "", s.mappings);
  p.family("natgw_icmp_errors_sent_total", "ICMP errors generated by natgw", "counter");
  p.sample("natgw_icmp_errors_sent_total", "", s.icmp_errors_sent);
  p.family("natgw_icmp_errors_ratelimited_total", "ICMP errors not sent: over the rate limit", "counter");
  p.sample("natgw_icmp_errors_ratelimited_total", "", s.icmp_errors_ratelimited);
  p.family("natgw_echo_replies_total", "Echo requests to natgw's addresses answered", "counter");
  p.sample("natgw_echo_replies_total", "", s.echo_replies);
  p.family("natgw_fragments_buffered_total", "Later fragments held until their first fragment arrived", "counter");
  p.sample("natgw_fragments_buffered_total", "", s.fragments_buffered);
  p.family("natgw_fragments_created_total", "Fragments made to fit an egress MTU", "counter");
  p.sample("natgw_fragments_created_total", "", s.fragments_created);
  p.family("natgw_mss_clamped_total", "TCP SYNs whose MSS option was lowered", "counter");
  p.sample("natgw_mss_clamped_total", "", s.mss_clamped);
  p.family("natgw_handed_off_total", "Packets passed to the worker that owns their flow", "counter");
  p.sample("natgw_handed_off_total", "", s.handed_off);
  p.family("natgw_hairpinned_total", "Packets from inside to an outside address of natgw, sent back inside", "counter");
  p.sample("natgw_hairpinned_total", "", s.hairpinned);
  p.family("natgw_inbound_sessions_total",
           "Sessions an unsolicited outside packet opened to a mapped port (endpoint-independent filtering)", "counter");
  p.sample("natgw_inbound_sessions_total", "", s.inbound_sessions);
  p.family("natgw_arp_entries", "Entries in the ARP table", "gauge");
  p.sample("natgw_arp_entries", "", s.arp_entries);
  p.family("natgw_arp_requests_sent_total", "ARP requests sent", "counter");
  p.sample("natgw_arp_requests_sent_total", "", s.arp_requests_sent);
  p.family("natgw_arp_replies_sent_total", "ARP replies sent for natgw's addresses", "counter");
  p.sample("natgw_arp_replies_sent_total", "", s.arp_replies_sent);
  p.family("natgw_arp_learned_total", "ARP entries learned or refreshed", "counter");
  p.sample("natgw_arp_learned_total", "", s.arp_learned);
  p.family("natgw_arp_table_full_total", "ARP entries not learned: table full", "counter");
  p.sample("natgw_arp_table_full_total", "", s.arp_table_full);
  p.family("natgw_arp_failures_total", "Packets dropped because a next hop did not resolve", "counter");
  p.sample("natgw_arp_failures_total", "", s.drops[dp::kDropArpUnresolved]);
  p.family("natgw_worker_busy_cycles_total", "TSC cycles in polls that received packets", "counter");
  for (size_t w = 0; w < s.workers.size(); ++w)
    p.sample("natgw_worker_busy_cycles_total", "worker=\"" + std::to_string(w) + "\"",
             s.workers[w].busy_cycles);
  p.family("natgw_worker_idle_cycles_total", "TSC cycles in empty polls", "counter");
  for (size_t w = 0; w < s.workers.size(); ++w)
    p.sample("natgw_worker_idle_cycles_total", "worker=\"" + std::to_string(w) + "\"",
             s.workers[w].idle_cycles);
  if (const auto* t = ctx.tables.load(std::memory_order_acquire)) {
    p.family("natgw_acl_hits_total", "Flows judged by each ACL rule (rule 0 = first)", "counter");
    const auto& rules = t->acl->source_rules();
    for (size_t i = 0; i < rules.size(); ++i)
      p.sample("natgw_acl_hits_total",
               "rule=\"" + std::to_string(i) + "\",action=\"" + (rules[i].allow ? "allow" : "deny") +
                   "\",match=\"" + esc(rule_text(rules[i])) + "\"",
               t->acl->hits(i));
    p.sample("natgw_acl_hits_total",
             std::string("rule=\"default\",action=\"") + (t->acl->default_allow() ? "allow" : "deny") +
                 "\",match=\"default\"",
             t->acl->hits(rules.size()));
    p.family("natgw_routes", "Routes in the LPM table", "gauge");
    p.sample("natgw_routes", "", static_cast<uint64_t>(t->routes->size()));
  }
  p.family("natgw_config_generation", "Config generation in force (1 = as started)", "gauge");
  p.sample("natgw_config_generation", "", r.generation);
  p.family("natgw_config_last_reload_success", "1 if the last reload was applied", "gauge");
  p.sample("natgw_config_last_reload_success", "", uint64_t{r.last_ok ? 1u : 0u});
  p.family("natgw_config_last_reload_timestamp_seconds", "Time of the last reload attempt", "gauge");
  p.sample("natgw_config_last_reload_timestamp_seconds", "", r.last_time);
  return p.str();
}

std::string format_sessions(const dp::Context& ctx, const std::string& filter, size_t limit) {
  const bool filtered = !filter.empty();  // 0.0.0.0 is a filter too (it matches nothing)
  rte_be32_t want = 0;
  if (filtered) {
    auto a = config::parse_ipv4(filter);
    if (!a) throw std::runtime_error("not an IPv4 address: " + filter);
    want = rte_cpu_to_be_32(*a);
  }
  std::ostringstream o;
  size_t shown = 0, matched = 0;
  o << "proto inside                 outside                remote                 active_ms worker\n";
  for (const auto& t : ctx.sessions) {
    for (uint32_t i = 0; i < t->capacity(); ++i) {
      const nat::Session& s = t->session(i);
      if (s.state != nat::SessionState::kActive) continue;  // a racy read is fine for display
      if (filtered && s.in_ip != want && s.out_ip != want && s.remote_ip != want) continue;
      ++matched;
      if (shown >= limit) continue;
      ++shown;
      const int pc = nat::proto_class(s.proto);
      char line[256];
      std::snprintf(line, sizeof(line), "%-5s %-22s %-22s %-22s %9u %u\n", nat::proto_class_name(pc),
                    format_endpoint(s.in_ip, s.in_port).c_str(), format_endpoint(s.out_ip, s.out_port).c_str(),
                    format_endpoint(s.remote_ip, s.remote_port).c_str(),
                    s.last_seen_ms.load(std::memory_order_relaxed) - s.created_ms, s.owner);
      o << line;
    }
  }
  o << matched << " session(s)" << (matched > shown ? " (" + std::to_string(shown) + " shown)" : "")
    << "\n";
  return o.str();
}

std::string format_routes(const dp::Context& ctx) {
  const auto* t = ctx.tables.load(std::memory_order_acquire);
  if (!t) return "no routes\n";
  std::ostringstream o;
  for (const auto& e : t->routes->entries()) {
    o << config::format_prefix(e.prefix) << " dev " << ctx.ifaces[e.nh.iface].name;
    if (e.nh.gateway) o << " via " << ip(e.nh.gateway);
    if (e.connected) o << " (connected)";
    o << "\n";
  }
  o << t->routes->size() << " route(s), generation " << t->generation << "\n";
  return o.str();
}

std::string format_arp(const dp::Context& ctx) {
  std::ostringstream o;
  size_t n = 0;
  ctx.arp.for_each([&](rte_be32_t a, const arp::ArpTable::Hit& h) {
    char mac[RTE_ETHER_ADDR_FMT_SIZE];
    rte_ether_format_addr(mac, sizeof(mac), &h.mac);
    o << ip(a) << " " << mac << " dev " << ctx.ifaces[h.iface].name << "\n";
    ++n;
  });
  o << n << " entr" << (n == 1 ? "y" : "ies") << "\n";
  return o.str();
}

std::string format_acl(const dp::Context& ctx) {
  const auto* t = ctx.tables.load(std::memory_order_acquire);
  if (!t) return "no ACL\n";
  std::ostringstream o;
  const auto& rules = t->acl->source_rules();
  for (size_t i = 0; i < rules.size(); ++i)
    o << i << ": " << rule_text(rules[i]) << "  hits " << t->acl->hits(i) << "  ("
      << rules[i].loc.file << ":" << rules[i].loc.line << ")\n";
  o << "default: " << (t->acl->default_allow() ? "allow" : "deny") << "  hits "
    << t->acl->hits(rules.size()) << "\n";
  return o.str();
}

}  // namespace natgw::control
