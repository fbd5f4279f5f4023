// natgw config loader: TOML text -> validated Config, or every error found with file:line.
#include "config/config.hpp"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <stdexcept>
#include <string_view>
#include <utility>

namespace natgw::config {

std::string Error::str() const {
  if (line <= 0) return file + ": " + message;
  return file + ":" + std::to_string(line) + ": " + message;
}

namespace {

constexpr size_t kMaxSnatRules = 128;

// Keeps "seconds * TSC Hz" far from overflowing 64 bits in the dataplane.
constexpr int64_t kMaxTimeout = 7 * 24 * 3600;
constexpr size_t kMaxInterfaces = 16;
// Per route: a whole prefix list routed twice is one mistake, not hundreds of lines.
constexpr size_t kMaxDuplicateReports = 10;
constexpr size_t kUnixPathMax = 108;  // sizeof(sockaddr_un::sun_path), including the NUL

// ---- Schema: every table and the keys it accepts ----

constexpr std::string_view kDataplaneKeys[] = {"workers", "eal", "mbufs"};
constexpr std::string_view kInterfaceKeys[] = {"name",      "device",       "address",           "mtu",
                                                 "mss_clamp", "one_armed", "xdp_steering", "xdp_host_addresses"};
constexpr std::string_view kRouteKeys[] = {"prefix", "prefix_list", "via", "interface"};
constexpr std::string_view kSnatKeys[] = {"from", "to", "ports"};
constexpr std::string_view kTimeoutKeys[] = {"udp", "tcp_established", "tcp_transitory", "icmp",
                                             "fragment"};
constexpr std::string_view kNatKeys[] = {"port_preservation", "port_overlapping", "hairpinning",
                                         "max_sessions", "max_sessions_per_host", "max_ports_per_host", "filtering"};
constexpr std::string_view kAclKeys[] = {"action", "src", "dst", "protocol", "src_ports", "dst_ports"};
constexpr std::string_view kAclDefaultKeys[] = {"action"};
constexpr std::string_view kMetricsKeys[] = {"listen"};
constexpr std::string_view kControlKeys[] = {"socket"};
constexpr std::string_view kNatEventKeys[] = {"syslog", "file", "ipfix", "ipfix_domain"};

struct Section {
  std::string_view name;
  bool array;  // written [[name]] and may repeat
  std::span<const std::string_view> keys;
};

constexpr Section kSections[] = {
    {"dataplane", false, kDataplaneKeys}, {"interface", true, kInterfaceKeys},
    {"route", true, kRouteKeys},          {"snat", true, kSnatKeys},
    {"timeouts", false, kTimeoutKeys},    {"nat", false, kNatKeys},
    {"acl", true, kAclKeys},              {"acl_default", false, kAclDefaultKeys},
    {"metrics", false, kMetricsKeys},     {"control", false, kControlKeys},
    {"nat_events", false, kNatEventKeys},
};

constexpr std::string_view kSectionNames[] = {"dataplane", "interface", "route",   "snat",
                                              "timeouts",  "nat",       "acl",     "acl_default",
                                              "metrics",   "control",   "nat_events"};

const Section* find_section(std::string_view name) {
  for (const auto& s : kSections)
    if (s.name == name) return &s;
  return nullptr;
}

const Section& section(std::string_view name) {
  if (const Section* s = find_section(name)) return *s;
  throw std::logic_error("config: no section " + std::string(name));
}

std::string header(const Section& s) {
  const std::string n(s.name);
  return s.array ? "[[" + n + "]]" : "[" + n + "]";
}

std::string qualified(const Section& s, std::string_view key) {
  return std::string(s.name) + "." + std::string(key);
}

std::string quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string join(std::span<const std::string_view> words) {
  std::string out;
  for (auto w : words) out += (out.empty() ? "" : ", ") + std::string(w);
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Edits (insert, delete, substitute, swap two neighbours) turning a into b.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t substitute = d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, substitute});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// The candidate `word` was most likely meant to be, when it is close enough to be a typo.
std::optional<std::string_view> closest(std::string_view word, std::span<const std::string_view> candidates) {
  const std::string w = lower(word);
  std::optional<std::string_view> best;
  size_t best_distance = std::max<size_t>(1, w.size() / 3) + 1;
  for (auto c : candidates) {
    if (const size_t d = edit_distance(w, c); d < best_distance) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

// " (did you mean "x"?)" or "; valid: a, b, c".
std::string hint(std::string_view word, std::span<const std::string_view> candidates) {
  if (auto c = closest(word, candidates)) return " (did you mean " + quote(*c) + "?)";
  return "; valid: " + join(candidates);
}

int line_of(const toml::node& n) { return static_cast<int>(n.source().begin.line); }
int line_of(const toml::key& k) { return static_cast<int>(k.source().begin.line); }

std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a float";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    default: return "nothing";
  }
}

// One device under two spellings is still one device: compare the vdev name or PCI
// address without devargs, ignoring case, with the PCI domain made explicit.
std::string device_id(std::string_view device) {
  std::string id = lower(device.substr(0, device.find(',')));
  if (id.size() == 7 && id[2] == ':' && id[5] == '.') id = "0000:" + id;  // "00:06.0"
  return id;
}

// Interface names appear in metric labels and CLI output.
bool valid_name(std::string_view s) {
  return !s.empty() && s.size() <= 32 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-';
  });
}

bool is_unicast(uint32_t addr) {
  const uint32_t first = addr >> 24;
  return first != 0 && first != 127 && first < 224;
}

uint64_t prefix_key(const Prefix& p) { return uint64_t{p.addr} << 8 | p.len; }

// Errors of the config file first, then of each prefix list, each in line order.
void sort_errors(std::vector<Error>& errors, const std::string& main_file) {
  std::map<std::string, size_t> rank{{main_file, 0}};
  for (const auto& e : errors) rank.try_emplace(e.file, rank.size());
  std::stable_sort(errors.begin(), errors.end(), [&](const Error& a, const Error& b) {
    return std::pair(rank.at(a.file), a.line) < std::pair(rank.at(b.file), b.line);
  });
}

class Loader {
 public:
  Loader(const std::string& file, const std::string& base_dir)
      : file_(file), base_dir_(base_dir.empty() ? "." : base_dir) {
    cfg_.path = file;
  }

  LoadResult run(std::string_view text) {
    LoadResult result;
    toml::table root;
    try {
      root = toml::parse(text, std::string_view(file_));
    } catch (const toml::parse_error& e) {
      result.errors.push_back(
          {file_, static_cast<int>(e.source().begin.line), std::string(e.description())});
      return result;
    }
    check_root(root);
    // Interfaces before routes: routes refer to them by name.
    for_each_table(root, "dataplane", [&](const toml::table& t) { load_dataplane(t); });
    for_each_table(root, "interface", [&](const toml::table& t) { load_interface(t); });
    for_each_table(root, "route", [&](const toml::table& t) { load_route(t); });
    for_each_table(root, "snat", [&](const toml::table& t) { load_snat(t); });
    for_each_table(root, "timeouts", [&](const toml::table& t) { load_timeouts(t); });
    for_each_table(root, "nat", [&](const toml::table& t) { load_nat(t); });
    for_each_table(root, "acl", [&](const toml::table& t) { load_acl(t); });
    for_each_table(root, "acl_default", [&](const toml::table& t) { load_acl_default(t); });
    for_each_table(root, "metrics", [&](const toml::table& t) { load_metrics(t); });
    for_each_table(root, "control", [&](const toml::table& t) { load_control(t); });
    for_each_table(root, "nat_events", [&](const toml::table& t) { load_nat_events(t); });

    check_snat_order();
    if (cfg_.interfaces.empty() && !root.contains("interface"))
      error(0, "no [[interface]] defined: natgw needs at least one");
    else if (cfg_.interfaces.empty())
      error(line_of(*root.get("interface")), "no [[interface]] defined: natgw needs at least one");
    if (cfg_.interfaces.size() > kMaxInterfaces)
      error(cfg_.interfaces[kMaxInterfaces].loc.line,
            "too many interfaces (" + std::to_string(cfg_.interfaces.size()) + "): at most " +
                std::to_string(kMaxInterfaces));

    if (errors_.empty()) {
      result.config = std::move(cfg_);
    } else {
      sort_errors(errors_, file_);
      result.errors = std::move(errors_);
    }
    return result;
  }

 private:
  void error(int line, std::string message) { errors_.push_back({file_, line, std::move(message)}); }

  // ---- Structure ----

  void check_root(const toml::table& root) {
    for (auto&& [k, v] : root) {
      if (find_section(k.str())) continue;
      std::string msg = v.is_table()              ? "unknown table [" + std::string(k.str()) + "]"
                        : v.is_array_of_tables() ? "unknown table [[" + std::string(k.str()) + "]]"
                                                 : "unknown top-level key " + quote(k.str());
      const Section* owner = nullptr;
      for (const auto& s : kSections)
        if (std::find(s.keys.begin(), s.keys.end(), k.str()) != s.keys.end()) owner = &s;
      if (auto c = closest(k.str(), kSectionNames))
        msg += " (did you mean " + header(section(*c)) + "?)";
      else if (owner)
        msg += " (" + quote(k.str()) + " belongs under " + header(*owner) + ")";
      else
        msg += "; valid tables: " + join(kSectionNames);
      error(line_of(k), msg);
    }
  }

  void check_keys(const toml::table& t, const Section& s) {
    for (auto&& [k, v] : t) {
      if (std::find(s.keys.begin(), s.keys.end(), k.str()) != s.keys.end()) continue;
      error(line_of(k), "unknown key " + quote(k.str()) + " in " + header(s) + hint(k.str(), s.keys));
    }
  }

  // Runs `load` on the table of a [name] section, or on each table of a [[name]] one,
  // after checking its keys.
  template <class Fn>
  void for_each_table(const toml::table& root, std::string_view name, Fn&& load) {
    const Section& s = section(name);
    const toml::node* n = root.get(name);
    if (!n) return;
    if (!s.array) {
      if (const auto* t = n->as_table()) {
        check_keys(*t, s);
        load(*t);
      } else {
        error(line_of(*n), std::string(name) + " must be a table: write " + header(s));
      }
      return;
    }
    const auto* arr = n->as_array();
    if (!arr) {
      error(line_of(*n), std::string(name) + " must be an array of tables: write " + header(s) +
                             " once per entry");
      return;
    }
    for (const auto& e : *arr) {
      if (const auto* t = e.as_table()) {
        check_keys(*t, s);
        load(*t);
      } else {
        error(line_of(e), "each " + std::string(name) + " entry must be a table, got " +
                              std::string(type_name(e)));
      }
    }
  }

  // ---- Values: each reports a wrong value at its own line and returns nothing ----

  void type_error(const toml::node& n, std::string_view what, std::string_view expected) {
    error(line_of(n), std::string(what) + " must be " + std::string(expected) + ", got " +
                          std::string(type_name(n)));
  }

  const toml::node* required(const toml::table& t, const Section& s, std::string_view key) {
    if (const auto* n = t.get(key)) return n;
    error(line_of(t), header(s) + " is missing required key " + quote(key));
    return nullptr;
  }

  std::optional<std::string> str(const toml::node& n, std::string_view what) {
    if (const auto* v = n.as_string()) return v->get();
    type_error(n, what, "a string");
    return std::nullopt;
  }

  std::optional<int64_t> integer(const toml::node& n, std::string_view what, int64_t lo, int64_t hi) {
    const auto* v = n.as_integer();
    if (!v) {
      type_error(n, what, "an integer");
      return std::nullopt;
    }
    if (v->get() < lo || v->get() > hi) {
      error(line_of(n), std::string(what) + " = " + std::to_string(v->get()) + " is out of range " +
                            std::to_string(lo) + ".." + std::to_string(hi));
      return std::nullopt;
    }
    return v->get();
  }

  std::optional<bool> boolean(const toml::node& n, std::string_view what) {
    if (const auto* v = n.as_boolean()) return v->get();
    type_error(n, what, "a boolean (true or false)");
    return std::nullopt;
  }

  const toml::array* array(const toml::node& n, std::string_view what, std::string_view of) {
    if (const auto* a = n.as_array()) return a;
    type_error(n, what, "an array of " + std::string(of));
    return nullptr;
  }

  // Index of the string value in `choices`.
  std::optional<size_t> one_of(const toml::node& n, std::string_view what,
                               std::span<const std::string_view> choices) {
    const auto v = str(n, what);
    if (!v) return std::nullopt;
    const auto it = std::find(choices.begin(), choices.end(), *v);
    if (it != choices.end()) return static_cast<size_t>(it - choices.begin());
    error(line_of(n), std::string(what) + " " + quote(*v) + " is not valid" + hint(*v, choices));
    return std::nullopt;
  }

  std::optional<uint32_t> ipv4(const toml::node& n, std::string_view what) {
    const auto s = str(n, what);
    if (!s) return std::nullopt;
    std::string why;
    const auto a = parse_ipv4(*s, why);
    if (!a) error(line_of(n), std::string(what) + " " + quote(*s) + ": " + why);
    return a;
  }

  // The one place a CIDR in the config is parsed.
  std::optional<Prefix> prefix(const toml::node& n, std::string_view what) {
    const auto s = str(n, what);
    if (!s) return std::nullopt;
    std::string why;
    const auto p = parse_prefix(*s, why);
    if (!p) error(line_of(n), std::string(what) + " " + quote(*s) + ": " + why);
    return p;
  }

  // "N", "A-B", or an integer N; every port at least `min`.
  std::optional<PortRange> ports(const toml::node& n, std::string_view what, uint16_t min) {
    std::string text;
    if (const auto* i = n.as_integer()) {
      text = std::to_string(i->get());
    } else if (const auto* s = n.as_string()) {
      text = s->get();
    } else {
      type_error(n, what, "a port \"N\" or range \"A-B\"");
      return std::nullopt;
    }
    std::string why;
    auto range = parse_port_range(text, why);
    if (range && range->lo < min) {
      why = "ports must be at least " + std::to_string(min);
      range.reset();
    }
    if (!range) error(line_of(n), std::string(what) + " " + quote(text) + ": " + why);
    return range;
  }

  template <class T>
  void read_int(const toml::table& t, const Section& s, std::string_view key, T& out, int64_t lo,
                int64_t hi) {
    if (const auto* n = t.get(key))
      if (const auto v = integer(*n, qualified(s, key), lo, hi)) out = static_cast<T>(*v);
  }

  void read_bool(const toml::table& t, const Section& s, std::string_view key, bool& out) {
    if (const auto* n = t.get(key))
      if (const auto v = boolean(*n, qualified(s, key))) out = *v;
  }

  std::optional<bool> allow_deny(const toml::node& n, std::string_view what) {
    static constexpr std::string_view kActions[] = {"allow", "deny"};
    const auto i = one_of(n, what, kActions);
    if (!i) return std::nullopt;
    return *i == 0;
  }

  std::string resolve(const std::string& path) const {
    const std::filesystem::path p(path);
    if (p.is_absolute()) return p.lexically_normal().string();
    return (std::filesystem::path(base_dir_) / p).lexically_normal().string();
  }

  // ---- Sections ----

  void load_dataplane(const toml::table& t) {
    const Section& s = section("dataplane");
    cfg_.dataplane.loc = {file_, line_of(t)};
    read_int(t, s, "workers", cfg_.dataplane.workers, 1, 64);
    read_int(t, s, "mbufs", cfg_.dataplane.mbufs, 0, UINT32_MAX);
    if (const auto* n = t.get("eal")) {
      if (const auto* a = array(*n, "dataplane.eal", "strings")) {
        for (const auto& e : *a)
          if (auto v = str(e, "dataplane.eal entry")) cfg_.dataplane.eal.push_back(std::move(*v));
      }
    }
  }

  void load_interface(const toml::table& t) {
    const Section& s = section("interface");
    Interface itf;
    itf.loc = {file_, line_of(t)};
    std::string dev_id;
    bool addr_ok = false;

    if (const auto* n = required(t, s, "name")) {
      if (const auto v = str(*n, "interface.name")) {
        if (!valid_name(*v)) {
          error(line_of(*n), "interface.name " + quote(*v) +
                                 " must be 1..32 letters, digits, '-' or '_'");
        } else if (const auto it = iface_by_name_.find(*v); it != iface_by_name_.end()) {
          error(line_of(*n), "interface name " + quote(*v) + " is already used by the interface at line " +
                                 std::to_string(cfg_.interfaces[it->second].loc.line));
          itf.name = *v;  // for later messages; routes keep resolving to the first
        } else {
          itf.name = *v;
          iface_by_name_[*v] = cfg_.interfaces.size();
        }
      }
    }

    if (const auto* n = required(t, s, "device")) {
      if (const auto v = str(*n, "interface.device")) {
        if (v->empty()) {
          error(line_of(*n), "interface.device must not be empty: a vdev string or a PCI address");
        } else {
          dev_id = device_id(*v);
          for (size_t i = 0; i < cfg_.interfaces.size(); ++i) {
            if (iface_device_id_[i] == dev_id)
              error(line_of(*n), "device " + quote(dev_id) + " is already used by interface " +
                                     quote(cfg_.interfaces[i].name) + " (line " +
                                     std::to_string(cfg_.interfaces[i].loc.line) + ")");
          }
          itf.device = *v;
        }
      }
    }

    if (const auto* n = required(t, s, "address")) {
      if (const auto v = str(*n, "interface.address")) {
        std::string why;
        const auto a = parse_address_with_length(*v, why);
        if (a) {
          if (a->len == 0)
            why = "an on-link prefix of /0 would put every address on this link";
          else if (!is_unicast(a->addr))
            why = format_ipv4(a->addr) + " is not a unicast host address";
          else if (const char* kind = network_or_broadcast(a->addr, a->len))
            why = format_ipv4(a->addr) + " is the subnet's " + kind + " address";
        }
        if (!a || !why.empty()) {
          error(line_of(*n), "interface.address " + quote(*v) + ": " + why);
        } else {
          itf.addr = a->addr;
          itf.prefix_len = a->len;
          addr_ok = true;
          check_overlap(itf, line_of(*n));
        }
      }
    }

    read_int(t, s, "mtu", itf.mtu, 68, 9216);
    if (const auto* n = t.get("mss_clamp")) {
      if (const auto v = integer(*n, "interface.mss_clamp", 0, 9176)) {
        if (*v != 0 && *v < 536)
          error(line_of(*n), "interface.mss_clamp = " + std::to_string(*v) +
                                 " must be 0 (off) or 536..9176");
        else if (*v > itf.mtu - 40)
          error(line_of(*n), "interface.mss_clamp = " + std::to_string(*v) + " is larger than mtu " +
                                 std::to_string(itf.mtu) + " minus 40 bytes of IPv4 and TCP headers");
        else
          itf.mss_clamp = static_cast<uint16_t>(*v);
      }
    }

    read_bool(t, s, "one_armed", itf.one_armed);
    load_xdp_steering(t, s, itf, addr_ok);

    cfg_.interfaces.push_back(std::move(itf));
    iface_addr_ok_.push_back(addr_ok);
    iface_device_id_.push_back(std::move(dev_id));
  }

  // xdp_steering / xdp_host_addresses of an [[interface]] (AF_XDP sharing the interface with the kernel).
  void load_xdp_steering(const toml::table& t, const Section& s, Interface& itf, bool addr_ok) {
    read_bool(t, s, "xdp_steering", itf.xdp_steering);
    const auto* steer = t.get("xdp_steering");
    if (itf.xdp_steering) {
      const int line = line_of(*steer);
      const bool af_xdp = itf.device.rfind("net_af_xdp", 0) == 0;
      const auto iface_pos = itf.device.find(",iface=");
      if (!itf.device.empty() && (!af_xdp || iface_pos == std::string::npos || iface_pos + 7 >= itf.device.size()))
        error(line, "interface.xdp_steering needs an af_xdp device (\"net_af_xdpN,iface=IFNAME\"), not " +
                        quote(itf.device));
      if (itf.mtu > kXdpSteeringMaxMtu)
        error(line, "interface.xdp_steering: mtu " + std::to_string(itf.mtu) + " is above " +
                        std::to_string(kXdpSteeringMaxMtu) +
                        ": AF_XDP has no multi-buffer here, so this mode and MTU 9001 exclude each other "
                        "(bind the ENI to DPDK for jumbo frames)");
    }
    const auto* n = t.get("xdp_host_addresses");
    if (!n) return;
    if (!itf.xdp_steering) {
      error(line_of(*n), "interface.xdp_host_addresses is only used with xdp_steering = true");
      return;
    }
    const auto* a = array(*n, "interface.xdp_host_addresses", "IPv4 addresses");
    if (!a) return;
    if (a->empty())
      error(line_of(*n), "interface.xdp_host_addresses is empty: leave it out to use the kernel's addresses");
    std::map<uint32_t, int> seen;
    for (const auto& e : *a) {
      const auto addr = ipv4(e, "interface.xdp_host_addresses");
      if (!addr) continue;
      if (!is_unicast(*addr))
        error(line_of(e), "interface.xdp_host_addresses " + format_ipv4(*addr) + " is not a unicast host address");
      else if (addr_ok && *addr == itf.addr)
        error(line_of(e), "interface.xdp_host_addresses " + format_ipv4(*addr) +
                              " is natgw's own address: give natgw its own (secondary) address and keep the "
                              "host's for the kernel");
      else if (const auto [it, fresh] = seen.try_emplace(*addr, line_of(e)); !fresh)
        error(line_of(e), "interface.xdp_host_addresses " + format_ipv4(*addr) + " is listed twice (first at line " +
                              std::to_string(it->second) + ")");
      else
        itf.xdp_host_addresses.push_back(*addr);
    }
  }

  // Each address must not fall into (or contain) another interface's subnet.
  void check_overlap(const Interface& itf, int line) {
    for (size_t i = 0; i < cfg_.interfaces.size(); ++i) {
      if (!iface_addr_ok_[i]) continue;
      const Interface& other = cfg_.interfaces[i];
      const uint32_t mask = prefix_mask(std::min(itf.prefix_len, other.prefix_len));
      if ((itf.addr & mask) != (other.addr & mask)) continue;
      error(line, "interface.address " + format_ipv4(itf.addr) + "/" + std::to_string(itf.prefix_len) +
                      " overlaps interface " + quote(other.name) + " subnet " + format_prefix(subnet_of(other)) +
                      " (line " + std::to_string(other.loc.line) + ")");
    }
  }

  void load_route(const toml::table& t) {
    const Section& s = section("route");
    Route r;
    r.loc = {file_, line_of(t)};
    const auto* prefix_node = t.get("prefix");
    const auto* list_node = t.get("prefix_list");
    int where = r.loc.line;  // the line that defines this route's prefixes
    std::string origin;      // the same, for duplicate reports

    if (prefix_node && list_node) {
      error(r.loc.line, "[[route]] sets both prefix and prefix_list: set exactly one");
    } else if (!prefix_node && !list_node) {
      error(r.loc.line, "[[route]] needs prefix or prefix_list");
    } else if (prefix_node) {
      where = line_of(*prefix_node);
      origin = file_ + ":" + std::to_string(where);
      if (const auto p = prefix(*prefix_node, "route.prefix")) r.prefixes.push_back(*p);
    } else if (const auto v = str(*list_node, "route.prefix_list")) {
      where = line_of(*list_node);
      if (v->empty()) {
        error(where, "route.prefix_list must name a file");
      } else {
        r.prefix_list = resolve(*v);
        origin = file_ + ":" + std::to_string(where) + " (prefix list " + r.prefix_list + ")";
        const size_t before = errors_.size();
        r.prefixes = load_prefix_list(r.prefix_list, errors_);
        // A list that cannot be read is reported where the config names it.
        for (size_t i = before; i < errors_.size(); ++i) {
          if (errors_[i].line == 0) errors_[i] = {file_, where, "route.prefix_list: " + errors_[i].message};
        }
        if (errors_.size() == before && r.prefixes.empty())
          error(where, "prefix list " + r.prefix_list + " has no prefixes");
      }
    }

    size_t duplicates = 0;
    for (const auto& p : r.prefixes) {
      const auto [it, fresh] = routed_.try_emplace(prefix_key(p), origin);
      if (fresh) continue;
      if (++duplicates <= kMaxDuplicateReports)
        error(where, "duplicate route " + format_prefix(p) + ": already routed at " + it->second);
    }
    if (duplicates > kMaxDuplicateReports)
      error(where, "... and " + std::to_string(duplicates - kMaxDuplicateReports) +
                       " more duplicate route prefixes");

    std::optional<uint32_t> via;
    int via_line = 0;
    if (const auto* n = t.get("via")) {
      via = ipv4(*n, "route.via");
      via_line = line_of(*n);
    }

    if (const auto* n = required(t, s, "interface")) {
      if (const auto v = str(*n, "route.interface")) {
        r.interface = *v;
        if (const auto it = iface_by_name_.find(*v); it == iface_by_name_.end()) {
          std::vector<std::string_view> names;
          for (const auto& itf : cfg_.interfaces)
            if (!itf.name.empty()) names.push_back(itf.name);
          error(line_of(*n), "route.interface " + quote(*v) + " is not a defined [[interface]]" +
                                 hint(*v, names));
        } else {
          r.interface_index = it->second;
          if (via && iface_addr_ok_[it->second]) check_gateway(*via, via_line, cfg_.interfaces[it->second]);
        }
      }
    }
    if (via) r.via = *via;
    // An interface's own subnet is reached on that link: a route that sends it elsewhere
    // (another link, or a gateway) would leave natgw's own neighbours unreachable.
    for (size_t i = 0; i < cfg_.interfaces.size() && iface_by_name_.count(r.interface); ++i) {
      const Interface& itf = cfg_.interfaces[i];
      if (!iface_addr_ok_[i] || (r.interface_index == i && !via)) continue;  // same link, on-link: harmless
      const Prefix own = subnet_of(itf);
      if (std::find(r.prefixes.begin(), r.prefixes.end(), own) != r.prefixes.end())
        error(where, "route " + format_prefix(own) + " is interface " + quote(itf.name) +
                         "'s own subnet, reached on that link: a route cannot send it " +
                         (r.interface_index != i ? "to interface " + quote(r.interface) : "via a gateway"));
    }
    cfg_.routes.push_back(std::move(r));
  }

  // A gateway must be a neighbour on the egress link, and not natgw itself.
  void check_gateway(uint32_t via, int line, const Interface& itf) {
    const Prefix subnet = subnet_of(itf);
    const std::string name = "route.via " + format_ipv4(via);
    if (!contains(subnet, via))
      error(line, name + " is not inside interface " + quote(itf.name) + " subnet " + format_prefix(subnet));
    else if (via == itf.addr)
      error(line, name + " is interface " + quote(itf.name) + "'s own address");
    else if (const char* kind = network_or_broadcast(via, itf.prefix_len))
      error(line, name + " is the " + std::string(kind) + " address of interface " + quote(itf.name) + " subnet " +
                      format_prefix(subnet) + ": no neighbour answers ARP for it");
  }

  void load_snat(const toml::table& t) {
    const Section& s = section("snat");
    SnatRule rule;
    rule.loc = {file_, line_of(t)};
    // A rule's index names its mapping realm, 0..127; 128 + interface is the realm of
    // rules that take the egress interface's address (dp::build_tables, Worker::new_flow).
    if (cfg_.snat.size() == kMaxSnatRules)
      error(rule.loc.line, "too many [[snat]] rules: at most " + std::to_string(kMaxSnatRules));
    if (const auto* n = required(t, s, "from")) {
      if (const auto* a = array(*n, "snat.from", "prefixes")) {
        if (a->empty()) error(line_of(*n), "snat.from is empty: list the source prefixes to translate");
        for (const auto& e : *a)
          if (const auto p = prefix(e, "snat.from")) rule.from.push_back(*p);
      }
    }
    if (const auto* n = t.get("to")) {
      if (const auto* a = array(*n, "snat.to", "IPv4 addresses")) {
        if (a->empty())
          error(line_of(*n), "snat.to is empty: leave it out to use the egress interface's address");
        std::map<uint32_t, int> seen;
        for (const auto& e : *a) {
          const auto addr = ipv4(e, "snat.to");
          if (!addr) continue;
          if (!is_unicast(*addr)) {
            error(line_of(e), "snat.to " + format_ipv4(*addr) + " is not a unicast host address");
          } else if (const auto [it, fresh] = seen.try_emplace(*addr, line_of(e)); !fresh) {
            error(line_of(e), "snat.to " + format_ipv4(*addr) + " is listed twice (first at line " +
                                  std::to_string(it->second) + ")");
          } else {
            rule.to.push_back(*addr);
          }
        }
      }
    }
    if (const auto* n = t.get("ports")) {
      if (const auto r = ports(*n, "snat.ports", 1)) {
        rule.port_min = r->lo;
        rule.port_max = r->hi;
      }
    }
    cfg_.snat.push_back(std::move(rule));
  }

  // The first rule whose `from` matches a source wins: a rule whose every prefix an
  // earlier rule covers never applies (its pool or ports would be silently ignored).
  void check_snat_order() {
    for (size_t j = 1; j < cfg_.snat.size(); ++j) {
      const SnatRule& later = cfg_.snat[j];
      std::set<int> by;  // lines of the earlier rules that take its sources
      const bool shadowed = !later.from.empty() && std::all_of(later.from.begin(), later.from.end(), [&](const Prefix& p) {
        for (size_t i = 0; i < j; ++i)
          for (const Prefix& q : cfg_.snat[i].from)
            if (contains(q, p)) return by.insert(cfg_.snat[i].loc.line), true;
        return false;
      });
      if (!shadowed) continue;
      std::string lines;
      for (int l : by) lines += (lines.empty() ? "" : ", ") + std::to_string(l);
      const bool many = by.size() > 1;
      error(later.loc.line, std::string("this [[snat]] rule never applies: the rule") + (many ? "s at lines " : " at line ") +
                                lines + (many ? " match" : " matches") +
                                " all of its sources first (put the narrower rule first)");
    }
  }

  void load_timeouts(const toml::table& t) {
    const Section& s = section("timeouts");
    Timeouts& to = cfg_.timeouts;
    // RFC 4787/5382 minimums (udp 120, tcp_established 7440) are advice, not limits:
    // shorter values are a deliberate choice (e.g. 350 like a managed gateway) and tests use tiny ones.
    read_int(t, s, "udp", to.udp, 1, kMaxTimeout);
    read_int(t, s, "tcp_established", to.tcp_established, 1, kMaxTimeout);
    read_int(t, s, "tcp_transitory", to.tcp_transitory, 1, kMaxTimeout);
    read_int(t, s, "icmp", to.icmp, 1, kMaxTimeout);
    read_int(t, s, "fragment", to.fragment, 1, 30);
  }

  void load_nat(const toml::table& t) {
    const Section& s = section("nat");
    cfg_.nat.loc = {file_, line_of(t)};
    read_bool(t, s, "port_preservation", cfg_.nat.port_preservation);
    read_bool(t, s, "port_overlapping", cfg_.nat.port_overlapping);
    read_bool(t, s, "hairpinning", cfg_.nat.hairpinning);
    // Session indexes carry the direction in bit 31 (nat::SessionTable::kOutsideBit).
    read_int(t, s, "max_sessions", cfg_.nat.max_sessions, 1, (1u << 31) - 1);
    read_int(t, s, "max_sessions_per_host", cfg_.nat.max_sessions_per_host, 0, (1u << 31) - 1);  // 0 = none
    read_int(t, s, "max_ports_per_host", cfg_.nat.max_ports_per_host, 0, (1u << 31) - 1);        // 0 = none
    if (const auto* n = t.get("filtering")) {
      static constexpr std::string_view kFiltering[] = {"address-port-dependent", "endpoint-independent",
                                                        "address-dependent"};
      // Accepting a mode the dataplane does not do would silently change security behaviour.
      if (const auto i = one_of(*n, "nat.filtering", kFiltering)) {
        if (*i == 2)
          error(line_of(*n), "nat.filtering \"address-dependent\" is not implemented; use \"address-port-dependent\" "
                             "or \"endpoint-independent\"");
        cfg_.nat.endpoint_independent_filtering = *i == 1;
      }
    }
  }

  void load_acl(const toml::table& t) {
    const Section& s = section("acl");
    AclRule rule;
    rule.loc = {file_, line_of(t)};
    if (const auto* n = required(t, s, "action"))
      if (const auto a = allow_deny(*n, "acl.action")) rule.allow = *a;
    if (const auto* n = t.get("src")) rule.src = prefix(*n, "acl.src");
    if (const auto* n = t.get("dst")) rule.dst = prefix(*n, "acl.dst");
    if (const auto* n = t.get("protocol"))
      if (const auto p = protocol(*n)) rule.proto = *p;
    const bool has_ports = rule.proto == 6 || rule.proto == 17;
    for (auto [key, range] : {std::pair{"src_ports", &rule.sport}, std::pair{"dst_ports", &rule.dport}}) {
      const auto* n = t.get(key);
      if (!n) continue;
      const std::string what = qualified(s, key);
      if (!has_ports)
        error(line_of(*n), what + " needs protocol = \"tcp\" or \"udp\"");
      else if (const auto r = ports(*n, what, 0))
        *range = *r;
    }
    cfg_.acl.push_back(std::move(rule));
  }

  // "tcp", "udp", "icmp", "any", or a protocol number (integer or numeric string).
  std::optional<uint8_t> protocol(const toml::node& n) {
    static constexpr std::string_view kNames[] = {"any", "icmp", "tcp", "udp"};
    static constexpr uint8_t kNumbers[] = {0, 1, 6, 17};
    if (n.is_integer()) {
      const auto v = integer(n, "acl.protocol", 0, 255);
      if (!v) return std::nullopt;
      return static_cast<uint8_t>(*v);
    }
    if (const auto* s = n.as_string()) {
      const std::string& v = s->get();
      unsigned number = 0;
      const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), number);
      if (ec == std::errc() && end == v.data() + v.size() && number <= 255)
        return static_cast<uint8_t>(number);
    }
    const auto i = one_of(n, "acl.protocol", kNames);
    if (!i) return std::nullopt;
    return kNumbers[*i];
  }

  void load_acl_default(const toml::table& t) {
    if (const auto* n = required(t, section("acl_default"), "action"))
      if (const auto a = allow_deny(*n, "acl_default.action")) cfg_.acl_default_allow = *a;
  }

  void load_metrics(const toml::table& t) {
    cfg_.metrics.loc = {file_, line_of(t)};
    const auto* n = t.get("listen");
    if (!n) return;
    const auto v = str(*n, "metrics.listen");
    if (!v || v->empty()) return;  // empty = off
    std::string why;
    const auto colon = v->rfind(':');
    if (colon == std::string::npos || colon == 0) {
      why = "must be host:port, e.g. 127.0.0.1:9100";
    } else {
      const std::string host = v->substr(0, colon);
      const std::string port = v->substr(colon + 1);
      std::string ignored;
      const auto p = parse_port_range(port, ignored);
      const bool numeric = host.find_first_not_of("0123456789.") == std::string::npos;
      const bool hostname = std::all_of(host.begin(), host.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '.' || c == '-';
      });
      if (!p || p->lo != p->hi || p->lo == 0 || port.find_first_not_of("0123456789") != std::string::npos) {
        why = "port " + quote(port) + " must be 1..65535";
      } else if (numeric) {
        if (!parse_ipv4(host, why)) why = "host " + quote(host) + ": " + why;
      } else if (!hostname) {
        why = "host " + quote(host) + " must be an IPv4 address or a host name";
      }
    }
    if (!why.empty()) {
      error(line_of(*n), "metrics.listen " + quote(*v) + " " + why);
      return;
    }
    cfg_.metrics.listen = *v;
  }

  void load_nat_events(const toml::table& t) {
    NatEvents& e = cfg_.nat_events;
    e.loc = {file_, line_of(t)};
    // A collector's "address:port". An address, not a name: the control thread must not wait on DNS to log.
    const auto collector = [&](std::string_view key, const char* example, uint32_t& addr_out, uint16_t& port_out) {
      const auto* n = t.get(key);
      if (!n) return;
      const std::string what = "nat_events." + std::string(key);
      const auto v = str(*n, what);
      if (!v || v->empty()) return;  // empty = off
      const auto colon = v->rfind(':');
      std::string why;
      std::optional<uint32_t> addr;
      std::optional<PortRange> port;
      if (colon != std::string::npos) {
        addr = parse_ipv4(v->substr(0, colon), why);
        const std::string p = v->substr(colon + 1);
        std::string ignored;
        if (p.find_first_not_of("0123456789") == std::string::npos) port = parse_port_range(p, ignored);
      }
      if (colon == std::string::npos || !addr || !*addr || !port || port->lo != port->hi || port->lo == 0)
        error(line_of(*n), what + " " + quote(*v) + " must be an IPv4 address and a port, e.g. " + quote(example) +
                               (why.empty() ? "" : " (" + why + ")"));
      else
        addr_out = *addr, port_out = port->lo;
    };
    collector("syslog", "10.0.0.5:514", e.syslog_addr, e.syslog_port);
    collector("ipfix", "10.0.0.5:4739", e.ipfix_addr, e.ipfix_port);
    if (const auto* n = t.get("ipfix_domain"))
      if (const auto v = integer(*n, "nat_events.ipfix_domain", 0, UINT32_MAX)) e.ipfix_domain = static_cast<uint32_t>(*v);
    if (const auto* n = t.get("file")) {
      if (const auto v = str(*n, "nat_events.file")) {
        if (!v->empty() && (*v)[0] != '/')
          error(line_of(*n), "nat_events.file " + quote(*v) + " must be an absolute path");
        else
          e.file = *v;
      }
    }
  }

  void load_control(const toml::table& t) {
    cfg_.control.loc = {file_, line_of(t)};
    const auto* n = t.get("socket");
    if (!n) return;
    const auto v = str(*n, "control.socket");
    if (!v) return;
    if (v->empty())
      error(line_of(*n), "control.socket must not be empty");
    else if (v->size() >= kUnixPathMax)
      error(line_of(*n), "control.socket path is " + std::to_string(v->size()) +
                             " bytes: a unix socket path must be under " + std::to_string(kUnixPathMax));
    else
      cfg_.control.socket = *v;
  }

  std::string file_;
  std::string base_dir_;
  Config cfg_;
  std::vector<Error> errors_;
  // For cross-checks, parallel to cfg_.interfaces.
  std::map<std::string, size_t> iface_by_name_;
  std::vector<bool> iface_addr_ok_;
  std::vector<std::string> iface_device_id_;
  std::map<uint64_t, std::string> routed_;  // prefix -> where it was first routed
};

}  // namespace

LoadResult load_string(const std::string& text, const std::string& name, const std::string& base_dir) {
  return Loader(name, base_dir).run(text);
}

LoadResult load_file(const std::string& path) {
  std::string why;
  const auto text = read_text_file(path, why);
  if (!text) return LoadResult{std::nullopt, {{path, 0, "cannot read config file: " + why}}};
  return load_string(*text, path, std::filesystem::path(path).parent_path().string());
}

std::vector<Error> restart_reasons(const Config& running, const Config& next) {
  std::vector<Error> out;
  const auto add = [&](const Location& loc, const std::string& what) {
    out.push_back({loc.file.empty() ? next.path : loc.file, loc.line, what + ": that needs a restart"});
  };
  const auto list = [](const std::vector<std::string>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + v[i] + "\"";
    return s + "]";
  };
  const auto changed = [](const std::string& what, const std::string& from, const std::string& to) {
    return what + " changed from " + from + " to " + to;
  };
  const Dataplane &a = running.dataplane, &b = next.dataplane;
  if (a.workers != b.workers)
    add(b.loc, changed("dataplane.workers", std::to_string(a.workers), std::to_string(b.workers)));
  if (a.eal != b.eal) add(b.loc, changed("dataplane.eal", list(a.eal), list(b.eal)));
  if (a.mbufs != b.mbufs) add(b.loc, changed("dataplane.mbufs", std::to_string(a.mbufs), std::to_string(b.mbufs)));
  if (running.nat.max_sessions != next.nat.max_sessions)
    add(next.nat.loc, changed("nat.max_sessions", std::to_string(running.nat.max_sessions),
                              std::to_string(next.nat.max_sessions)));
  // nat.max_sessions_per_host and max_ports_per_host reload, unless natgw started without either: dp::build_tables
  // says so (the running config may have dropped a limit natgw started with).
  if (running.metrics.listen != next.metrics.listen)
    add(next.metrics.loc, changed("metrics.listen", "\"" + running.metrics.listen + "\"",
                                  "\"" + next.metrics.listen + "\""));
  if (running.control.socket != next.control.socket)
    add(next.control.loc, changed("control.socket", "\"" + running.control.socket + "\"",
                                  "\"" + next.control.socket + "\""));
  if (running.interfaces.size() != next.interfaces.size()) {
    add({}, "the number of interfaces changed from " + std::to_string(running.interfaces.size()) + " to " +
                std::to_string(next.interfaces.size()));
    return out;
  }
  for (size_t i = 0; i < next.interfaces.size(); ++i) {
    const Interface &x = running.interfaces[i], &y = next.interfaces[i];
    const std::string what = "interface '" + y.name + "'";
    if (x.name != y.name) add(y.loc, "interface #" + std::to_string(i + 1) + " renamed from '" + x.name + "'");
    if (x.device != y.device) add(y.loc, changed(what + " device", "\"" + x.device + "\"", "\"" + y.device + "\""));
    if (x.addr != y.addr || x.prefix_len != y.prefix_len)
      add(y.loc, changed(what + " address", format_ipv4(x.addr) + "/" + std::to_string(x.prefix_len),
                         format_ipv4(y.addr) + "/" + std::to_string(y.prefix_len)));
    if (x.mtu != y.mtu) add(y.loc, changed(what + " mtu", std::to_string(x.mtu), std::to_string(y.mtu)));
    if (x.mss_clamp != y.mss_clamp)
      add(y.loc, changed(what + " mss_clamp", std::to_string(x.mss_clamp), std::to_string(y.mss_clamp)));
    if (x.one_armed != y.one_armed)
      add(y.loc, changed(what + " one_armed", x.one_armed ? "true" : "false", y.one_armed ? "true" : "false"));
    if (x.xdp_steering != y.xdp_steering)
      add(y.loc, changed(what + " xdp_steering", x.xdp_steering ? "true" : "false",
                         y.xdp_steering ? "true" : "false"));
  }
  return out;
}

}  // namespace natgw::config
