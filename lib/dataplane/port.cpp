#include "dataplane/port.hpp"

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_mbuf.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <stdexcept>

#include "config/device_args.hpp"

namespace natgw::dp {

namespace {
std::string dpdk_error(int rc) { return rte_strerror(rc < 0 ? -rc : rc); }
}  // namespace

std::string memif_server_socket_file(const std::string& device) {
  if (device.rfind("net_memif", 0) != 0) return {};
  // The PMD's defaults: role=server, socket=/run/memif.sock, socket-abstract=yes.
  if (config::device_arg(device, "role").value_or("server") != "server" ||
      config::device_arg(device, "socket-abstract").value_or("yes") != "no")
    return {};
  return config::device_arg(device, "socket").value_or("/run/memif.sock");
}

bool is_memif_client(const std::string& device) {
  return device.rfind("net_memif", 0) == 0 && config::device_arg(device, "role") == "client";
}

bool remove_stale_socket(const std::string& path) {
  struct stat st{};
  if (lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  // Non-blocking: a live listener whose backlog is full (stopped, or busy) must not hang the
  // start; it answers EAGAIN and is kept. Only a refusal means nobody listens.
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  const bool refused = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0 &&
                       errno == ECONNREFUSED;
  close(fd);
  return refused && unlink(path.c_str()) == 0;
}

uint16_t probe_port(const std::string& device) {
  const std::string name = device.substr(0, device.find(','));
  uint16_t port;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &port) == 0) return port;  // PCI probed by EAL
  if (const std::string sock = memif_server_socket_file(device); !sock.empty() && remove_stale_socket(sock))
    std::cerr << "natgw: " << name << ": removed " << sock << ", a memif socket nobody listened on\n";
  const bool is_pci = name.find(':') != std::string::npos;
  const std::string devargs = is_pci ? "pci:" + device : "vdev:" + device;
  const int rc = rte_dev_probe(devargs.c_str());
  if (rc != 0)
    throw std::runtime_error("cannot probe device '" + device + "': " + dpdk_error(rc) +
                             (is_pci ? " (is it bound to vfio-pci/igb_uio, and is --no-pci absent from eal?)"
                                     : " (is the vdev driver installed and the interface present?)"));
  if (rte_eth_dev_get_port_by_name(name.c_str(), &port) != 0)
    throw std::runtime_error("device '" + device + "' probed but no ethdev port named '" + name + "'");
  return port;
}

uint16_t mbuf_data_room(uint16_t max_mtu) {
  const uint32_t need = RTE_PKTMBUF_HEADROOM + max_mtu + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN + 8;
  return static_cast<uint16_t>(std::max<uint32_t>(RTE_MBUF_DEFAULT_BUF_SIZE, (need + 1023u) / 1024u * 1024u));
}

PortPlan plan_port(const rte_eth_dev_info& info, const PortParams& p, const std::string& name) {
  if (info.max_rx_queues < p.queues || info.max_tx_queues < p.queues)
    throw std::runtime_error(name + ": " + std::to_string(p.queues) +
                             " workers need as many RX/TX queues, the device offers " +
                             std::to_string(info.max_rx_queues) + "/" +
                             std::to_string(info.max_tx_queues) +
                             " (af_packet/af_xdp: add qpairs=N / queue_count=N to the device string)");
  if (info.max_mtu && p.mtu > info.max_mtu)
    throw std::runtime_error(name + ": mtu " + std::to_string(p.mtu) + " exceeds the device maximum " +
                             std::to_string(info.max_mtu));
  PortPlan plan;
  plan.conf.rxmode.mtu = p.mtu;
  plan.set_mtu = true;
  if (p.queues > 1) {
    plan.conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    plan.conf.rx_adv_conf.rss_conf.rss_hf =
        (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
  }
  // RX IPv4 checksum verification is free where offered; NAT rewrites use
  // incremental checksums (a few adds), cheaper than preparing TX offload metadata.
  if (info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM)
    plan.conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_IPV4_CKSUM;
  auto clamp = [](uint16_t want, const rte_eth_desc_lim& lim) {
    uint16_t v = std::min<uint16_t>(want, lim.nb_max ? lim.nb_max : want);
    v = std::max<uint16_t>(v, lim.nb_min);
    if (lim.nb_align > 1) {
      v = static_cast<uint16_t>(v - v % lim.nb_align);
      if (v < lim.nb_min) v = static_cast<uint16_t>(v + lim.nb_align);  // rounding must not undercut the minimum
    }
    return v;
  };
  plan.rx_desc = clamp(p.rx_desc, info.rx_desc_lim);
  plan.tx_desc = clamp(p.tx_desc, info.tx_desc_lim);
  return plan;
}

void start_port(uint16_t port, const PortParams& p, rte_mempool* pool, const std::string& name) {
  rte_eth_dev_info info{};
  int rc = rte_eth_dev_info_get(port, &info);
  if (rc != 0) throw std::runtime_error(name + ": rte_eth_dev_info_get: " + dpdk_error(rc));
  PortPlan plan = plan_port(info, p, name);
  rc = rte_eth_dev_configure(port, p.queues, p.queues, &plan.conf);
  if (rc != 0) {
    // Some software PMDs reject an explicit MTU in rxmode; retry with their default.
    plan.conf.rxmode.mtu = 0;
    rc = rte_eth_dev_configure(port, p.queues, p.queues, &plan.conf);
  }
  if (rc != 0) throw std::runtime_error(name + ": rte_eth_dev_configure: " + dpdk_error(rc));
  uint16_t rxd = plan.rx_desc, txd = plan.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &rxd, &txd);
  const int socket = rte_eth_dev_socket_id(port);
  for (uint16_t q = 0; q < p.queues; ++q) {
    rc = rte_eth_rx_queue_setup(port, q, rxd, static_cast<unsigned>(socket), nullptr, pool);
    if (rc != 0) throw std::runtime_error(name + ": RX queue setup: " + dpdk_error(rc));
    rc = rte_eth_tx_queue_setup(port, q, txd, static_cast<unsigned>(socket), nullptr);
    if (rc != 0) throw std::runtime_error(name + ": TX queue setup: " + dpdk_error(rc));
  }
  // natgw sizes frag-needed and fragmentation by the config's MTU: it must not send
  // frames the port cannot take. A PMD that cannot set an MTU at all (-ENOTSUP: memif,
  // net_null) is fine if it runs at that or more; any other refusal (the kernel's, for
  // af_packet and af_xdp) stops here.
  rc = rte_eth_dev_set_mtu(port, p.mtu);
  uint16_t got = 0;
  if (rc != 0 && (rc != -ENOTSUP || (rte_eth_dev_get_mtu(port, &got) == 0 && got < p.mtu)))
    throw std::runtime_error(name + ": the port does not take mtu " + std::to_string(p.mtu) + " (" + dpdk_error(rc) +
                             (got ? "; it runs at " + std::to_string(got) : std::string()) +
                             "): lower the interface's mtu, or give the PMD larger frames (e.g. af_packet framesz)");
  rc = rte_eth_dev_start(port);
  if (rc != 0) throw std::runtime_error(name + ": start: " + dpdk_error(rc));
}

void stop_port(uint16_t port) {
  rte_eth_dev_stop(port);
  rte_eth_dev_close(port);
}

}  // namespace natgw::dp
