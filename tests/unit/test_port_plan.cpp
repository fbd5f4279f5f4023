// Port setup against the limits a device reports (design §7: "unit-test port setup
// against ENA's limits with a faked device-info"). No device is probed: plan_port()
// only reads rte_eth_dev_info, so an ENA as the PMD describes itself is faked here.
#include <gtest/gtest.h>

#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "dataplane/port.hpp"

namespace natgw::dp {
namespace {

// What DPDK 22.11's ENA PMD reports on a c5n/c6in-class instance with LLQ on
// (ena_infos_get): 8-32 queues, RX rings up to 8K, TX rings up to 1K with LLQ,
// RSS on non-fragmented TCP/UDP only, RX/TX L3/L4 checksum offloads, MTU up to 9216.
rte_eth_dev_info ena_info(uint16_t queues = 8) {
  rte_eth_dev_info i{};
  i.driver_name = "net_ena";
  i.max_rx_queues = queues;
  i.max_tx_queues = queues;
  i.max_mtu = 9216;
  i.min_mtu = 128;
  i.rx_desc_lim = {.nb_max = 8192, .nb_min = 128, .nb_align = 1, .nb_seg_max = 1, .nb_mtu_seg_max = 1};
  i.tx_desc_lim = {.nb_max = 1024, .nb_min = 128, .nb_align = 1, .nb_seg_max = 17, .nb_mtu_seg_max = 17};
  i.flow_type_rss_offloads = RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV4_UDP |
                             RTE_ETH_RSS_NONFRAG_IPV6_TCP | RTE_ETH_RSS_NONFRAG_IPV6_UDP;
  i.rx_offload_capa = RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | RTE_ETH_RX_OFFLOAD_UDP_CKSUM |
                      RTE_ETH_RX_OFFLOAD_TCP_CKSUM | RTE_ETH_RX_OFFLOAD_RSS_HASH;
  i.tx_offload_capa = RTE_ETH_TX_OFFLOAD_IPV4_CKSUM | RTE_ETH_TX_OFFLOAD_UDP_CKSUM |
                      RTE_ETH_TX_OFFLOAD_TCP_CKSUM | RTE_ETH_TX_OFFLOAD_MULTI_SEGS;
  return i;
}

// af_packet as DPDK 22.11 describes it: no offloads, no RSS, fixed ring sizes.
rte_eth_dev_info af_packet_info(uint16_t qpairs = 1) {
  rte_eth_dev_info i{};
  i.driver_name = "net_af_packet";
  i.max_rx_queues = qpairs;
  i.max_tx_queues = qpairs;
  i.max_mtu = 0;  // unknown: follows the kernel interface
  return i;
}

PortParams params(uint16_t queues, uint16_t mtu, uint16_t rxd = 1024, uint16_t txd = 1024) {
  PortParams p;
  p.queues = queues;
  p.mtu = mtu;
  p.rx_desc = rxd;
  p.tx_desc = txd;
  return p;
}

TEST(PortPlan, EnaJumboFramesWithTwoWorkersUseRssOnWhatEnaHashes) {
  const PortPlan plan = plan_port(ena_info(), params(2, 9001), "inside");
  EXPECT_EQ(plan.conf.rxmode.mtu, 9001u);
  EXPECT_TRUE(plan.set_mtu);
  EXPECT_EQ(plan.conf.rxmode.mq_mode, RTE_ETH_MQ_RX_RSS);
  // We ask for IP|TCP|UDP; ENA can only hash non-fragmented TCP/UDP, and asking for
  // more makes rte_eth_dev_configure fail, so the request is masked to what it offers.
  const uint64_t hf = plan.conf.rx_adv_conf.rss_conf.rss_hf;
  EXPECT_NE(hf & RTE_ETH_RSS_NONFRAG_IPV4_TCP, 0u);
  EXPECT_NE(hf & RTE_ETH_RSS_NONFRAG_IPV4_UDP, 0u);
  EXPECT_EQ(hf & ~ena_info().flow_type_rss_offloads, 0u);
  EXPECT_NE(plan.conf.rxmode.offloads & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM, 0u);
}

TEST(PortPlan, OneWorkerNeedsNoRss) {
  const PortPlan plan = plan_port(ena_info(), params(1, 1500), "inside");
  EXPECT_EQ(plan.conf.rxmode.mq_mode, RTE_ETH_MQ_RX_NONE);
  EXPECT_EQ(plan.conf.rx_adv_conf.rss_conf.rss_hf, 0u);
}

TEST(PortPlan, DescriptorCountsAreClampedToEnaLlqLimits) {
  // 4096 TX descriptors is more than ENA's LLQ ring holds (1024): clamp, don't fail.
  PortPlan plan = plan_port(ena_info(), params(1, 1500, 4096, 4096), "inside");
  EXPECT_EQ(plan.rx_desc, 4096);
  EXPECT_EQ(plan.tx_desc, 1024);
  // Below the minimum is raised to it.
  plan = plan_port(ena_info(), params(1, 1500, 32, 32), "inside");
  EXPECT_EQ(plan.rx_desc, 128);
  EXPECT_EQ(plan.tx_desc, 128);
}

TEST(PortPlan, DescriptorAlignmentIsRespected) {
  rte_eth_dev_info i = ena_info();
  i.rx_desc_lim.nb_align = 32;
  const PortPlan plan = plan_port(i, params(1, 1500, 1000, 1000), "inside");
  EXPECT_EQ(plan.rx_desc % 32, 0);
  EXPECT_LE(plan.rx_desc, 1000);
  // Rounding down to the alignment must not go below the minimum.
  i.rx_desc_lim = {.nb_max = 4096, .nb_min = 100, .nb_align = 64, .nb_seg_max = 1, .nb_mtu_seg_max = 1};
  const PortPlan small = plan_port(i, params(1, 1500, 100, 1024), "inside");
  EXPECT_EQ(small.rx_desc, 128);
}

TEST(PortPlan, MoreWorkersThanQueuesIsAnErrorNamingTheFix) {
  try {
    plan_port(ena_info(2), params(4, 1500), "endpoint");
    FAIL() << "4 workers on a 2-queue ENA must be refused";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("endpoint"), std::string::npos) << m;
    EXPECT_NE(m.find("4 workers"), std::string::npos) << m;
    EXPECT_NE(m.find("2/2"), std::string::npos) << m;
  }
  EXPECT_THROW(plan_port(af_packet_info(1), params(2, 1500), "inside"), std::runtime_error);
  EXPECT_NO_THROW(plan_port(af_packet_info(2), params(2, 1500), "inside"));
}

TEST(PortPlan, MtuAboveTheDeviceMaximumIsRefused) {
  EXPECT_THROW(plan_port(ena_info(), params(1, 9300), "inside"), std::runtime_error);
  EXPECT_NO_THROW(plan_port(ena_info(), params(1, 9216), "inside"));
  // A PMD that reports no maximum (af_packet) is taken at its word: the kernel decides.
  EXPECT_NO_THROW(plan_port(af_packet_info(), params(1, 9001), "inside"));
}

TEST(PortPlan, ChecksumOffloadOnlyWhenOffered) {
  const PortPlan plan = plan_port(af_packet_info(), params(1, 1500), "inside");
  EXPECT_EQ(plan.conf.rxmode.offloads & RTE_ETH_RX_OFFLOAD_IPV4_CKSUM, 0u);
  EXPECT_EQ(plan.conf.rxmode.mq_mode, RTE_ETH_MQ_RX_NONE);
}

TEST(PortPlan, MbufDataRoomHoldsAJumboFrameInOneSegment) {
  EXPECT_EQ(mbuf_data_room(1500), RTE_MBUF_DEFAULT_BUF_SIZE);
  const uint16_t room = mbuf_data_room(9001);
  EXPECT_GE(room, RTE_PKTMBUF_HEADROOM + 9001 + RTE_ETHER_HDR_LEN + RTE_ETHER_CRC_LEN);
  EXPECT_EQ(room % 1024, 0);
}

// A memif server's socket file: only role=server (the default) with socket-abstract=no leaves one.
TEST(MemifSocket, FileOfServersWithFileSockets) {
  EXPECT_EQ(memif_server_socket_file("net_memif0,role=server,id=0,socket=/tmp/a.sock,socket-abstract=no"),
            "/tmp/a.sock");
  EXPECT_EQ(memif_server_socket_file("net_memif1,socket-abstract=no,socket=/tmp/b.sock"), "/tmp/b.sock");
  EXPECT_EQ(memif_server_socket_file("net_memif1,socket-abstract=no"), "/run/memif.sock");  // PMD default
  EXPECT_EQ(memif_server_socket_file("net_memif0,role=client,socket=/tmp/a.sock,socket-abstract=no"), "");
  EXPECT_EQ(memif_server_socket_file("net_memif0,role=server,socket=/tmp/a.sock"), "");  // abstract
  EXPECT_EQ(memif_server_socket_file("net_af_packet0,iface=x,socket=/tmp/a.sock,socket-abstract=no"), "");
  EXPECT_EQ(memif_server_socket_file("net_memif0"), "");
}

TEST(MemifSocket, ClientsAreToldApart) {
  EXPECT_TRUE(is_memif_client("net_memif0,role=client,socket=/tmp/a.sock"));
  EXPECT_TRUE(is_memif_client("net_memif3,id=1,role=client"));
  EXPECT_FALSE(is_memif_client("net_memif0"));  // server by default
  EXPECT_FALSE(is_memif_client("net_memif0,role=server,socket=/tmp/role=client"));
  EXPECT_FALSE(is_memif_client("net_af_xdp0,iface=x,role=client"));
}

class StaleSocket : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/natgw-sock-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/m.sock";
  }
  void TearDown() override {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
    rmdir(dir_.c_str());
  }
  // A SOCK_SEQPACKET socket bound at path_ (as the memif PMD's listener), listening or not.
  void bind_socket(bool listening) {
    fd_ = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    if (listening) {
      ASSERT_EQ(listen(fd_, 1), 0);
    }
  }
  bool exists() const {
    struct stat st{};
    return lstat(path_.c_str(), &st) == 0;
  }
  std::string dir_, path_;
  int fd_ = -1;
};

TEST_F(StaleSocket, LeftByADeadServerIsRemoved) {
  bind_socket(true);
  close(fd_);  // the server is gone, its file stays
  fd_ = -1;
  ASSERT_TRUE(exists());
  EXPECT_TRUE(remove_stale_socket(path_));
  EXPECT_FALSE(exists());
}

TEST_F(StaleSocket, BoundButNotListeningIsRemovedToo) {
  bind_socket(false);  // connect() is refused as for a dead server
  EXPECT_TRUE(remove_stale_socket(path_));
  EXPECT_FALSE(exists());
}

TEST_F(StaleSocket, ALiveListenerIsKept) {
  bind_socket(true);
  EXPECT_FALSE(remove_stale_socket(path_));
  EXPECT_TRUE(exists());
}

TEST_F(StaleSocket, AListenerWithAFullBacklogIsKeptWithoutWaiting) {
  bind_socket(true);
  ASSERT_EQ(listen(fd_, 0), 0);
  // Fill the backlog: connections nobody accepts.
  std::vector<int> queued;
  for (int i = 0; i < 8; ++i) {
    const int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    queued.push_back(c);
    if (connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) break;  // full: EAGAIN
  }
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(remove_stale_socket(path_));  // a blocking connect() would wait here for ever
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  EXPECT_TRUE(exists());
  for (const int c : queued) close(c);
}

TEST_F(StaleSocket, OtherFilesAndNoFileAreLeftAlone) {
  EXPECT_FALSE(remove_stale_socket(path_));  // nothing there
  std::ofstream(path_) << "not a socket";
  EXPECT_FALSE(remove_stale_socket(path_));
  EXPECT_TRUE(exists());
}

}  // namespace
}  // namespace natgw::dp
