// natgw-trafgen: a small DPDK traffic generator and reflector for whole-process
// throughput runs. One process, one lcore, two ports:
//
//   port A ("inside" side)  --- client packets --->  DUT  --- translated --->  port B ("outside" side)
//   port A  <--- un-translated replies ---           DUT  <--- replies ---     port B
//
// Port A sends many UDP/TCP flows (clients 192.168.0.0/16 -> servers 198.18.0.0/15, the
// RFC 2544 benchmarking range) at a paced or maximal rate. Port B turns every packet it
// receives into its reply by swapping MACs, addresses and ports (the checksums stay
// valid: a one's-complement sum does not care about order) and sends it back, so the
// DUT's out2in path is exercised at the rate its in2out path delivers. Port A counts
// what comes back. ARP: we answer for the gateways the DUT uses (gw-a, gw-b) and learn
// the DUT's MACs by asking for its addresses (or take them from --dut-mac-*).
//
// Ports are whatever EAL vdevs are given (memif, af_packet, af_xdp, ring...). The DUT
// is natgw or dpdk-testpmd (--mode io: no ARP, no address checks).
//
// Output: one line per trial, and with --json a final JSON object on stdout.
#include <rte_arp.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_tcp.h>
#include <rte_udp.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

volatile std::sig_atomic_t g_stop = 0;
void on_signal(int) { g_stop = 1; }

constexpr unsigned kBurst = 32;

struct Options {
  uint16_t port_a = 0, port_b = 1;
  std::string mode = "nat";  // nat | forward | io
  uint32_t flows = 1000;
  std::string proto = "mix";  // udp | tcp | mix
  unsigned size = 64;         // frame size on the wire including the 4-byte CRC
  double rate = 0;            // in2out packets/s offered by port A; 0 = as fast as possible
  double duration = 5;        // seconds per trial
  double warmup_rate = 500000;  // first packet of every flow (session setup) at this rate
  bool search = false;        // find the highest loss-free rate
  unsigned search_steps = 7;
  double loss_tolerance = 1e-4;  // fraction of attempted packets (both directions)
  bool json = false;
  uint32_t gw_a = 0, gw_b = 0, dut_a = 0, dut_b = 0;  // host order
  rte_ether_addr dut_mac_a{}, dut_mac_b{};
  bool have_mac_a = false, have_mac_b = false;
  uint32_t expect_src_b = 0;  // nat: the DUT's outside address seen at port B (default dut_b)
  double arp_timeout = 10;
  double link_timeout = 15;
  double settle = 0;  // seconds to wait (polling) after the links are up, before the warm-up
  std::string linger_file;  // after the results, keep the ports open until this file exists
  int measure_cpu = -1;  // report how busy this CPU was during the full-load trial (the DUT's CPU)
};

Options g_opt;

uint32_t parse_ip(const char* s) {
  in_addr a{};
  if (inet_pton(AF_INET, s, &a) != 1) {
    std::fprintf(stderr, "natgw-trafgen: bad IPv4 address '%s'\n", s);
    std::exit(2);
  }
  return ntohl(a.s_addr);
}

bool parse_mac(const char* s, rte_ether_addr& m) { return rte_ether_unformat_addr(s, &m) == 0; }

void usage() {
  std::puts(
      "natgw-trafgen [EAL args] -- [options]\n"
      "  --port-a N --port-b N     ethdev ports (default 0 and 1: the first two --vdev)\n"
      "  --mode nat|forward|io     what the DUT does (io: testpmd; no ARP, no address checks)\n"
      "  --flows N                 distinct 5-tuples (default 1000)\n"
      "  --proto udp|tcp|mix       (default mix: even flows UDP, odd flows TCP)\n"
      "  --size BYTES              frame size with CRC, 64..1518 (default 64)\n"
      "  --rate PPS                in2out offered rate; 0 = maximum (default 0)\n"
      "  --duration S              seconds per trial (default 5)\n"
      "  --warmup-rate PPS         rate of the first pass over all flows (default 500000)\n"
      "  --search                  also find the highest loss-free rate (bisection)\n"
      "  --search-steps N          trials in the search (default 7)\n"
      "  --loss-tolerance F        loss fraction still called loss-free (default 0.0001)\n"
      "  --gw-a IP --gw-b IP       addresses we answer ARP for (default 10.0.1.1, 10.0.3.1)\n"
      "  --dut-a IP --dut-b IP     DUT addresses to resolve (default 10.0.1.10, 10.0.3.10)\n"
      "  --dut-mac-a MAC --dut-mac-b MAC   skip resolving\n"
      "  --settle S                wait S seconds after link-up before sending (a DUT that starts\n"
      "                            polling a port a while after its link is up: Open vSwitch)\n"
      "  --expect-src-b IP         nat mode: source address expected at port B (default dut-b)\n"
      "  --measure-cpu N           report CPU N's busy time (/proc/stat) during the full-load trial:\n"
      "                            the DUT's CPU cost per packet when the kernel forwards (veth + nftables)\n"
      "  --json                    print a JSON summary on the last line\n"
      "  --linger-file PATH        after the summary, stop polling but keep the ports open until PATH\n"
      "                            exists (at most 60 s): the DUT can be stopped first, while its\n"
      "                            ports are still connected (testpmd then reports its cycles)");
}

void parse_args(int argc, char** argv) {
  Options& o = g_opt;
  o.gw_a = parse_ip("10.0.1.1");
  o.gw_b = parse_ip("10.0.3.1");
  o.dut_a = parse_ip("10.0.1.10");
  o.dut_b = parse_ip("10.0.3.10");
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "natgw-trafgen: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--port-a") o.port_a = static_cast<uint16_t>(std::atoi(next()));
    else if (a == "--port-b") o.port_b = static_cast<uint16_t>(std::atoi(next()));
    else if (a == "--mode") o.mode = next();
    else if (a == "--flows") o.flows = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    else if (a == "--proto") o.proto = next();
    else if (a == "--size") o.size = static_cast<unsigned>(std::atoi(next()));
    else if (a == "--rate") o.rate = std::atof(next());
    else if (a == "--duration") o.duration = std::atof(next());
    else if (a == "--warmup-rate") o.warmup_rate = std::atof(next());
    else if (a == "--linger-file") o.linger_file = next();
    else if (a == "--settle") {
      o.settle = std::atof(next());
      if (!(o.settle >= 0 && o.settle <= 600)) {
        std::fprintf(stderr, "natgw-trafgen: --settle wants 0..600 seconds\n");
        std::exit(2);
      }
    }
    else if (a == "--search") o.search = true;
    else if (a == "--search-steps") o.search_steps = static_cast<unsigned>(std::atoi(next()));
    else if (a == "--loss-tolerance") o.loss_tolerance = std::atof(next());
    else if (a == "--json") o.json = true;
    else if (a == "--measure-cpu") o.measure_cpu = std::atoi(next());
    else if (a == "--gw-a") o.gw_a = parse_ip(next());
    else if (a == "--gw-b") o.gw_b = parse_ip(next());
    else if (a == "--dut-a") o.dut_a = parse_ip(next());
    else if (a == "--dut-b") o.dut_b = parse_ip(next());
    else if (a == "--expect-src-b") o.expect_src_b = parse_ip(next());
    else if (a == "--dut-mac-a") o.have_mac_a = parse_mac(next(), o.dut_mac_a);
    else if (a == "--dut-mac-b") o.have_mac_b = parse_mac(next(), o.dut_mac_b);
    else if (a == "--help" || a == "-h") {
      usage();
      std::exit(0);
    } else {
      std::fprintf(stderr, "natgw-trafgen: unknown option '%s' (try --help)\n", a.c_str());
      std::exit(2);
    }
  }
  if (o.mode != "nat" && o.mode != "forward" && o.mode != "io") {
    std::fprintf(stderr, "natgw-trafgen: --mode must be nat, forward or io\n");
    std::exit(2);
  }
  if (o.size < 64 || o.size > 1518 || o.flows == 0) {
    std::fprintf(stderr, "natgw-trafgen: --size must be 64..1518 and --flows > 0\n");
    std::exit(2);
  }
  if (!o.expect_src_b) o.expect_src_b = o.dut_b;
}

// ---------------------------------------------------------------- flows and frames

struct Flow {  // network order
  rte_be32_t src, dst;
  rte_be16_t sport, dport;
  uint8_t proto;
};

inline Flow flow(uint32_t i) {
  // Clients: 192.168.0.1 .. 192.168.255.254, then the next source port.
  const uint32_t host = i % 65534u + 1u;
  const uint32_t round = i / 65534u;
  uint32_t x = i * 2654435761u;
  x ^= x >> 15;
  Flow f;
  f.src = rte_cpu_to_be_32(0xc0a80000u | host);
  f.sport = rte_cpu_to_be_16(static_cast<uint16_t>(10000 + round * 7 + (i & 3)));
  f.dst = rte_cpu_to_be_32(0xc6120000u | (x & 0x1fffeu) | 1u);  // 198.18.0.0/15
  const bool tcp = g_opt.proto == "tcp" || (g_opt.proto == "mix" && (i & 1));
  f.proto = tcp ? IPPROTO_TCP : IPPROTO_UDP;
  f.dport = rte_cpu_to_be_16(tcp ? 443 : 53);
  return f;
}

struct Template {
  uint8_t bytes[64];
  uint16_t len;  // frame length without CRC
  uint16_t ip_csum, l4_csum;
  rte_be32_t src, dst;
  rte_be16_t sport, dport;
};
Template g_tpl[2];  // [0] UDP, [1] TCP

uint16_t fold_apply(uint16_t csum, uint32_t delta) {
  uint32_t s = static_cast<uint16_t>(~csum) + delta;
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(~s);
}
inline uint32_t d32(uint32_t from, uint32_t to) {
  const uint32_t nf = ~from;
  return (nf & 0xffff) + (nf >> 16) + (to & 0xffff) + (to >> 16);
}
inline uint32_t d16(uint16_t from, uint16_t to) { return static_cast<uint16_t>(~from) + static_cast<uint32_t>(to); }

void make_template(Template& t, uint8_t proto, const rte_ether_addr& src_mac, const rte_ether_addr& dst_mac) {
  std::memset(&t, 0, sizeof(t));
  t.len = static_cast<uint16_t>(g_opt.size - 4);
  std::vector<uint8_t> f(t.len, 0);
  auto* eth = reinterpret_cast<rte_ether_hdr*>(f.data());
  eth->dst_addr = dst_mac;
  eth->src_addr = src_mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(f.data() + 14);
  const Flow fl = flow(proto == IPPROTO_TCP ? 1 : 0);
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(t.len - 14));
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = 64;
  ip->next_proto_id = proto;
  ip->src_addr = fl.src;
  ip->dst_addr = fl.dst;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  uint8_t* l4 = f.data() + 34;
  if (proto == IPPROTO_TCP) {
    auto* th = reinterpret_cast<rte_tcp_hdr*>(l4);
    th->src_port = fl.sport;
    th->dst_port = fl.dport;
    th->sent_seq = rte_cpu_to_be_32(1);
    th->recv_ack = rte_cpu_to_be_32(1);
    th->data_off = 5 << 4;
    th->tcp_flags = RTE_TCP_ACK_FLAG;
    th->rx_win = rte_cpu_to_be_16(65535);
    th->cksum = rte_ipv4_udptcp_cksum(ip, th);  // payload is zeros (mbufs are zeroed once)
    t.l4_csum = th->cksum;
  } else {
    auto* uh = reinterpret_cast<rte_udp_hdr*>(l4);
    uh->src_port = fl.sport;
    uh->dst_port = fl.dport;
    uh->dgram_len = rte_cpu_to_be_16(static_cast<uint16_t>(t.len - 34));
    uh->dgram_cksum = rte_ipv4_udptcp_cksum(ip, uh);
    t.l4_csum = uh->dgram_cksum;
  }
  std::memcpy(t.bytes, f.data(), 64);
  t.ip_csum = ip->hdr_checksum;
  t.src = fl.src;
  t.dst = fl.dst;
  t.sport = fl.sport;
  t.dport = fl.dport;
}

inline void write_flow(rte_mbuf* m, const Flow& f) {
  const Template& t = g_tpl[f.proto == IPPROTO_TCP ? 1 : 0];
  uint8_t* p = rte_pktmbuf_mtod(m, uint8_t*);
  std::memcpy(p, t.bytes, 64);  // headers; the payload beyond stays zero
  m->data_len = m->pkt_len = t.len;
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(p + 14);
  ip->src_addr = f.src;
  ip->dst_addr = f.dst;
  const uint32_t dip = d32(t.src, f.src) + d32(t.dst, f.dst);
  ip->hdr_checksum = fold_apply(t.ip_csum, dip);
  auto* ports = reinterpret_cast<rte_be16_t*>(p + 34);
  ports[0] = f.sport;
  ports[1] = f.dport;
  const uint16_t l4 = fold_apply(t.l4_csum, dip + d16(t.sport, f.sport) + d16(t.dport, f.dport));
  if (f.proto == IPPROTO_TCP)
    reinterpret_cast<rte_tcp_hdr*>(p + 34)->cksum = l4;
  else
    reinterpret_cast<rte_udp_hdr*>(p + 34)->dgram_cksum = l4 ? l4 : 0xffff;
}

// ---------------------------------------------------------------- ports and ARP

rte_mempool* g_pool;
rte_ether_addr g_mac_a, g_mac_b;

void zero_mbuf(rte_mempool*, void*, void* obj, unsigned) {
  auto* m = static_cast<rte_mbuf*>(obj);
  std::memset(m->buf_addr, 0, m->buf_len);
}

void start_port(uint16_t port) {
  rte_eth_conf conf{};
  rte_eth_dev_info info{};
  if (rte_eth_dev_info_get(port, &info) != 0) {
    std::fprintf(stderr, "natgw-trafgen: no port %u (give two --vdev)\n", port);
    std::exit(1);
  }
  uint16_t rxd = 1024, txd = 1024;
  if (rte_eth_dev_configure(port, 1, 1, &conf) != 0 || rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd) != 0 ||
      rte_eth_rx_queue_setup(port, 0, rxd, rte_eth_dev_socket_id(port), nullptr, g_pool) != 0 ||
      rte_eth_tx_queue_setup(port, 0, txd, rte_eth_dev_socket_id(port), nullptr) != 0 ||
      rte_eth_dev_start(port) != 0) {
    std::fprintf(stderr, "natgw-trafgen: cannot start port %u\n", port);
    std::exit(1);
  }
  rte_eth_promiscuous_enable(port);
}

bool wait_links() {
  const uint64_t end = rte_get_tsc_cycles() + static_cast<uint64_t>(g_opt.link_timeout * rte_get_tsc_hz());
  while (!g_stop && rte_get_tsc_cycles() < end) {
    rte_eth_link la{}, lb{};
    rte_eth_link_get_nowait(g_opt.port_a, &la);
    rte_eth_link_get_nowait(g_opt.port_b, &lb);
    if (la.link_status && lb.link_status) return true;
    rte_delay_ms(50);
  }
  return false;
}

rte_mbuf* arp_frame(const rte_ether_addr& src_mac, const rte_ether_addr& dst_mac, uint16_t op, uint32_t sip,
                    const rte_ether_addr& tha, uint32_t tip) {
  rte_mbuf* m = rte_pktmbuf_alloc(g_pool);
  if (!m) return nullptr;
  auto* eth = reinterpret_cast<rte_ether_hdr*>(rte_pktmbuf_append(m, 60));
  std::memset(eth, 0, 60);
  eth->dst_addr = dst_mac;
  eth->src_addr = src_mac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = rte_cpu_to_be_16(op);
  arp->arp_data.arp_sha = src_mac;
  arp->arp_data.arp_sip = rte_cpu_to_be_32(sip);
  arp->arp_data.arp_tha = tha;
  arp->arp_data.arp_tip = rte_cpu_to_be_32(tip);
  return m;
}

// Handle an ARP frame on `port` (our MAC `mac`, our address `gw`). Learns the DUT's
// MAC from its replies or requests. Consumes the mbuf.
void handle_arp(uint16_t port, const rte_ether_addr& mac, uint32_t gw, uint32_t dut, rte_ether_addr& dut_mac,
                bool& have, rte_mbuf* m) {
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
  if (m->data_len < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) {
    rte_pktmbuf_free(m);
    return;
  }
  const uint32_t sip = rte_be_to_cpu_32(arp->arp_data.arp_sip);
  const uint32_t tip = rte_be_to_cpu_32(arp->arp_data.arp_tip);
  if (sip == dut && g_opt.mode != "io") {
    dut_mac = arp->arp_data.arp_sha;
    have = true;
  }
  const rte_ether_addr sha = arp->arp_data.arp_sha;
  const uint16_t op = rte_be_to_cpu_16(arp->arp_opcode);
  rte_pktmbuf_free(m);
  if (op == RTE_ARP_OP_REQUEST && tip == gw) {
    rte_mbuf* r = arp_frame(mac, sha, RTE_ARP_OP_REPLY, gw, sha, sip);
    if (r && rte_eth_tx_burst(port, 0, &r, 1) != 1) rte_pktmbuf_free(r);
  }
}

// ---------------------------------------------------------------- CPU accounting

// Busy and total time of one CPU from /proc/stat, in USER_HZ ticks (busy = all but idle
// and iowait: user, nice, system, irq, softirq, steal).
struct CpuTicks {
  uint64_t busy = 0, kernel = 0, total = 0;  // kernel: system + irq + softirq
};
CpuTicks cpu_ticks(int cpu) {
  CpuTicks t;
  FILE* f = std::fopen("/proc/stat", "r");
  if (!f) return t;
  char line[512];
  const std::string want = "cpu" + std::to_string(cpu) + " ";
  while (std::fgets(line, sizeof(line), f)) {
    if (std::strncmp(line, want.c_str(), want.size()) != 0) continue;
    unsigned long long v[10] = {};
    std::sscanf(line + want.size(), "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                &v[4], &v[5], &v[6], &v[7], &v[8], &v[9]);
    for (int i = 0; i < 8; ++i) t.total += v[i];  // guest time is already in user
    t.busy = t.total - v[3] - v[4];
    t.kernel = v[2] + v[5] + v[6];
    break;
  }
  std::fclose(f);
  return t;
}

// ---------------------------------------------------------------- the loop

struct Counts {
  uint64_t attempted_a = 0;  // packets the schedule asked port A to send
  uint64_t sent_a = 0;       // accepted by port A's TX queue
  uint64_t rx_b = 0;         // arrived at port B (translated in2out)
  uint64_t bad_b = 0;        // arrived at B with an unexpected source (nat mode)
  uint64_t sent_b = 0;       // replies accepted by port B's TX queue
  uint64_t reply_fail = 0;   // replies port B could not queue
  uint64_t rx_a = 0;         // replies back at port A (un-translated out2in)
  uint64_t bad_a = 0;        // arrived at A not addressed to a client
  uint64_t other = 0;        // anything else (ARP excluded)
};

Counts g_c;
uint32_t g_next_flow = 0;
uint32_t g_stride = 1;

inline bool for_us(const rte_ether_hdr* eth, const rte_ether_addr& mac) {
  return g_opt.mode == "io" || rte_is_same_ether_addr(&eth->dst_addr, &mac);
}

// Port B: reflect every IPv4 packet as its reply.
void poll_b() {
  rte_mbuf* pkts[kBurst];
  rte_mbuf* out[kBurst];
  const uint16_t n = rte_eth_rx_burst(g_opt.port_b, 0, pkts, kBurst);
  unsigned k = 0;
  const rte_be32_t expect = rte_cpu_to_be_32(g_opt.expect_src_b);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) {
      handle_arp(g_opt.port_b, g_mac_b, g_opt.gw_b, g_opt.dut_b, g_opt.dut_mac_b, g_opt.have_mac_b, m);
      continue;
    }
    if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || !for_us(eth, g_mac_b) || m->data_len < 38) {
      ++g_c.other;
      rte_pktmbuf_free(m);
      continue;
    }
    auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
    ++g_c.rx_b;
    if (g_opt.mode == "nat" && ip->src_addr != expect) ++g_c.bad_b;
    // The reply: swap MACs, addresses and ports; checksums are unchanged by a swap.
    const rte_ether_addr src = eth->src_addr;
    eth->src_addr = g_mac_b;
    eth->dst_addr = g_opt.mode == "io" ? src : g_opt.dut_mac_b;
    const rte_be32_t src_ip = ip->src_addr;  // packed fields: no std::swap (no references)
    ip->src_addr = ip->dst_addr;
    ip->dst_addr = src_ip;
    auto* ports = reinterpret_cast<rte_be16_t*>(reinterpret_cast<uint8_t*>(ip) + (ip->version_ihl & 0xf) * 4);
    std::swap(ports[0], ports[1]);
    out[k++] = m;
  }
  if (k) {
    const uint16_t s = rte_eth_tx_burst(g_opt.port_b, 0, out, static_cast<uint16_t>(k));
    g_c.sent_b += s;
    if (s < k) {
      g_c.reply_fail += k - s;
      rte_pktmbuf_free_bulk(out + s, k - s);
    }
  }
}

// Port A: count the replies.
void poll_a() {
  rte_mbuf* pkts[kBurst];
  const uint16_t n = rte_eth_rx_burst(g_opt.port_a, 0, pkts, kBurst);
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) {
      handle_arp(g_opt.port_a, g_mac_a, g_opt.gw_a, g_opt.dut_a, g_opt.dut_mac_a, g_opt.have_mac_a, m);
      continue;
    }
    if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) && for_us(eth, g_mac_a) && m->data_len >= 34) {
      auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
      ++g_c.rx_a;
      if ((rte_be_to_cpu_32(ip->dst_addr) >> 16) != 0xc0a8) ++g_c.bad_a;
    } else {
      ++g_c.other;
    }
    rte_pktmbuf_free(m);
  }
}

// Send one burst of the next flows on port A. Returns how many were queued.
unsigned send_a(unsigned want) {
  rte_mbuf* pkts[kBurst];
  if (rte_pktmbuf_alloc_bulk(g_pool, pkts, want) != 0) return 0;
  for (unsigned i = 0; i < want; ++i) {
    write_flow(pkts[i], flow(g_next_flow));
    auto* eth = rte_pktmbuf_mtod(pkts[i], rte_ether_hdr*);
    eth->dst_addr = g_opt.dut_mac_a;
    eth->src_addr = g_mac_a;
    g_next_flow += g_stride;
    if (g_next_flow >= g_opt.flows) g_next_flow -= g_opt.flows;
  }
  const uint16_t s = rte_eth_tx_burst(g_opt.port_a, 0, pkts, static_cast<uint16_t>(want));
  if (s < want) rte_pktmbuf_free_bulk(pkts + s, want - s);
  g_c.attempted_a += want;
  g_c.sent_a += s;
  return s;
}

// Run for `seconds` offering `rate` pps in2out (0 = as fast as possible), or until
// `max_packets` were attempted. Then drain for 300 ms with port B still reflecting.
Counts run(double rate, double seconds, uint64_t max_packets = 0) {
  g_c = Counts{};
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t start = rte_get_tsc_cycles();
  const uint64_t end = start + static_cast<uint64_t>(seconds * hz);
  const double per_burst = rate > 0 ? kBurst * static_cast<double>(hz) / rate : 0;
  double next = static_cast<double>(start);
  while (!g_stop) {
    const uint64_t now = rte_get_tsc_cycles();
    if (now >= end || (max_packets && g_c.attempted_a >= max_packets)) break;
    if (rate <= 0 || static_cast<double>(now) >= next) {
      send_a(kBurst);
      next += per_burst;
      // Never try to catch up more than a few bursts after a stall (a preempted
      // generator would otherwise send a line-rate spike).
      if (rate > 0 && static_cast<double>(now) - next > 8 * per_burst) next = static_cast<double>(now);
    }
    poll_b();
    poll_a();
  }
  const uint64_t drain_end = rte_get_tsc_cycles() + hz * 3 / 10;
  while (rte_get_tsc_cycles() < drain_end) {
    poll_b();
    poll_a();
  }
  return g_c;
}

struct Trial {
  double target = 0, seconds = 0;
  Counts c;
  double offered_in() const { return c.attempted_a / seconds; }
  double sent_in() const { return c.sent_a / seconds; }
  double recv_in() const { return c.rx_b / seconds; }
  double offered_out() const { return c.sent_b / seconds; }
  double recv_out() const { return c.rx_a / seconds; }
  double forwarded() const { return (c.rx_b + c.rx_a) / seconds; }
  double loss() const {
    const double att = static_cast<double>(c.attempted_a + c.rx_b);  // every reply is attempted
    const double got = static_cast<double>(c.rx_b + c.rx_a);
    return att > 0 ? std::max(0.0, 1.0 - got / att) : 0;
  }
  bool loss_free() const { return loss() <= g_opt.loss_tolerance && c.bad_a == 0 && c.bad_b == 0; }
};

void print_trial(const char* what, const Trial& t) {
  std::printf(
      "%-10s target %7.3f Mpps | in2out offered %7.3f sent %7.3f recv %7.3f | out2in sent %7.3f recv %7.3f | "
      "forwarded %7.3f Mpps | loss %.4f%%%s\n",
      what, t.target / 1e6, t.offered_in() / 1e6, t.sent_in() / 1e6, t.recv_in() / 1e6, t.offered_out() / 1e6,
      t.recv_out() / 1e6, t.forwarded() / 1e6, 100 * t.loss(),
      (t.c.bad_a || t.c.bad_b) ? " (UNEXPECTED ADDRESSES)" : "");
  std::fflush(stdout);
}

std::string json_trial(const Trial& t) {
  char b[512];
  std::snprintf(b, sizeof(b),
                "{\"target_pps\":%.0f,\"seconds\":%.3f,\"in2out_offered_pps\":%.0f,\"in2out_sent_pps\":%.0f,"
                "\"in2out_recv_pps\":%.0f,\"out2in_sent_pps\":%.0f,\"out2in_recv_pps\":%.0f,\"forwarded_pps\":%.0f,"
                "\"loss\":%.6f,\"bad\":%llu}",
                t.target, t.seconds, t.offered_in(), t.sent_in(), t.recv_in(), t.offered_out(), t.recv_out(),
                t.forwarded(), t.loss(), static_cast<unsigned long long>(t.c.bad_a + t.c.bad_b));
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  const int eal = rte_eal_init(argc, argv);
  if (eal < 0) {
    std::fprintf(stderr, "natgw-trafgen: EAL init failed: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  parse_args(argc - eal - 1, argv + eal + 1);
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  std::signal(SIGPIPE, SIG_IGN);  // a vhost-user peer that stopped first: its socket is gone
  if (rte_eth_dev_count_avail() < 2) {
    std::fprintf(stderr, "natgw-trafgen: need two ports (--vdev=...), have %u\n", rte_eth_dev_count_avail());
    return 1;
  }
  const unsigned mbuf_size = std::max<unsigned>(RTE_MBUF_DEFAULT_BUF_SIZE, g_opt.size + RTE_PKTMBUF_HEADROOM + 64);
  g_pool = rte_pktmbuf_pool_create("trafgen_pool", 16383, 256, 0, static_cast<uint16_t>(mbuf_size),
                                   static_cast<int>(rte_socket_id()));
  if (!g_pool) {
    std::fprintf(stderr, "natgw-trafgen: mbuf pool: %s\n", rte_strerror(rte_errno));
    return 1;
  }
  rte_mempool_obj_iter(g_pool, zero_mbuf, nullptr);
  start_port(g_opt.port_a);
  start_port(g_opt.port_b);
  rte_eth_macaddr_get(g_opt.port_a, &g_mac_a);
  rte_eth_macaddr_get(g_opt.port_b, &g_mac_b);
  if (!wait_links()) {
    std::fprintf(stderr, "natgw-trafgen: links did not come up within %.0f s (is the DUT running?)\n",
                 g_opt.link_timeout);
    return 3;
  }
  // Resolve the DUT's MACs (natgw, Linux) unless given; testpmd needs none.
  if (g_opt.mode == "io") {
    g_opt.have_mac_a = g_opt.have_mac_b = true;
  }
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t arp_end = rte_get_tsc_cycles() + static_cast<uint64_t>(g_opt.arp_timeout * hz);
  uint64_t next_req = 0;
  const rte_ether_addr bcast{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}, zero{};
  while (!g_stop && (!g_opt.have_mac_a || !g_opt.have_mac_b)) {
    const uint64_t now = rte_get_tsc_cycles();
    if (now > arp_end) {
      std::fprintf(stderr, "natgw-trafgen: the DUT did not answer ARP for its addresses\n");
      return 3;
    }
    if (now >= next_req) {
      next_req = now + hz / 5;
      rte_mbuf* r;
      if (!g_opt.have_mac_a && (r = arp_frame(g_mac_a, bcast, RTE_ARP_OP_REQUEST, g_opt.gw_a, zero, g_opt.dut_a)))
        if (rte_eth_tx_burst(g_opt.port_a, 0, &r, 1) != 1) rte_pktmbuf_free(r);
      if (!g_opt.have_mac_b && (r = arp_frame(g_mac_b, bcast, RTE_ARP_OP_REQUEST, g_opt.gw_b, zero, g_opt.dut_b)))
        if (rte_eth_tx_burst(g_opt.port_b, 0, &r, 1) != 1) rte_pktmbuf_free(r);
    }
    poll_a();
    poll_b();
  }
  for (const uint64_t end = rte_get_tsc_cycles() + static_cast<uint64_t>(g_opt.settle * hz);
       !g_stop && rte_get_tsc_cycles() < end;) {
    poll_a();
    poll_b();
  }
  make_template(g_tpl[0], IPPROTO_UDP, g_mac_a, g_opt.dut_mac_a);
  make_template(g_tpl[1], IPPROTO_TCP, g_mac_a, g_opt.dut_mac_a);
  // Visit flows in a scattered order (a stride coprime with the flow count) so
  // consecutive packets hit unrelated sessions, as on a real link.
  g_stride = 1;
  if (g_opt.flows > 64) {
    uint32_t s = static_cast<uint32_t>(g_opt.flows * 0.6180339887) | 1;
    auto gcd = [](uint32_t a, uint32_t b) {
      while (b) {
        const uint32_t t = a % b;
        a = b;
        b = t;
      }
      return a;
    };
    while (gcd(s, g_opt.flows) != 1) s += 2;
    g_stride = s % g_opt.flows;
  }

  char a_mac[RTE_ETHER_ADDR_FMT_SIZE], b_mac[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(a_mac, sizeof(a_mac), &g_opt.dut_mac_a);
  rte_ether_format_addr(b_mac, sizeof(b_mac), &g_opt.dut_mac_b);
  std::printf("natgw-trafgen: mode %s, %u flows (%s), %u-byte frames, DUT MACs %s / %s\n", g_opt.mode.c_str(),
              g_opt.flows, g_opt.proto.c_str(), g_opt.size, a_mac, b_mac);

  // Warm-up: every flow once (creates the sessions), then let the DUT settle.
  Trial warm;
  warm.target = g_opt.warmup_rate;
  warm.seconds = g_opt.flows / std::max(1.0, g_opt.warmup_rate) + 0.2;
  g_next_flow = 0;
  const uint32_t stride = g_stride;
  g_stride = 1;
  warm.c = run(g_opt.warmup_rate, warm.seconds * 4 + 1, g_opt.flows);
  g_stride = stride;
  warm.seconds = static_cast<double>(warm.c.attempted_a) / std::max(1.0, g_opt.warmup_rate);
  print_trial("warmup", warm);
  if (warm.c.rx_b == 0) {
    std::fprintf(stderr, "natgw-trafgen: nothing came through the DUT during warm-up\n");
    if (g_opt.json) std::printf("{\"error\":\"nothing came through\"}\n");
    return 4;
  }

  std::vector<std::string> js;
  Trial full;
  full.target = g_opt.rate;
  full.seconds = g_opt.duration;
  const CpuTicks cpu0 = g_opt.measure_cpu >= 0 ? cpu_ticks(g_opt.measure_cpu) : CpuTicks{};
  full.c = run(g_opt.rate, g_opt.duration);
  const CpuTicks cpu1 = g_opt.measure_cpu >= 0 ? cpu_ticks(g_opt.measure_cpu) : CpuTicks{};
  print_trial(g_opt.rate > 0 ? "fixed" : "full-load", full);
  // Busy fraction of the DUT's CPU over the trial (including the 300 ms drain), and its
  // busy time per packet forwarded (both directions).
  double cpu_busy = -1, cpu_ns_per_pkt = -1, kernel_ns_per_pkt = -1;
  if (g_opt.measure_cpu >= 0 && cpu1.total > cpu0.total) {
    const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
    cpu_busy = static_cast<double>(cpu1.busy - cpu0.busy) / static_cast<double>(cpu1.total - cpu0.total);
    const uint64_t pkts = full.c.rx_b + full.c.rx_a;
    if (pkts) {
      cpu_ns_per_pkt = static_cast<double>(cpu1.busy - cpu0.busy) / hz * 1e9 / static_cast<double>(pkts);
      kernel_ns_per_pkt = static_cast<double>(cpu1.kernel - cpu0.kernel) / hz * 1e9 / static_cast<double>(pkts);
    }
    std::printf("cpu%d       busy %.1f%% during the trial; per forwarded packet %.0f ns busy, %.0f ns in the kernel "
                "(system+irq+softirq)\n",
                g_opt.measure_cpu, 100 * cpu_busy, cpu_ns_per_pkt, kernel_ns_per_pkt);
  }
  Trial best;
  std::vector<Trial> steps;
  if (g_opt.search && !g_stop) {
    // Bisect between nothing and a little above what came through at full load (what was
    // offered can be far above what a software port accepted).
    double lo = 0, hi = std::max(1000.0, full.recv_in() * 1.1);
    if (full.loss_free()) best = full;
    for (unsigned s = 0; s < g_opt.search_steps && !g_stop; ++s) {
      const double mid = (lo + hi) / 2;
      if (mid <= 0) break;
      Trial t;
      t.target = mid;
      t.seconds = g_opt.duration;
      t.c = run(mid, g_opt.duration);
      print_trial(t.loss_free() ? "search ok" : "search lost", t);
      steps.push_back(t);
      if (t.loss_free()) {
        lo = mid;
        if (best.seconds <= 0 || t.forwarded() > best.forwarded()) best = t;
      } else {
        hi = mid;
      }
    }
    if (best.seconds > 0)
      print_trial("loss-free", best);
    else
      std::printf("loss-free  none found (loss tolerance %.4f%%)\n", 100 * g_opt.loss_tolerance);
  }
  if (g_opt.json) {
    std::string j = "{\"mode\":\"" + g_opt.mode + "\",\"flows\":" + std::to_string(g_opt.flows) + ",\"proto\":\"" +
                    g_opt.proto + "\",\"size\":" + std::to_string(g_opt.size) +
                    ",\"loss_tolerance\":" + std::to_string(g_opt.loss_tolerance) + ",\"warmup\":" + json_trial(warm) +
                    ",\"full\":" + json_trial(full);
    if (cpu_busy >= 0)
      j += ",\"dut_cpu\":" + std::to_string(g_opt.measure_cpu) + ",\"dut_cpu_busy\":" + std::to_string(cpu_busy) +
           ",\"dut_cpu_ns_per_pkt\":" + std::to_string(cpu_ns_per_pkt) +
           ",\"dut_kernel_ns_per_pkt\":" + std::to_string(kernel_ns_per_pkt);
    if (g_opt.search) j += ",\"loss_free\":" + (best.seconds > 0 ? json_trial(best) : std::string("null"));
    j += "}";
    std::printf("%s\n", j.c_str());
  }
  std::fflush(stdout);
  if (!g_opt.linger_file.empty())
    for (int i = 0; i < 1200 && !g_stop && access(g_opt.linger_file.c_str(), F_OK) != 0; ++i) usleep(50000);
  rte_eth_dev_stop(g_opt.port_a);
  rte_eth_dev_stop(g_opt.port_b);
  rte_eal_cleanup();
  return 0;
}
