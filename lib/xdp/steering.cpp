#include "xdp/steering.hpp"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>
#include <utility>

#include "config/device_args.hpp"

namespace natgw::xdp {

namespace {

constexpr long kBpfFsMagic = 0xcafe4a11;

struct MapSpec {
  const char* name;
  uint32_t type;
  uint32_t key_size;
  uint32_t value_size;
  uint32_t max_entries;
};

// What steer_abi.h promises, slot by slot (same order as XdpSteering::MapSlot).
const MapSpec kSpecs[] = {
    {NATGW_STEER_MAP_XSKS, BPF_MAP_TYPE_XSKMAP, 4, 4, NATGW_STEER_MAX_QUEUES},
    {NATGW_STEER_MAP_HOST, BPF_MAP_TYPE_HASH, 4, 4, NATGW_STEER_MAX_HOST_ADDRS},
    {NATGW_STEER_MAP_NATGW, BPF_MAP_TYPE_HASH, 4, 4, NATGW_STEER_MAX_NATGW_ADDRS},
    {NATGW_STEER_MAP_CONFIG, BPF_MAP_TYPE_ARRAY, 4, sizeof(natgw_steer_config), 1},
    {NATGW_STEER_MAP_STATS, BPF_MAP_TYPE_PERCPU_ARRAY, 4, sizeof(natgw_steer_counter), NATGW_STEER_NCOUNTERS},
};

const char* const kCounterNames[NATGW_STEER_NCOUNTERS] = {
    "pass_host", "pass_host_arp", "pass_dhcp",   "pass_broadcast", "pass_non_ipv4",   "pass_disabled",
    "pass_malformed", "pass_other", "xsk_natgw", "xsk_natgw_arp",  "xsk_transit",     "fallback",
};

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

[[noreturn]] void fail(const std::string& what) { throw std::runtime_error("xdp steering: " + what); }

std::string ip_str(uint32_t host_order) {
  in_addr a{htonl(host_order)};
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

int ifindex_of(const std::string& ifname) {
  const unsigned idx = if_nametoindex(ifname.c_str());
  if (idx == 0) fail("no interface '" + ifname + "' in this network namespace (" + errstr(errno) + ")");
  return static_cast<int>(idx);
}

int dup_fd(int fd) {
  const int d = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (d < 0) fail("dup: " + errstr(errno));
  return d;
}

bool is_bpffs(const std::string& path) {
  struct statfs st{};
  return statfs(path.c_str(), &st) == 0 && static_cast<long>(st.f_type) == kBpfFsMagic;
}

// Pins need a bpffs. systemd mounts one on /sys/fs/bpf; a minimal system (or `ip netns exec`, which
// mounts a fresh /sys) may not have it: mount it as libxdp does.
void ensure_bpffs(const std::string& dir) {
  const std::string root = "/sys/fs/bpf";
  if (dir.rfind(root, 0) != 0) return;  // elsewhere: the caller's business
  if (is_bpffs(root)) return;
  if (mount("bpf", root.c_str(), "bpf", 0, "mode=0700") != 0)
    fail("/sys/fs/bpf is not a bpf filesystem and mounting one failed (" + errstr(errno) +
         "): mount -t bpf bpf /sys/fs/bpf, or set an empty pin folder");
}

void mkdir_p(const std::string& dir) {
  for (size_t pos = 1; pos != std::string::npos;) {
    pos = dir.find('/', pos + 1);
    const std::string part = dir.substr(0, pos);
    if (mkdir(part.c_str(), 0700) != 0 && errno != EEXIST) fail("mkdir " + part + ": " + errstr(errno));
  }
}

std::string mode_name(uint8_t mode) {
  switch (mode) {
    case XDP_ATTACHED_DRV: return "native";
    case XDP_ATTACHED_SKB: return "generic";
    case XDP_ATTACHED_HW: return "offload";
    case XDP_ATTACHED_MULTI: return "multi";
    default: return "none";
  }
}

struct ProgInfo {
  uint32_t id = 0;
  std::string name;
  std::vector<uint32_t> map_ids;
};

ProgInfo prog_info(int prog_fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  int rc = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
  if (rc != 0) fail("bpf_obj_get_info_by_fd(prog): " + errstr(rc));
  ProgInfo p;
  p.id = info.id;
  p.name = info.name;
  p.map_ids.resize(info.nr_map_ids);
  if (!p.map_ids.empty()) {
    const uint32_t n = info.nr_map_ids;
    info = {};
    info.nr_map_ids = n;
    info.map_ids = reinterpret_cast<uintptr_t>(p.map_ids.data());
    len = sizeof(info);
    rc = bpf_obj_get_info_by_fd(prog_fd, &info, &len);
    if (rc != 0) fail("bpf_obj_get_info_by_fd(prog maps): " + errstr(rc));
    p.map_ids.resize(std::min(n, info.nr_map_ids));
  }
  return p;
}

// The program attached to ifindex (any mode), 0 if none.
uint32_t attached_id(int ifindex, uint8_t* mode = nullptr) {
  bpf_xdp_query_opts q{};
  q.sz = sizeof(q);
  const int rc = bpf_xdp_query(ifindex, 0, &q);
  if (rc != 0) fail("bpf_xdp_query: " + errstr(rc));
  if (mode) *mode = q.attach_mode;
  if (q.prog_id) return q.prog_id;
  return q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id ? q.skb_prog_id : q.hw_prog_id;
}

uint32_t mode_flags(uint8_t attach_mode) {
  switch (attach_mode) {
    case XDP_ATTACHED_DRV: return XDP_FLAGS_DRV_MODE;
    case XDP_ATTACHED_SKB: return XDP_FLAGS_SKB_MODE;
    case XDP_ATTACHED_HW: return XDP_FLAGS_HW_MODE;
    default: return 0;
  }
}

// Detach prog `id` (attached in `attach_mode`) from ifindex, only if it is still the attached one.
int detach_if_current(int ifindex, uint32_t id, uint8_t attach_mode) {
  const int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) return fd;
  bpf_xdp_attach_opts o{};
  o.sz = sizeof(o);
  o.old_prog_fd = fd;
  int rc = bpf_xdp_detach(ifindex, mode_flags(attach_mode) | XDP_FLAGS_REPLACE, &o);
  if (rc == -EINVAL || rc == -EOPNOTSUPP)  // kernels without XDP_FLAGS_REPLACE for detach
    rc = bpf_xdp_detach(ifindex, mode_flags(attach_mode), nullptr);
  close(fd);
  return rc;
}

void unpin_dir(const std::string& dir) {
  if (dir.empty()) return;
  for (const auto& s : kSpecs) unlink((dir + "/" + s.name).c_str());
  rmdir(dir.c_str());  // only if empty; leave /sys/fs/bpf/natgw itself
}

}  // namespace

std::string find_object() {
  if (const char* env = std::getenv("NATGW_XDP_OBJECT"); env && *env) return env;
  std::vector<std::string> candidates;
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    candidates.push_back(dir + "/natgw_steer.bpf.o");
  }
#ifdef NATGW_XDP_OBJECT_INSTALL
  candidates.push_back(NATGW_XDP_OBJECT_INSTALL);
#endif
#ifdef NATGW_XDP_OBJECT_BUILD
  candidates.push_back(NATGW_XDP_OBJECT_BUILD);
#endif
  for (const auto& c : candidates)
    if (access(c.c_str(), R_OK) == 0) return c;
  return {};
}

std::string af_xdp_iface(const std::string& device) {
  if (device.rfind("net_af_xdp", 0) != 0) return {};
  return config::device_arg(device, "iface").value_or("");
}

std::string with_xdp_prog(const std::string& device, const std::string& object) {
  if (device.find(",xdp_prog=") != std::string::npos) return device;
  return device + ",xdp_prog=" + object;
}

std::string_view counter_name(unsigned index) {
  return index < NATGW_STEER_NCOUNTERS ? kCounterNames[index] : "unknown";
}

std::string_view counter_destination(unsigned index) {
  return index >= NATGW_STEER_C_XSK_NATGW && index <= NATGW_STEER_C_XSK_TRANSIT ? "natgw" : "kernel";
}

uint64_t SteeringStats::to_kernel_packets() const {
  uint64_t n = 0;
  for (unsigned i = 0; i < NATGW_STEER_NCOUNTERS; ++i)
    if (counter_destination(i) == "kernel") n += packets[i];
  return n;
}

uint64_t SteeringStats::to_natgw_packets() const {
  uint64_t n = 0;
  for (unsigned i = 0; i < NATGW_STEER_NCOUNTERS; ++i)
    if (counter_destination(i) == "natgw") n += packets[i];
  return n;
}

std::string XdpSteering::default_pin_dir(const std::string& ifname) { return std::string(kPinRoot) + "/" + ifname; }

XdpSteering::XdpSteering(XdpSteering&& o) noexcept { *this = std::move(o); }

XdpSteering& XdpSteering::operator=(XdpSteering&& o) noexcept {
  if (this != &o) {
    close_all();
    ifname_ = std::move(o.ifname_);
    ifindex_ = o.ifindex_;
    pin_dir_ = std::move(o.pin_dir_);
    prog_fd_ = std::exchange(o.prog_fd_, -1);
    prog_id_ = o.prog_id_;
    for (size_t i = 0; i < map_fd_.size(); ++i) map_fd_[i] = std::exchange(o.map_fd_[i], -1);
  }
  return *this;
}

XdpSteering::~XdpSteering() { close_all(); }

void XdpSteering::close_all() noexcept {
  if (prog_fd_ >= 0) close(prog_fd_);
  prog_fd_ = -1;
  for (int& fd : map_fd_) {
    if (fd >= 0) close(fd);
    fd = -1;
  }
}

void XdpSteering::adopt_maps_of_prog() {
  const ProgInfo p = prog_info(prog_fd_);
  prog_id_ = p.id;
  for (uint32_t id : p.map_ids) {
    const int fd = bpf_map_get_fd_by_id(id);
    if (fd < 0) fail("bpf_map_get_fd_by_id(" + std::to_string(id) + "): " + errstr(fd));
    bpf_map_info mi{};
    uint32_t len = sizeof(mi);
    const int rc = bpf_obj_get_info_by_fd(fd, &mi, &len);
    if (rc != 0) {
      close(fd);
      fail("bpf_obj_get_info_by_fd(map): " + errstr(rc));
    }
    bool kept = false;
    for (size_t s = 0; s < kMapCount; ++s) {
      const MapSpec& spec = kSpecs[s];
      if (std::strcmp(mi.name, spec.name) != 0) continue;
      if (mi.type != spec.type || mi.key_size != spec.key_size || mi.value_size != spec.value_size ||
          mi.max_entries != spec.max_entries) {
        close(fd);
        fail(std::string("map '") + spec.name + "' of program id " + std::to_string(prog_id_) +
             " does not match this natgw (type/key/value/entries " + std::to_string(mi.type) + "/" +
             std::to_string(mi.key_size) + "/" + std::to_string(mi.value_size) + "/" +
             std::to_string(mi.max_entries) + ", expected " + std::to_string(spec.type) + "/" +
             std::to_string(spec.key_size) + "/" + std::to_string(spec.value_size) + "/" +
             std::to_string(spec.max_entries) + "): natgw_steer.bpf.o is from another build");
      }
      if (map_fd_[s] >= 0) close(map_fd_[s]);
      map_fd_[s] = fd;
      kept = true;
      break;
    }
    if (!kept) close(fd);  // .rodata/.bss or maps we do not use
  }
  for (size_t s = 0; s < kMapCount; ++s)
    if (map_fd_[s] < 0)
      fail(std::string("program id ") + std::to_string(prog_id_) + " has no map '" + kSpecs[s].name +
           "': is it natgw_steer.bpf.o from this build?");
}

void XdpSteering::pin(const std::string& dir) {
  pin_dir_ = dir;
  if (dir.empty()) return;
  ensure_bpffs(dir);
  mkdir_p(dir);
  for (size_t s = 0; s < kMapCount; ++s) {
    const std::string path = dir + "/" + kSpecs[s].name;
    unlink(path.c_str());  // a previous run's pin points at maps of a program that is gone
    const int rc = bpf_obj_pin(map_fd_[s], path.c_str());
    if (rc != 0) fail("pin " + path + ": " + errstr(rc));
  }
}

XdpSteering XdpSteering::open(const std::string& ifname, const std::string& pin_dir) {
  XdpSteering s;
  s.ifname_ = ifname;
  s.ifindex_ = ifindex_of(ifname);
  uint8_t mode = 0;
  const uint32_t id = attached_id(s.ifindex_, &mode);
  if (id == 0)
    fail("no XDP program on " + ifname +
         " (does the af_xdp device string carry xdp_prog=.../natgw_steer.bpf.o, and has the port started?)");
  s.prog_fd_ = bpf_prog_get_fd_by_id(id);
  if (s.prog_fd_ < 0) fail("bpf_prog_get_fd_by_id(" + std::to_string(id) + "): " + errstr(s.prog_fd_));
  const ProgInfo p = prog_info(s.prog_fd_);
  if (p.name != NATGW_STEER_PROG_NAME)
    fail("the XDP program on " + ifname + " is '" + p.name + "' (id " + std::to_string(id) + "), not " +
         NATGW_STEER_PROG_NAME + ": xdp_prog= must point at natgw_steer.bpf.o");
  s.adopt_maps_of_prog();
  s.pin(pin_dir);
  return s;
}

XdpSteering XdpSteering::load(const std::string& object_path) {
  bpf_object* obj = bpf_object__open_file(object_path.c_str(), nullptr);
  if (!obj) fail("cannot open " + object_path + ": " + errstr(errno));
  XdpSteering s;
  try {
    bpf_program* prog = bpf_object__find_program_by_name(obj, NATGW_STEER_PROG_NAME);
    if (!prog) fail(object_path + " has no program " NATGW_STEER_PROG_NAME);
    bpf_program__set_type(prog, BPF_PROG_TYPE_XDP);
    const int rc = bpf_object__load(obj);
    if (rc != 0) fail("cannot load " + object_path + " into the kernel: " + errstr(rc) + " (root or CAP_BPF needed)");
    s.prog_fd_ = dup_fd(bpf_program__fd(prog));
    s.adopt_maps_of_prog();
  } catch (...) {
    bpf_object__close(obj);
    throw;
  }
  bpf_object__close(obj);  // we hold our own fds to the program and its maps
  return s;
}

XdpSteering XdpSteering::attach(const std::string& ifname, const std::string& object_path, AttachMode mode,
                                const std::string& pin_dir) {
  const int ifindex = ifindex_of(ifname);
  XdpSteering s = load(object_path);
  s.ifname_ = ifname;
  s.ifindex_ = ifindex;
  uint32_t flags = XDP_FLAGS_UPDATE_IF_NOEXIST;
  if (mode == AttachMode::native) flags |= XDP_FLAGS_DRV_MODE;
  if (mode == AttachMode::generic) flags |= XDP_FLAGS_SKB_MODE;
  const int rc = bpf_xdp_attach(ifindex, s.prog_fd_, flags, nullptr);
  if (rc != 0)
    fail("cannot attach to " + ifname + ": " + errstr(rc) +
         (rc == -EBUSY || rc == -EEXIST ? " (an XDP program is already attached)"
                                        : " (ENA: MTU must be <= 3498 and channels <= half the maximum)"));
  s.pin(pin_dir);
  return s;
}

bool XdpSteering::detach_stale(const std::string& ifname, const std::string& pin_dir) {
  const int ifindex = ifindex_of(ifname);
  uint8_t mode = 0;
  const uint32_t id = attached_id(ifindex, &mode);
  bool removed = false;
  if (id != 0) {
    const int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) fail("bpf_prog_get_fd_by_id(" + std::to_string(id) + "): " + errstr(fd));
    std::string name;
    try {
      name = prog_info(fd).name;
    } catch (...) {
      close(fd);
      throw;
    }
    close(fd);
    if (name == NATGW_STEER_PROG_NAME) {
      const int rc = detach_if_current(ifindex, id, mode);
      if (rc != 0) fail("cannot detach the stale natgw_steer (id " + std::to_string(id) + ") from " + ifname + ": " + errstr(rc));
      removed = true;
    }
  }
  unpin_dir(pin_dir);
  return removed;
}

std::optional<AttachedProgram> XdpSteering::query(const std::string& ifname) {
  const int ifindex = ifindex_of(ifname);
  uint8_t mode = 0;
  const uint32_t id = attached_id(ifindex, &mode);
  if (id == 0) return std::nullopt;
  AttachedProgram a;
  a.prog_id = id;
  a.mode = mode_name(mode);
  const int fd = bpf_prog_get_fd_by_id(id);
  if (fd >= 0) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) a.name = info.name;
    close(fd);
  }
  return a;
}

std::vector<uint32_t> XdpSteering::kernel_addresses(const std::string& ifname) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) fail("getifaddrs: " + errstr(errno));
  std::vector<uint32_t> out;
  for (ifaddrs* a = list; a; a = a->ifa_next) {
    if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET || ifname != a->ifa_name) continue;
    out.push_back(ntohl(reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr.s_addr));
  }
  freeifaddrs(list);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<uint32_t> XdpSteering::read_set(MapSlot slot) const {
  std::vector<uint32_t> out;
  uint32_t key = 0, next = 0;
  const uint32_t* prev = nullptr;
  while (bpf_map_get_next_key(map_fd_[slot], prev, &next) == 0) {
    out.push_back(ntohl(next));
    key = next;
    prev = &key;
  }
  std::sort(out.begin(), out.end());
  return out;
}

void XdpSteering::add_to_set(MapSlot slot, const std::vector<uint32_t>& addrs, size_t max) {
  const std::set<uint32_t> want(addrs.begin(), addrs.end());
  if (want.size() > max)
    fail(std::string(kSpecs[slot].name) + ": " + std::to_string(want.size()) + " addresses, at most " +
         std::to_string(max));
  const uint32_t one = 1;
  for (uint32_t a : want) {
    const uint32_t key = htonl(a);
    const int rc = bpf_map_update_elem(map_fd_[slot], &key, &one, BPF_ANY);
    if (rc != 0)
      fail(std::string(kSpecs[slot].name) + ": add " + ip_str(a) + ": " + errstr(rc) +
           (rc == -E2BIG ? " (the map is full)" : ""));
  }
}

void XdpSteering::keep_only(MapSlot slot, const std::vector<uint32_t>& addrs) {
  const std::set<uint32_t> want(addrs.begin(), addrs.end());
  for (uint32_t a : read_set(slot)) {
    if (want.count(a)) continue;
    const uint32_t key = htonl(a);
    const int rc = bpf_map_delete_elem(map_fd_[slot], &key);
    if (rc != 0 && rc != -ENOENT) fail(std::string(kSpecs[slot].name) + ": remove " + ip_str(a) + ": " + errstr(rc));
  }
}

void XdpSteering::set_host_addresses(const std::vector<uint32_t>& addrs) {
  const auto natgw = read_set(kNatgw);
  for (uint32_t a : addrs)
    if (std::binary_search(natgw.begin(), natgw.end(), a))
      fail(ip_str(a) + " is both a host (kernel) address and a natgw address: give natgw its own address");
  add_to_set(kHost, addrs, NATGW_STEER_MAX_HOST_ADDRS);  // added before stale ones go: no gap
  keep_only(kHost, addrs);
}

void XdpSteering::set_natgw_addresses(const std::vector<uint32_t>& addrs) {
  const auto host = read_set(kHost);
  for (uint32_t a : addrs)
    if (std::binary_search(host.begin(), host.end(), a))
      fail(ip_str(a) + " is both a host (kernel) address and a natgw address: give natgw its own address "
           "(e.g. a secondary private IP of the ENI) and keep the primary for the host");
  add_to_set(kNatgw, addrs, NATGW_STEER_MAX_NATGW_ADDRS);
  keep_only(kNatgw, addrs);
}

void XdpSteering::set_flags(uint32_t flags) {
  const uint32_t key = 0;
  natgw_steer_config c{flags, 0};
  const int rc = bpf_map_update_elem(map_fd_[kConfig], &key, &c, BPF_ANY);
  if (rc != 0) fail("steer_config: " + errstr(rc));
}

void XdpSteering::configure(const SteeringConfig& c) {
  std::set<uint32_t> host(c.host_addresses.begin(), c.host_addresses.end());
  for (uint32_t a : c.natgw_addresses)
    if (host.count(a))
      fail(ip_str(a) + " is both a host (kernel) address and a natgw address: give natgw its own address "
           "(e.g. a secondary private IP of the ENI) and keep the primary for the host");
  // The program looks at host addresses before natgw's, so an address in both sets goes to the kernel.
  // Add the new host addresses first (an address moving natgw -> host is the kernel's at once), then
  // replace natgw's set, and only then drop the old host addresses (an address moving host -> natgw
  // stays the kernel's until this last step): no frame is ever steered by a half-applied change.
  add_to_set(kHost, c.host_addresses, NATGW_STEER_MAX_HOST_ADDRS);
  add_to_set(kNatgw, c.natgw_addresses, NATGW_STEER_MAX_NATGW_ADDRS);
  keep_only(kNatgw, c.natgw_addresses);
  keep_only(kHost, c.host_addresses);
  uint32_t flags = 0;
  if (c.enabled) flags |= NATGW_STEER_F_ENABLED;
  if (c.transit) flags |= NATGW_STEER_F_TRANSIT;
  if (c.dhcp) flags |= NATGW_STEER_F_DHCP;
  set_flags(flags);
}

SteeringConfig XdpSteering::current() const {
  SteeringConfig c;
  c.host_addresses = read_set(kHost);
  c.natgw_addresses = read_set(kNatgw);
  const uint32_t key = 0;
  natgw_steer_config v{};
  if (bpf_map_lookup_elem(map_fd_[kConfig], &key, &v) != 0) fail("steer_config: " + errstr(errno));
  c.enabled = v.flags & NATGW_STEER_F_ENABLED;
  c.transit = v.flags & NATGW_STEER_F_TRANSIT;
  c.dhcp = v.flags & NATGW_STEER_F_DHCP;
  return c;
}

SteeringStats XdpSteering::stats() const {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) fail("libbpf_num_possible_cpus: " + errstr(ncpu));
  std::vector<natgw_steer_counter> per_cpu(static_cast<size_t>(ncpu));
  SteeringStats s;
  for (uint32_t i = 0; i < NATGW_STEER_NCOUNTERS; ++i) {
    if (bpf_map_lookup_elem(map_fd_[kStats], &i, per_cpu.data()) != 0) fail("steer_stats: " + errstr(errno));
    for (const auto& c : per_cpu) {
      s.packets[i] += c.packets;
      s.bytes[i] += c.bytes;
    }
  }
  return s;
}

void XdpSteering::reset_stats() {
  const int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) fail("libbpf_num_possible_cpus: " + errstr(ncpu));
  std::vector<natgw_steer_counter> zero(static_cast<size_t>(ncpu));
  for (uint32_t i = 0; i < NATGW_STEER_NCOUNTERS; ++i)
    if (bpf_map_update_elem(map_fd_[kStats], &i, zero.data(), BPF_ANY) != 0) fail("steer_stats: " + errstr(errno));
}

void XdpSteering::detach() {
  if (ifindex_ != 0 && prog_id_ != 0) {
    uint8_t mode = 0;
    const uint32_t id = attached_id(ifindex_, &mode);
    if (id == prog_id_) {
      const int rc = detach_if_current(ifindex_, id, mode);
      if (rc != 0) fail("detach from " + ifname_ + ": " + errstr(rc));
    }
  }
  unpin();
}

void XdpSteering::unpin() {
  unpin_dir(pin_dir_);
}

uint32_t XdpSteering::test_run(const void* frame, uint32_t len) {
  std::vector<uint8_t> out(len + 256);
  bpf_test_run_opts o{};
  o.sz = sizeof(o);
  o.data_in = frame;
  o.data_out = out.data();
  o.data_size_in = len;
  o.data_size_out = static_cast<uint32_t>(out.size());
  o.repeat = 1;
  const int rc = bpf_prog_test_run_opts(prog_fd_, &o);
  if (rc != 0) fail("BPF_PROG_TEST_RUN: " + errstr(rc));
  return o.retval;
}

std::string prometheus_text(const std::vector<const XdpSteering*>& steerings) {
  if (steerings.empty()) return {};
  std::vector<SteeringStats> stats;
  for (const auto* s : steerings) stats.push_back(s->stats());
  std::string o;
  const auto family = [&](const char* name, const char* what, auto field) {
    o += std::string("# HELP ") + name + " " + what + " judged by the XDP steering program, by verdict.\n# TYPE " +
         name + " counter\n";
    for (size_t k = 0; k < steerings.size(); ++k)
      for (unsigned i = 0; i < NATGW_STEER_NCOUNTERS; ++i)
        o += std::string(name) + "{interface=\"" + steerings[k]->ifname() + "\",verdict=\"" +
             std::string(counter_name(i)) + "\",to=\"" + std::string(counter_destination(i)) + "\"} " +
             std::to_string((stats[k].*field)[i]) + "\n";
  };
  family("natgw_xdp_steer_packets_total", "Frames", &SteeringStats::packets);
  family("natgw_xdp_steer_bytes_total", "Bytes", &SteeringStats::bytes);
  return o;
}

}  // namespace natgw::xdp
