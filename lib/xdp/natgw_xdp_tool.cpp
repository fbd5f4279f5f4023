// natgw-xdp: inspect and drive the XDP steering program of natgw's shared-interface AF_XDP mode.
//
//   natgw-xdp status IFACE                    what is attached, the steering config, the counters
//   natgw-xdp stats IFACE [--prometheus]      counters only (Prometheus text with --prometheus)
//   natgw-xdp configure IFACE [--host auto|A,B] [--natgw A,B] [--no-transit] [--no-dhcp] [--disable]
//                                             fill the maps of the natgw_steer attached to IFACE
//   natgw-xdp attach IFACE [OBJECT] [--mode native|generic]
//                                             load and attach natgw_steer without DPDK (no consumer:
//                                             everything meant for natgw falls back to the kernel)
//   natgw-xdp detach IFACE [--stale]          remove natgw_steer from IFACE (never another program);
//                                             --stale: succeed quietly when there is none (for
//                                             ExecStartPre: a killed natgw leaves its program attached
//                                             and the af_xdp PMD cannot attach over it)
//   natgw-xdp object                          print the path of natgw_steer.bpf.o natgw would use
// Common option: --pin-dir DIR (default /sys/fs/bpf/natgw/IFACE; "" = do not pin).
// Exit status: 0 ok, 1 failure, 2 usage.
#include <arpa/inet.h>
#include <linux/bpf.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "xdp/steering.hpp"

namespace {

using natgw::xdp::XdpSteering;

int usage(int rc) {
  std::fprintf(rc ? stderr : stdout,
               "usage: natgw-xdp status IFACE\n"
               "       natgw-xdp stats IFACE [--prometheus]\n"
               "       natgw-xdp configure IFACE [--host auto|ADDR,...] [--natgw ADDR,...] [--no-transit]\n"
               "                                 [--no-dhcp] [--disable]\n"
               "       natgw-xdp attach IFACE [OBJECT] [--mode native|generic]\n"
               "       natgw-xdp detach IFACE [--stale]\n"
               "       natgw-xdp object\n"
               "options: --pin-dir DIR (default /sys/fs/bpf/natgw/IFACE; \"\" = no pins)\n");
  return rc;
}

std::string ip_str(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

std::vector<uint32_t> parse_list(const std::string& s) {
  std::vector<uint32_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (item.empty()) continue;
    in_addr a{};
    if (inet_pton(AF_INET, item.c_str(), &a) != 1) throw std::runtime_error("not an IPv4 address: '" + item + "'");
    out.push_back(ntohl(a.s_addr));
  }
  return out;
}

std::string join(const std::vector<uint32_t>& v) {
  std::string s;
  for (uint32_t a : v) s += (s.empty() ? "" : ",") + ip_str(a);
  return s.empty() ? "-" : s;
}

void print_stats(const XdpSteering& s, bool prometheus) {
  const auto st = s.stats();
  if (prometheus) {
    std::cout << natgw::xdp::prometheus_text({&s});
    return;
  }
  for (unsigned i = 0; i < NATGW_STEER_NCOUNTERS; ++i)
    std::printf("  %-16s %-6s %12llu packets %14llu bytes\n", std::string(natgw::xdp::counter_name(i)).c_str(),
                std::string(natgw::xdp::counter_destination(i)).c_str(),
                static_cast<unsigned long long>(st.packets[i]), static_cast<unsigned long long>(st.bytes[i]));
}

void print_config(const XdpSteering& s) {
  const auto c = s.current();
  std::cout << "  steering: " << (c.enabled ? "enabled" : "disabled (everything to the kernel)")
            << ", transit " << (c.transit ? "to natgw" : "to the kernel") << ", dhcp replies "
            << (c.dhcp ? "to the kernel" : "by address") << "\n"
            << "  host addresses (kernel): " << join(c.host_addresses) << "\n"
            << "  natgw addresses:         " << join(c.natgw_addresses) << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(2);
  const std::string cmd = argv[1];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") return usage(0);
  if (cmd == "object") {
    const std::string o = natgw::xdp::find_object();
    if (o.empty()) {
      std::cerr << "natgw-xdp: natgw_steer.bpf.o not found (set NATGW_XDP_OBJECT)\n";
      return 1;
    }
    std::cout << o << "\n";
    return 0;
  }
  if (argc < 3) return usage(2);
  const std::string ifname = argv[2];
  std::vector<std::string> pos;
  std::string pin_dir = XdpSteering::default_pin_dir(ifname), host = "", natgw_list, mode = "any";
  bool host_set = false, natgw_set = false, transit = true, dhcp = true, enabled = true, stale = false, prom = false;
  for (int i = 3; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    try {
      if (a == "--pin-dir") pin_dir = value();
      else if (a == "--host") host = value(), host_set = true;
      else if (a == "--natgw") natgw_list = value(), natgw_set = true;
      else if (a == "--no-transit") transit = false;
      else if (a == "--no-dhcp") dhcp = false;
      else if (a == "--disable") enabled = false;
      else if (a == "--stale") stale = true;
      else if (a == "--prometheus") prom = true;
      else if (a == "--mode") mode = value();
      else if (a.rfind("--", 0) == 0) throw std::invalid_argument("unknown option " + a);
      else pos.push_back(a);
    } catch (const std::invalid_argument& e) {
      std::cerr << "natgw-xdp: " << e.what() << "\n";
      return usage(2);
    }
  }
  try {
    if (cmd == "status") {
      const auto a = XdpSteering::query(ifname);
      if (!a) {
        std::cout << ifname << ": no XDP program attached\n";
        return 0;
      }
      std::cout << ifname << ": XDP program '" << a->name << "' id " << a->prog_id << " (" << a->mode << ")\n";
      if (a->name != NATGW_STEER_PROG_NAME) return 0;
      const auto s = XdpSteering::open(ifname, pin_dir);
      if (!pin_dir.empty()) std::cout << "  maps pinned under " << pin_dir << "\n";
      print_config(s);
      print_stats(s, false);
    } else if (cmd == "stats") {
      print_stats(XdpSteering::open(ifname, pin_dir), prom);
    } else if (cmd == "configure") {
      auto s = XdpSteering::open(ifname, pin_dir);
      natgw::xdp::SteeringConfig c = s.current();
      if (host_set) c.host_addresses = host == "auto" ? XdpSteering::kernel_addresses(ifname) : parse_list(host);
      if (natgw_set) c.natgw_addresses = parse_list(natgw_list);
      c.transit = transit;
      c.dhcp = dhcp;
      c.enabled = enabled;
      s.configure(c);
      std::cout << ifname << ": natgw_steer id " << s.prog_id() << " configured";
      if (!pin_dir.empty()) std::cout << ", maps pinned under " << pin_dir;
      std::cout << "\n";
      print_config(s);
    } else if (cmd == "attach") {
      const std::string obj = pos.empty() ? natgw::xdp::find_object() : pos[0];
      if (obj.empty()) throw std::runtime_error("natgw_steer.bpf.o not found: give its path");
      const auto m = mode == "native"    ? natgw::xdp::AttachMode::native
                     : mode == "generic" ? natgw::xdp::AttachMode::generic
                                         : natgw::xdp::AttachMode::any;
      const auto s = XdpSteering::attach(ifname, obj, m, pin_dir);
      const auto a = XdpSteering::query(ifname);
      std::cout << ifname << ": attached " << obj << " as id " << s.prog_id() << " ("
                << (a ? a->mode : std::string("?")) << "), steering disabled until configured\n";
    } else if (cmd == "detach") {
      if (stale) {
        const bool removed = XdpSteering::detach_stale(ifname, pin_dir);
        std::cout << ifname << ": " << (removed ? "removed a stale natgw_steer" : "no stale natgw_steer") << "\n";
      } else {
        auto s = XdpSteering::open(ifname, "");
        s.detach();
        if (!pin_dir.empty()) XdpSteering::detach_stale(ifname, pin_dir);  // pins only, now
        std::cout << ifname << ": detached natgw_steer id " << s.prog_id() << "\n";
      }
    } else {
      return usage(2);
    }
  } catch (const std::exception& e) {
    std::cerr << "natgw-xdp: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
