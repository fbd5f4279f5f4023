// Shared pieces of the natgw micro benchmarks: EAL bring-up, net_null sink ports,
// a whole pipeline built from config text, frame templates with incremental
// re-patching, and memory probes. No gtest: this is benchmark code.
#pragma once

#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "dataplane/context.hpp"
#include "net/checksum.hpp"
#include "dataplane/worker.hpp"
#include "nat/flow_key.hpp"

namespace natgw::perf {

// ---------------------------------------------------------------- options

struct Options {
  bool no_huge = false;          // --no-huge: EAL without hugepages (CI smoke)
  bool smoke = false;            // --smoke: tiny scales, short runs
  uint64_t max_sessions = 0;     // --max-sessions / NATGW_PERF_MAX_SESSIONS: cap (0 = by memory)
  uint64_t iterations = 0;       // --iterations: fixed iteration count (callgrind runs)
  std::vector<uint32_t> scales;  // --scales=1000,100000,...
  std::string aws_json;          // --aws-json: path of ip-ranges.json
  unsigned eal_mem_mb = 0;       // --eal-mem: -m for --no-huge
  std::string eal_summary;       // what EAL was started with (for the report)
  bool hugepages = false;        // EAL runs on hugepages
};
Options& options();

// Parse and remove our own flags from argv (before benchmark::Initialize).
void parse_options(int& argc, char** argv);
// Start EAL (hugepages when available unless --no-huge) and create the mbuf pool.
void start_eal();
rte_mempool* pool();
// Three started net_null ports (TX frees what it gets): the realistic sink.
uint16_t null_port(unsigned i);

// ---------------------------------------------------------------- memory probes

struct MemProbe {
  size_t rte_heap = 0;   // rte_malloc bytes allocated (all sockets)
  size_t c_heap = 0;     // glibc malloc in use (mallinfo2: arena + mmap) + the tables' own mappings
  size_t rss = 0;        // VmRSS + HugetlbPages
  static MemProbe now();
};
// Free 2 MB hugepages and available RAM, bytes.
size_t free_hugepage_bytes();
size_t mem_available_bytes();

// ---------------------------------------------------------------- frames

// A 60-byte Ethernet/IPv4/UDP-or-TCP frame (64 on the wire with the CRC) whose
// addresses and ports are re-written per packet with incremental checksums, so a
// refill costs one 64-byte copy and a few adds.
struct FrameTemplate {
  alignas(64) uint8_t bytes[64];
  uint16_t len = 60;
  uint8_t proto = IPPROTO_UDP;
  rte_be32_t src = 0, dst = 0;
  rte_be16_t sport = 0, dport = 0;
  uint16_t ip_csum = 0, l4_csum = 0;

  static FrameTemplate make(const rte_ether_addr& src_mac, const rte_ether_addr& dst_mac,
                            uint8_t proto, rte_be32_t src, rte_be32_t dst, uint16_t sport_host,
                            uint16_t dport_host);
  // Write this template into `m` with a new 4-tuple (network order), checksums valid.
  inline void write(rte_mbuf* m, rte_be32_t s, rte_be32_t d, rte_be16_t sp, rte_be16_t dp) const;
};

// ---------------------------------------------------------------- pipeline

rte_ether_addr mac(uint8_t last);
constexpr uint16_t kInside = 0, kEndpoint = 1, kInternet = 2;

// The lab addressing (design §5) with NAT from the clients' prefix. `extra` is
// appended to the [[snat]] table (e.g. a pool) or the file (ACL rules).
std::string nat_config(uint32_t max_sessions, const std::string& snat_extra = "",
                       const std::string& tail = "");
std::string forward_config();

// config text -> context, tables, one session table and one Worker whose TX goes to
// net_null ports. Neighbours (gateways) are pre-loaded as an ARP reply would.
class Pipeline {
 public:
  explicit Pipeline(const std::string& toml);
  ~Pipeline();
  Pipeline(const Pipeline&) = delete;
  Pipeline& operator=(const Pipeline&) = delete;

  dp::Worker& worker() { return *worker_; }
  nat::SessionTable& sessions() { return *ctx_.sessions[0]; }
  dp::Context& ctx() { return ctx_; }
  const config::Config& cfg() const { return cfg_; }
  uint64_t drops() const;  // all drop reasons summed

 private:
  config::Config cfg_;
  dp::Context ctx_;
  std::unique_ptr<dp::Worker> worker_;
};

// ---------------------------------------------------------------- tables

// Route prefixes for the LPM benchmarks: AWS's S3 IPv4 prefixes (or every AWS IPv4
// prefix) from ip-ranges.json when the file is there, otherwise synthesized with the
// same prefix-length mix. `source` says which.
std::vector<config::Prefix> aws_prefixes(bool s3_only, std::string& source);

// `n` ACL rules shaped like an operator's list (src/dst prefixes, protocol, port
// ranges), none of which matches the synthetic flows below (worst case: full scan).
std::vector<config::AclRule> make_acl_rules(unsigned n, uint32_t seed = 7);
std::string acl_toml(const std::vector<config::AclRule>& rules);

// ---------------------------------------------------------------- flows

// Flow i of a synthetic population: 16 flows per inside host (100.64.0.0/10),
// a pseudo-random remote address outside every configured prefix, remote port 443.
struct Flows {
  static rte_be32_t in_src(uint32_t i) { return rte_cpu_to_be_32(0x64400001u + (i >> 4)); }
  static rte_be16_t in_sport(uint32_t i) { return rte_cpu_to_be_16(static_cast<uint16_t>(20000 + (i & 15) * 7)); }
  static rte_be32_t remote(uint32_t i) {
    uint32_t x = i * 2654435761u;
    x ^= x >> 13;
    // 11.0.0.0/8 .. 42.0.0.0/8: never local, never inside, default route (internet).
    return rte_cpu_to_be_32((11u + (x % 32u)) << 24 | (x & 0x00fffffeu) | 1u);
  }
  static rte_be16_t remote_port(uint32_t) { return rte_cpu_to_be_16(443); }
};

struct Rng {  // xorshift32: a few instructions, no memory
  uint32_t s;
  explicit Rng(uint32_t seed) : s(seed | 1) {}
  uint32_t next() {
    s ^= s << 13;
    s ^= s >> 17;
    s ^= s << 5;
    return s;
  }
  uint32_t below(uint32_t n) { return static_cast<uint32_t>((static_cast<uint64_t>(next()) * n) >> 32); }
};

// ---------------------------------------------------------------- inline

inline void FrameTemplate::write(rte_mbuf* m, rte_be32_t s, rte_be32_t d, rte_be16_t sp,
                                 rte_be16_t dp) const {
  uint8_t* p = rte_pktmbuf_mtod(m, uint8_t*);
  __builtin_memcpy(p, bytes, 64);
  m->data_len = len;
  m->pkt_len = len;
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(p + 14);
  ip->src_addr = s;
  ip->dst_addr = d;
  const uint32_t dip = net::csum_delta32(src, s) + net::csum_delta32(dst, d);
  ip->hdr_checksum = net::csum_apply(ip_csum, dip);
  const uint32_t dports = net::csum_delta16(sport, sp) + net::csum_delta16(dport, dp);
  auto* ports = reinterpret_cast<rte_be16_t*>(p + 34);
  ports[0] = sp;
  ports[1] = dp;
  const uint16_t l4 = net::csum_apply(l4_csum, dip + dports);
  if (proto == IPPROTO_UDP)
    reinterpret_cast<rte_udp_hdr*>(p + 34)->dgram_cksum = l4 ? l4 : 0xffff;
  else
    reinterpret_cast<rte_tcp_hdr*>(p + 34)->cksum = l4;
}

}  // namespace natgw::perf
