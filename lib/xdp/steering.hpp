// XDP steering for the AF_XDP mode that shares an interface with the kernel (control path only:
// exceptions allowed, nothing here runs per packet).
//
// natgw_steer.bpf.o (natgw_steer.bpf.c) sits on the shared interface and sends frames addressed to the
// host's own addresses (and ARP for them, and DHCP replies) to the kernel, and everything else (natgw's own
// addresses, ARP for them, transit traffic) to natgw's AF_XDP sockets, falling back to the kernel when no
// socket is bound. This class finds that program on an interface, checks its maps against steer_abi.h,
// pins them, fills them, and reads the per-verdict counters.
//
// Typical use in the daemon (the af_xdp PMD loads and attaches the program through its xdp_prog devarg):
//
//   XdpSteering::detach_stale("ens5");                      // before the port starts: a crashed natgw's
//                                                           // program would make the PMD's attach fail
//   ... rte_eth_dev_configure / rx_queue_setup / start ...  // the PMD attaches natgw_steer here
//   auto s = XdpSteering::open("ens5");                     // find it, open + pin its maps
//   s.configure({.host_addresses = XdpSteering::kernel_addresses("ens5"),
//                .natgw_addresses = {natgw_addr}});          // enables steering last
//   ... s.stats() for metrics; s.set_host_addresses(...) when the kernel's addresses change ...
//   ... the PMD detaches the program when the port is closed; s.unpin() after that.
//
// Addresses are IPv4 in host byte order, as everywhere else in natgw (config::parse_ipv4).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xdp/steer_abi.h"

namespace natgw::xdp {

inline constexpr const char* kPinRoot = "/sys/fs/bpf/natgw";

struct SteeringConfig {
  std::vector<uint32_t> host_addresses;   // the kernel's addresses on the interface: always to the kernel
  std::vector<uint32_t> natgw_addresses;  // natgw's interface address and SNAT pool addresses on this link
  bool transit = true;                    // redirect IPv4 addressed to neither (what natgw routes/translates)
  bool dhcp = true;                       // always pass UDP 67 -> 68 to the kernel
  bool enabled = true;                    // false: every frame goes to the kernel
};

struct SteeringStats {
  std::array<uint64_t, NATGW_STEER_NCOUNTERS> packets{};
  std::array<uint64_t, NATGW_STEER_NCOUNTERS> bytes{};
  uint64_t to_kernel_packets() const;  // sum of the pass_* counters and fallback
  uint64_t to_natgw_packets() const;   // sum of the xsk_* counters
};

// Stable snake_case name of a counter index, e.g. "pass_host", "xsk_transit", "fallback" (metrics label).
std::string_view counter_name(unsigned index);
// Whether the counter counts frames handed to the kernel ("kernel") or to natgw ("natgw").
std::string_view counter_destination(unsigned index);

class XdpSteering;
// Prometheus text for the steering counters of these interfaces: natgw_xdp_steer_{packets,bytes}_total
// {interface, verdict, to}. Empty for no interfaces. (natgw's /metrics and `natgw-xdp stats --prometheus`.)
std::string prometheus_text(const std::vector<const XdpSteering*>& steerings);

enum class AttachMode { any, native, generic };

// Where natgw_steer.bpf.o is: $NATGW_XDP_OBJECT if set, else the first that exists of: next to the running
// binary (/proc/self/exe's folder: the installed layout), the install path, the build tree. Empty if none.
std::string find_object();

// Helpers for af_xdp device strings ("net_af_xdp0,iface=ens5,queue_count=2"):
// the iface= value (empty if the string is not an af_xdp vdev or has no iface=) ...
std::string af_xdp_iface(const std::string& device);
// ... and the same string with xdp_prog=<object> appended unless it already carries an xdp_prog=.
std::string with_xdp_prog(const std::string& device, const std::string& object);

// What is attached to an interface right now.
struct AttachedProgram {
  uint32_t prog_id = 0;
  std::string name;        // the program's name, "natgw_steer" for ours
  std::string mode;        // "native", "generic", "offload" or "multi"
};

class XdpSteering {
 public:
  // The pin folder natgw uses for an interface: /sys/fs/bpf/natgw/<ifname>.
  static std::string default_pin_dir(const std::string& ifname);

  // Find natgw_steer attached to `ifname` (by the af_xdp PMD's xdp_prog devarg or by attach()), open its
  // maps and pin them under `pin_dir` (empty: do not pin). Mounts bpffs on /sys/fs/bpf if it is not.
  // Throws std::runtime_error saying what is missing (no such interface, no XDP program, another program,
  // a map that does not match steer_abi.h).
  static XdpSteering open(const std::string& ifname, const std::string& pin_dir);
  static XdpSteering open(const std::string& ifname) { return open(ifname, default_pin_dir(ifname)); }

  // Load `object_path` and attach it to `ifname` ourselves (without DPDK): the lab's "no consumer" case,
  // and a way to keep the host reachable with natgw stopped. Fails if any program is already attached.
  static XdpSteering attach(const std::string& ifname, const std::string& object_path,
                            AttachMode mode = AttachMode::any, const std::string& pin_dir = "");

  // Load `object_path` without attaching it anywhere: for BPF_PROG_TEST_RUN (unit tests).
  static XdpSteering load(const std::string& object_path);

  // Detach a program named natgw_steer from `ifname` if one is attached (left by a natgw that was killed:
  // the af_xdp PMD attaches with XDP_FLAGS_UPDATE_IF_NOEXIST and cannot start over it), and remove the
  // stale pins under `pin_dir`. Never touches a program with another name. Returns true if one was removed.
  static bool detach_stale(const std::string& ifname, const std::string& pin_dir);
  static bool detach_stale(const std::string& ifname) { return detach_stale(ifname, default_pin_dir(ifname)); }

  // What is attached to `ifname` (nullopt: nothing). Throws if the interface does not exist.
  static std::optional<AttachedProgram> query(const std::string& ifname);

  // The IPv4 addresses the kernel has on `ifname` (host order), e.g. the ENI's primary private IP.
  static std::vector<uint32_t> kernel_addresses(const std::string& ifname);

  XdpSteering(XdpSteering&& o) noexcept;
  XdpSteering& operator=(XdpSteering&& o) noexcept;
  XdpSteering(const XdpSteering&) = delete;
  XdpSteering& operator=(const XdpSteering&) = delete;
  ~XdpSteering();  // closes file descriptors only: the program stays attached, pins stay

  // Apply a whole configuration. Order keeps every frame on a sensible side during the change: addresses
  // first (added before stale ones are removed; host addresses win over natgw's in the program), the flags
  // (and so `enabled`) last. Throws if an address is both the host's and natgw's, or a set is too large.
  void configure(const SteeringConfig& c);
  void set_host_addresses(const std::vector<uint32_t>& addrs);
  void set_natgw_addresses(const std::vector<uint32_t>& addrs);
  void set_flags(uint32_t flags);  // NATGW_STEER_F_*
  SteeringConfig current() const;  // read back from the maps

  SteeringStats stats() const;  // summed over CPUs
  void reset_stats();

  // Remove the program from the interface if it is still the one this object opened, and unpin.
  void detach();
  void unpin();  // remove the pins this object made (or found) under its pin folder

  // Run one frame through the program with BPF_PROG_TEST_RUN; returns the XDP action (XDP_PASS = 2,
  // XDP_REDIRECT = 4). Frames for natgw return XDP_PASS here (no AF_XDP socket is bound in a test run)
  // and count as NATGW_STEER_C_FALLBACK.
  uint32_t test_run(const void* frame, uint32_t len);

  const std::string& ifname() const { return ifname_; }
  const std::string& pin_dir() const { return pin_dir_; }
  uint32_t prog_id() const { return prog_id_; }
  int prog_fd() const { return prog_fd_; }
  int xsks_map_fd() const { return map_fd_[kXsks]; }

 private:
  enum MapSlot { kXsks, kHost, kNatgw, kConfig, kStats, kMapCount };
  XdpSteering() = default;
  void close_all() noexcept;
  void adopt_maps_of_prog();  // fill map_fd_ from prog_fd_'s map ids, checking them
  void pin(const std::string& dir);
  void add_to_set(MapSlot slot, const std::vector<uint32_t>& addrs, size_t max);
  void keep_only(MapSlot slot, const std::vector<uint32_t>& addrs);
  std::vector<uint32_t> read_set(MapSlot slot) const;

  std::string ifname_;
  int ifindex_ = 0;
  std::string pin_dir_;
  int prog_fd_ = -1;
  uint32_t prog_id_ = 0;
  std::array<int, kMapCount> map_fd_{-1, -1, -1, -1, -1};
};

}  // namespace natgw::xdp
