// natgw configuration model and loader (control path only: exceptions allowed).
//
// The loader parses a TOML file with toml++, validates everything, and returns
// either a complete Config or every error found, each with file:line and a reason.
// Nothing here runs on the data path.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace natgw::config {

// Where a value came from, for error messages ("lab.toml:12: ...").
struct Location {
  std::string file;
  int line = 0;
};

// IPv4 prefix in host byte order; addr has no bits set below the mask.
struct Prefix {
  uint32_t addr = 0;
  uint8_t len = 0;
  bool operator==(const Prefix&) const = default;
};

struct Interface {
  std::string name;    // "inside", "endpoint", "internet"
  std::string device;  // vdev string ("net_af_packet0,iface=nat-in") or PCI address ("0000:00:06.0")
  uint32_t addr = 0;   // host order: natgw's own address on this link
  uint8_t prefix_len = 0;
  uint16_t mtu = 1500;
  uint16_t mss_clamp = 0;  // 0 = off; otherwise clamp TCP MSS on SYNs leaving this interface
  // One-armed NAT (a single ENI): also source-NAT flows that leave by the interface they came in on,
  // unless their destination is itself inside a [[snat]] `from` prefix. Off: only flows that cross
  // to another interface are translated (same-interface traffic is routed untranslated).
  bool one_armed = false;
  // AF_XDP mode sharing the interface with the kernel (device "net_af_xdp...,iface=X"): natgw loads its
  // XDP program (natgw_steer.bpf.o) on X, which passes what is addressed to the host's own addresses
  // (and ARP for them, DHCP replies) to the kernel and redirects the rest to natgw. MTU <= 3498.
  bool xdp_steering = false;
  std::vector<uint32_t> xdp_host_addresses;  // host order; empty = the kernel's addresses on X at start
  Location loc;
};

// Largest MTU of an interface in AF_XDP steering mode: one XDP buffer per frame (no multi-buffer), and
// ENA's kernel driver refuses XDP above 3498. MTU 9001 needs the ENI bound to DPDK instead.
inline constexpr uint16_t kXdpSteeringMaxMtu = 3498;

struct Route {
  std::vector<Prefix> prefixes;  // one for `prefix = ...`, many for `prefix_list = "file"`
  std::string prefix_list;       // path as resolved (relative to the config file's folder), empty if `prefix`
  uint32_t via = 0;              // host order gateway; 0 = on-link (destination resolved by ARP)
  std::string interface;         // name of an [[interface]]
  size_t interface_index = 0;    // index into Config::interfaces (filled by validation)
  Location loc;
};

struct SnatRule {
  std::vector<Prefix> from;  // source prefixes to translate
  std::vector<uint32_t> to;  // host order pool; empty = the egress interface's address
  uint16_t port_min = 1024;  // outside port range (also ICMP identifiers)
  uint16_t port_max = 65535;
  Location loc;
};

struct PortRange {
  uint16_t lo = 0;
  uint16_t hi = 65535;
  bool operator==(const PortRange&) const = default;
};

struct AclRule {
  bool allow = false;
  std::optional<Prefix> src;  // absent = any
  std::optional<Prefix> dst;
  uint8_t proto = 0;  // 0 = any; 1 icmp, 6 tcp, 17 udp (names accepted in TOML)
  PortRange sport;
  PortRange dport;
  Location loc;
};

struct Timeouts {  // seconds
  uint32_t udp = 300;
  uint32_t tcp_established = 7440;
  uint32_t tcp_transitory = 240;
  uint32_t icmp = 60;
  uint32_t fragment = 2;
};

struct Nat {
  bool port_preservation = true;  // keep the inside port when it is free
  bool port_overlapping = true;   // RFC 7857 §3: reuse an outside port while 5-tuples stay unique
  bool hairpinning = false;       // RFC 4787 REQ-9: inside hosts reach each other by their outside addresses
  bool endpoint_independent_filtering = false;  // filtering = "endpoint-independent" (RFC 4787 REQ-8)
  uint32_t max_sessions = 1u << 20;  // per worker
  uint32_t max_sessions_per_host = 0;  // sessions one inside host may open; 0 = no limit
  uint32_t max_ports_per_host = 0;     // outside ports (mappings) one inside host may hold; 0 = no limit
  Location loc;                      // the [nat] table (restart-only keys are reported here)
};

struct Dataplane {
  uint32_t workers = 1;
  std::vector<std::string> eal;  // passed to rte_eal_init after argv[0]
  uint32_t mbufs = 0;            // 0 = sized automatically from ports, queues and workers
  Location loc;
};

struct Metrics {
  std::string listen;  // "127.0.0.1:9100" or "host:9100"; empty = off
  Location loc;
};

struct Control {
  std::string socket = "/run/natgw/natgw.sock";
  Location loc;
};

// [nat_events]: a record of every translated session, created and ended (abuse tracing); any
// target turns it on, several may be set. Reloads live.
struct NatEvents {
  uint32_t syslog_addr = 0;  // host order; 0 = off. RFC 5424 messages over UDP (RFC 5426)
  uint16_t syslog_port = 0;
  std::string file;  // appended, one line per event; empty = off
  uint32_t ipfix_addr = 0;  // host order; 0 = off. IPFIX (RFC 7011) over UDP, RFC 8158's NAT44 session records
  uint16_t ipfix_port = 0;
  uint32_t ipfix_domain = 1;  // the messages' observation domain id
  bool enabled() const { return syslog_addr != 0 || !file.empty() || ipfix_addr != 0; }
  Location loc;
};

struct Config {
  std::string path;  // the file it was loaded from
  Dataplane dataplane;
  std::vector<Interface> interfaces;
  std::vector<Route> routes;
  std::vector<SnatRule> snat;
  std::vector<AclRule> acl;
  bool acl_default_allow = true;  // [acl_default] action = "allow" | "deny"
  Timeouts timeouts;
  Nat nat;
  Metrics metrics;
  Control control;
  NatEvents nat_events;
};

struct Error {
  std::string file;
  int line = 0;  // 0 when no line applies (e.g. file not found)
  std::string message;
  std::string str() const;  // "file:line: message"
};

struct LoadResult {
  std::optional<Config> config;  // set only when errors is empty
  std::vector<Error> errors;
  bool ok() const { return config.has_value(); }
};

// Load and validate a config file. Relative prefix_list paths are resolved against
// the config file's folder.
LoadResult load_file(const std::string& path);
// Same, from text; `name` is used in messages, `base_dir` to resolve prefix lists.
LoadResult load_string(const std::string& text, const std::string& name,
                       const std::string& base_dir = ".");

// What a reload from `running` to `next` cannot apply while natgw runs (EAL, workers,
// mbufs, session table size, interfaces and their devices, the control socket and the
// metrics listener): one error per change, at the line of its table in `next`. Empty
// when the reload can be applied live.
std::vector<Error> restart_reasons(const Config& running, const Config& next);

// Prefix-list file: one CIDR per line; '#' starts a comment; blank lines ignored.
// Errors are appended with the list file's own line numbers; a file that cannot be
// read at all gives one error with line 0. A prefix listed twice is an error.
std::vector<Prefix> load_prefix_list(const std::string& path, std::vector<Error>& errors);

// Helpers shared with tests and the CLI.
std::optional<Prefix> parse_prefix(const std::string& s);     // "10.0.0.0/8"; rejects host bits set
std::optional<uint32_t> parse_ipv4(const std::string& s);     // host order
std::string format_ipv4(uint32_t host_order_addr);
std::string format_prefix(const Prefix& p);

// Variants that say why a string was rejected, for error messages
// (e.g. "host bits 0.0.0.1 are set below the /8 mask (did you mean 10.0.0.0/8?)").
std::optional<uint32_t> parse_ipv4(const std::string& s, std::string& why);
std::optional<Prefix> parse_prefix(const std::string& s, std::string& why);

// An interface address with its on-link prefix length ("10.0.1.10/24"): host bits allowed.
struct AddressWithLength {
  uint32_t addr = 0;  // host order
  uint8_t len = 0;
};
std::optional<AddressWithLength> parse_address_with_length(const std::string& s, std::string& why);

// A port "N" or a range "A-B" (spaces around the dash allowed), ports 0..65535, A <= B.
std::optional<PortRange> parse_port_range(const std::string& s, std::string& why);

// Netmask of a prefix length in host order (0 for /0).
constexpr uint32_t prefix_mask(uint8_t len) { return len == 0 ? 0 : ~0u << (32 - len); }
constexpr bool contains(const Prefix& p, uint32_t addr) { return (addr & prefix_mask(p.len)) == p.addr; }
constexpr bool contains(const Prefix& outer, const Prefix& inner) {
  return outer.len <= inner.len && contains(outer, inner.addr);
}
// The on-link subnet of an interface (its connected route).
inline Prefix subnet_of(const Interface& i) { return {i.addr & prefix_mask(i.prefix_len), i.prefix_len}; }
// "network" or "broadcast" when `a` is that address of its /len subnet (/31 and /32
// have neither), else nullptr.
constexpr const char* network_or_broadcast(uint32_t a, uint8_t len) {
  if (len > 30) return nullptr;
  const uint32_t host = a & ~prefix_mask(len);
  return host == 0 ? "network" : host == ~prefix_mask(len) ? "broadcast" : nullptr;
}

// Whole file as text; on failure nullopt and `why` says why (e.g. "No such file or directory").
std::optional<std::string> read_text_file(const std::string& path, std::string& why);

}  // namespace natgw::config
