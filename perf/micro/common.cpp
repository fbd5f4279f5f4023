#include "common.hpp"

#include <malloc.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_rcu_qsbr.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "dataplane/port.hpp"
#include "nat/table_memory.hpp"
#include "net/checksum.hpp"

namespace natgw::perf {

Options& options() {
  static Options o;
  return o;
}

namespace {

rte_mempool* g_pool = nullptr;
uint16_t g_null_ports[3];

bool take_flag(const std::string& a, const char* name, std::string& value) {
  const std::string n = name;
  if (a == n) {
    value = "1";
    return true;
  }
  if (a.rfind(n + "=", 0) == 0) {
    value = a.substr(n.size() + 1);
    return true;
  }
  return false;
}

size_t status_kb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  const size_t kl = std::strlen(key);
  while (std::getline(f, line))
    if (line.compare(0, kl, key) == 0) return std::strtoull(line.c_str() + kl + 1, nullptr, 10);
  return 0;
}

size_t read_sys(const char* path) {
  std::ifstream f(path);
  size_t v = 0;
  f >> v;
  return v;
}

}  // namespace

void parse_options(int& argc, char** argv) {
  Options& o = options();
  if (const char* e = std::getenv("NATGW_PERF_MAX_SESSIONS")) o.max_sessions = std::strtoull(e, nullptr, 10);
  if (const char* e = std::getenv("NATGW_PERF_NO_HUGE")) o.no_huge = std::atoi(e) != 0;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string v;
    if (take_flag(a, "--no-huge", v)) {
      o.no_huge = true;
    } else if (take_flag(a, "--smoke", v)) {
      o.smoke = true;
    } else if (take_flag(a, "--max-sessions", v)) {
      o.max_sessions = std::strtoull(v.c_str(), nullptr, 10);
    } else if (take_flag(a, "--iterations", v)) {
      o.iterations = std::strtoull(v.c_str(), nullptr, 10);
    } else if (take_flag(a, "--aws-json", v)) {
      o.aws_json = v;
    } else if (take_flag(a, "--eal-mem", v)) {
      o.eal_mem_mb = static_cast<unsigned>(std::strtoul(v.c_str(), nullptr, 10));
    } else if (take_flag(a, "--scales", v)) {
      std::stringstream ss(v);
      std::string item;
      while (std::getline(ss, item, ','))
        if (!item.empty()) o.scales.push_back(static_cast<uint32_t>(std::strtoul(item.c_str(), nullptr, 10)));
    } else {
      argv[out++] = argv[i];
    }
  }
  argc = out;
  argv[argc] = nullptr;
  if (o.scales.empty()) {
    if (o.smoke)
      o.scales = {1000, 10000};
    else
      o.scales = {1000, 100000, 1000000, 10000000};
  }
  if (o.aws_json.empty()) o.aws_json = std::string(NATGW_PERF_SOURCE_ROOT) + "/../shared/data/aws-ip-ranges.json";
}

void start_eal() {
  Options& o = options();
  if (!o.no_huge && free_hugepage_bytes() < (256u << 20)) {
    std::fprintf(stderr, "natgw-micro: fewer than 256 MB of free 2 MB hugepages: running with --no-huge\n");
    o.no_huge = true;
  }
  const std::string prefix = "pf-micro-" + std::to_string(getpid());
  std::vector<std::string> args = {"natgw-micro", "--no-pci", "--file-prefix", prefix,
                                   "--lcores", "0@(0-1)", "--log-level", "error"};
  if (o.no_huge) {  // --no-huge implies legacy memory, which --in-memory refuses
    const unsigned mb = o.eal_mem_mb ? o.eal_mem_mb : (o.smoke ? 256 : 2048);
    args.insert(args.end(), {"--no-huge", "--no-shconf", "-m", std::to_string(mb)});
  } else {
    args.push_back("--in-memory");  // no files left behind in /dev/hugepages
  }
  o.hugepages = !o.no_huge;
  for (size_t i = 1; i < args.size(); ++i) o.eal_summary += (i > 1 ? " " : "") + args[i];
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  if (rte_eal_init(static_cast<int>(argv.size()), argv.data()) < 0)
    throw std::runtime_error(std::string("rte_eal_init: ") + rte_strerror(rte_errno));
  g_pool = rte_pktmbuf_pool_create("pf_micro_pool", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (!g_pool) throw std::runtime_error("mbuf pool: " + std::string(rte_strerror(rte_errno)));
  for (unsigned i = 0; i < 3; ++i) {
    const std::string name = "net_null" + std::to_string(i);
    const uint16_t port = dp::probe_port(name);
    rte_eth_conf conf{};
    if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(port, 0, 512, SOCKET_ID_ANY, nullptr, g_pool) != 0 ||
        rte_eth_tx_queue_setup(port, 0, 512, SOCKET_ID_ANY, nullptr) != 0 || rte_eth_dev_start(port) != 0)
      throw std::runtime_error("cannot start " + name);
    g_null_ports[i] = port;
  }
}

rte_mempool* pool() { return g_pool; }
uint16_t null_port(unsigned i) { return g_null_ports[i]; }

MemProbe MemProbe::now() {
  MemProbe p;
  for (unsigned s = 0; s < rte_socket_count(); ++s) {
    rte_malloc_socket_stats st{};
    if (rte_malloc_get_socket_stats(rte_socket_id_by_idx(s), &st) == 0) p.rte_heap += st.heap_allocsz_bytes;
  }
  const struct mallinfo2 mi = mallinfo2();
  p.c_heap = mi.uordblks + mi.hblkhd + nat::TableMemory::mapped_bytes();  // the tables' mmap fallback (--no-huge)
  p.rss = (status_kb("VmRSS:") + status_kb("HugetlbPages:")) * 1024;
  return p;
}

size_t free_hugepage_bytes() {
  return read_sys("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") * (2u << 20);
}

size_t mem_available_bytes() {
  std::ifstream f("/proc/meminfo");
  std::string k;
  size_t v;
  std::string unit;
  while (f >> k >> v) {
    std::getline(f, unit);
    if (k == "MemAvailable:") return v * 1024;
  }
  return 0;
}

// ---------------------------------------------------------------- frames

FrameTemplate FrameTemplate::make(const rte_ether_addr& src_mac, const rte_ether_addr& dst_mac,
                                  uint8_t proto, rte_be32_t src, rte_be32_t dst, uint16_t sport_host,
                                  uint16_t dport_host) {
  FrameTemplate t{};
  std::memset(t.bytes, 0, sizeof(t.bytes));
  t.proto = proto;
  t.src = src;
  t.dst = dst;
  t.sport = rte_cpu_to_be_16(sport_host);
  t.dport = rte_cpu_to_be_16(dport_host);
  auto* eth = reinterpret_cast<rte_ether_hdr*>(t.bytes);
  eth->dst_addr = dst_mac;
  eth->src_addr = src_mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(t.bytes + 14);
  const uint16_t iplen = static_cast<uint16_t>(t.len - 14);
  const uint16_t l4len = static_cast<uint16_t>(iplen - 20);
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(iplen);
  ip->packet_id = rte_cpu_to_be_16(1);
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = 64;
  ip->next_proto_id = proto;
  ip->src_addr = src;
  ip->dst_addr = dst;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  t.ip_csum = ip->hdr_checksum;
  uint8_t* l4 = t.bytes + 34;
  for (uint16_t i = (proto == IPPROTO_TCP ? 20 : 8); i < l4len; ++i) l4[i] = static_cast<uint8_t>(0xa0 + i);
  if (proto == IPPROTO_TCP) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(l4);
    th->src_port = t.sport;
    th->dst_port = t.dport;
    th->sent_seq = rte_cpu_to_be_32(1000);
    th->recv_ack = rte_cpu_to_be_32(2000);
    th->data_off = 5 << 4;
    th->tcp_flags = RTE_TCP_ACK_FLAG;
    th->rx_win = rte_cpu_to_be_16(65535);
    th->cksum = 0;
    th->cksum = rte_ipv4_udptcp_cksum(ip, th);
    t.l4_csum = th->cksum;
  } else {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(l4);
    uh->src_port = t.sport;
    uh->dst_port = t.dport;
    uh->dgram_len = rte_cpu_to_be_16(l4len);
    uh->dgram_cksum = 0;
    uh->dgram_cksum = rte_ipv4_udptcp_cksum(ip, uh);
    t.l4_csum = uh->dgram_cksum;
  }
  return t;
}

// ---------------------------------------------------------------- pipeline

rte_ether_addr mac(uint8_t last) { return rte_ether_addr{{0x02, 0, 0, 0, 0, last}}; }

namespace {
const char* kInterfaces = R"(
[dataplane]
workers = 1
[[interface]]
name = "inside"
device = "net_null0"
address = "10.0.1.10/24"
[[interface]]
name = "endpoint"
device = "net_null1"
address = "10.0.2.10/24"
[[interface]]
name = "internet"
device = "net_null2"
address = "10.0.3.10/24"
[[route]]
prefix = "0.0.0.0/0"
via = "10.0.3.1"
interface = "internet"
[[route]]
prefix = "100.64.0.0/10"
via = "10.0.1.1"
interface = "inside"
)";
}  // namespace

std::string nat_config(uint32_t max_sessions, const std::string& snat_extra, const std::string& tail) {
  std::string s = kInterfaces;
  s += "[[snat]]\nfrom = [\"100.64.0.0/10\"]\n" + snat_extra + "\n";
  s += "[nat]\nmax_sessions = " + std::to_string(max_sessions) + "\n";
  s += tail;
  return s;
}

// Forwarding without ACL rules never touches the session table: keep it small so the
// smoke run fits in --no-huge memory (the default is 1M sessions per worker).
std::string forward_config() { return std::string(kInterfaces) + "[nat]\nmax_sessions = 65536\n"; }

Pipeline::Pipeline(const std::string& toml) {
  auto r = config::load_string(toml, "perf.toml", "/");
  if (!r.ok()) {
    std::string why;
    for (auto& e : r.errors) why += e.str() + "\n";
    throw std::runtime_error("bad benchmark config:\n" + why);
  }
  cfg_ = *r.config;
  dp::init_context(ctx_, cfg_);
  for (size_t i = 0; i < ctx_.ifaces.size(); ++i) {
    ctx_.ifaces[i].port_id = null_port(static_cast<unsigned>(i));
    ctx_.port_to_iface[ctx_.ifaces[i].port_id] = static_cast<uint8_t>(i);
    ctx_.ifaces[i].mac = mac(static_cast<uint8_t>(0x10 + i));
  }
  dp::init_sessions(ctx_, SOCKET_ID_ANY);
  dp::publish_tables(ctx_, dp::build_tables(ctx_, cfg_, 1));
  // Neighbours: the TGW router, the S3 endpoint router, the internet gateway.
  ctx_.arp.update(rte_cpu_to_be_32(0x0a000101), kInside, mac(0x01), 0);
  ctx_.arp.update(rte_cpu_to_be_32(0x0a000201), kEndpoint, mac(0x21), 0);
  ctx_.arp.update(rte_cpu_to_be_32(0x0a000301), kInternet, mac(0x31), 0);
  worker_ = std::make_unique<dp::Worker>(ctx_, 0, pool());
  worker_->set_clock_ms(1000);
  rte_rcu_qsbr_thread_register(ctx_.qsbr, 0);
  rte_rcu_qsbr_thread_online(ctx_.qsbr, 0);
}

Pipeline::~Pipeline() {
  worker_->flush();
  rte_rcu_qsbr_thread_offline(ctx_.qsbr, 0);
  rte_rcu_qsbr_thread_unregister(ctx_.qsbr, 0);
  worker_.reset();
  dp::destroy_context(ctx_);
}

uint64_t Pipeline::drops() const {
  uint64_t d = 0;
  for (unsigned i = 0; i < dp::kDropCount; ++i) d += worker_->counters().drops[i].get();
  return d;
}

}  // namespace natgw::perf

namespace natgw::perf {

std::vector<config::Prefix> aws_prefixes(bool s3_only, std::string& source) {
  std::vector<config::Prefix> out;
  std::string why;
  const auto text = config::read_text_file(options().aws_json, why);
  if (text) {
    // ip-ranges.json: {"prefixes": [{"ip_prefix": "a.b.c.d/n", "region": ..., "service": "S3", ...}, ...]}
    const std::string& t = *text;
    auto value_after = [&](size_t pos, const char* key, size_t limit) -> std::string {
      const size_t k = t.find(key, pos);
      if (k == std::string::npos || k > limit) return {};
      const size_t q1 = t.find('"', t.find(':', k) + 1);
      const size_t q2 = t.find('"', q1 + 1);
      return t.substr(q1 + 1, q2 - q1 - 1);
    };
    std::string date = value_after(0, "\"createDate\"", t.size());
    size_t pos = 0;
    std::vector<std::pair<uint32_t, uint8_t>> seen;
    while ((pos = t.find("\"ip_prefix\"", pos)) != std::string::npos) {
      const size_t end = t.find('}', pos);
      const std::string pfx = value_after(pos, "\"ip_prefix\"", end);
      const std::string svc = value_after(pos, "\"service\"", end);
      pos = end;
      if (s3_only && svc != "S3") continue;
      const auto p = config::parse_prefix(pfx);
      if (!p) continue;
      if (std::find(seen.begin(), seen.end(), std::make_pair(p->addr, p->len)) != seen.end()) continue;
      seen.emplace_back(p->addr, p->len);
      out.push_back(*p);
    }
    source = options().aws_json + " (createDate " + date + "): " + std::to_string(out.size()) +
             (s3_only ? " S3" : " AWS") + " IPv4 prefixes";
    if (!out.empty()) return out;
  }
  // Synthesized: the length mix of the real S3 list (441 prefixes, /15../28) in 52/8 and 3/8.
  const std::pair<uint8_t, unsigned> mix[] = {{24, 158}, {28, 92}, {22, 88}, {23, 67}, {21, 19}, {20, 7},
                                              {17, 4},   {19, 2},  {16, 2},  {18, 1},  {15, 1}};
  Rng rng(0x5eed);
  for (auto [len, count] : mix)
    for (unsigned i = 0; i < count * (s3_only ? 1 : 18); ++i) {
      const uint32_t base = (rng.next() & 1) ? 0x34000000u : 0x03000000u;
      const uint32_t a = (base | (rng.next() & 0x00ffffffu)) & config::prefix_mask(len);
      out.push_back(config::Prefix{a, len});
    }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.addr != b.addr ? a.addr < b.addr : a.len < b.len; });
  out.erase(std::unique(out.begin(), out.end()), out.end());
  source = "synthesized (" + options().aws_json + " not found): " + std::to_string(out.size()) + " prefixes";
  return out;
}

std::vector<config::AclRule> make_acl_rules(unsigned n, uint32_t seed) {
  std::vector<config::AclRule> v;
  Rng rng(seed);
  for (unsigned i = 0; i < n; ++i) {
    config::AclRule r;
    r.allow = (i % 3) != 0;
    // 172.16.0.0/12 sources and 198.18.0.0/15 destinations: never the benchmark flows.
    const uint8_t sl = static_cast<uint8_t>(16 + rng.below(17));
    const uint8_t dl = static_cast<uint8_t>(15 + rng.below(18));
    if (i % 4 != 3) r.src = config::Prefix{(0xac100000u | (rng.next() & 0x000fffffu)) & config::prefix_mask(sl), sl};
    r.dst = config::Prefix{(0xc6120000u | (rng.next() & 0x0001ffffu)) & config::prefix_mask(dl), dl};
    switch (i % 3) {
      case 0: r.proto = 6; break;
      case 1: r.proto = 17; break;
      default: r.proto = 0; break;
    }
    if (r.proto) {
      const uint16_t lo = static_cast<uint16_t>(1 + rng.below(60000));
      r.dport = config::PortRange{lo, static_cast<uint16_t>(lo + rng.below(1000))};
    }
    v.push_back(r);
  }
  return v;
}

std::string acl_toml(const std::vector<config::AclRule>& rules) {
  std::string s;
  for (const auto& r : rules) {
    s += "[[acl]]\naction = \"" + std::string(r.allow ? "allow" : "deny") + "\"\n";
    if (r.src) s += "src = \"" + config::format_prefix(*r.src) + "\"\n";
    if (r.dst) s += "dst = \"" + config::format_prefix(*r.dst) + "\"\n";
    if (r.proto) {
      s += std::string("protocol = \"") + (r.proto == 6 ? "tcp" : "udp") + "\"\n";
      s += "dst_ports = \"" + std::to_string(r.dport.lo) + "-" + std::to_string(r.dport.hi) + "\"\n";
    }
  }
  return s;
}

}  // namespace natgw::perf
