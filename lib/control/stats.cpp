#include "control/stats.hpp"

#include <rte_ethdev.h>

#include <sstream>

#include "net/packet.hpp"

namespace natgw::control {


Snapshot snapshot(const dp::Context& ctx, const std::vector<const dp::Worker*>& workers,
                  bool read_ports) {
  Snapshot s;
  s.ifaces.resize(ctx.ifaces.size());
  for (size_t i = 0; i < ctx.ifaces.size(); ++i) {
    s.ifaces[i].name = ctx.ifaces[i].name;
    if (read_ports) {
      rte_eth_stats es{};
      if (rte_eth_stats_get(ctx.ifaces[i].port_id, &es) == 0) {
        s.ifaces[i].port_ipackets = es.ipackets;
        s.ifaces[i].port_opackets = es.opackets;
        s.ifaces[i].port_imissed = es.imissed;
        s.ifaces[i].port_ierrors = es.ierrors;
        s.ifaces[i].port_oerrors = es.oerrors;
        s.ifaces[i].port_rx_nombuf = es.rx_nombuf;
      }
      const uint16_t port = ctx.ifaces[i].port_id;
      const int n = rte_eth_xstats_get_names(port, nullptr, 0);
      if (n > 0) {
        std::vector<rte_eth_xstat_name> names(static_cast<size_t>(n));
        std::vector<rte_eth_xstat> vals(static_cast<size_t>(n));
        if (rte_eth_xstats_get_names(port, names.data(), static_cast<unsigned>(n)) == n &&
            rte_eth_xstats_get(port, vals.data(), static_cast<unsigned>(n)) == n)
          for (int k = 0; k < n; ++k)
            s.ifaces[i].xstats.emplace_back(names[vals[k].id].name, vals[k].value);
      }
    }
  }
  for (const dp::Worker* w : workers) {
    const dp::WorkerCounters& c = w->counters();
    for (size_t i = 0; i < ctx.ifaces.size(); ++i) {
      s.ifaces[i].rx_packets += c.iface[i].rx_packets.get();
      s.ifaces[i].rx_bytes += c.iface[i].rx_bytes.get();
      s.ifaces[i].tx_packets += c.iface[i].tx_packets.get();
      s.ifaces[i].tx_bytes += c.iface[i].tx_bytes.get();
    }
    for (unsigned d = 0; d < dp::kDropCount; ++d) s.drops[d] += c.drops[d].get();
    for (unsigned d = 0; d < 8; ++d) s.malformed[d] += c.malformed[d].get();
    s.forwarded += c.forwarded.get();
    s.in2out += c.in2out.get();
    s.out2in += c.out2in.get();
    s.icmp_errors_translated += c.icmp_errors_translated.get();
    s.icmp_errors_sent += c.icmp_errors_sent.get();
    s.icmp_errors_ratelimited += c.icmp_errors_ratelimited.get();
    s.echo_replies += c.echo_replies.get();
    s.arp_requests_sent += c.arp_requests_sent.get();
    s.arp_replies_sent += c.arp_replies_sent.get();
    s.arp_learned += c.arp_learned.get();
    s.arp_table_full += c.arp_table_full.get();
    s.fragments_translated += c.fragments_translated.get();
    s.fragments_buffered += c.fragments_buffered.get();
    s.mss_clamped += c.mss_clamped.get();
    s.fragments_created += c.fragments_created.get();
    s.handed_off += c.handed_off.get();
    s.hairpinned += c.hairpinned.get();
    s.inbound_sessions += c.inbound_sessions.get();
    WorkerStats ws;
    ws.busy_cycles = c.busy_cycles.get();
    ws.idle_cycles = c.idle_cycles.get();
    ws.polls = c.polls.get();
    if (w->id() < ctx.sessions.size()) ws.sessions = ctx.sessions[w->id()]->active();
    s.workers.push_back(ws);
  }
  s.outside.resize(ctx.outside.size());
  for (size_t a = 0; a < ctx.outside.size(); ++a) s.outside[a].addr = ctx.outside[a].addr;
  s.hosts_counted = ctx.count_hosts;
  for (const auto& t : ctx.sessions) {
    for (size_t a = 0; a < ctx.outside.size(); ++a)
      for (int p = 0; p < 3; ++p) {
        const nat::PortAllocator& pa = t->allocator(static_cast<uint32_t>(a), p);
        s.outside[a].size[p] += pa.size();
        s.outside[a].in_use[p] += pa.size() - pa.free_count();
      }
    if (t->hosts()) s.hosts += t->hosts()->hosts();
    s.events_lost += t->stats().events_lost.get();
    const auto& st = t->stats();
    for (int p = 0; p < 3; ++p) {
      s.sessions_active[p] += st.active[p].get();
      s.sessions_created[p] += st.created[p].get();
      s.sessions_expired[p] += st.expired[p].get();
    }
    s.port_alloc_errors += st.no_port.get();
    s.mapping_collisions += st.collisions.get();
    s.table_full += st.table_full.get();
    s.mappings += st.mappings.get();
    s.port_overlapped += st.overlapped.get();
    s.port_scans += st.port_scans.get();
  }
  s.arp_entries = ctx.arp.size();
  return s;  // generation is filled by the caller: the tables may be swapped under a reader

}

std::string format_text(const Snapshot& s) {
  std::ostringstream o;
  o << "interfaces:\n";
  for (const auto& i : s.ifaces)
    o << "  " << i.name << ": rx " << i.rx_packets << " pkts " << i.rx_bytes << " bytes, tx "
      << i.tx_packets << " pkts " << i.tx_bytes << " bytes (port: in " << i.port_ipackets
      << " out " << i.port_opackets << " missed " << i.port_imissed << " nombuf "
      << i.port_rx_nombuf << ")\n";
  o << "packets: forwarded " << s.forwarded << ", in2out " << s.in2out << ", out2in " << s.out2in
    << ", icmp errors translated " << s.icmp_errors_translated << ", fragments translated "
    << s.fragments_translated << "\n";
  o << "sessions: active tcp " << s.sessions_active[0] << " udp " << s.sessions_active[1]
    << " icmp " << s.sessions_active[2] << "; created";
  for (int p = 0; p < 3; ++p) o << " " << nat::proto_class_name(p) << " " << s.sessions_created[p];
  o << "; expired";
  for (int p = 0; p < 3; ++p) o << " " << nat::proto_class_name(p) << " " << s.sessions_expired[p];
  o << "; mappings " << s.mappings << "; port alloc errors " << s.port_alloc_errors
    << "; mapping collisions " << s.mapping_collisions
    << "; table full " << s.table_full << "; ports shared " << s.port_overlapped << "; port scans "
    << s.port_scans << "\n";
  for (const auto& a : s.outside) {
    o << "outside " << config::format_ipv4(rte_be_to_cpu_32(a.addr)) << ": ports in use";
    for (int p = 0; p < 3; ++p) o << " " << nat::proto_class_name(p) << " " << a.in_use[p] << "/" << a.size[p];
    o << "\n";
  }
  if (s.hosts_counted)
    o << "inside hosts with sessions or ports " << s.hosts << "; new flows refused at nat.max_sessions_per_host "
      << s.drops[dp::kDropHostLimit] << ", at nat.max_ports_per_host " << s.drops[dp::kDropHostPortLimit] << "\n";
  o << "drops:";
  for (unsigned d = 0; d < dp::kDropCount; ++d)
    if (s.drops[d]) o << " " << dp::drop_name(d) << "=" << s.drops[d];
  o << "\n";
  bool any = false;
  for (unsigned d = 1; d < 8; ++d)
    if (s.malformed[d]) {
      if (!any) o << "malformed:";
      any = true;
      o << " " << net::parse_error_name(static_cast<net::ParseError>(d)) << "=" << s.malformed[d];
    }
  if (any) o << "\n";
  o << "icmp: errors sent " << s.icmp_errors_sent << " (rate-limited " << s.icmp_errors_ratelimited
    << "), echo replies " << s.echo_replies << "\n";
  o << "arp: entries " << s.arp_entries << ", requests sent " << s.arp_requests_sent
    << ", replies sent " << s.arp_replies_sent << ", learned " << s.arp_learned << ", table full "
    << s.arp_table_full << "\n";
  o << "other: fragments buffered " << s.fragments_buffered << ", fragments created " << s.fragments_created
    << ", mss clamped " << s.mss_clamped << ", handed off " << s.handed_off << ", hairpinned " << s.hairpinned
    << ", sessions opened from outside " << s.inbound_sessions << "\n";
  for (size_t w = 0; w < s.workers.size(); ++w) {
    const auto& ws = s.workers[w];
    const double total = static_cast<double>(ws.busy_cycles + ws.idle_cycles);
    o << "worker " << w << ": sessions " << ws.sessions << ", busy "
      << (total > 0 ? 100.0 * static_cast<double>(ws.busy_cycles) / total : 0.0) << "%, polls "
      << ws.polls << "\n";
  }
  o << "config generation " << s.generation << "\n";
  return o.str();
}

}  // namespace natgw::control
