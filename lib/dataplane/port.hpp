// Port bring-up (control path): probe a vdev or PCI device, size queues and the
// mbuf pool, start it. Errors are exceptions with the device and DPDK's reason.
#pragma once

#include <rte_ethdev.h>
#include <rte_mempool.h>

#include <cstdint>
#include <string>

namespace natgw::dp {

struct PortParams {
  uint16_t queues = 1;      // one RX and one TX queue per worker
  uint16_t mtu = 1500;
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
};

// Probe `device` ("net_af_packet0,iface=x" or "0000:00:06.0") and return its port id.
// A memif server's file socket left behind by a natgw that died is removed first.
uint16_t probe_port(const std::string& device);

// The socket file a memif device listens on: role=server (the default) with
// socket-abstract=no; empty for clients and abstract sockets (which leave no file).
std::string memif_server_socket_file(const std::string& device);
// A memif device in role=client: DPDK 22.11 connects it when the port starts and never
// again, so natgw restarts it while its server is gone (Daemon::reconnect_memif_clients).
bool is_memif_client(const std::string& device);
// Removes `path` if it is a Unix socket nobody listens on (ECONNREFUSED): the file a
// killed server leaves, which makes the memif PMD refuse to listen there again. True
// when it removed the file; a live listener, another kind of file or no file stays.
bool remove_stale_socket(const std::string& path);

// What a port can do, clamped to what we ask (testable with a faked dev_info).
struct PortPlan {
  rte_eth_conf conf{};
  uint16_t rx_desc = 0, tx_desc = 0;
  bool set_mtu = false;
};
PortPlan plan_port(const rte_eth_dev_info& info, const PortParams& p, const std::string& name);

// Configure queues on `pool` and start the port.
void start_port(uint16_t port, const PortParams& p, rte_mempool* pool, const std::string& name);
void stop_port(uint16_t port);

// Mbuf data room needed for an MTU (single-segment frames).
uint16_t mbuf_data_room(uint16_t max_mtu);

}  // namespace natgw::dp
